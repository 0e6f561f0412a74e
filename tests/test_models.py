"""Architecture registry, pretrained weights, freezing and the checkpoint format."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from torch import nn

from imgclf.core.errors import StageError
from imgclf.core.images import decode_image
from imgclf.modelcard import ModelCard
from imgclf.training.checkpoint import load_checkpoint, save_checkpoint
from imgclf.training.models import ARCHS, build_model, imagenet_model
from imgclf.training.torchvision_compat import models
from imgclf.training.transforms import Preprocessing

from helpers.paths import REPO_ROOT
from helpers.tinymodel import bad_checkpoints

IMAGENET_DAISY = 985


def _batchnorms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@pytest.mark.parametrize("arch", ARCHS)
def test_each_arch_builds_with_a_head_for_our_classes(arch):
    model = build_model(arch, num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3)


def test_unknown_arch_lists_the_allowed_names():
    with pytest.raises(StageError, match="unknown architecture 'vgg99'.*mobilenet_v3_large.*"
                                         "simple_cnn"):
        build_model("vgg99", 3)


def test_state_dict_file_gives_the_real_imagenet_network(mobilenet_v2_weights, flowers_mini):
    model = imagenet_model("mobilenet_v2", str(mobilenet_v2_weights)).eval()
    transform = Preprocessing.for_size(224).eval_transform()
    daisies = sorted((flowers_mini / "daisy").glob("*.jpg"))[:10]
    with torch.no_grad():
        labels = model(torch.stack([transform(decode_image(p)) for p in daisies])).argmax(1)
    assert (labels == IMAGENET_DAISY).sum() >= 8


def test_pretrained_head_is_replaced_and_the_rest_loaded(mobilenet_v2_weights):
    model = build_model("mobilenet_v2", 3, str(mobilenet_v2_weights))
    reference = torch.load(mobilenet_v2_weights, weights_only=True)
    assert model.classifier[1].out_features == 3
    assert torch.equal(model.features[0][0].weight, reference["features.0.0.weight"])


def test_state_dict_must_fit_the_architecture_exactly(tmp_path, mobilenet_v2_weights):
    state_dict = torch.load(mobilenet_v2_weights, weights_only=True)
    del state_dict["features.0.0.weight"]
    incomplete = tmp_path / "incomplete.pth"
    torch.save(state_dict, incomplete)
    with pytest.raises(StageError, match="does not fit mobilenet_v2: .*Missing key"):
        build_model("mobilenet_v2", 3, str(incomplete))
    with pytest.raises(StageError, match="does not fit resnet18"):
        build_model("resnet18", 3, str(mobilenet_v2_weights))


def test_bad_pretrained_values_say_what_is_allowed(tmp_path):
    not_torch = tmp_path / "weights.pth"
    not_torch.write_text("not a tensor file")
    cases = [("simple_cnn", "DEFAULT", "trained from scratch; set train.pretrained to false"),
             ("mobilenet_v2", "IMAGENET9K_V9", "allowed: IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT"),
             ("mobilenet_v2", "missing/weights.pth", "missing/weights.pth not found"),
             ("mobilenet_v2", str(not_torch), "not a readable PyTorch file")]
    for arch, pretrained, message in cases:
        with pytest.raises(StageError, match=message):
            build_model(arch, 3, pretrained)


@pytest.mark.parametrize("content", [b"", b"hello world\n", bytes(range(256)) * 4,
                                     b"PK\x03\x04" + b"\x00" * 100],
                         ids=["empty", "text", "noise", "broken-zip"])
def test_any_foreign_weights_file_is_a_clear_error(tmp_path, content):
    # torch.load fails on these with EOFError, KeyError, IndexError or RuntimeError.
    weights = tmp_path / "weights.pth"
    weights.write_bytes(content)
    with pytest.raises(StageError, match=r"train\.pretrained: .*weights\.pth is not a readable "
                                         r"PyTorch file \(.+\)"):
        build_model("mobilenet_v2", 3, str(weights))


def test_failed_download_suggests_a_state_dict_path(monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(models.MobileNet_V3_Large_Weights, "get_state_dict", no_network)
    with pytest.raises(StageError, match="cannot download .*IMAGENET1K_V2.*path of a state-dict"):
        build_model("mobilenet_v3_large", 3, "IMAGENET1K_V2")


def test_freeze_features_trains_only_the_head(mobilenet_v2_weights):
    model = build_model("mobilenet_v2", 3, str(mobilenet_v2_weights), freeze_features=True)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["classifier.1.weight", "classifier.1.bias"]

    model.train()
    assert not any(bn.training for bn in _batchnorms(model))
    features_before = [t.clone() for t in model.features.state_dict().values()]
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    optimizer.step()
    assert all(torch.equal(before, after)
               for before, after in zip(features_before, model.features.state_dict().values()))


def test_freeze_features_needs_pretrained_weights():
    with pytest.raises(StageError, match="freeze_features: needs pretrained weights"):
        build_model("mobilenet_v2", 3, False, freeze_features=True)


def test_freeze_batchnorm_survives_train_mode(mobilenet_v2_weights):
    model = build_model("mobilenet_v2", 3, str(mobilenet_v2_weights), freeze_batchnorm=True)
    model.train()
    first = _batchnorms(model)[0]
    mean_before = first.running_mean.clone()
    model(torch.randn(4, 3, 64, 64))
    assert model.training and not any(bn.training for bn in _batchnorms(model))
    assert torch.equal(first.running_mean, mean_before)
    assert all(p.requires_grad for p in model.parameters())  # only the statistics are kept


def test_freeze_batchnorm_without_pretrained_weights_changes_nothing():
    model = build_model("simple_cnn", 3, False, freeze_batchnorm=True).train()
    assert all(bn.training for bn in _batchnorms(model))


def test_checkpoint_round_trip(tmp_path, flowers_mini):
    model = build_model("simple_cnn", 3).eval()
    path = tmp_path / "models" / "model.pt"
    preprocessing = Preprocessing.for_size(64)
    card = ModelCard(format_version=1, arch="simple_cnn", classes=["a", "b", "c"],
                     preprocessing=preprocessing, epoch=4, val_accuracy=0.75,
                     train_params={"lr": 0.001, "pretrained": False})
    save_checkpoint(path, model.state_dict(), card)

    raw = torch.load(path, weights_only=True)
    assert raw["format_version"] == 1 and raw["classes"] == ["a", "b", "c"]
    assert raw["preprocessing"] == {"image_size": 64, "resize_size": 73,
                                    "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    trained = load_checkpoint(path)
    assert not trained.model.training
    assert (trained.card.arch, trained.card.epoch, trained.card.val_accuracy) == ("simple_cnn", 4, 0.75)
    assert trained.card.preprocessing == preprocessing
    assert trained.card == card
    image = decode_image(sorted((flowers_mini / "daisy").glob("*.jpg"))[0])
    batch = trained.transform(image).unsqueeze(0)
    assert batch.shape == (1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(trained.model(batch), model(batch))


def test_missing_or_foreign_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(StageError, match=r"not found: run `dvc pull .*` .*`dvc repro train`"):
        load_checkpoint(tmp_path / "model.pt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(StageError, match="not an imgclf model checkpoint"):
        load_checkpoint(foreign)


@pytest.mark.parametrize("case", ["unknown arch", "other arch", "class count", "no classes",
                                  "duplicate classes", "bad preprocessing", "huge image size",
                                  "zero std", "code inside", "empty file"])
def test_unusable_checkpoint_is_refused_naming_what_is_wrong(tmp_path, case):
    path, message = bad_checkpoints(tmp_path)[case]
    with pytest.raises(StageError, match=message) as error:
        load_checkpoint(path)
    assert str(error.value).startswith(str(path)) or f" {path} " in str(error.value)
    assert not (tmp_path / "pwned").exists()  # weights_only: the pickle's code never ran


SHIPPED_WEIGHTS = REPO_ROOT / "weights/mobilenet_v2-imagenet-fp16.pth"


def test_shipped_half_precision_weights_load_as_float32_and_match_the_original(
        mobilenet_v2_weights, flowers_mini):
    # load_state_dict copies each stored tensor into the float32 parameter, widening it.
    stored = torch.load(SHIPPED_WEIGHTS, weights_only=True)
    assert {value.dtype for value in stored.values() if value.is_floating_point()} == \
        {torch.float16}, "the shipped file is meant to be half precision"
    assert SHIPPED_WEIGHTS.stat().st_size < 8_000_000

    shipped = imagenet_model("mobilenet_v2", str(SHIPPED_WEIGHTS)).eval()
    original = imagenet_model("mobilenet_v2", str(mobilenet_v2_weights)).eval()
    assert {value.dtype for value in shipped.state_dict().values()
            if value.is_floating_point()} == {torch.float32}
    transform = Preprocessing.for_size(224).eval_transform()
    daisies = sorted((flowers_mini / "daisy").glob("*.jpg"))[:10]
    batch = torch.stack([transform(decode_image(path)) for path in daisies])
    with torch.no_grad():
        shipped_logits, original_logits = shipped(batch), original(batch)
    assert torch.equal(shipped_logits.argmax(1), original_logits.argmax(1))
    assert (shipped_logits - original_logits).abs().max() < 0.1

