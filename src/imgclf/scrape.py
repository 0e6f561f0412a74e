"""Stage `scrape`: collect images for each class into data/raw/<class>/, with a manifest.

Reads the class list (`classes`) and `scrape.*`; writes data/raw/ (images named by content hash,
manifest.csv with one row per input tried, classes.csv with the resolved label ids).
"""

from __future__ import annotations

import collections
from pathlib import Path

from tqdm import tqdm

from imgclf.classes import ClassSpec, classes_from_names, read_class_list, write_class_list
from imgclf.errors import StageError
from imgclf.fsutil import read_csv, write_csv
from imgclf.params import Params, ScrapeParams
from imgclf.paths import RAW_CLASSES, RAW_DIR, RAW_MANIFEST
from imgclf.sources import MANIFEST_FIELDS, STORED, RawRecord, RawStore, Source
from imgclf.sources.folder import FolderSource

WEB_SOURCES_MISSING = (
    "the {source!r} source is not available yet: scraping the web lands with issue #3. "
    "Use `scrape.source: folder` with `scrape.folder` set to a directory <root>/<class>/<image> "
    "or a .zip of one (see README: 'Your own folder of images')")


def make_source(scrape: ScrapeParams) -> Source:
    if scrape.source == "folder":
        return FolderSource(Path(scrape.folder))
    raise StageError(WEB_SOURCES_MISSING.format(source=scrape.source))


def resolve_classes(classes_csv: str, source: Source) -> list[ClassSpec]:
    """The class list from the CSV, or from the source's folder names when `classes` is empty."""
    if classes_csv:
        return read_class_list(Path(classes_csv))
    names = source.class_names()
    if not names:
        raise StageError("classes is empty, so the classes are the folder names of "
                         "scrape.folder, but it has no class folders")
    return classes_from_names(names)


def read_manifest(path: Path = RAW_MANIFEST) -> list[RawRecord]:
    return [RawRecord.from_row(row) for row in read_csv(path)] if path.is_file() else []


def _remove_unreferenced(root: Path, referenced: set[str]) -> int:
    """Delete files under the class folders that no manifest row refers to; return how many."""
    removed = 0
    for path in sorted(root.glob("*/**/*"), reverse=True):  # children before their folders
        relative = path.relative_to(root).as_posix()
        if path.is_file() and relative not in referenced:
            path.unlink()
            removed += 1
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    for folder in root.iterdir():
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return removed


def _summarise(records: list[RawRecord], specs: list[ClassSpec]) -> str:
    stored = collections.Counter(r.class_name for r in records if r.status == STORED)
    other = collections.Counter(r.class_name for r in records if r.status != STORED)
    width = max(len(spec.name) for spec in specs)
    lines = [f"{'class':<{width}}  stored  not stored"]
    lines += [f"{spec.name:<{width}}  {stored[spec.name]:>6}  {other[spec.name]:>10}"
              for spec in specs]
    lines.append(f"{'total':<{width}}  {sum(stored.values()):>6}  {sum(other.values()):>10}")
    return "\n".join(lines)


def run(params: Params) -> None:
    source = make_source(params.scrape)
    specs = resolve_classes(params.classes, source)
    source.check_classes(specs)
    names = {spec.name for spec in specs}
    # Incremental sources keep what earlier runs collected for the classes still listed.
    kept = [r for r in read_manifest() if r.class_name in names] if source.incremental else []
    known: dict[str, set[str]] = collections.defaultdict(set)
    for record in kept:
        known[record.class_name].add(record.origin)
    store = RawStore(RAW_DIR)
    records = list(kept)
    for spec in tqdm(specs, desc="scrape", unit="class"):
        records.extend(source.collect(spec, store, known[spec.name]))
    write_class_list(RAW_CLASSES, specs)
    write_csv(RAW_MANIFEST, MANIFEST_FIELDS, (record.as_row() for record in records))
    referenced = {record.file for record in records if record.file}
    referenced |= {RAW_CLASSES.name, RAW_MANIFEST.name}
    _remove_unreferenced(RAW_DIR, referenced)
    print(_summarise(records, specs))
