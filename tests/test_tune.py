"""`python -m imgclf tune`: Optuna studies on the validation split (tiny flowers-mini splits).

The multi-worker test starts a real PostgreSQL server (a throw-away cluster on 127.0.0.1) and
two worker processes; the others use the default journal file. Trials train for real: the
from-scratch CNN at 32 px, or MobileNetV2 from ../shared/weights at 64 px, one thread.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import optuna
import pytest
import torch
from optuna.trial import TrialState
from ruamel.yaml import YAML

from imgclf.__main__ import main
from imgclf.config.all import AllParams
from imgclf.core.errors import StageError
from imgclf.core.files import read_csv
from imgclf.core.params import ParamsError, load_params
from imgclf.core.paths import MODEL_PATH, SPLIT_FILES, TRAIN_LOG_DIR
from imgclf.tuning import search as tune

from helpers.dvcrepo import environment
from helpers.paths import REPO_ROOT
from helpers.splits import write_tiny_split
from helpers.webfake import free_port

CLASSES = ("daisy", "dandelion", "roses")
SPLIT = ("train",) * 6 + ("val",) * 4 + ("test",) * 2  # per class
CNN = {"arch": "simple_cnn", "pretrained": False, "epochs": 1, "batch_size": 6,
       "image_size": 32, "workers": 0, "device": "cpu"}
# Values of every searched key that train well on the tiny split (validation accuracy 0.67-0.75
# after one epoch with MobileNetV2, where a diverged network scores 0.33: all one class).
GOOD = {"lr": 0.001, "backbone_lr_factor": 0.1, "weight_decay": 0.0001, "label_smoothing": 0.1,
        "crop_scale": 0.25, "augment_magnitude": 0, "batch_size": 6}
HOPELESS_LR = [50.0, 200.0]  # AdamW at these rates turns every weight into NaN at once


def cnn(**changes) -> dict:
    """make_params overrides: the tiny CNN settings, with train keys changed."""
    return {f"train.{key}": value for key, value in {**CNN, **changes}.items()}


def write_params(root: Path, train: dict, search: dict | None = None) -> None:
    """The repository's params.yaml, comments and all, with train and tune keys changed."""
    document_yaml = YAML()
    document = document_yaml.load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))
    document["train"].update(train)
    document["tune"].update(search or {})
    with (root / "params.yaml").open("w", encoding="utf-8") as handle:
        document_yaml.dump(document, handle)


@pytest.fixture
def tune_repo(in_tmp_repo: Path, flowers_mini: Path) -> Path:
    write_tiny_split(in_tmp_repo, flowers_mini, CLASSES, SPLIT, side=64)
    write_params(in_tmp_repo, CNN, {"batch_size": [6, 12]})
    return in_tmp_repo


def run_tune(root: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "imgclf", "tune", *args], cwd=root,
                            env=environment(REPO_ROOT), capture_output=True, text=True)
    assert result.returncode == 0, f"tune {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
    return result


def journal_study(root: Path, name: str = "imgclf") -> optuna.Study:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(root / "tune/study.journal")))
    return optuna.load_study(study_name=name, storage=storage)


# ---- A real PostgreSQL server ------------------------------------------------------------------


def postgres_bin() -> Path:
    """The directory of initdb and pg_ctl (Debian: /usr/lib/postgresql/<version>/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                   key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0)
    if found:
        return found[-1].parent
    on_path = shutil.which("pg_ctl")
    if on_path is None:
        pytest.fail("PostgreSQL's server (initdb, pg_ctl) is missing: scripts/setup.sh installs "
                    "Debian's postgresql package", pytrace=False)
    return Path(on_path).parent


@pytest.fixture
def postgres() -> Iterator[str]:
    """A throw-away cluster on 127.0.0.1; yields its URL. PostgreSQL refuses to run as root, so
    as root the server runs as the `postgres` user, in a folder that user owns."""
    bindir = postgres_bin()
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data = Path(tempfile.mkdtemp(prefix="imgclf-pg-"))  # under /tmp: reachable by postgres
    port = free_port()
    try:
        if as_owner:
            shutil.chown(data, "postgres")
        subprocess.run([*as_owner, bindir / "initdb", "-D", data, "-A", "trust", "-U",
                        "postgres"], check=True, capture_output=True)
        subprocess.run([*as_owner, bindir / "pg_ctl", "-D", data, "-l", data / "server.log",
                        "-w", "-o", f"-k {data} -h 127.0.0.1 -p {port}", "start"],
                       check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_owner, bindir / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


# ---- The brief's three guarantees --------------------------------------------------------------


@pytest.mark.slow
def test_two_workers_share_one_postgres_study_prune_and_the_best_reaches_train(
        tune_repo: Path, postgres: str, mobilenet_v2_weights: Path) -> None:
    """Two good trials are queued first; every other trial is drawn from a hopeless learning
    rate range. Each worker's second trial starts after its first ended, so a completed good
    trial always exists when a hopeless one reports epoch 1, and the median rule must prune it
    there: pruning is certain, whatever the timing of the two workers."""
    write_params(tune_repo, {"arch": "mobilenet_v2", "pretrained": str(mobilenet_v2_weights),
                             "epochs": 2, "batch_size": 6, "image_size": 64, "workers": 0,
                             "device": "cpu", "lr": 0.002},
                 {"lr": HOPELESS_LR, "batch_size": [6, 12], "prune_after_trials": 1,
                  "prune_from_epoch": 1})
    shared = ["--storage", postgres, "--study", "shared"]
    run_tune(tune_repo, *shared, "--create")
    study = optuna.load_study(study_name="shared", storage=postgres)
    assert study.trials == []  # params.yaml's lr 0.002 lies outside [50, 200]: no baseline
    for lr in (0.001, 0.003):
        study.enqueue_trial({**GOOD, "lr": lr})

    workers = [subprocess.Popen([sys.executable, "-m", "imgclf", "tune", *shared, "--trials",
                                 "3", "--seed", str(seed)], cwd=tune_repo,
                                env=environment(REPO_ROOT), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for seed in (1, 2)]
    for worker in workers:
        output = worker.communicate(timeout=600)[0]
        assert worker.returncode == 0, output

    trials = optuna.load_study(study_name="shared", storage=postgres).trials
    assert len(trials) == 6
    assert {trial.state for trial in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    hopeless = [trial for trial in trials if trial.params["lr"] >= HOPELESS_LR[0]]
    assert len(hopeless) == 4
    assert all(trial.state == TrialState.PRUNED and trial.last_step == 1 for trial in hopeless), \
        [(trial.number, trial.state.name, trial.params, trial.intermediate_values)
         for trial in trials]
    for trial in trials:  # each trial's curve, in its own dvclive folder
        rows = (tune_repo / f"tune/shared/trial-{trial.number:03d}/plots/metrics/val/"
                "accuracy.tsv").read_text().splitlines()
        assert len(rows) - 1 == len(trial.intermediate_values)
    assert not MODEL_PATH.exists() and not TRAIN_LOG_DIR.exists()  # trials wrote elsewhere

    run_tune(tune_repo, *shared, "--trials", "0", "--apply")
    best = optuna.load_study(study_name="shared", storage=postgres).best_trial
    assert best.params["lr"] in (0.001, 0.003)
    applied = load_params(AllParams).train
    assert {key: getattr(applied, key) for key in best.user_attrs["train"]} \
        == best.user_attrs["train"]
    assert "# the new head's learning rate" in Path("params.yaml").read_text()

    subprocess.run([sys.executable, "-m", "imgclf", "train"], cwd=tune_repo, check=True,
                   env=environment(REPO_ROOT), capture_output=True)
    checkpoint = torch.load(MODEL_PATH, weights_only=True)
    assert {key: checkpoint["train_params"][key] for key in best.user_attrs["train"]} \
        == best.user_attrs["train"]
    # Same code, data, seed and values on CPU: train reproduces the best trial exactly.
    assert checkpoint["val_accuracy"] == best.value


# Runs `python -m imgclf tune ARGS` and writes every path the process opened to the file OUT.
AUDITED_TUNE = """
import os, sys
opened = []
sys.addaudithook(lambda event, args: opened.append(args[0]) if event == "open" else None)
from imgclf.__main__ import main
status = main(["tune", *sys.argv[2:]])
names = [os.fsdecode(path) for path in opened if isinstance(path, (str, bytes, os.PathLike))]
text = "\\n".join(names)
with open(sys.argv[1], "w") as out:
    out.write(text)
sys.exit(status)
"""


def test_tune_never_opens_the_test_split(tune_repo: Path) -> None:
    """Tests run as root, so an unreadable file proves nothing: Python's audit hook records
    every file the tune process opens, the trials' training included (train.workers is 0, so
    the images are decoded in that process)."""
    record = tune_repo / "opened.txt"
    subprocess.run([sys.executable, "-c", AUDITED_TUNE, str(record), "--trials", "2",
                    "--seed", "0", "--apply"], cwd=tune_repo, env=environment(REPO_ROOT),
                   check=True, capture_output=True)
    opened = {Path(name).resolve() for name in record.read_text().splitlines()}
    test_files = {SPLIT_FILES["test"].resolve()} | {
        Path(row["path"]).resolve() for row in read_csv(SPLIT_FILES["test"])}
    train_images = {Path(row["path"]).resolve() for row in read_csv(SPLIT_FILES["train"])}
    assert opened & train_images, "the hook saw no training image: is it recording at all?"
    assert SPLIT_FILES["val"].resolve() in opened
    assert not opened & test_files, sorted(map(str, opened & test_files))


def test_journal_file_is_the_default_and_a_study_goes_on_where_it_stopped(
        tune_repo: Path) -> None:
    MODEL_PATH.parent.mkdir()
    MODEL_PATH.write_bytes(b"the user's model")
    first = run_tune(tune_repo, "--trials", "2", "--seed", "3")
    assert "study 'imgclf' in tune/study.journal: 1 trials so far" in first.stdout  # baseline

    second = run_tune(tune_repo, "--trials", "1", "--seed", "4")
    assert "study 'imgclf' in tune/study.journal: 2 trials so far" in second.stdout
    study = journal_study(tune_repo)
    assert [trial.number for trial in study.trials] == [0, 1, 2]
    assert all(trial.state == TrialState.COMPLETE for trial in study.trials)
    baseline = {key: getattr(load_params(AllParams).train, key) for key in tune.SEARCHED}
    assert study.trials[0].params == baseline  # params.yaml's values, tried first, once
    assert all(trial.params != baseline for trial in study.trials[1:])

    for trial in study.trials:
        summary = json.loads((tune_repo / f"tune/imgclf/trial-{trial.number:03d}/metrics.json"
                              ).read_text())
        assert summary["best_val_accuracy"] == trial.value
    rows = read_csv(tune_repo / "tune/imgclf/trials.csv")
    assert [(int(row["trial"]), row["state"]) for row in rows] == [(0, "COMPLETE"),
                                                                    (1, "COMPLETE"),
                                                                    (2, "COMPLETE")]
    best = YAML(typ="safe").load((tune_repo / "tune/imgclf/best.yaml").read_text())
    assert best["trial"] == study.best_trial.number
    assert best["train"] == study.best_trial.user_attrs["train"]
    command = "dvc exp run " + " ".join(f"-S train.{key}={tune.scalar(value)}"
                                        for key, value in best["train"].items())
    assert command in second.stdout
    # Trials keep nothing but their logs: the user's model and train metrics are untouched.
    assert MODEL_PATH.read_bytes() == b"the user's model"
    assert not TRAIN_LOG_DIR.exists()
    assert not list((tune_repo / "tune/imgclf").glob(".trial-*"))


# ---- Pieces, in process ------------------------------------------------------------------------


def test_dvc_repro_never_starts_a_search() -> None:
    """tune is a command, not a stage, and no stage depends on the `tune` section."""
    stages = YAML(typ="safe").load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    assert all("tune" not in stage["cmd"] for stage in stages.values())
    assert all("tune" not in stage.get("params", []) for stage in stages.values())


def test_suggestions_stay_in_the_space_rounded_and_the_cnn_gets_no_weights(make_params) -> None:
    params = make_params({"train.arch": "mobilenet_v2", "train.pretrained": "DEFAULT"})
    space = params.tune
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = []
    study.optimize(lambda trial: drawn.append(tune.suggest(trial, params,
                                                           ["mobilenet_v2", "simple_cnn"])) or 0,
                   n_trials=40)
    for values in drawn:
        for key in tune.TuneParams.RANGES:
            low, high = getattr(space, key)
            assert low <= values[key] <= high, key
            if key != "augment_magnitude":
                assert values[key] == float(f"{values[key]:.3g}"), key  # 3 significant digits
        assert values["batch_size"] in space.batch_size
        assert values["pretrained"] == (False if values["arch"] == "simple_cnn" else "DEFAULT")
    assert {values["arch"] for values in drawn} == {"mobilenet_v2", "simple_cnn"}
    assert isinstance(drawn[0]["augment_magnitude"], int)


def test_a_queued_value_outside_the_space_is_trained_as_given(make_params) -> None:
    """Not clamped into the range (the multi-worker test queues good learning rates outside a
    hopeless range), nor rounded: rounding only keeps values drawn inside the range inside it."""
    params = make_params({"tune.lr": HOPELESS_LR})
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"lr": 0.00123456})
    with pytest.warns(UserWarning, match="out of range"):
        study.optimize(lambda trial: tune.suggest(trial, params, [])["lr"], n_trials=1)
    assert study.trials[0].value == 0.00123456


def test_first_trial_is_params_yaml_when_inside_the_space(tune_repo: Path, make_params,
                                                          capsys) -> None:
    storage = optuna.storages.InMemoryStorage()
    inside = make_params({**cnn(), "tune.batch_size": [6]})
    study = tune.open_study(storage, "inside", inside, [], seed=0)
    assert [trial.state for trial in study.trials] == [TrialState.WAITING]
    study.optimize(lambda trial: tune.suggest(trial, inside, []) and 0, n_trials=1)
    assert study.trials[0].params == {key: getattr(inside.train, key) for key in tune.SEARCHED}

    outside = make_params(cnn(lr=0.5))  # the default space: lr in [0.0001, 0.01]
    assert tune.open_study(storage, "outside", outside, [], seed=0).trials == []
    assert "params.yaml's train.lr 0.5 lies outside tune.lr [0.0001, 0.01]: its values are " \
        "not tried" in capsys.readouterr().out


def test_a_worker_with_other_settings_cannot_join_a_study(tune_repo: Path, flowers_mini: Path,
                                                         make_params) -> None:
    storage = optuna.storages.InMemoryStorage()
    tune.open_study(storage, "s", make_params(cnn()), [], seed=0)
    # Searched keys and machine settings may differ between workers...
    tune.open_study(storage, "s", make_params(cnn(lr=0.1, workers=2)), [], seed=1)
    # ...what the trials assumed may not.
    with pytest.raises(StageError, match=r"train\.image_size was 32, now 48"):
        tune.open_study(storage, "s", make_params(cnn(image_size=48)), [], seed=1)
    with pytest.raises(StageError, match="--archs was"):
        tune.open_study(storage, "s", make_params(cnn()), ["simple_cnn"], seed=1)
    write_tiny_split(tune_repo, flowers_mini, CLASSES, ("val",) * 3 + ("train",) * 6, side=64)
    with pytest.raises(StageError, match="train and validation lists"):
        tune.open_study(storage, "s", make_params(cnn()), [], seed=1)


def test_apply_writes_the_train_values_and_keeps_every_comment(in_tmp_repo: Path) -> None:
    original = (REPO_ROOT / "params.yaml").read_text(encoding="utf-8")
    Path("params.yaml").write_text(original, encoding="utf-8")
    tune.apply_to_params({"lr": 0.000123, "weight_decay": 1e-05, "batch_size": 16,
                          "arch": "simple_cnn", "pretrained": False})
    written = Path("params.yaml").read_text(encoding="utf-8")
    changed = [(old, new) for old, new in zip(original.splitlines(), written.splitlines())
               if old != new]
    assert len(written.splitlines()) == len(original.splitlines())
    assert [new.split("#")[0].strip() for _, new in changed] == [
        "arch: simple_cnn", "pretrained: false", "batch_size: 16", "lr: 0.000123",
        "weight_decay: 1e-05"]
    assert all(old.partition("#")[2] == new.partition("#")[2] for old, new in changed)
    train = load_params(AllParams).train
    assert (train.lr, train.weight_decay, train.batch_size, train.pretrained) == (
        0.000123, 1e-05, 16, False)


def test_apply_refuses_values_the_stages_would_refuse(in_tmp_repo: Path) -> None:
    original = (REPO_ROOT / "params.yaml").read_text(encoding="utf-8")
    Path("params.yaml").write_text(original, encoding="utf-8")
    with pytest.raises(ParamsError, match=r"train\.batch_size"):
        tune.apply_to_params({"lr": 0.01, "batch_size": 0})
    assert Path("params.yaml").read_text(encoding="utf-8") == original


@pytest.mark.parametrize("args, message", [
    (["--archs", "resnet18,lenet"], r"--archs: architectures among .* \(got 'lenet'\)"),
    (["--archs", "resnet18"], r"--archs: with train.pretrained a state-dict file .* "
                              r"\(got resnet18\)"),
    (["--study", "../x"], r"--study: letters, digits, .* \(got '\.\./x'\)"),
    (["--trials", "-1"], r"--trials: a number of trials >= 0 \(got -1\)"),
])
def test_bad_arguments_say_what_is_allowed(tune_repo: Path, mobilenet_v2_weights: Path,
                                           capsys, args: list[str], message: str) -> None:
    write_params(tune_repo, {"arch": "mobilenet_v2", "pretrained": str(mobilenet_v2_weights)})
    assert main(["tune", *args]) == 2
    error = capsys.readouterr().err
    assert error.startswith("imgclf tune: error: ")
    assert re.search(message, error), error


def test_unreachable_database_is_a_clear_error_without_the_password(tune_repo: Path,
                                                                    capsys) -> None:
    url = f"postgresql://postgres:secret@127.0.0.1:{free_port()}/postgres"
    assert main(["tune", "--storage", url]) == 2
    error = capsys.readouterr().err
    assert "--storage: cannot open postgresql://postgres:***@127.0.0.1" in error
    assert "secret" not in error


def test_a_study_without_completed_trials_has_no_best(tune_repo: Path, capsys) -> None:
    assert main(["tune", "--trials", "0"]) == 2
    assert "has no completed trial yet" in capsys.readouterr().err


@pytest.mark.parametrize("key, value, message", [
    ("lr", [0.01, 0.001], r"tune\.lr: \[low, high\] with low <= high \(got \[0\.01, 0\.001\]\)"),
    ("weight_decay", [0.0, 0.01], r"tune\.weight_decay: \[low, high\] with low > 0"),
    ("label_smoothing", [0.0, 1.0], r"tune\.label_smoothing: values that train\.label_smoothing "
                                    r"allows: a number >= 0 and < 1"),
    ("batch_size", [16, 0], r"tune\.batch_size: values that train\.batch_size allows"),
    ("augment_magnitude", [0.5, 3], r"tune\.augment_magnitude: \[low, high\]: the range"),
    ("crop_scale", [0.2], r"tune\.crop_scale: \[low, high\]: the range of train\.crop_scale"),
])
def test_bad_search_space_names_the_key(make_params, key: str, value, message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        make_params({f"tune.{key}": value})


def test_preloaded_training_leaves_randaugment_out_of_the_search(make_params) -> None:
    params = make_params({"train.preload": True, "tune.augment_magnitude": [0, 15]})
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = []
    study.optimize(lambda trial: drawn.append(tune.suggest(trial, params, [])) or 0, n_trials=5)
    assert all("augment_magnitude" not in values for values in drawn)
    assert all(tune.trial_params(params, values).train.augment_magnitude == 0
               for values in drawn)  # valid with preload: RandAugment stays off
