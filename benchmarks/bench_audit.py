"""The audit on data with known noise: how many of the planted pictures it finds, and its time.

Trusted data (../shared/datasets/plants-40) gets N pictures moved to another random class
(mislabeled) and N photos of another domain (flowers-mini) filed under random classes
(off-topic), in the training part only: a fifth of each class is set aside first as a clean test
set. The audit runs as the stage does (features of every picture from the shipped MobileNetV2,
then imgclf.curation.ranking.rank) on everything, and the benchmark reports, per kind:
- recall: the share of the N planted pictures among the 2N most suspicious;
- precision: among the N most suspicious pictures whose issue names that kind, the share that
  really are planted pictures of that kind (so it counts a wrong issue as a miss);
the plain baseline of issue 16 on the same features (5-fold logistic regression, cleanlab
self-confidence alone), what audit.auto_reject thresholds would remove (planted against
correct pictures), the effect of curation on a model (a logistic regression on the features,
trained on the noisy training part, on it after auto_reject, and on the truly clean part, tested
on the clean test set), and the time of the stage's two steps.

Cases: all of plants-40 at 160 px (the default), and harder ones: few pictures per class and a
smaller feature size, where the cross-validated classifier is often wrong. A harder case plants
only 10-15 pictures of a kind, so one picture moves a figure by 0.07-0.10: it is drawn several
times (`Case.draws`: other pictures per class, other planted ones) and the figures are the means
over the draws (counts: the sums). Then a whole class's
worth of one wrong kind (what one ambiguous query returns): a group of leaves of one species filed
under one flower class, flower photos filed under one leaf class, and the flowers alone, to show
what the audit asks a reviewer about in clean data.
With `--fine-tune`, each case also fine-tunes MobileNetV2 (the train stage's code, 96 px, 4
epochs) on its noisy training part, on what auto_reject leaves of it, and on its truly clean part,
and reports the test accuracy of each on the clean test set: minutes per case on two cores.
Usage: python benchmarks/bench_audit.py [--noise 100] [--only NAME] [--fine-tune] [--smoke]
(`--smoke`: 12 flowers-mini photos per class with 3 plants-40 leaves planted, 64 px, one epoch of
fine-tuning: seconds.)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from imgclf.config.train import TrainStageParams
from imgclf.core.classes import classes_from_names, write_class_list
from imgclf.core.files import write_csv
from imgclf.core.params import parse_params
from imgclf.core.paths import MODEL_PATH, SPLIT_CLASSES, SPLIT_COLUMNS, SPLIT_FILES
from imgclf.curation import features, ranking, scoring
from imgclf.training.checkpoint import load_checkpoint
from imgclf.training.datasets import ImageListDataset, make_loader, read_split
from imgclf.training.fit import fit
from imgclf.training.models import batch_logits

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
WEIGHTS = REPO_ROOT / "weights/mobilenet_v2-imagenet-fp16.pth"
THRESHOLDS = (0.9, 0.95, 0.98, 0.99)
FINE_TUNE_THRESHOLD = 0.98
# The fine-tuning runs: the stage's recipe made small enough for two CPU cores.
FINE_TUNE = {"image_size": 96, "epochs": 4, "batch_size": 32, "workers": 0, "device": "cpu"}
SMOKE_FINE_TUNE = {**FINE_TUNE, "image_size": 64, "epochs": 1}
PICTURE_SUFFIXES = {".jpg", ".webp"}
HARDER_DRAWS = 8
CLUSTER_MIN_SIZE = 5  # params.yaml's audit.cluster_min_size
CLEAN, MISLABELED, OFF_TOPIC = 0, 1, 2
KINDS = {MISLABELED: "mislabeled", OFF_TOPIC: "off-topic"}


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    trusted: Path
    foreign: Path
    per_class: int | None  # pictures per trusted class (None: all)
    noise: int             # N, per kind
    image_size: int
    draws: int = 1         # independent draws of pictures and noise, averaged


@dataclasses.dataclass
class Planted:
    paths: list[Path]
    labels: np.ndarray     # as filed (noise included)
    kind: np.ndarray       # CLEAN, MISLABELED or OFF_TOPIC
    test: np.ndarray       # the clean test set (never noisy)
    truth: np.ndarray      # the true class (-1: off-topic)
    class_names: list[str]


def plant_noise(case: Case, seed: int = 0) -> Planted:
    rng = np.random.default_rng(seed)
    class_names = sorted(path.name for path in case.trusted.iterdir() if path.is_dir())
    paths, truth = [], []
    for label, name in enumerate(class_names):
        files = sorted(path for path in (case.trusted / name).iterdir() if path.is_file())
        chosen = rng.permutation(len(files))[:case.per_class or len(files)]
        paths += [files[k] for k in sorted(chosen)]
        truth += [label] * len(chosen)
    truth = np.array(truth)
    test = np.zeros(len(paths), dtype=bool)
    for label in range(len(class_names)):
        members = rng.permutation(np.flatnonzero(truth == label))
        test[members[:len(members) // 5]] = True
    labels, kind = truth.copy(), np.zeros(len(paths), dtype=int)
    swapped = rng.choice(np.flatnonzero(~test), case.noise, replace=False)
    labels[swapped] = (labels[swapped] + rng.integers(1, len(class_names), case.noise)) \
        % len(class_names)
    kind[swapped] = MISLABELED
    foreign = sorted(path for path in case.foreign.glob("*/*") if path.is_file())
    extra = [foreign[k] for k in rng.choice(len(foreign), case.noise, replace=False)]
    return Planted(
        paths=paths + extra,
        labels=np.concatenate([labels, rng.integers(0, len(class_names), case.noise)]),
        kind=np.concatenate([kind, np.full(case.noise, OFF_TOPIC)]),
        test=np.concatenate([test, np.zeros(case.noise, dtype=bool)]),
        truth=np.concatenate([truth, np.full(case.noise, -1)]),
        class_names=class_names)


def found(order: np.ndarray, issues: np.ndarray, kind: np.ndarray, noise: int) -> dict:
    """Recall among the 2N most suspicious and precision among the N top suspects of a kind;
    `any`: the share of planted pictures (of either kind) among the N most suspicious, as the
    issue's baseline counts it."""
    top = order[:2 * noise]
    figures = {"any": float(np.mean(kind[order[:noise]] != CLEAN))}
    for value, name in KINDS.items():
        planted = np.flatnonzero(kind == value)
        recall = np.isin(planted, top).mean() if len(planted) else float("nan")
        named = [index for index in order if issues[index] == name][:noise]
        precision = float(np.mean(kind[named] == value)) if named else float("nan")
        figures[name] = (float(recall), precision)
    return figures


def print_flagged(issues: np.ndarray, kind: np.ndarray, draws: int = 1) -> None:
    """How many pictures the audit flags (what a reviewer is asked about), and how many of the
    planted ones are among them; per draw when `issues` and `kind` join several."""
    flagged = issues != "ok"
    counts = [np.sum(issues == "mislabeled"), np.sum(issues == "off-topic"),
              np.sum(flagged & (kind != CLEAN)), np.sum(kind != CLEAN)]
    mislabeled, off_topic, found_planted, planted = (f"{count / draws:g}" for count in counts)
    print(f"suspects flagged{' (a draw, on average)' if draws > 1 else ''}: {mislabeled} "
          f"mislabeled, {off_topic} off-topic; {found_planted} of the {planted} planted "
          "pictures among them")


def audit(paths: list[Path], labels: np.ndarray, class_names: list[str], image_size: int,
          seed: int) -> tuple[np.ndarray, list, float, float]:
    """Features and the stage's ranking, as the audit stage computes them, with both times."""
    network = features.feature_network("mobilenet_v2", str(WEIGHTS))
    start = time.perf_counter()
    vectors = features.extract_features(paths, network, image_size, 32)
    feature_seconds = time.perf_counter() - start
    files = [f"{class_names[label]}/{index:020x}.jpg" for index, label in enumerate(labels)]
    start = time.perf_counter()
    suspects = ranking.rank(files, vectors, labels, class_names, 5, seed, CLUSTER_MIN_SIZE)
    return vectors, suspects, feature_seconds, time.perf_counter() - start


def baseline(vectors: np.ndarray, labels: np.ndarray, n_classes: int, seed: int) -> dict:
    """Issue 16's plain baseline: 5-fold logistic regression, cleanlab self-confidence alone;
    its issue: mislabeled when another class is predicted, off-topic otherwise."""
    no_groups = np.full(len(labels), -1)
    probabilities = scoring.out_of_sample_probabilities(vectors, labels, no_groups, n_classes, 5,
                                                        seed)
    score = scoring.suspicion(labels, probabilities, np.zeros((len(labels), 1)))
    issues = np.where(probabilities.argmax(axis=1) != labels, "mislabeled", "off-topic")
    return {"order": np.argsort(-score, kind="stable"), "issues": issues,
            "accuracy": float(np.mean(probabilities.argmax(axis=1) == labels))}


def probe_accuracy(vectors: np.ndarray, labels: np.ndarray, train: np.ndarray,
                   planted: Planted) -> float:
    """A logistic regression on the features of `train`, tested on the clean test set."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(C=scoring.REGULARISATION, max_iter=scoring.MAX_ITERATIONS)
        model.fit(vectors[train], labels[train])
    return float(np.mean(model.predict(vectors[planted.test]) == planted.truth[planted.test]))


def validation_and_test(planted: Planted) -> tuple[np.ndarray, np.ndarray]:
    """The clean test set cut in two: every other picture selects the epoch, the rest tests."""
    alternate = np.arange(len(planted.paths)) % 2 == 0
    return planted.test & alternate, planted.test & ~alternate


def fine_tuned_accuracy(planted: Planted, train: np.ndarray, settings: dict,
                        seed: int) -> float:
    """Test accuracy of MobileNetV2 fine-tuned by the train stage's own code (imgclf.training.fit)
    on the pictures of `train` as filed, selected on half of the clean test set and tested on the
    other half; in a scratch folder, as the stage would find its split files there."""
    validation, test = validation_and_test(planted)
    names = planted.class_names
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))
    raw["seed"] = seed
    raw["train"].update(settings, pretrained=str(WEIGHTS))
    params = parse_params(TrainStageParams, raw)
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as scratch, \
            contextlib.chdir(scratch):
        write_class_list(SPLIT_CLASSES, classes_from_names(names))
        for split, chosen in (("train", train), ("val", validation), ("test", test)):
            labels = planted.labels if split == "train" else planted.truth
            write_csv(SPLIT_FILES[split], SPLIT_COLUMNS,
                      ({"path": str(planted.paths[index]), "label": int(labels[index]),
                        "class": names[labels[index]], "group": index}
                       for index in np.flatnonzero(chosen)))
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            fit(params)  # quiet: its progress bars would bury the figures
        trained = load_checkpoint(MODEL_PATH)
        samples = read_split(SPLIT_FILES["test"], names)
        loader = make_loader(ImageListDataset(samples, trained.transform),
                             64, workers=0, device=torch.device("cpu"))
        logits = torch.cat([batch for batch, _ in batch_logits(trained.model, loader,
                                                                torch.device("cpu"))])
    truth = torch.tensor([sample.label for sample in samples])
    return float((logits.argmax(dim=1) == truth).float().mean())


def print_fine_tuning(planted: Planted, issues: np.ndarray, score: np.ndarray,
                      settings: dict, seed: int) -> None:
    """The fine-tuned network's test accuracy with the noisy training part, after auto_reject
    at FINE_TUNE_THRESHOLD, and with the truly clean part."""
    train = ~planted.test
    rejected = (issues != "ok") & (score >= FINE_TUNE_THRESHOLD)
    runs = {"noisy": train, f"auto_reject {FINE_TUNE_THRESHOLD}": train & ~rejected,
            "truly clean": train & (planted.kind == CLEAN)}
    print(f"fine-tuned MobileNetV2 ({settings}), test accuracy on "
          f"{np.sum(validation_and_test(planted)[1])} clean pictures: " + ", ".join(
              f"{name} ({np.sum(chosen)} training pictures) "
              f"{fine_tuned_accuracy(planted, chosen, settings, seed):.3f}"
              for name, chosen in runs.items()))


@dataclasses.dataclass
class Draw:
    """One draw of a case: the planted data, its features and the audit's and baseline's
    rankings."""
    planted: Planted
    vectors: np.ndarray
    score: np.ndarray
    issues: np.ndarray
    order: np.ndarray
    baseline: dict
    seconds: tuple[float, float]  # features, ranking


def run_draw(case: Case, draw: int, seed: int) -> Draw:
    planted = plant_noise(case, draw)
    vectors, suspects, feature_seconds, rank_seconds = audit(
        planted.paths, planted.labels, planted.class_names, case.image_size, seed)
    score = np.array([suspect.score for suspect in suspects])
    return Draw(planted, vectors, score, np.array([suspect.issue for suspect in suspects]),
                np.argsort(-score, kind="stable"),
                baseline(vectors, planted.labels, len(planted.class_names), seed),
                (feature_seconds, rank_seconds))


def mean_found(rankings: list[tuple[np.ndarray, np.ndarray, np.ndarray]], noise: int) -> dict:
    """`found` of each draw's (order, issues, kind), averaged."""
    each = [found(order, issues, kind, noise) for order, issues, kind in rankings]
    return {key: tuple(np.nanmean([figures[key] for figures in each], axis=0))
            if key in KINDS.values() else float(np.mean([figures[key] for figures in each]))
            for key in each[0]}


def print_auto_reject(draws: list[Draw]) -> None:
    """Planted / correct training pictures each threshold removes (summed over the draws), and
    the probe's test accuracy on what it leaves (averaged)."""
    print("| auto_reject threshold | mislabeled: planted / correct removed | "
          "off-topic: planted / correct removed | probe test accuracy |")
    print("|---|---|---|---|")
    for threshold in THRESHOLDS:
        removed_counts = {name: [0, 0] for name in KINDS.values()}
        accuracies = []
        for d in draws:
            train = ~d.planted.test
            for name in KINDS.values():
                removed = (d.issues == name) & (d.score >= threshold) & train
                removed_counts[name][0] += int(np.sum(removed & (d.planted.kind > 0)))
                removed_counts[name][1] += int(np.sum(removed & (d.planted.kind == CLEAN)))
            kept = train & ~((d.issues != "ok") & (d.score >= threshold))
            accuracies.append(probe_accuracy(d.vectors, d.planted.labels, kept, d.planted))
        cells = [f"{planted} / {correct}" for planted, correct in removed_counts.values()]
        print(f"| {threshold} | {cells[0]} | {cells[1]} | {np.mean(accuracies):.3f} |")
    noisy = [probe_accuracy(d.vectors, d.planted.labels, ~d.planted.test, d.planted)
             for d in draws]
    clean = [probe_accuracy(d.vectors, d.planted.labels,
                            ~d.planted.test & (d.planted.kind == CLEAN), d.planted)
             for d in draws]
    print(f"probe test accuracy: noisy training data {np.mean(noisy):.3f}, "
          f"truly clean {np.mean(clean):.3f}")


def run_case(case: Case, seed: int, fine_tune: dict | None = None) -> None:
    draws = [run_draw(case, draw, seed) for draw in range(case.draws)]
    first = draws[0].planted
    seconds = np.mean([d.seconds for d in draws], axis=0)
    print(f"\n## {case.name}: {len(first.paths)} pictures, {len(first.class_names)} classes, "
          f"N = {case.noise} per kind, {case.image_size} px"
          + (f"; means over {case.draws} draws" if case.draws > 1 else ""))
    accuracy = np.mean([d.baseline["accuracy"] for d in draws])
    print(f"cross-validated classifier right on {accuracy:.2f} of the pictures; "
          f"stage time {seconds.sum():.1f} s (features {seconds[0]:.1f} s, "
          f"ranking {seconds[1]:.1f} s)")
    print("| ranking | mislabeled recall@2N | precision@N | off-topic recall@2N | precision@N "
          "| planted among top N |")
    print("|---|---|---|---|---|---|")
    rankings = {
        "baseline (self-confidence)": [(d.baseline["order"], d.baseline["issues"], d.planted.kind)
                                       for d in draws],
        "audit": [(d.order, d.issues, d.planted.kind) for d in draws]}
    for name, ranked in rankings.items():
        figures = mean_found(ranked, case.noise)
        print(f"| {name} | {figures['mislabeled'][0]:.2f} | {figures['mislabeled'][1]:.2f} | "
              f"{figures['off-topic'][0]:.2f} | {figures['off-topic'][1]:.2f} | "
              f"{figures['any']:.2f} |")
    print_flagged(np.concatenate([d.issues for d in draws]),
                  np.concatenate([d.planted.kind for d in draws]), len(draws))
    print_auto_reject(draws)
    if fine_tune is not None:  # minutes a run: on the first draw only
        print_fine_tuning(first, draws[0].issues, draws[0].score, fine_tune, seed)


@dataclasses.dataclass(frozen=True)
class GroupCase:
    """A whole class's worth of one wrong kind of picture: `group` pictures of `foreign` filed
    together under one class of `trusted` (`per_class` pictures a class; 0 planted: clean)."""
    name: str
    trusted: Path
    per_class: int
    foreign: Path          # a folder of pictures, in sub-folders or not
    group: int
    image_size: int = 160


def run_group_case(case: GroupCase, seed: int) -> None:
    class_names = sorted(path.name for path in case.trusted.iterdir() if path.is_dir())
    paths = [path for name in class_names
             for path in sorted((case.trusted / name).iterdir())[:case.per_class]]
    labels = [class_names.index(path.parent.name) for path in paths]
    filed_under = len(class_names) // 2
    paths += sorted(path for path in case.foreign.rglob("*")
                    if path.suffix.lower() in PICTURE_SUFFIXES)[:case.group]
    labels += [filed_under] * case.group
    kind = np.array([CLEAN] * (len(paths) - case.group) + [OFF_TOPIC] * case.group)
    _, suspects, feature_seconds, rank_seconds = audit(paths, np.array(labels), class_names,
                                                       case.image_size, seed)
    issues = np.array([suspect.issue for suspect in suspects])
    print(f"\n## {case.name}: {len(paths)} pictures, {len(class_names)} classes, "
          f"{case.image_size} px (stage time {feature_seconds + rank_seconds:.1f} s)")
    groups = {suspect.cluster for suspect in suspects if suspect.cluster}
    in_groups = np.array([bool(suspect.cluster) for suspect in suspects])
    print(f"foreign groups: {len(groups)}, {in_groups.sum()} pictures, "
          f"{np.sum(in_groups & (kind == OFF_TOPIC))} of them planted")
    if case.group:
        order = np.argsort([-suspect.score for suspect in suspects], kind="stable")
        recall, precision = found(order, issues, kind, case.group)["off-topic"]
        print(f"planted group: recall@2N {recall:.2f}, off-topic precision@N {precision:.2f}")
    print_flagged(issues, kind)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--noise", type=int, default=100, help="N: planted pictures per kind")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--only", default="", help="run only the cases whose name holds this")
    parser.add_argument("--fine-tune", action="store_true",
                        help="also fine-tune MobileNetV2 with and without auto_reject (minutes)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    plants, flowers = SHARED / "datasets/plants-40", SHARED / "datasets/flowers-mini"
    if args.smoke:
        cases = [Case("smoke", flowers, plants, 12, 3, 64, draws=2)]
    else:
        cases = [Case("plants-40", plants, flowers, None, args.noise, 160),
                 Case("harder: plants-40, 15 per class, 96 px", plants, flowers, 15, 15, 96,
                      HARDER_DRAWS),
                 Case("harder: plants-40, 10 per class, 160 px", plants, flowers, 10, 10, 160,
                      HARDER_DRAWS),
                 Case("harder: plants-40, 10 per class, 48 px", plants, flowers, 10, 10, 48,
                      HARDER_DRAWS)]
    fine_tune = SMOKE_FINE_TUNE if args.smoke else FINE_TUNE if args.fine_tune else None
    print(f"bench_audit: {time.strftime('%Y-%m-%d %H:%M')}, torch threads 1")
    for case in cases:
        if args.only in case.name:
            run_case(case, args.seed, fine_tune)
    leaves = sorted(path for path in plants.iterdir() if path.is_dir())[5]
    group_cases = [GroupCase("smoke group", flowers, 12, leaves, 5, 64)] if args.smoke else [
        GroupCase("clean: flowers-mini as it is", flowers, 40, leaves, 0),
        GroupCase("a foreign group: flowers-mini + 12 leaves of one species in one class",
                  flowers, 40, leaves, 12),
        GroupCase("a foreign group: plants-40, 30 per class + 20 flower photos in one class",
                  plants, 30, flowers, 20)]
    for group_case in group_cases:
        if args.only in group_case.name:
            run_group_case(group_case, args.seed)


if __name__ == "__main__":
    main()
