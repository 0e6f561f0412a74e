"""Atomic writes: a crash never leaves a half-written output in place.

Each writer puts the content into a temporary file or folder beside the target and then moves it
into place with one rename, which readers see either entirely or not at all. A temporary name
holds the writer's process id (`.<target>.<pid>.<random>.tmp`): what a killed run left behind is
removed by the next write of the same folder, manifest or metrics file, while a run still going
keeps its own. (Single images skip that look: it lists their whole folder, once per image.)
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Mapping, Sequence

# mkstemp/mkdtemp create owner-only entries; outputs should read like any file the user makes.
FILE_MODE, DIR_MODE = 0o644, 0o755


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def process_running(pid: int) -> bool:
    """Whether a process with this id exists (on this machine)."""
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def remove_stale_temporaries(path: Path) -> None:
    """Remove the temporary files and folders of `path` that a killed run left behind.

    A name without a process id comes from a version that wrote none: stale as well.
    """
    if not path.parent.is_dir():
        return
    pattern = re.compile(re.escape(f".{path.name}.") + r"(?:(\d+)\.)?[^/]*\.tmp")
    for leftover in path.parent.iterdir():
        match = pattern.fullmatch(leftover.name)
        if match is None or (match.group(1) and process_running(int(match.group(1)))):
            continue
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


@contextlib.contextmanager
def _atomic_file(path: Path, mode: str, **open_args: Any) -> Iterator[IO]:
    """Yield a handle on a temporary file beside `path` that replaces `path` when the block ends
    without an exception; on an exception the temporary file is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temporary_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_args) as handle:
            yield handle
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with _atomic_file(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    remove_stale_temporaries(path)
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_csv(path: Path, fieldnames: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Write rows as CSV (header first), atomically."""
    remove_stale_temporaries(path)
    with _atomic_file(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def file_md5(path: Path) -> str:
    """The file's MD5, as DVC records it in dvc.lock."""
    digest = hashlib.md5()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@contextlib.contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces `path` when the block succeeds.

    On an exception the temporary folder is removed and `path` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=_temporary_prefix(path), suffix=".tmp"))
    os.chmod(tmp, DIR_MODE)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(f".{path.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
