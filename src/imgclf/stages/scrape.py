"""Stage `scrape`: collect images for each class into data/raw/<class>/, with a manifest.

Reads the class list (`classes`) and `scrape.*`; writes data/raw/ (images named by content hash,
manifest.csv with one row per input tried, classes.csv with the resolved label ids).

Web sources add to what earlier runs collected: a URL in the manifest is never fetched again.
The manifest is written once, atomically, at the end; until then each record also goes to a
journal beside it, so a run that is killed loses nothing it saved — the next run reads the
journal as part of the manifest and carries on.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import dataclasses
import os
import sys
from pathlib import Path
from types import TracebackType

from tqdm import tqdm

from imgclf.config.scrape import ScrapeParams, ScrapeStageParams
from imgclf.core.classes import ClassSpec, classes_from_names, read_class_list, write_class_list
from imgclf.core.cli import stage_main
from imgclf.core.errors import StageError
from imgclf.core.files import read_csv, write_csv
from imgclf.core.paths import RAW_CLASSES, RAW_DIR, RAW_MANIFEST
from imgclf.sources.base import MANIFEST_FIELDS, STORED, ClassReport, RawRecord, RawStore, Source
from imgclf.sources.folder import FolderSource
from imgclf.sources.web import WebSource
from imgclf.sources.yandex import YandexSource

# Records of the run in progress; it exists only while a run is going or after one was killed.
RAW_JOURNAL = RAW_DIR / ".manifest.journal.csv"


def make_source(scrape: ScrapeParams) -> Source:
    if scrape.source == "folder":
        return FolderSource(Path(scrape.folder), scrape.archive_max_entries,
                            scrape.archive_max_bytes)
    if scrape.source == "yandex":
        return YandexSource(scrape)
    return WebSource(scrape)


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


def read_journal(path: Path = RAW_JOURNAL) -> list[RawRecord]:
    """The complete rows of a killed run's journal (its last row may have been cut short)."""
    if not path.is_file():
        return []
    records = []
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        with contextlib.suppress(csv.Error):  # a quoted field cut off at the end
            for row in csv.DictReader(handle):
                if None not in row.values() and None not in row:
                    with contextlib.suppress(ValueError):
                        records.append(RawRecord.from_row(row))
    return records


class Journal:
    """Appends each record to a CSV file as soon as it is made (flushed, so a killed process
    loses none; a machine that loses power may lose the last few, which are then fetched again)."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def __enter__(self) -> Journal:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        if self._path.is_file():  # cut a row that a kill left half-written
            data = self._path.read_bytes()
            os.truncate(self._path, data.rfind(b"\n") + 1)
        self._handle = self._path.open("a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._handle, MANIFEST_FIELDS, lineterminator="\n")
        if self._handle.tell() == 0:
            self._writer.writeheader()
        return self

    def append(self, record: RawRecord) -> None:
        self._writer.writerow(record.as_row())
        self._handle.flush()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._handle.close()


def earlier_records(names: set[str]) -> list[RawRecord]:
    """What earlier runs tried for the classes in `names`: the manifest and a killed run's
    journal, each (class, origin) once — a run killed after writing the manifest but before
    removing the journal leaves rows in both."""
    unique: dict[tuple[str, str], RawRecord] = {}
    for record in read_manifest() + read_journal():
        if record.class_name in names:
            unique.setdefault((record.class_name, record.origin), record)
    return list(unique.values())


def _remove_unreferenced(root: Path, referenced: set[str]) -> None:
    """Delete files under the class folders that no manifest row refers to."""
    for path in sorted(root.glob("*/**/*"), reverse=True):  # children before their folders
        relative = path.relative_to(root).as_posix()
        if path.is_file() and relative not in referenced:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    for folder in root.iterdir():
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


@dataclasses.dataclass(frozen=True)
class ClassRun:
    """What one run did for one class."""
    name: str
    report: ClassReport
    records: list[RawRecord]  # the inputs tried in this run


def _reason_kind(reason: str) -> str:
    return reason.split(":", 1)[0]  # reasons read "<kind>: <detail>"


def _summarise(runs: list[ClassRun], records: list[RawRecord]) -> str:
    """Per class: found, already tried by earlier runs, stored now, rejected now, files in all;
    then this run's rejections by kind and each class's problem."""
    files = collections.Counter(r.class_name for r in records if r.status == STORED)
    width = max(len("total"), *(len(run.name) for run in runs))
    header = ("found", "known", "stored", "rejected", "files")
    lines = [f"{'class':<{width}}" + "".join(f"  {title:>8}" for title in header)]
    totals = [0] * len(header)
    for run in runs:
        stored = sum(r.status == STORED for r in run.records)
        row = (run.report.found, run.report.known, stored, len(run.records) - stored,
               files[run.name])
        totals = [total + value for total, value in zip(totals, row)]
        lines.append(f"{run.name:<{width}}" + "".join(f"  {value:>8}" for value in row))
    lines.append(f"{'total':<{width}}" + "".join(f"  {value:>8}" for value in totals))
    kinds = collections.Counter(_reason_kind(r.reason) for run in runs for r in run.records
                                if r.status != STORED)
    if kinds:
        lines.append("rejected by reason:")
        lines += [f"  {count:>6}  {kind}" for kind, count in kinds.most_common()]
    problems = [f"  {run.name}: {run.report.problem}" for run in runs if run.report.problem]
    if problems:
        lines.append("problems (these classes got fewer images; the next run tries again):")
        lines += problems
    return "\n".join(lines)


def _collect(source: Source, specs: list[ClassSpec],
             earlier: list[RawRecord]) -> tuple[list[RawRecord], list[ClassRun]]:
    """Run the source over the classes, journaling every record; return earlier + new records."""
    known: dict[str, set[str]] = collections.defaultdict(set)
    for record in earlier:
        known[record.class_name].add(record.origin)
    store = RawStore(RAW_DIR)
    records, runs = list(earlier), []
    with Journal(RAW_JOURNAL) as journal:
        for spec in tqdm(specs, desc="scrape", unit="class"):
            new = []
            for record in source.collect(spec, store, known[spec.name]):
                journal.append(record)
                new.append(record)
            report = source.report(spec.name) or ClassReport(found=len(new))
            if report.problem:
                tqdm.write(f"scrape: {spec.name}: {report.problem}", file=sys.stderr)
            records.extend(new)
            runs.append(ClassRun(spec.name, report, new))
    return records, runs


def run(params: ScrapeStageParams) -> None:
    with contextlib.closing(make_source(params.scrape)) as source:
        specs = resolve_classes(params.classes, source)
        source.check_classes(specs)
        source.check_ready()
        # Incremental sources keep what earlier runs collected for the classes still listed.
        names = {spec.name for spec in specs}
        earlier = earlier_records(names) if source.incremental else []
        records, runs = _collect(source, specs, earlier)
    write_class_list(RAW_CLASSES, specs)
    write_csv(RAW_MANIFEST, MANIFEST_FIELDS, (record.as_row() for record in records))
    RAW_JOURNAL.unlink()  # its rows are in the manifest now
    referenced = {record.file for record in records if record.file}
    referenced |= {RAW_CLASSES.name, RAW_MANIFEST.name}
    _remove_unreferenced(RAW_DIR, referenced)
    print(_summarise(runs, records))
    if not any(record.status == STORED for record in records):
        # Stop here rather than let clean fail on an empty set; the manifest keeps every try.
        first = next((run.report.problem for run in runs if run.report.problem), "")
        raise StageError("no image was collected for any class"
                         + (f" (first problem: {first})" if first else "")
                         + "; is the network reachable? See the summary above and "
                         f"{RAW_MANIFEST}")


def main(argv: list[str] | None = None) -> int:
    return stage_main("scrape", run, ScrapeStageParams, argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())
