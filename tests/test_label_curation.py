"""Curation in the label stage: a person's decisions (data/curation.csv) and audit.auto_reject
applied before the split, on real photos; and, end to end with real `dvc`, that editing the
decisions re-runs the split and what follows it, never scrape, clean or audit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from imgclf.core.errors import ImgclfError
from imgclf.core.files import read_csv
from imgclf.core.params import ParamsError
from imgclf.core.paths import SPLIT_CURATION, SPLIT_FILES, SPLIT_METRICS, SPLIT_PER_CLASS, SUSPECTS
from imgclf.curation.decisions import Decision, content_id, write_decisions
from imgclf.curation.suspects import Suspect, write_suspects
from imgclf.stages import label

from helpers.cleantree import write_clean_tree
from helpers.config import NO_AUTO_REJECT
from helpers.dvcrepo import sh, stages_run, tiny_repository

CLASSES = ("daisy", "roses", "tulips")
SETTINGS = {"seed": 42, "label.val_size": 0.2, "label.test_size": 0.2, **NO_AUTO_REJECT}


@pytest.fixture
def clean_tree(in_tmp_repo: Path, flowers_mini: Path) -> list[str]:
    return write_clean_tree(in_tmp_repo, {name: sorted((flowers_mini / name).glob("*.jpg"))[:12]
                                          for name in CLASSES})


def split_rows() -> dict[str, dict[str, str]]:
    """Every split row by content id, with the split's name."""
    return {content_id(row["path"]): row | {"split": name}
            for name, path in SPLIT_FILES.items() for row in read_csv(path)}


def suspect(file: str, issue: str, score: float) -> Suspect:
    return Suspect(file, content_id(file), file.split("/")[0], "roses", issue, score)


def test_rejected_in_no_split_relabeled_in_its_new_class(clean_tree: list[str],
                                                         make_params) -> None:
    rejected, moved, kept = clean_tree[0], clean_tree[1], clean_tree[2]  # daisies
    write_decisions({content_id(rejected): Decision(content_id(rejected), "reject"),
                     content_id(moved): Decision(content_id(moved), "relabel", "tulips", "a tulip"),
                     content_id(kept): Decision(content_id(kept), "keep")})
    label.run(make_params(SETTINGS))

    rows = split_rows()
    assert content_id(rejected) not in rows and len(rows) == len(clean_tree) - 1
    tulips = [line["label"] for line in read_csv(SPLIT_FILES["train"]) if line["class"] == "tulips"]
    assert rows[content_id(moved)]["class"] == "tulips"
    assert rows[content_id(moved)]["label"] == tulips[0] == "2"
    assert rows[content_id(kept)]["class"] == "daisy"
    changes = read_csv(SPLIT_CURATION)
    assert sorted((c["image"], c["decision"], c["target"], c["by"]) for c in changes) == sorted([
        (content_id(rejected), "reject", "", "person"),
        (content_id(moved), "relabel", "tulips", "person")])
    per_class = {row["class"]: row for row in read_csv(SPLIT_PER_CLASS)}
    assert (per_class["daisy"]["removed"], per_class["daisy"]["moved_out"]) == ("1", "1")
    assert per_class["tulips"]["moved_in"] == "1"
    assert sum(int(per_class["daisy"][name]) for name in label.SPLITS) == 12 - 2
    curation = json.loads(SPLIT_METRICS.read_text())["curation"]
    assert (curation["rejected"], curation["relabeled"], curation["auto_rejected"]) == (1, 1, 0)
    assert curation["suspect_precision"] is None  # no audit ranking: nothing to carry over


def test_auto_reject_takes_undecided_suspects_over_the_threshold(clean_tree: list[str],
                                                                 make_params) -> None:
    stray, kept_stray, weak, swapped = clean_tree[0], clean_tree[12], clean_tree[13], clean_tree[24]
    write_suspects(SUSPECTS, [suspect(stray, "off-topic", 0.97),
                              suspect(kept_stray, "off-topic", 0.99),  # a person kept it
                              suspect(weak, "off-topic", 0.6),          # under the threshold
                              suspect(swapped, "mislabeled", 0.99)]     # its rule is off
                   + [suspect(file, "ok", 0.1) for file in clean_tree[25:]])
    write_decisions({content_id(kept_stray): Decision(content_id(kept_stray), "keep")})
    label.run(make_params(SETTINGS | {"audit.auto_reject.off_topic": 0.95}))

    rows = split_rows()
    assert content_id(stray) not in rows
    assert {content_id(kept_stray), content_id(weak), content_id(swapped)} <= set(rows)
    assert [(c["image"], c["by"]) for c in read_csv(SPLIT_CURATION)] == [(content_id(stray),
                                                                          "auto")]
    curation = json.loads(SPLIT_METRICS.read_text())["curation"]
    # 4 suspects: 1 reviewed (kept: precision 0), 1 rejected automatically, 2 left.
    assert {"suspects": 4, "reviewed_suspects": 1, "confirmed_suspects": 0,
            "unreviewed_suspects": 2, "auto_rejected": 1, "suspect_precision": 0.0,
            "estimated_wrong_left": 0.0}.items() <= curation.items()


def test_noise_left_carries_the_reviewed_precision_over(clean_tree: list[str],
                                                        make_params) -> None:
    suspects = [suspect(file, "off-topic", 0.9) for file in clean_tree[:6]]
    write_suspects(SUSPECTS, suspects + [suspect(file, "ok", 0.1) for file in clean_tree[6:]])
    # Two reviewed: one really wrong, one kept; four not reviewed -> 0.5 x 4 = 2 wrong left.
    first, second = content_id(clean_tree[0]), content_id(clean_tree[1])
    write_decisions({first: Decision(first, "reject"), second: Decision(second, "keep")})
    label.run(make_params(SETTINGS))
    curation = json.loads(SPLIT_METRICS.read_text())["curation"]
    assert curation["suspect_precision"] == 0.5 and curation["estimated_wrong_left"] == 2.0
    assert curation["estimated_noise_left"] == round(2 / (len(clean_tree) - 1), 4)


def test_auto_reject_without_the_ranking_says_what_to_run(clean_tree: list[str],
                                                          make_params) -> None:
    with pytest.raises(ImgclfError, match=r"suspects.csv not found: run `dvc repro audit`"):
        label.run(make_params(SETTINGS | {"audit.auto_reject.mislabeled": 0.99}))


@pytest.mark.parametrize("value, message", [
    (True, "false (never) or a score in 0..1"), (1.5, "false (never) or a score in 0..1")])
def test_auto_reject_thresholds_are_checked(make_params, value, message) -> None:
    with pytest.raises(ParamsError, match=re.escape(f"audit.auto_reject.off_topic: {message}")):
        make_params({"audit.auto_reject.off_topic": value})


@pytest.mark.slow
def test_editing_decisions_reruns_the_split_and_what_follows(tmp_path: Path, flowers_mini: Path,
                                                            mobilenet_v2_weights: Path) -> None:
    repo = tiny_repository(tmp_path / "repo", flowers_mini, mobilenet_v2_weights)
    assert stages_run(sh(repo, "dvc", "repro")) == ["scrape", "clean", "audit", "label", "train",
                                                     "evaluate", "export"]
    top = read_csv(repo / SUSPECTS)[0]
    assert content_id(top["file"]) == top["image"]
    (repo / "data/curation.csv").write_text(
        f"image,decision,class,note\n{top['image']},reject,,top suspect\n", encoding="utf-8")

    assert stages_run(sh(repo, "dvc", "repro")) == ["label", "train", "evaluate", "export"]
    listed = [row["path"] for path in SPLIT_FILES.values() for row in read_csv(repo / path)]
    assert f"data/clean/{top['file']}" not in listed
    metrics = json.loads((repo / "metrics/evaluate.json").read_text())
    assert metrics["curation_removed"] == 1 and metrics["curation_moved"] == 0
    # The automatic rule is label's key too: turning it on re-runs no audit either.
    params = (repo / "params.yaml").read_text(encoding="utf-8")
    (repo / "params.yaml").write_text(params.replace("off_topic: false", "off_topic: 0.99"),
                                      encoding="utf-8")
    assert stages_run(sh(repo, "dvc", "repro"))[0] == "label"
