"""The `folder` source: a local tree `<root>/<class>/<image>`, or a `.zip` archive of one.

Everything under a class folder is an input (sub-folders too); each is recorded, stored or skipped
with the reason. Hidden files and macOS resource forks are ignored. The tree may come from
anywhere (a download, an unpacked archive), so it is read as hostile:

- symbolic links are never followed, so nothing outside the root is read: a link is recorded as
  skipped, and a class folder that is a link is reported as such; FIFOs and devices are skipped
  too (reading a FIFO would block forever);
- a file is stored only when its header is an image's (the suffix comes from the content, as for
  downloads), so zero-filled or text files never reach data/raw;
- an archive is read in place, never extracted, and opened once. An entry with an absolute path
  or a `..` part makes the whole archive refused before anything is written, and so does an
  archive with more entries or more bytes than `scrape.archive_max_entries` and
  `scrape.archive_max_bytes` allow (sizes come from the archive's directory, and reading an
  entry never returns more than its declared size). Only stored and deflated entries are read:
  bzip2 and LZMA decompress without an output bound in Python's zipfile.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from imgclf.core.classes import ClassSpec, check_class_name
from imgclf.core.errors import StageError
from imgclf.core.images import MAX_FILE_BYTES, ImageError, identify, image_extensions, read_at_most
from imgclf.sources.base import SKIPPED, RawRecord, RawStore, Source

IGNORED_DIRS = {"__MACOSX"}
READ_COMPRESSIONS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
DRIVE = re.compile(r"^[A-Za-z]:([/\\]|$)")  # a Windows absolute path such as C:/ or C:\
IMAGE_EXTENSIONS = image_extensions()


@dataclasses.dataclass(frozen=True)
class Entry:
    """One input of the tree, read only when needed; `problem` says why it is not read at all."""
    class_name: str
    origin: str
    suffix: str = ""  # lower-case extension as found
    size: int = 0
    read: Callable[[], bytes] = bytes  # unused when there is a problem
    problem: str = ""


def _is_ignored(parts: tuple[str, ...]) -> bool:
    return any(part.startswith(".") or part in IGNORED_DIRS for part in parts)


def _tree(folder: Path) -> Iterator[Path]:
    """Every path under `folder` in sorted order, without descending into links or hidden
    folders."""
    for path in sorted(folder.iterdir()):
        if _is_ignored((path.name,)):
            continue
        yield path
        if path.is_dir() and not path.is_symlink():
            yield from _tree(path)


def _link_problem(path: Path) -> str:
    return (f"symbolic link: to {os.readlink(path)}; links are not followed, so that nothing "
            "outside scrape.folder is read (copy the files in instead)")


def _directory_entries(root: Path) -> list[Entry]:
    entries = []
    for path in _tree(root):
        parts = path.relative_to(root).parts
        if len(parts) == 1:  # a class folder; files beside them (a LICENSE) belong to no class
            if path.is_dir():
                check_class_name(parts[0], f"scrape.folder: {path}")
            if path.is_dir() and path.is_symlink():
                entries.append(Entry(parts[0], str(path), problem=_link_problem(path)))
            continue
        status = path.lstat()
        if stat.S_ISDIR(status.st_mode):
            continue
        entries.append(Entry(class_name=parts[0], origin=str(path), suffix=path.suffix.lower(),
                             size=status.st_size, read=functools.partial(_read_file, path),
                             problem=_file_problem(path, status.st_mode)))
    return entries


def _file_problem(path: Path, mode: int) -> str:
    if stat.S_ISLNK(mode):
        return _link_problem(path)
    if not stat.S_ISREG(mode):
        return "not a regular file: a FIFO, socket or device"
    return ""


def _read_file(path: Path) -> bytes:
    """The bytes of a regular file; a link that replaced it since the listing is refused."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    with os.fdopen(os.open(path, flags), "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise OSError("not a regular file")
        return read_at_most(handle.read)


def _check_zip_name(name: str, archive: Path) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or DRIVE.match(name):
        raise StageError(f"scrape.folder: {archive} has an entry with an absolute path or '..' "
                         f"({name!r}); such archives are refused, nothing was extracted")
    return path


class Archive:
    """A zip archive opened once; its entries read from the one handle."""

    def __init__(self, path: Path, max_entries: int, max_bytes: int) -> None:
        self.path = path
        try:
            self._handle = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as error:
            raise StageError(f"scrape.folder: {path} is not a readable zip archive ({error})")
        try:
            self.entries = self._entries(max_entries, max_bytes)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._handle.close()

    def _entries(self, max_entries: int, max_bytes: int) -> list[Entry]:
        infos = [info for info in self._handle.infolist() if not info.is_dir()]
        self._check_limit(len(infos), max_entries, "entries", "scrape.archive_max_entries")
        paths = [(_check_zip_name(info.filename, self.path), info) for info in infos]
        paths = [(path, info) for path, info in paths if not _is_ignored(path.parts)]
        # Archives often wrap the class folders in one top folder (`flowers/daisy/1.jpg`).
        tops = {path.parts[0] for path, _ in paths}
        strip = 1 if len(tops) == 1 and all(len(path.parts) >= 3 for path, _ in paths) else 0
        entries = []
        for path, info in sorted(paths, key=lambda item: item[0].as_posix()):
            parts = path.parts[strip:]
            if len(parts) < 2:
                continue
            check_class_name(parts[0], f"scrape.folder: {self.path}!/{info.filename}")
            entries.append(self._entry(parts[0], path, info))
        declared = sum(entry.size for entry in entries if entry.suffix in IMAGE_EXTENSIONS
                       and not entry.problem and entry.size <= MAX_FILE_BYTES)
        self._check_limit(declared, max_bytes, "bytes of images once decompressed",
                          "scrape.archive_max_bytes")
        return entries

    def _check_limit(self, count: int, limit: int, what: str, key: str) -> None:
        if count > limit:
            raise StageError(f"{key}: at most {limit:,} {what} in an archive (got {count:,} in "
                             f"{self.path}); raise {key} to read it. Nothing was extracted")

    def _entry(self, class_name: str, path: PurePosixPath, info: zipfile.ZipInfo) -> Entry:
        problem = "" if info.compress_type in READ_COMPRESSIONS else (
            f"compression method {info.compress_type} is not read: only "
            f"{' and '.join(READ_COMPRESSIONS.values())} entries are (others expand without a "
            "bound)")
        return Entry(class_name=class_name, origin=f"{self.path}!/{info.filename}",
                     suffix=path.suffix.lower(), size=info.file_size,
                     read=functools.partial(self._read, info), problem=problem)

    def _read(self, info: zipfile.ZipInfo) -> bytes:
        with self._handle.open(info) as member:
            return read_at_most(member.read)


class FolderSource(Source):
    incremental = False  # data/raw mirrors the folder: removed images disappear from it too

    def __init__(self, root: Path, archive_max_entries: int, archive_max_bytes: int) -> None:
        if not root.exists():
            raise StageError(f"scrape.folder: {root} does not exist; expected a directory "
                             "<root>/<class>/<image> or a .zip archive of one")
        if root.is_file() and root.suffix.lower() != ".zip":
            raise StageError(f"scrape.folder: {root} is a file but not a .zip archive; expected "
                             "a directory <root>/<class>/<image> or a .zip archive of one")
        self.root = root
        self._archive: Archive | None = None
        if root.is_file():
            self._archive = Archive(root, archive_max_entries, archive_max_bytes)
            entries = self._archive.entries
        else:
            entries = _directory_entries(root)
        self.entries_by_class: dict[str, list[Entry]] = {}
        for entry in entries:
            self.entries_by_class.setdefault(entry.class_name, []).append(entry)

    def close(self) -> None:
        if self._archive is not None:
            self._archive.close()

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
            entry.suffix in IMAGE_EXTENSIONS and not entry.problem
            for entry in self.entries_by_class.get(name, [])))
        if empty:
            problems = [f"{entry.origin}: {entry.problem}" for name in empty
                        for entry in self.entries_by_class.get(name, []) if entry.problem]
            raise StageError(f"scrape.folder: no images for classes {empty} in {self.root} "
                             f"(image extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})"
                             + "".join(f"; {problem}" for problem in problems[:3]))

    def collect(self, spec: ClassSpec, store: RawStore,
                known_origins: set[str]) -> Iterator[RawRecord]:
        for entry in self.entries_by_class.get(spec.name, []):
            yield self._store(entry, spec, store)

    @staticmethod
    def _store(entry: Entry, spec: ClassSpec, store: RawStore) -> RawRecord:
        def skipped(reason: str) -> RawRecord:
            return RawRecord(spec.name, entry.origin, status=SKIPPED, reason=reason)

        if entry.problem:
            return skipped(entry.problem)
        if entry.suffix not in IMAGE_EXTENSIONS:
            return skipped(f"extension {entry.suffix or '(none)'!r} is not an image's")
        if entry.size > MAX_FILE_BYTES:
            return skipped(f"larger than {MAX_FILE_BYTES} bytes")
        try:
            data = entry.read()
            suffix = identify(data)
        except ImageError as error:  # over the size limit, or not an allowed image format
            return skipped(str(error))
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
            # A damaged archive entry: a bad CRC, a broken or cut deflate stream.
            return skipped(f"cannot read: {error}")
        return store.save(spec, data, suffix, entry.origin)
