"""The one tiny configuration of the tests: settings that make every stage take seconds (small
images, one epoch, no worker processes, one thread). Tests build params from the repository's
params.yaml with these overrides and their own (dotted keys: `train.epochs`), in process through
the `make_params` fixture, or written to a repository copy's params.yaml for real DVC runs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

import yaml

from helpers.paths import REPO_ROOT

# The automatic rejection off: a test of label's own work must not depend on what a 64 px audit of
# a few photos happens to score (tests of the rule set its thresholds themselves).
NO_AUTO_REJECT: dict[str, Any] = {"audit.auto_reject.off_topic": False,
                                  "audit.auto_reject.mislabeled": False}
TINY: dict[str, Any] = {
    **NO_AUTO_REJECT,
    "clean.min_side": 64, "clean.short_side": 80, "clean.workers": 1,
    "audit.image_size": 64, "audit.batch_size": 16,
    "label.val_size": 0.2, "label.test_size": 0.2,
    "train.arch": "mobilenet_v2", "train.epochs": 1, "train.batch_size": 4,
    "train.image_size": 64, "train.workers": 0, "train.device": "cpu",
    "evaluate.batch_size": 4, "evaluate.gallery_size": 8,
}


def raw_params(overrides: Mapping[str, Any] | None = None,
               base: Path = REPO_ROOT / "params.yaml") -> dict:
    """params.yaml as a mapping, with dotted overrides applied."""
    raw = copy.deepcopy(yaml.safe_load(base.read_text(encoding="utf-8")))
    for dotted, value in (overrides or {}).items():
        *sections, key = dotted.split(".")
        target = raw
        for section in sections:
            target = target[section]
        target[key] = value
    return raw


def write_params(repo: Path, overrides: Mapping[str, Any]) -> None:
    """Apply overrides to a repository copy's params.yaml (for DVC runs)."""
    path = repo / "params.yaml"
    path.write_text(yaml.safe_dump(raw_params(overrides, path), sort_keys=False),
                    encoding="utf-8")


def write_tiny_params(repo: Path, flowers: Path, weights: Path) -> None:
    """TINY for end-to-end runs: the folder source on `flowers`, MobileNetV2 from the state-dict
    file `weights`, batches a little larger (tens of images per split)."""
    write_params(repo, {**TINY, "classes": "", "scrape.source": "folder",
                        "scrape.folder": str(flowers), "train.pretrained": str(weights),
                        "audit.pretrained": str(weights),
                        "train.batch_size": 16, "evaluate.batch_size": 32})
