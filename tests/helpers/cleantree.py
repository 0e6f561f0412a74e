"""data/clean as the clean stage leaves it, from real photos: files named by the content id of
their bytes (`<class>/<id>.jpg.jpg`), the manifest and the class list. Tests of the audit and of
curation in the label stage start from it, filing any photo under any class."""

from __future__ import annotations

import hashlib
from pathlib import Path

from imgclf import dedup
from imgclf.core.classes import classes_from_names, write_class_list
from imgclf.core.files import write_csv
from imgclf.core.images import decode_image, downscale_to_short_side
from imgclf.core.paths import CLEAN_CLASSES, CLEAN_DIR, CLEAN_MANIFEST
from imgclf.stages.clean import MANIFEST_COLUMNS, encode_jpeg


def write_clean_tree(root: Path, photos: dict[str, list[Path]], side: int = 80) -> list[str]:
    """File each class's photos under it (shrunk to `side` px on the short side), in class-name
    order; returns each photo's path under data/clean, in the order given."""
    rows, files = [], []
    for cls, paths in photos.items():
        for source in paths:
            image = downscale_to_short_side(decode_image(source), side)
            # The id of the raw bytes names the clean file: here the source's bytes.
            clean_file = f"{cls}/{hashlib.sha256(source.read_bytes()).hexdigest()[:20]}.jpg.jpg"
            stored = encode_jpeg(image, 90)
            target = root / CLEAN_DIR / clean_file
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(stored)
            files.append(clean_file)
            rows.append({"file": clean_file, "class": cls, "status": "kept", "reason": "",
                         "width": image.width, "height": image.height,
                         "phash": dedup.hash_hex(dedup.perceptual_hash(image)), "group": "",
                         "clean_file": clean_file,
                         "clean_sha256": hashlib.sha256(stored).hexdigest()})
    write_class_list(root / CLEAN_CLASSES, classes_from_names(sorted(photos)))
    write_csv(root / CLEAN_MANIFEST, MANIFEST_COLUMNS, rows)
    return files
