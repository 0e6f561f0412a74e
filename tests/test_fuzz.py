"""Fuzzing: no file, however broken, makes `decode_image` or the clean stage fail with anything
but a recorded ImageError.

Mutations of real files from ../shared/datasets (flowers-mini JPEGs as they are, plants-40 WebPs
as they are) and of PNG, GIF, JPEG and WebP files made from them with Pillow: bit flips (half of
them in the headers), truncations, spliced headers, overwritten and repeated byte runs, EXIF blocks
with wrong types, counts and offsets, and headers that claim huge, zero or absurd dimensions. The
generator is seeded: a failure names the seed and the mutation, and saves the bytes.
"""

from __future__ import annotations

import hashlib
import io
import random
import struct
import warnings
import zlib
from pathlib import Path
from typing import Callable

import pytest
from PIL import Image

from imgclf.core.classes import ClassSpec, write_class_list
from imgclf.core.files import read_csv, write_csv
from imgclf.core.images import MAX_ASPECT_RATIO, MAX_PIXELS, ImageError, decode, identify
from imgclf.stages import clean

from helpers.pictures import encoded

SEED = 20260601
MUTATIONS = 2400
CLASSES = ("a", "b", "c")
# Tags Pillow reads with a type of its own (rationals, shorts, IFD pointers, the maker note).
EXIF_TAGS = (0x0112, 0x011A, 0x011B, 0x0128, 0x0131, 0x0132, 0x829A, 0x8769, 0x8825, 0x9286,
             0x927C, 0xA001, 0xA002, 0xA005, 0x0201, 0x0202)
ODD_COUNTS = (0, 1, 2, 3, 8, 255, 65535, 2**20, 2**31 - 1, 2**32 - 1)
ODD_SIZES = (0, 1, 2, 255, 16383, 65535, 2**24 - 1, 2**31 - 1)

Mutation = Callable[[random.Random, bytes, list[bytes]], bytes]


def base_files(flowers: Path, plants: Path) -> list[bytes]:
    """Real files as they are, and small PNG, GIF, JPEG (some with EXIF) and WebP made from them."""
    photos = [sorted((flowers / cls).glob("*.jpg"))[1] for cls in sorted(
        p.name for p in flowers.iterdir() if p.is_dir())]
    leaves = [next(iter(sorted(folder.glob("*.webp")))) for folder in sorted(plants.iterdir())[:4]]
    files = [path.read_bytes() for path in photos[:2] + leaves[:2]]
    for number, path in enumerate(photos + leaves):
        with Image.open(path) as image:
            small = image.convert("RGB").resize((72, 56))
        orientation = Image.Exif()
        orientation[0x0112] = number % 8 + 1
        files += [encoded(small, "PNG"), encoded(small.quantize(64), "GIF"),
                  encoded(small, "JPEG", quality=80, exif=orientation),
                  encoded(small, "WEBP", quality=70)]
    return files


def flip_bits(rng: random.Random, data: bytes, _: list[bytes]) -> bytes:
    mutated = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        span = min(len(mutated), 256) if rng.random() < 0.5 else len(mutated)
        mutated[rng.randrange(span)] ^= 1 << rng.randrange(8)
    return bytes(mutated)


def truncate(rng: random.Random, data: bytes, _: list[bytes]) -> bytes:
    return data[:rng.randrange(len(data))]


def splice(rng: random.Random, data: bytes, others: list[bytes]) -> bytes:
    """The start of one file followed by the rest of another (a header over a foreign body)."""
    other = rng.choice(others)
    return data[:rng.randrange(1, min(len(data), 512))] + other[rng.randrange(len(other)):]


def overwrite_run(rng: random.Random, data: bytes, _: list[bytes]) -> bytes:
    start = rng.randrange(min(len(data), 64))
    run = rng.choice([bytes(rng.randrange(1, 16)), b"\xff" * rng.randrange(1, 16),
                      rng.randbytes(rng.randrange(1, 16))])
    return data[:start] + run + data[start + len(run):]


def repeat_run(rng: random.Random, data: bytes, _: list[bytes]) -> bytes:
    start = rng.randrange(len(data))
    run = data[start:start + rng.randrange(1, 4096)]
    return data[:start] + run * rng.randrange(2, 8) + data[start:]


def wrong_exif(rng: random.Random, data: bytes, _: list[bytes]) -> bytes:
    """The picture re-saved with an EXIF block whose entries have odd types, counts and offsets
    (a rational written as text, an IFD pointer that points at itself, a count past the end)."""
    entries, extra = [], b""
    odd = rng.randint(1, 6)
    if rng.random() < 0.5:  # a readable orientation: Pillow's exif_transpose then re-wrote EXIF
        entries.append(struct.pack("<HHIH2x", 0x0112, 3, 1, rng.randint(2, 8)))
    count = len(entries) + odd
    data_offset = 8 + 2 + 12 * count + 4
    for _ in range(odd):
        tag, kind = rng.choice(EXIF_TAGS), rng.choice([*range(0, 14), 255])
        value = rng.choice([b"72/1\0\0", b"\0\0", rng.randbytes(rng.randrange(0, 24))])
        number = rng.choice(ODD_COUNTS + (len(value),))
        if rng.random() < 0.3:  # a resolution (a rational) written as text, as some editors do
            tag, kind, value, number = rng.choice((0x011A, 0x011B)), 2, b"72/1\0\0", 6
        if tag in (0x8769, 0x8825) and rng.random() < 0.5:
            entries.append(struct.pack("<HHII", tag, 4, 1, 8))  # a sub-IFD that is this IFD
        elif len(value) <= 4:
            entries.append(struct.pack("<HHI", tag, kind, number) + value.ljust(4, b"\0"))
        else:
            entries.append(struct.pack("<HHII", tag, kind, number, data_offset + len(extra)))
            extra += value
    block = (b"Exif\0\0" + rng.choice([b"II*\0", b"MM\0*"]) + struct.pack("<I", 8)
             + struct.pack("<H", count) + b"".join(entries) + struct.pack("<I", 0) + extra)
    try:
        with Image.open(io.BytesIO(data)) as image:
            picture = image.convert("RGB")
    except Exception:  # noqa: BLE001 - an earlier mutation's output may not open: keep it
        return data
    return encoded(picture, rng.choice(["JPEG", "PNG", "WEBP"]), exif=block)


def huge_dimensions(rng: random.Random, data: bytes, _: list[bytes]) -> bytes:
    """Headers that claim another size: zero, one, or far beyond any pixel limit."""
    mutated = bytearray(data)
    width, height = rng.choice(ODD_SIZES), rng.choice(ODD_SIZES)
    if data.startswith(b"\x89PNG") and len(data) >= 33:
        mutated[16:24] = struct.pack(">II", width, height)
        mutated[29:33] = struct.pack(">I", zlib.crc32(bytes(mutated[12:29])))  # a valid CRC
    elif data.startswith(b"GIF") and len(data) >= 10:
        mutated[6:10] = struct.pack("<HH", width & 0xFFFF, height & 0xFFFF)
        descriptor = data.find(b"\x2c", 13)
        if descriptor > 0 and rng.random() < 0.5:
            mutated[descriptor + 5:descriptor + 9] = struct.pack("<HH", width & 0xFFFF,
                                                                height & 0xFFFF)
    elif data.startswith(b"RIFF") and len(data) >= 30:
        mutated[24:30] = (width & 0xFFFFFF).to_bytes(3, "little") + (
            height & 0xFFFFFF).to_bytes(3, "little")
    else:
        frame = max(data.find(b"\xff\xc0"), data.find(b"\xff\xc2"))
        if frame > 0:
            mutated[frame + 5:frame + 9] = struct.pack(">HH", height & 0xFFFF, width & 0xFFFF)
    return bytes(mutated)


MUTATORS: tuple[Mutation, ...] = (flip_bits, truncate, splice, overwrite_run, repeat_run,
                                  wrong_exif, huge_dimensions)


def mutations(files: list[bytes]) -> list[tuple[str, bytes]]:
    """(description, bytes) for MUTATIONS mutations, each kind as often as the others; a quarter
    get a second, random mutation on top."""
    rng = random.Random(SEED)
    made = []
    for number in range(MUTATIONS):
        source = rng.randrange(len(files))
        chain = [MUTATORS[number % len(MUTATORS)]]
        if rng.random() < 0.25:
            chain.append(rng.choice(MUTATORS))
        data = files[source]
        for mutator in chain:
            data = mutator(rng, data, files) or b"\0"  # an empty file is no test of a parser
        made.append((f"#{number} of file {source}: "
                     + "+".join(mutator.__name__ for mutator in chain), data))
    return made


@pytest.fixture(scope="module")
def fuzzed(flowers_mini: Path, plants_40: Path) -> list[tuple[str, bytes]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mutations(base_files(flowers_mini, plants_40))


def test_decode_raises_nothing_but_image_error(fuzzed: list[tuple[str, bytes]],
                                               tmp_path: Path) -> None:
    assert len(fuzzed) >= 2000
    escaped, decoded = [], 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about corrupt EXIF; that is fine
        for description, data in fuzzed:
            for check in (lambda: decode(data), lambda: decode(data, short_side=32),
                          lambda: identify(data)):
                try:
                    result = check()
                except ImageError:
                    continue
                except Exception as error:  # noqa: BLE001 - exactly what the test looks for
                    escaped.append((description, data, error))
                    continue
                if isinstance(result, str):
                    continue
                decoded += 1
                image = result.image
                assert image.mode == "RGB", description
                width, height = result.size
                assert width * height <= MAX_PIXELS, description
                assert max(width, height) <= MAX_ASPECT_RATIO * min(width, height), description
    for number, (description, data, _) in enumerate(escaped[:5]):
        (tmp_path / f"escaped-{number}.bin").write_bytes(data)
    assert not escaped, (f"seed {SEED}: {len(escaped)} inputs raised other errors, first: "
                         + "; ".join(f"{d}: {type(e).__name__}: {e}" for d, _, e in escaped[:5])
                         + f" (bytes saved in {tmp_path})")
    assert decoded > len(fuzzed) // 4  # the mutations are not all trivially unreadable


def test_clean_stage_records_every_fuzzed_file_and_goes_on(fuzzed: list[tuple[str, bytes]],
                                                           in_tmp_repo: Path,
                                                           make_params) -> None:
    raw = Path("data/raw")
    write_class_list(raw / "classes.csv", [ClassSpec(n, i, n) for i, n in enumerate(CLASSES)])
    rows, files = [], set()
    for number, (description, data) in enumerate(fuzzed):
        cls = CLASSES[number % len(CLASSES)]
        digest = hashlib.sha256(data).hexdigest()
        file = f"{cls}/{digest[:20]}.{('jpg', 'png', 'webp', 'gif')[number % 4]}"
        if file in files:
            continue
        files.add(file)
        (raw / file).parent.mkdir(parents=True, exist_ok=True)
        (raw / file).write_bytes(data)
        rows.append({"class": cls, "origin": description, "file": file, "sha256": digest,
                     "bytes": len(data), "status": "ok", "reason": ""})
    write_csv(raw / "manifest.csv", ("class", "origin", "file", "sha256", "bytes", "status",
                                     "reason"), rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clean.run(make_params({"clean.min_side": 8, "clean.short_side": 32,
                               "clean.workers": 2}))
    manifest = read_csv(Path("data/clean/manifest.csv"))
    assert sorted(row["file"] for row in manifest) == sorted(files)
    for row in manifest:
        assert row["status"] in ("kept", "dropped")
        if row["status"] == "dropped":
            assert row["reason"], row
        else:
            assert (Path("data/clean") / row["clean_file"]).is_file(), row
    assert sum(row["reason"].startswith("undecodable") for row in manifest) > len(manifest) // 4
