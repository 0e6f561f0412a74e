"""Train stage: a tiny real split (flowers-mini at 64 px), one or two epochs, one thread."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from imgclf.core.errors import StageError
from imgclf.core.files import read_csv, write_csv
from imgclf.core.paths import MODEL_PATH, SPLIT_FILES, TRAIN_LOG_DIR
from imgclf.stages import train
from imgclf.training import fit, loop
from imgclf.training.checkpoint import load_checkpoint
from imgclf.training.models import SimpleCNN, build_model

from helpers.config import TINY
from helpers.splits import FLOWERS, TINY_CLASSES, write_tiny_split


@pytest.fixture
def tiny_repo(in_tmp_repo: Path, flowers_mini: Path) -> Path:
    write_tiny_split(in_tmp_repo, flowers_mini)
    return in_tmp_repo


def _tsv(name: str) -> list[dict[str, str]]:
    with (TRAIN_LOG_DIR / "plots" / "metrics" / f"{name}.tsv").open() as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def test_train_writes_the_best_model_and_dvclive_logs(tiny_repo, make_params,
                                                       mobilenet_v2_weights):
    params = make_params({**TINY, "train.arch": "mobilenet_v2", "train.epochs": 2,
                          "train.warmup_epochs": 1, "train.pretrained": str(mobilenet_v2_weights)})
    train.run(params)

    summary = json.loads((TRAIN_LOG_DIR / "metrics.json").read_text())
    for name in ("train/loss", "train/accuracy", "val/loss", "val/accuracy", "lr",
                 "images_per_second"):
        rows = _tsv(name)
        assert [row["step"] for row in rows] == ["1", "2"], name
    val_accuracy = [float(row["accuracy"]) for row in _tsv("val/accuracy")]
    val_loss = [float(row["loss"]) for row in _tsv("val/loss")]
    ranked = list(zip(val_accuracy, [-loss for loss in val_loss]))
    best_epoch = ranked.index(max(ranked)) + 1  # the best accuracy; on a tie, the lower loss
    assert summary["best_epoch"] == best_epoch
    assert summary["best_val_accuracy"] == pytest.approx(max(val_accuracy))
    correct = summary["train"]["accuracy"] * 12  # of the 12 training images
    assert correct == pytest.approx(round(correct))
    assert summary["images_per_second"] > 0
    # 3 steps an epoch; one warm-up epoch: the first step at a third of lr, epoch 2 at full lr.
    assert [float(row["lr"]) for row in _tsv("lr")] == pytest.approx([params.train.lr / 3,
                                                                      params.train.lr])

    trained = load_checkpoint(MODEL_PATH)
    assert (trained.card.arch, trained.card.classes) == ("mobilenet_v2", list(TINY_CLASSES))
    assert trained.card.epoch == best_epoch
    assert trained.card.val_accuracy == pytest.approx(max(val_accuracy))
    assert trained.card.preprocessing.image_size == 64
    checkpoint = torch.load(MODEL_PATH, weights_only=True)
    assert checkpoint["train_params"]["arch"] == "mobilenet_v2"
    assert checkpoint["train_params"]["seed"] == params.seed


def test_train_is_deterministic_on_cpu(tiny_repo, make_params):
    params = make_params({**TINY, "train.arch": "simple_cnn", "train.pretrained": False,
                          "train.epochs": 2})
    summaries, weights = [], []
    for _ in range(2):
        train.run(params)
        summary = json.loads((TRAIN_LOG_DIR / "metrics.json").read_text())
        del summary["images_per_second"]  # wall-clock speed, the one thing that may differ
        summaries.append(summary)
        weights.append(torch.load(MODEL_PATH, weights_only=True)["state_dict"])
    assert summaries[0] == summaries[1]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_best_validation_epoch_is_kept_and_training_stops_early(tiny_repo, make_params,
                                                                 monkeypatch):
    scripted = iter([0.5, 0.8, 0.7, 0.8, 0.9, 0.95])  # epoch 2 best, then 2 epochs no better

    def scripted_evaluate(*args, **kwargs):
        return loop.EpochStats(1.0, next(scripted), 1.0)  # one loss: epoch 4 is no better

    monkeypatch.setattr(fit, "evaluate", scripted_evaluate)
    train.run(make_params({**TINY, "train.arch": "simple_cnn", "train.pretrained": False,
                           "train.epochs": 6, "train.patience": 2}))

    assert [float(row["accuracy"]) for row in _tsv("val/accuracy")] == [0.5, 0.8, 0.7, 0.8]
    summary = json.loads((TRAIN_LOG_DIR / "metrics.json").read_text())
    assert (summary["best_epoch"], summary["best_val_accuracy"]) == (2, 0.8)
    assert load_checkpoint(MODEL_PATH).card.epoch == 2


def test_a_tie_in_validation_accuracy_goes_to_the_lower_loss(tiny_repo, make_params,
                                                               monkeypatch):
    # (accuracy, loss) per epoch: epoch 3 ties epoch 2 with a lower loss and wins; epoch 5 ties
    # again with a higher loss and does not; epoch 4's lower loss alone does not count.
    scripted = iter([(0.5, 1.2), (0.8, 0.9), (0.8, 0.7), (0.7, 0.5), (0.8, 0.8)])

    def scripted_evaluate(*args, **kwargs):
        accuracy, loss = next(scripted)
        return loop.EpochStats(loss, accuracy, 1.0)

    monkeypatch.setattr(fit, "evaluate", scripted_evaluate)
    train.run(make_params({**TINY, "train.arch": "simple_cnn", "train.pretrained": False,
                           "train.epochs": 5, "train.patience": 5}))

    summary = json.loads((TRAIN_LOG_DIR / "metrics.json").read_text())
    assert (summary["best_epoch"], summary["best_val_accuracy"]) == (3, 0.8)
    assert load_checkpoint(MODEL_PATH).card.epoch == 3


def test_train_never_reads_the_test_split(tiny_repo, make_params):
    SPLIT_FILES["test"].unlink()
    train.run(make_params({**TINY, "train.arch": "simple_cnn",
                           "train.pretrained": False}))
    assert MODEL_PATH.is_file()


def test_missing_split_says_which_stage_to_run(tiny_repo, make_params):
    SPLIT_FILES["val"].unlink()
    with pytest.raises(StageError, match=r"val\.csv not found: run `dvc repro label`"):
        train.run(make_params({**TINY, "train.arch": "simple_cnn",
                               "train.pretrained": False}))


def test_split_that_disagrees_with_the_class_list_fails(tiny_repo, make_params):
    rows = read_csv(SPLIT_FILES["train"])
    rows[0]["class"] = "tulips"
    write_csv(SPLIT_FILES["train"], ("path", "label", "class", "group"), rows)
    with pytest.raises(StageError, match="does not match"):
        train.run(make_params({**TINY, "train.arch": "simple_cnn",
                               "train.pretrained": False}))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mixed_precision_train_step_on_cuda():
    device = torch.device("cuda")
    model = SimpleCNN(3).to(device)
    images, labels = torch.randn(8, 3, 64, 64), torch.randint(0, 3, (8,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels),
                                         batch_size=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, fit.warmup_cosine(1, 2))
    scaler = torch.amp.GradScaler("cuda", enabled=not torch.cuda.is_bf16_supported())
    before = [p.detach().clone() for p in model.parameters()]
    steps = loop.Optimisation(torch.nn.CrossEntropyLoss(), optimizer, scheduler, scaler, None)
    stats = loop.train_one_epoch(model, steps, loader, device, "amp")
    assert torch.isfinite(torch.tensor(stats.loss))
    assert stats.accuracy * 8 == pytest.approx(round(stats.accuracy * 8))  # of 8 images
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_learning_rate_warms_up_linearly_then_decays_along_a_cosine():
    factor = fit.warmup_cosine(warmup_steps=4, total_steps=12)
    assert [factor(step) for step in range(4)] == [0.25, 0.5, 0.75, 1.0]
    decay = [factor(step) for step in range(4, 13)]
    assert decay[0] == 1.0 and decay[4] == pytest.approx(0.5) and decay[-1] == pytest.approx(0)
    assert all(later < earlier for earlier, later in zip(decay, decay[1:]))
    assert fit.warmup_cosine(0, 10)(0) == 1.0  # no warm-up: full rate from the first step


@pytest.mark.parametrize("pretrained, body_factor", [("weights", 0.1), (False, 1.0)])
def test_pretrained_layers_learn_slower_than_the_new_head(make_params, mobilenet_v2_weights,
                                                          pretrained, body_factor):
    weights = str(mobilenet_v2_weights) if pretrained else False
    config = make_params({"train.arch": "mobilenet_v2", "train.pretrained": weights,
                          "train.lr": 0.002, "train.backbone_lr_factor": 0.1}).train
    model = build_model("mobilenet_v2", 3, config.pretrained)
    head, body = fit.parameter_groups(model, config)
    assert head["lr"] == pytest.approx(0.002) and len(head["params"]) == 2  # weight and bias
    assert body["lr"] == pytest.approx(0.002 * body_factor)
    assert len(head["params"]) + len(body["params"]) == len(list(model.parameters()))




@pytest.mark.slow
@pytest.mark.parametrize("backbone_lr_factor, learns", [(0.1, True), (1.0, False)])
def test_fine_tuning_learns_far_above_chance(in_tmp_repo, flowers_mini, make_params,
                                             mobilenet_v2_weights, backbone_lr_factor, learns):
    """The offline ImageNet weights on 5 flower classes: four short epochs at 128 px must reach
    a validation accuracy far above chance (0.2). The second case is the regression this guards:
    one learning rate for the whole network overwrote the pretrained filters (plants-40 stayed at
    chance, docs/benchmarks.md); here too it stays at chance, so the test can tell the two apart."""
    write_tiny_split(in_tmp_repo, flowers_mini, FLOWERS, ("train",) * 24 + ("val",) * 8, 160)
    train.run(make_params({**TINY, "train.arch": "mobilenet_v2",
                           "train.pretrained": str(mobilenet_v2_weights), "train.epochs": 4,
                           "train.patience": 4, "train.image_size": 128, "train.batch_size": 16,
                           "train.backbone_lr_factor": backbone_lr_factor}))
    best = json.loads((TRAIN_LOG_DIR / "metrics.json").read_text())["best_val_accuracy"]
    assert (best >= 0.7) == learns, f"best validation accuracy {best:.3f} (40 images, 5 classes)"
