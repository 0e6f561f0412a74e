"""The label stage's outputs, made directly from flowers-mini photos: tests of train, evaluate,
export and tuning start from a split of a few tiny images."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from imgclf.core.files import write_csv
from imgclf.core.paths import SPLIT_CLASSES, SPLIT_CURATION, SPLIT_FILES
from imgclf.curation.apply import CHANGE_COLUMNS

TINY_CLASSES = ("daisy", "dandelion", "roses")
# Per class: 4 train, 2 val, 2 test images.
TINY_SPLIT = ("train",) * 4 + ("val",) * 2 + ("test",) * 2
FLOWERS = ("daisy", "dandelion", "roses", "sunflowers", "tulips")


def write_tiny_split(root: Path, flowers_mini: Path, classes: tuple[str, ...] = TINY_CLASSES,
                     pattern: tuple[str, ...] = TINY_SPLIT, side: int = 64) -> None:
    """The label stage's outputs for flowers-mini photos: the first len(pattern) of each class,
    assigned to splits by `pattern`, shrunk to `side` px squares."""
    rows: dict[str, list[dict]] = {name: [] for name in SPLIT_FILES}
    for label, name in enumerate(classes):
        for split, source in zip(pattern, sorted((flowers_mini / name).glob("*.jpg"))):
            relative = Path("data/clean") / name / source.name
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            with Image.open(source) as image:
                image.convert("RGB").resize((side, side)).save(root / relative)
            rows[split].append({"path": relative.as_posix(), "label": label, "class": name,
                                "group": source.stem})
    for split, path in SPLIT_FILES.items():
        write_csv(root / path, ("path", "label", "class", "group"), rows[split])
    write_csv(root / SPLIT_CURATION, CHANGE_COLUMNS, [])  # nothing curated
    write_csv(root / SPLIT_CLASSES, ("name", "label", "query"),
              ({"name": name, "label": i, "query": name} for i, name in enumerate(classes)))
