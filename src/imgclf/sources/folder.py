"""The `folder` source: a local tree `<root>/<class>/<image>`, or a `.zip` archive of one.

Everything under a class folder is an input (sub-folders too); files whose extension is not an
image's are recorded as skipped. Hidden files and macOS resource forks are ignored. An archive is
read in place, never extracted: entries are only read, and an entry with an absolute path or a
`..` part makes the whole archive refused before anything is written.
"""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from imgclf.classes import ClassSpec
from imgclf.errors import StageError
from imgclf.sources import SKIPPED, RawRecord, RawStore, Source

# Extension → the suffix the stored copy gets (one spelling per format).
IMAGE_SUFFIXES = {".jpg": ".jpg", ".jpeg": ".jpg", ".jpe": ".jpg", ".png": ".png",
                  ".webp": ".webp", ".gif": ".gif", ".bmp": ".bmp", ".tif": ".tif",
                  ".tiff": ".tif"}
MAX_FILE_BYTES = 100 * 1024 * 1024  # larger files are skipped: no photo needs more
IGNORED_DIRS = {"__MACOSX"}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One file of the tree, read only when needed."""
    class_name: str
    origin: str
    suffix: str  # lower-case extension as found
    size: int
    read: Callable[[], bytes]


def _is_ignored(parts: tuple[str, ...]) -> bool:
    return any(part.startswith(".") or part in IGNORED_DIRS for part in parts)


def _directory_entries(root: Path) -> list[Entry]:
    entries = []
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if len(parts) < 2 or not path.is_file() or _is_ignored(parts):
            continue  # files directly under the root (a LICENSE, a README) belong to no class
        entries.append(Entry(class_name=parts[0], origin=str(path), suffix=path.suffix.lower(),
                             size=path.stat().st_size, read=path.read_bytes))
    return entries


def _check_zip_name(name: str, archive: Path) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise StageError(f"scrape.folder: {archive} has an entry with an absolute path or '..' "
                         f"({name!r}); such archives are refused, nothing was extracted")
    return path


def _zip_entries(archive: Path) -> list[Entry]:
    try:
        with zipfile.ZipFile(archive) as handle:
            infos = [info for info in handle.infolist() if not info.is_dir()]
    except zipfile.BadZipFile as error:
        raise StageError(f"scrape.folder: {archive} is not a readable zip archive ({error})")
    paths = [(_check_zip_name(info.filename, archive), info) for info in infos]
    paths = [(path, info) for path, info in paths if not _is_ignored(path.parts)]
    # Archives often wrap the class folders in one top folder (`flowers/daisy/1.jpg`).
    tops = {path.parts[0] for path, _ in paths}
    strip = 1 if len(tops) == 1 and all(len(path.parts) >= 3 for path, _ in paths) else 0
    entries = []
    for path, info in sorted(paths, key=lambda item: item[0].as_posix()):
        parts = path.parts[strip:]
        if len(parts) < 2:
            continue
        entries.append(Entry(class_name=parts[0], origin=f"{archive}!/{info.filename}",
                             suffix=path.suffix.lower(), size=info.file_size,
                             read=_zip_reader(archive, info.filename)))
    return entries


def _zip_reader(archive: Path, name: str) -> Callable[[], bytes]:
    def read() -> bytes:
        with zipfile.ZipFile(archive) as handle, handle.open(name) as member:
            # Read one byte past the limit: the header's size can lie, the stream cannot.
            data = member.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise ValueError(f"larger than {MAX_FILE_BYTES} bytes once decompressed")
        return data
    return read


class FolderSource(Source):
    incremental = False  # data/raw mirrors the folder: removed images disappear from it too

    def __init__(self, root: Path) -> None:
        if not root.exists():
            raise StageError(f"scrape.folder: {root} does not exist; expected a directory "
                             "<root>/<class>/<image> or a .zip archive of one")
        if root.is_file() and root.suffix.lower() != ".zip":
            raise StageError(f"scrape.folder: {root} is a file but not a .zip archive; expected "
                             "a directory <root>/<class>/<image> or a .zip archive of one")
        self.root = root
        entries = _zip_entries(root) if root.is_file() else _directory_entries(root)
        self.entries_by_class: dict[str, list[Entry]] = {}
        for entry in entries:
            self.entries_by_class.setdefault(entry.class_name, []).append(entry)

    def class_names(self) -> list[str]:
        return sorted(self.entries_by_class)

    def check_classes(self, specs: list[ClassSpec]) -> None:
        wanted = {spec.name for spec in specs}
        unknown = sorted(set(self.entries_by_class) - wanted)
        if unknown:
            raise StageError(f"scrape.folder: {self.root} has folders that are not in the class "
                             f"list: {unknown}; the classes are {sorted(wanted)} (add them to the "
                             "class list, remove the folders, or set `classes` empty to use the "
                             "folder names)")
        empty = sorted(name for name in wanted if not any(
            entry.suffix in IMAGE_SUFFIXES for entry in self.entries_by_class.get(name, [])))
        if empty:
            raise StageError(f"scrape.folder: no images for classes {empty} in {self.root} "
                             f"(image extensions: {', '.join(sorted(IMAGE_SUFFIXES))})")

    def collect(self, spec: ClassSpec, store: RawStore,
                known_origins: set[str]) -> Iterator[RawRecord]:
        for entry in self.entries_by_class.get(spec.name, []):
            yield self._store(entry, spec, store)

    @staticmethod
    def _store(entry: Entry, spec: ClassSpec, store: RawStore) -> RawRecord:
        if entry.suffix not in IMAGE_SUFFIXES:
            return RawRecord(spec.name, entry.origin, status=SKIPPED,
                             reason=f"extension {entry.suffix or '(none)'!r} is not an image's")
        if entry.size > MAX_FILE_BYTES:
            return RawRecord(spec.name, entry.origin, status=SKIPPED,
                             reason=f"larger than {MAX_FILE_BYTES} bytes")
        try:
            data = entry.read()
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            return RawRecord(spec.name, entry.origin, status=SKIPPED,
                             reason=f"cannot read: {error}")
        return store.save(spec, data, IMAGE_SUFFIXES[entry.suffix], entry.origin)
