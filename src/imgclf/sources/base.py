"""Image sources for the scrape stage, behind one small interface.

A source turns a class (its name and search query) into image files: `collect` yields one
`RawRecord` per input it tried — stored, skipped or failed, with the reason — and saves images
through a `RawStore`, which names every file by its content hash. The stage, not the source,
decides what the manifest keeps and which files stay. After a class, `report` tells what the
records cannot: how many inputs the pages listed, and why a class got none (a captcha page).
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
from pathlib import Path
from typing import Iterator

from imgclf.core.classes import ClassSpec
from imgclf.core.files import atomic_write_bytes

MANIFEST_FIELDS = ("class", "query", "origin", "file", "sha256", "bytes", "status",
                   "http_status", "reason")
STORED = "ok"      # status of a record whose bytes were saved under data/raw
SKIPPED = "skipped"  # status of an input that was looked at and left out, with a reason


@dataclasses.dataclass(frozen=True)
class RawRecord:
    class_name: str
    origin: str        # where the bytes came from: a URL, a path, or `archive.zip!/entry`
    file: str = ""     # the saved file relative to data/raw, empty when nothing was saved
    sha256: str = ""
    bytes: int = 0
    status: str = STORED
    reason: str = ""
    query: str = ""       # the search query that found a URL; empty for local files
    http_status: int = 0  # the last HTTP status of a download; 0 when there was no response

    def as_row(self) -> dict[str, str | int]:
        return {"class": self.class_name, "query": self.query, "origin": self.origin,
                "file": self.file, "sha256": self.sha256, "bytes": self.bytes,
                "status": self.status, "http_status": self.http_status or "",
                "reason": self.reason}

    @classmethod
    def from_row(cls, row: dict[str, str]) -> RawRecord:
        # Manifests written before the query and http_status columns existed lack them.
        return cls(class_name=row["class"], origin=row["origin"], file=row["file"],
                   sha256=row["sha256"], bytes=int(row["bytes"] or 0), status=row["status"],
                   reason=row["reason"], query=row.get("query") or "",
                   http_status=int(row.get("http_status") or 0))


@dataclasses.dataclass(frozen=True)
class ClassReport:
    """What a source saw for one class beyond the records it yielded."""
    found: int           # inputs the source listed (tried now, or known from earlier runs)
    known: int = 0       # of those, inputs skipped because an earlier run already tried them
    problem: str = ""    # why the class got fewer inputs than it could: a captcha, no results


class RawStore:
    """Saves image bytes as data/raw/<class>/<sha256 prefix><suffix>.

    Content-hash names make exact copies collapse, keep names stable across runs, and keep
    names from the web or an archive off the file system. A file already there is not rewritten.
    """

    NAME_HEX_DIGITS = 20  # 80 bits: collisions are out of reach for any image collection

    def __init__(self, root: Path) -> None:
        self.root = root

    def save(self, spec: ClassSpec, data: bytes, suffix: str, origin: str) -> RawRecord:
        digest = hashlib.sha256(data).hexdigest()
        relative = f"{spec.name}/{digest[:self.NAME_HEX_DIGITS]}{suffix}"
        target = self.root / relative
        if not target.exists():
            atomic_write_bytes(target, data)
        return RawRecord(class_name=spec.name, origin=origin, file=relative, sha256=digest,
                         bytes=len(data))


class Source(abc.ABC):
    """Where images come from. Subclasses implement `collect` for one class at a time."""

    #: True for sources that add to what earlier runs saved (the web: never download twice);
    #: False for sources that the raw folder mirrors exactly (a local folder or archive).
    incremental: bool

    def class_names(self) -> list[str] | None:
        """Class names the source itself defines (folder names), or None if it has none."""
        return None

    def check_classes(self, specs: list[ClassSpec]) -> None:
        """Fail early, before anything is written, when the classes do not fit the source."""

    def check_ready(self) -> None:
        """Fail early, in seconds, when the source cannot work at all (its host unreachable)."""

    def report(self, class_name: str) -> ClassReport | None:
        """After `collect`: what it found for the class; None when its records say it all."""
        return None

    def close(self) -> None:
        """Release what the source holds (a browser, connections); called once, at the end."""

    @abc.abstractmethod
    def collect(self, spec: ClassSpec, store: RawStore,
                known_origins: set[str]) -> Iterator[RawRecord]:
        """Yield a record for each input tried for `spec`; skip origins in `known_origins`."""
