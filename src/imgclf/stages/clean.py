"""Clean stage: only valid RGB images of a minimum size, near-duplicates removed across the whole
set, the rest downscaled and stored as JPEG.

Reads data/raw (manifest and class list) and writes data/clean (images, manifest, class list) and
metrics/clean.json. The manifest has one row per stored raw image saying whether it was kept and,
if not, why: undecodable, too small, a duplicate of a named kept file, or ambiguous (the same
picture filed under two or more classes, so no label can be trusted and every copy goes). A kept
row carries the SHA-256 of the stored picture: the manifest then changes whenever any picture
does, so the later stages name it, not the folder, as their dependency in dvc.yaml (DVC checks a
named folder file by file, once for each stage that names it: docs/benchmarks.md, "Scale").
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import multiprocessing
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from imgclf import dedup
from imgclf.config.clean import CleanParams, CleanStageParams
from imgclf.core.classes import ClassSpec, read_class_list, write_class_list
from imgclf.core.cli import stage_main
from imgclf.core.errors import StageError
from imgclf.core.files import atomic_directory, read_csv, write_csv, write_json
from imgclf.core.images import ImageError, decode, downscale_to_short_side
from imgclf.core.paths import (
    CLEAN_CLASSES,
    CLEAN_DIR,
    CLEAN_MANIFEST,
    CLEAN_METRICS,
    RAW_CLASSES,
    RAW_DIR,
    RAW_MANIFEST,
)

MANIFEST_COLUMNS = ("file", "class", "status", "reason", "width", "height", "phash", "group",
                    "clean_file", "clean_sha256")
DROP_CATEGORIES = ("undecodable", "too_small", "duplicate", "ambiguous")
CHUNK_SIZE = 16  # images per task sent to a worker: fewer round trips, same order
# Freed picture buffers that Pillow keeps for the next picture (its block cache, off by default).
# Every image allocates the same few buffers (decoded, resized, thumbnail), and on the two-core VM
# mapping fresh pages for them cost about 2 ms of the 9 ms an image took (docs/benchmarks.md).
# A block is at most core.images.LARGE_PICTURE_BLOCK_BYTES: after a 50-megapixel picture at most
# 4 x 64 MB stay held until the next picture reuses, and shrinks, them.
KEPT_IMAGE_BLOCKS = 4


@dataclasses.dataclass(frozen=True)
class RawImage:
    cls: str
    file: str  # relative to data/raw, e.g. "daisy/3f2a...c1.jpg"


@dataclasses.dataclass
class Prepared:
    """One raw image after decoding; `thumbnail` is None when it was dropped before dedup."""
    raw: RawImage
    width: int | None = None
    height: int | None = None
    phash: int | None = None
    thumbnail: np.ndarray | None = None
    clean_file: str = ""
    clean_sha256: str = ""  # of the stored JPEG's bytes
    drop: str = ""     # one of DROP_CATEGORIES, or "" while kept
    reason: str = ""
    group: int | None = None  # duplicate group number, from 1


def run(params: CleanStageParams) -> None:
    classes = read_class_list(RAW_CLASSES)
    images = read_raw_manifest(RAW_MANIFEST, classes)
    with atomic_directory(CLEAN_DIR) as out:
        prepared = prepare_all(images, params.clean, out)
        drop_duplicates(prepared, params.clean)
        for item in prepared:
            if item.drop and item.clean_file:
                (out / item.clean_file).unlink()
        metrics = summarise(prepared)
        if metrics["kept"] == 0:
            raise StageError(f"clean kept no image out of {metrics['inputs']} "
                             f"(dropped: {metrics['dropped']}); check data/raw and clean.min_side")
        write_class_list(out / CLEAN_CLASSES.name, classes)
        write_csv(out / CLEAN_MANIFEST.name, MANIFEST_COLUMNS, (manifest_row(p) for p in prepared))
    write_json(CLEAN_METRICS, metrics)
    print(f"clean: kept {metrics['kept']} of {metrics['inputs']} images; dropped "
          + ", ".join(f"{count} {category}" for category, count in metrics["dropped"].items())
          + f" (reasons per image in {CLEAN_MANIFEST})")


def read_raw_manifest(path: Path, classes: list[ClassSpec]) -> list[RawImage]:
    """The stored images of the raw manifest (rows with a file), each once, sorted by file."""
    if not path.is_file():
        raise StageError(f"{path} not found: run the scrape stage first")
    rows = [row for row in read_csv(path) if row.get("file")]
    unknown = sorted({row["class"] for row in rows} - {spec.name for spec in classes})
    if unknown:
        raise StageError(f"{path}: classes {unknown} are not in {RAW_CLASSES}; "
                         "re-run the scrape stage so that the two agree")
    misplaced = [row["file"] for row in rows
                 if Path(row["file"]).parent.as_posix() != row["class"]]
    if misplaced:  # clean names are built from raw names: each must sit in its class's folder
        raise StageError(f"{path}: every file must be <class>/<name> of its row's class (got "
                         f"{misplaced[0]!r}); re-run the scrape stage")
    # Content-hash names: two rows naming one file are one picture found twice.
    return sorted({RawImage(row["class"], row["file"]) for row in rows}, key=lambda r: r.file)


def prepare_all(images: list[RawImage], params: CleanParams, out_dir: Path) -> list[Prepared]:
    """`prepare` every image with `params.workers` processes, results in input order."""
    work = functools.partial(prepare, params=params, out_dir=out_dir)
    progress = functools.partial(tqdm, total=len(images), desc="clean", unit="image")
    if params.workers == 1:
        with image_blocks_kept():
            return list(progress(map(work, images)))
    with multiprocessing.Pool(params.workers, initializer=keep_image_blocks) as pool:
        return list(progress(pool.imap(work, images, chunksize=CHUNK_SIZE)))


def keep_image_blocks() -> None:
    """Let Pillow reuse freed picture buffers in this process (a worker's initializer)."""
    Image.core.set_blocks_max(KEPT_IMAGE_BLOCKS)


@contextlib.contextmanager
def image_blocks_kept() -> Iterator[None]:
    """`keep_image_blocks` for a while in the calling process, then Pillow's setting as before
    (which frees the kept blocks when it was 0)."""
    previous = Image.core.get_blocks_max()
    keep_image_blocks()
    try:
        yield
    finally:
        Image.core.set_blocks_max(previous)


def clean_name(raw_file: str) -> str:
    """The data/clean name of a raw file: its whole name plus `.jpg`, so that two raw files
    never share one (`x.jpg` and `x.png` hold the same bytes when a folder had both)."""
    return f"{raw_file}.jpg"


def prepare(raw: RawImage, params: CleanParams, out_dir: Path) -> Prepared:
    """Decode, check the size, downscale, hash and store one image (runs in a worker).

    No file can stop the stage: decode turns whatever a file does into ImageError, and running
    out of memory on one picture drops that picture.
    """
    try:
        return _prepare(raw, params, out_dir)
    except ImageError as error:
        return Prepared(raw, drop="undecodable", reason=f"undecodable: {error}")
    except MemoryError:
        return Prepared(raw, drop="undecodable", reason="undecodable: out of memory")


def _prepare(raw: RawImage, params: CleanParams, out_dir: Path) -> Prepared:
    # A JPEG is decoded at a reduced size when it stays above short_side: it is shrunk to that
    # anyway, and a 50-megapixel photo then costs a sixty-fourth of the memory.
    decoded = decode(RAW_DIR / raw.file, short_side=params.short_side)
    width, height = decoded.size
    if min(width, height) < params.min_side:
        return Prepared(raw, width, height, drop="too_small",
                        reason=f"too small: {width}x{height}, shorter side below "
                               f"clean.min_side={params.min_side}")
    small = downscale_to_short_side(decoded.image, params.short_side)
    clean_file = clean_name(raw.file)
    target = out_dir / clean_file
    target.parent.mkdir(parents=True, exist_ok=True)
    stored = encode_jpeg(small, params.jpeg_quality)
    target.write_bytes(stored)
    return Prepared(raw, width, height, dedup.perceptual_hash(small), dedup.thumbnail(small),
                    clean_file, hashlib.sha256(stored).hexdigest())


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    """JPEG bytes; the same pixels and quality always give the same bytes (no timestamps)."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def drop_duplicates(prepared: list[Prepared], params: CleanParams) -> None:
    """Group confirmed near-duplicates across all classes and mark the copies as dropped."""
    candidates = [item for item in prepared if item.thumbnail is not None]
    if not candidates:
        return
    hashes = np.array([item.phash for item in candidates], dtype=np.uint64)
    thumbnails = np.stack([item.thumbnail for item in candidates])
    pairs = dedup.confirmed_pairs(thumbnails, dedup.candidate_pairs(hashes, params.hash_distance),
                                  params.pixel_tolerance)
    for number, members in enumerate(duplicate_groups(candidates, pairs), start=1):
        for item in members:
            item.group = number
        resolve_group(members)


def duplicate_groups(items: list[Prepared], pairs: np.ndarray) -> list[list[Prepared]]:
    """Groups of two or more items, in the order of their first member."""
    ids = dedup.group_ids(len(items), pairs)
    members: dict[int, list[Prepared]] = {}
    for item, group in zip(items, ids):
        members.setdefault(int(group), []).append(item)
    return [group for group in members.values() if len(group) > 1]


def resolve_group(members: list[Prepared]) -> None:
    """Within one class keep the largest original (then the first name); across classes the
    label is unknowable, so drop every member."""
    classes = sorted({item.raw.cls for item in members})
    if len(classes) > 1:
        for item in members:
            item.drop = "ambiguous"
            item.reason = f"ambiguous: the same picture is filed under {', '.join(classes)}"
        return
    keeper = min(members, key=lambda item: (-item.width * item.height, item.raw.file))
    for item in members:
        if item is not keeper:
            item.drop = "duplicate"
            item.reason = f"duplicate of {keeper.clean_file}"


def summarise(prepared: list[Prepared]) -> dict:
    dropped = Counter(item.drop for item in prepared if item.drop)
    return {
        "inputs": len(prepared),
        "kept": sum(1 for item in prepared if not item.drop),
        "dropped": {category: dropped[category] for category in DROP_CATEGORIES},
        "duplicate_groups": len({item.group for item in prepared if item.group is not None}),
    }


def manifest_row(item: Prepared) -> dict[str, object]:
    return {
        "file": item.raw.file,
        "class": item.raw.cls,
        "status": "dropped" if item.drop else "kept",
        "reason": item.reason,
        "width": item.width or "",
        "height": item.height or "",
        "phash": "" if item.phash is None else dedup.hash_hex(item.phash),
        "group": item.group or "",
        "clean_file": "" if item.drop else item.clean_file,
        "clean_sha256": "" if item.drop else item.clean_sha256,
    }


def main(argv: list[str] | None = None) -> int:
    return stage_main("clean", run, CleanStageParams, argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())
