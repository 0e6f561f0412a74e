"""`python -m imgclf tune`: search train hyperparameters with Optuna, on the validation split.

A command, not a DVC stage: a plain `dvc repro` never starts a search nobody asked for. The
search's outcome reaches the pipeline as params: `--apply` writes the best trial's values into
params.yaml (comments kept), and every run prints the `dvc exp run -S ...` line that trains them
as an experiment instead.

- Each trial copies the validated params, replaces the searched train keys (the `tune` section
  of params.yaml, plus `train.arch` with `--archs`) and trains with `imgclf.training.fit`: the same code,
  seed, epochs and early stopping as the train stage, in one process. Its objective is the best
  validation accuracy over its epochs; the test split is never opened. On CPU, training the best
  trial's values again gives exactly the trial's validation accuracy.
- Pruning: after each epoch the trial reports its validation accuracy and stops when it is below
  the median of the completed trials at that epoch (Optuna's MedianPruner), once
  `tune.prune_after_trials` trials have completed and from epoch `tune.prune_from_epoch` on.
  The median rule is chosen over successive halving or Hyperband because studies here are small
  (tens of trials of a few epochs, where successive halving has two or three rungs and drops two
  trials in three at each) and because it needs no budget and acts the same with one worker or
  many.
- The first trial of a new study is params.yaml's own values when they lie inside the search
  space, so the best trial is never worse (on validation) than what is already there.
- Storage: a journal file (default tune/study.journal, no server), or a database URL such as
  postgresql://user@host/db that workers on several machines share (`--create` it first, then
  start the workers; each runs `--trials` trials). A study remembers what its trials assumed
  (seed, train keys not searched, train and validation lists); a worker whose params.yaml or data
  disagree refuses to add trials to it.
- Outputs under tune/<study>/ (git-ignored): trial-NNN/ (each trial's dvclive curves),
  trials.csv (every trial: state, value, train values) and best.yaml (the best trial's values).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
import yaml
from optuna.trial import FrozenTrial, TrialState
from ruamel.yaml import YAML

from imgclf.config.all import AllParams
from imgclf.config.train import TrainStageParams
from imgclf.core.cli import run_command
from imgclf.core.errors import StageError
from imgclf.core.files import atomic_write_text, write_csv
from imgclf.core.params import PARAMS_FILE, load_params, parse_params
from imgclf.training.fit import TRAINING_LISTS, fit
from imgclf.training.models import ARCHS, SIMPLE_CNN
from imgclf.tuning.params import TuneCommandParams, TuneParams

TUNE_DIR = Path("tune")
DEFAULT_STORAGE = TUNE_DIR / "study.journal"
DEFAULT_STUDY = "imgclf"
DEFAULT_TRIALS = 20
SEARCHED = (*TuneParams.RANGES, "batch_size")  # train keys searched in every study
# Train keys that do not change what a trial learns: workers on other machines may differ here.
MACHINE_KEYS = ("workers", "device", "nproc", "compile")
# Suggested numbers are rounded to this many significant digits: params.yaml gets 0.00123, not
# 0.0012297463, and the trial trains with exactly the value that is written.
DIGITS = 3
HEARTBEAT_SECONDS = 60  # database storage: a killed worker's trial is marked failed after 2x


# ---- Command line -------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m imgclf tune",
        description="Search train hyperparameters (the `tune` section of params.yaml) with "
                    "Optuna on the validation split; print and optionally apply the best.")
    parser.add_argument("--trials", type=int, default=DEFAULT_TRIALS,
                        help=f"trials this worker runs (default {DEFAULT_TRIALS}; 0: none, "
                             "only report the best)")
    parser.add_argument("--study", default=DEFAULT_STUDY,
                        help=f"study name (default {DEFAULT_STUDY}); logs go to tune/STUDY/")
    parser.add_argument("--storage", default=str(DEFAULT_STORAGE),
                        help=f"a journal file (default {DEFAULT_STORAGE}) or a database URL "
                             "shared by several workers, e.g. postgresql://user@host/db")
    parser.add_argument("--archs", default="",
                        help="also search train.arch among these comma-separated "
                             f"architectures ({', '.join(ARCHS)})")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the sampler (default: random); give one for a "
                             "reproducible single-worker study, never the same to two workers")
    parser.add_argument("--create", action="store_true",
                        help="create the study and exit (before starting several workers)")
    parser.add_argument("--apply", action="store_true",
                        help="write the best trial's train values into params.yaml")
    return parser


def main(argv: list[str] | None = None) -> int:
    options = _parser().parse_args(argv)  # before params.yaml is read: --help needs none
    return run_command("tune", lambda: run(load_params(TuneCommandParams), options))


def check_arguments(args: argparse.Namespace) -> None:
    if args.trials < 0:
        raise StageError(f"--trials: a number of trials >= 0 (got {args.trials})")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", args.study):
        raise StageError("--study: letters, digits, '_', '.' and '-' (it names a folder under "
                         f"tune/) (got {args.study!r})")


def run(params: TuneCommandParams, args: argparse.Namespace) -> None:
    """The command: open or create the study, run this worker's trials, report the best."""
    check_arguments(args)
    archs = parse_archs(args.archs, params)
    storage = open_storage(args.storage)
    study = open_study(storage, args.study, params, archs, args.seed)
    print(f"study {args.study!r} in {describe_storage(args.storage)}: "
          f"{len(study.trials)} trials so far")
    if args.create:
        return
    study_dir = TUNE_DIR / args.study
    study_dir.mkdir(parents=True, exist_ok=True)
    if args.trials:
        # Optuna's own log shows the sampler's unrounded numbers; print_trial shows the values
        # the trial trained with.
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # gc after each trial: a pruned trial's traceback holds its model and loaders.
        study.optimize(lambda trial: objective(trial, params, archs, study_dir),
                       n_trials=args.trials, gc_after_trial=True, callbacks=[print_trial])
    best = summarize(study, study_dir)
    if args.apply:
        apply_to_params(best.user_attrs["train"])
        print(f"{PARAMS_FILE}: train values of trial {best.number} written; "
              "`dvc repro` trains them")


def parse_archs(text: str, params: TuneCommandParams) -> list[str]:
    """--archs as a list; a state-dict file as train.pretrained fits train.arch alone."""
    archs = [name.strip() for name in text.split(",") if name.strip()]
    for arch in archs:
        if arch not in ARCHS:
            raise StageError(f"--archs: architectures among {', '.join(ARCHS)} (got {arch!r})")
    pretrained = params.train.pretrained
    foreign = [arch for arch in archs if arch not in (params.train.arch, SIMPLE_CNN)]
    if pretrained is not False and Path(pretrained).is_file() and foreign:
        raise StageError(f"--archs: with train.pretrained a state-dict file ({pretrained}) only "
                         f"{params.train.arch} and {SIMPLE_CNN} can be searched; set "
                         f"train.pretrained to a weights name such as DEFAULT for the others "
                         f"(got {', '.join(foreign)})")
    return archs


# ---- Storage and study --------------------------------------------------------------------------


def open_storage(spec: str) -> optuna.storages.BaseStorage:
    """A database URL (scheme://...) or the path of a journal file."""
    if "://" not in spec:
        path = Path(spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    try:
        # The heartbeat lets other workers mark the trial of a killed worker as failed. Optuna
        # calls it experimental; the warning would only alarm users.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(spec, heartbeat_interval=HEARTBEAT_SECONDS)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as error:
        detail = str(error).strip().splitlines()[0]
        raise StageError(f"--storage: cannot open {describe_storage(spec)} ({detail})") from None


def describe_storage(spec: str) -> str:
    """The storage for messages, without a password."""
    if "://" not in spec:
        return spec
    try:
        return sqlalchemy.engine.make_url(spec).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return "a database URL that cannot be parsed"


def open_study(storage: optuna.storages.BaseStorage, name: str, params: TuneCommandParams,
               archs: list[str], seed: int | None) -> optuna.Study:
    """Load the study, or create it (its conditions recorded, params.yaml's values queued as the
    first trial); refuse one whose trials assumed other params or data."""
    sampler = optuna.samplers.TPESampler(seed=seed)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=params.tune.prune_after_trials,
                                         n_warmup_steps=params.tune.prune_from_epoch)
    expected = conditions(params, archs)
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                    sampler=sampler, pruner=pruner)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler,
                                  pruner=pruner)
        check_conditions(name, study.user_attrs.get("conditions"), expected)
        return study
    study.set_user_attr("conditions", expected)
    outside = outside_space(params, archs)
    if outside:
        print(f"params.yaml's {outside}: its values are not tried as a trial")
    else:
        study.enqueue_trial(baseline_values(params, archs))
    return study


def conditions(params: TuneCommandParams, archs: list[str]) -> dict[str, Any]:
    """What every trial of a study shares: the seed, the train keys it does not search, the
    architectures it searches, and a digest of the train and validation lists."""
    searched = set(SEARCHED) | ({"arch"} if archs else set())
    fixed = {key: value for key, value in params.train.model_dump().items()
             if key not in searched and key not in MACHINE_KEYS}
    digest = hashlib.sha256()
    for path in TRAINING_LISTS:
        digest.update(path.read_bytes() if path.is_file() else b"")
    # Through JSON, as the storage keeps it, so that a loaded study compares equal.
    return json.loads(json.dumps({"seed": params.seed, "archs": archs,
                                  "train": fixed, "split": digest.hexdigest()}))


def check_conditions(name: str, recorded: dict | None, expected: dict[str, Any]) -> None:
    if recorded == expected:
        return
    if recorded is None:
        raise StageError(f"--study: study {name!r} was not created by `imgclf tune`; give "
                         "another name")
    if recorded["split"] != expected["split"]:
        difference = "the train and validation lists (data/split) differ"
    else:
        flat_recorded, flat_expected = _flatten(recorded), _flatten(expected)
        key = next(key for key in sorted(flat_recorded.keys() | flat_expected.keys())
                   if flat_recorded.get(key) != flat_expected.get(key))
        difference = (f"{key} was {flat_recorded.get(key)!r}, now "
                      f"{flat_expected.get(key)!r}")
    raise StageError(f"--study: study {name!r} was run with other settings ({difference}); "
                     "its trials do not compare with new ones: give another --study name, or "
                     "restore the setting")


def _flatten(conditions: dict[str, Any]) -> dict[str, Any]:
    flat = {f"train.{key}": value for key, value in conditions["train"].items()}
    return {**flat, "seed": conditions["seed"], "--archs": conditions["archs"]}


def baseline_values(params: TuneCommandParams, archs: list[str]) -> dict[str, Any]:
    """params.yaml's values of the searched keys."""
    values = {key: getattr(params.train, key) for key in SEARCHED}
    return {**values, "arch": params.train.arch} if archs else values


def outside_space(params: TuneCommandParams, archs: list[str]) -> str | None:
    """The first of params.yaml's searched values that the search space leaves out."""
    space, config = params.tune, params.train
    for key in TuneParams.RANGES:
        low, high = getattr(space, key)
        if not low <= getattr(config, key) <= high:
            return f"train.{key} {getattr(config, key)} lies outside tune.{key} {[low, high]}"
    if config.batch_size not in space.batch_size:
        return f"train.batch_size {config.batch_size} is not in tune.batch_size {space.batch_size}"
    if archs and config.arch not in archs:
        return f"train.arch {config.arch} is not in --archs {','.join(archs)}"
    return None


# ---- Trials -------------------------------------------------------------------------------------


def suggest(trial: optuna.Trial, params: TuneCommandParams, archs: list[str]) -> dict[str, Any]:
    """The trial's train values: the sampler's choice within the `tune` section's ranges."""
    space = params.tune
    values: dict[str, Any] = {}
    for key in TuneParams.RANGES:
        low, high = getattr(space, key)
        if key == "augment_magnitude" and params.train.preload:
            continue  # RandAugment works on Pillow images; preloaded training has none to give
        if key == "augment_magnitude":
            values[key] = trial.suggest_int(key, low, high)
        else:
            value = trial.suggest_float(key, low, high, log=key in TuneParams.LOG_SCALE)
            rounded = significant(value)
            # Rounding must not step out of the range (a queued trial's value may lie outside).
            values[key] = rounded if low <= rounded <= high else value
    values["batch_size"] = trial.suggest_categorical("batch_size", space.batch_size)
    if archs:
        values["arch"] = trial.suggest_categorical("arch", archs)
        # The from-scratch CNN has no pretrained weights; the others keep train.pretrained.
        values["pretrained"] = False if values["arch"] == SIMPLE_CNN \
            else params.train.pretrained
    return values


def significant(value: float, digits: int = DIGITS) -> float:
    if value == 0:
        return 0.0
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def trial_params(params: TuneCommandParams, values: dict[str, Any]) -> TrainStageParams:
    """The validated params with the trial's train values, trained in this one process."""
    raw = params.model_dump()
    raw["train"].update(values, nproc=1)
    return parse_params(TrainStageParams, raw)


def objective(trial: optuna.Trial, params: TuneCommandParams, archs: list[str], study_dir: Path) -> float:
    values = suggest(trial, params, archs)
    trial.set_user_attr("train", values)

    def report(epoch: int, accuracy: float) -> None:
        trial.report(accuracy, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"validation accuracy {accuracy:.4f} after epoch {epoch} "
                                     "is below the median of the completed trials")

    log_dir = study_dir / f"trial-{trial.number:03d}"
    # The trial's model and resume state are scratch: the chosen values are retrained by train.
    with tempfile.TemporaryDirectory(prefix=".trial-", dir=study_dir) as scratch:
        return fit(trial_params(params, values), on_epoch=report, log_dir=log_dir,
                   model_path=Path(scratch) / "model.pt")


# ---- Results ------------------------------------------------------------------------------------


def print_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    values = ", ".join(f"{key}={scalar(value)}"
                       for key, value in trial.user_attrs.get("train", {}).items())
    if trial.state == TrialState.PRUNED:
        outcome = f"pruned after epoch {trial.last_step}"
    elif trial.state == TrialState.COMPLETE:
        outcome = f"validation accuracy {trial.value:.4f}"
    else:
        outcome = trial.state.name.lower()
    line = f"trial {trial.number} {outcome} ({values})"
    if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        line += f"; best so far: trial {study.best_trial.number}, {study.best_value:.4f}"
    print(line, flush=True)


def summarize(study: optuna.Study, study_dir: Path) -> FrozenTrial:
    """Write trials.csv and best.yaml, print the best trial and how to train it."""
    trials = study.get_trials(deepcopy=False)
    write_trials_csv(study_dir / "trials.csv", trials)
    counts = {state: sum(trial.state == state for trial in trials) for state in TrialState}
    print(f"{len(trials)} trials: {counts[TrialState.COMPLETE]} complete, "
          f"{counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed, "
          f"{counts[TrialState.RUNNING] + counts[TrialState.WAITING]} running or waiting")
    if not counts[TrialState.COMPLETE]:
        raise StageError(f"study {study.study_name!r} has no completed trial yet: run trials "
                         "(--trials N) first")
    best = study.best_trial
    values = best.user_attrs["train"]
    command = "dvc exp run " + " ".join(f"-S train.{key}={scalar(value)}"
                                        for key, value in values.items())
    header = (f"# Best trial of study {study.study_name!r}: trial {best.number}, validation "
              f"accuracy {best.value:.4f} (its best epoch).\n"
              f"# Train it: python -m imgclf tune --study {study.study_name} --trials 0 "
              f"--apply && dvc repro\n#   or: {command}\n")
    atomic_write_text(study_dir / "best.yaml", header + yaml.safe_dump(
        {"study": study.study_name, "trial": best.number, "val_accuracy": best.value,
         "train": values}, sort_keys=False))
    print(f"best: trial {best.number}, validation accuracy {best.value:.4f}: "
          + ", ".join(f"train.{key}={scalar(value)}" for key, value in values.items()))
    print(f"train it as an experiment: {command}")
    print(f"or write it into params.yaml: python -m imgclf tune --study {study.study_name} "
          f"--trials 0 --apply")
    return best


def scalar(value: Any) -> str:
    """A value as YAML writes it (false, 16, 0.00123), for `dvc exp run -S`."""
    return json.dumps(value) if isinstance(value, bool) else str(value)


def write_trials_csv(path: Path, trials: list[FrozenTrial]) -> None:
    keys = list(dict.fromkeys(key for trial in trials for key in trial.user_attrs.get("train", {})))
    rows = [{"trial": trial.number, "state": trial.state.name,
             "val_accuracy": "" if trial.value is None else trial.value,
             "epochs": max(trial.intermediate_values, default=0),
             **trial.user_attrs.get("train", {}),
             "seconds": "" if trial.duration is None else round(trial.duration.total_seconds())}
            for trial in trials]
    write_csv(path, ["trial", "state", "val_accuracy", "epochs", *keys, "seconds"], rows)


def apply_to_params(values: dict[str, Any], path: Path = PARAMS_FILE) -> None:
    """Write train values into params.yaml, keeping its comments, order and quoting."""
    document_yaml = YAML()  # round-trip mode: comments and layout survive
    document_yaml.preserve_quotes = True
    document = document_yaml.load(path.read_text(encoding="utf-8"))
    for key, value in values.items():
        document["train"][key] = value
    buffer = io.StringIO()
    document_yaml.dump(document, buffer)
    parse_params(AllParams, yaml.safe_load(buffer.getvalue()))  # never write what stages refuse
    atomic_write_text(path, buffer.getvalue())
