"""A tiny untrained model and a mixed folder of files, shared by the predict, export and serve
tests: behaviour, not accuracy, is what they check."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from imgclf.modelcard import ModelCard
from imgclf.training.checkpoint import save_checkpoint
from imgclf.training.models import build_model
from imgclf.training.transforms import Preprocessing

from helpers.webfake import bomb_png

CLASSES = ["daisy", "dandelion", "roses", "sunflowers"]


def write_checkpoint(path: Path, arch: str = "simple_cnn", classes: list[str] = CLASSES,
                     image_size: int = 64) -> Path:
    torch.manual_seed(0)  # the same random weights in every run
    card = ModelCard(format_version=1, arch=arch, classes=classes,
                     preprocessing=Preprocessing.for_size(image_size), epoch=1, val_accuracy=0.5,
                     train_params={})
    save_checkpoint(path, build_model(arch, len(classes)).state_dict(), card)
    return path


def photos(flowers_mini: Path, count: int) -> list[Path]:
    """`count` real photos, taken from every class in turn."""
    folders = sorted(path for path in flowers_mini.iterdir() if path.is_dir())
    files = [sorted(folder.glob("*.jpg")) for folder in folders]
    return [files[i % len(files)][i // len(files)] for i in range(count)]


def mixed_folder(folder: Path, flowers_mini: Path, good: int = 5) -> tuple[list[Path], dict]:
    """A folder (with a sub-folder) of good photos and bad files.

    Returns the good photos' paths and {bad file: words its error must contain}."""
    (folder / "more").mkdir(parents=True)
    good_paths = []
    for index, source in enumerate(photos(flowers_mini, good)):
        target = folder / ("more" if index % 2 else "") / f"good{index}.jpg"
        shutil.copy(source, target)
        good_paths.append(target)
    bad = {folder / "truncated.jpg": "truncated",
           folder / "notes.txt": "not an image file",
           folder / "more" / "bomb.png": "too many pixels"}
    (folder / "truncated.jpg").write_bytes(good_paths[0].read_bytes()[:2000])
    (folder / "notes.txt").write_text("a shopping list, not a photo\n")
    (folder / "more" / "bomb.png").write_bytes(bomb_png())
    return good_paths, bad


class _RunsCodeWhenUnpickled:
    """A pickle payload: unpickling it without weights_only would create `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def bad_checkpoints(folder: Path) -> dict[str, tuple[Path, str]]:
    """Checkpoints that must be refused: {case: (file, what the error says)}."""
    good = torch.load(write_checkpoint(folder / "good.pt"), weights_only=True)
    cases = {
        "unknown arch": ({**good, "arch": "vgg99"}, r"arch: one of mobilenet_v3_large, .*"
                                                    r"simple_cnn \(got 'vgg99'\)"),
        "other arch": ({**good, "arch": "resnet18"},
                       r"state_dict: weights of a resnet18 with 4 classes \(got weights that "
                       r"do not fit: .*Missing key"),
        "class count": ({**good, "classes": CLASSES[:3]},
                        r"classes: as many names as the weights' head has outputs \(4\) "
                        r"\(got 3 names\)"),
        "no classes": ({k: v for k, v in good.items() if k != "classes"},
                       r"classes: a list of distinct, non-empty class names \(missing\)"),
        "duplicate classes": ({**good, "classes": ["a", "a", "b", "c"]},
                              r"classes: a list of distinct, non-empty class names"),
        "bad preprocessing": ({**good, "preprocessing": {"image_size": 64}},
                              r"preprocessing: image_size and resize_size \(integers, 16 <= "
                              r"image_size <= resize_size <= 2048\), mean and std"),
        "huge image size": ({**good, "preprocessing": {**good["preprocessing"],
                                                       "image_size": 100_000}},
                            r"preprocessing: .*\(got \{'image_size': 100000"),
        "zero std": ({**good, "preprocessing": {**good["preprocessing"], "std": [0, 1, 1]}},
                     r"preprocessing: .*std > 0"),
        "code inside": ({**good, "payload": _RunsCodeWhenUnpickled(folder / "pwned")},
                        r"not a readable PyTorch file \(Weights only load failed"),
    }
    files = {}
    for name, (content, message) in cases.items():
        path = folder / (name.replace(" ", "_") + ".pt")
        torch.save(content, path)
        files[name] = (path, message)
    (folder / "empty.pt").write_bytes(b"")
    files["empty file"] = (folder / "empty.pt", r"not a readable PyTorch file \(EOFError\)")
    return files
