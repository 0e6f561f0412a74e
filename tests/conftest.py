"""Shared test set-up: one thread for torch and OpenMP, and the real data in ../shared."""

from __future__ import annotations

import os

# Two cores: one thread per process keeps tests from starving each other (set before torch loads).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from helpers.paths import REPO_ROOT, SHARED_DIR  # noqa: E402


def _require_shared(relative: str) -> Path:
    path = SHARED_DIR / relative
    if not path.exists():
        # Fail loudly: a test that silently skipped would hide a broken CI set-up.
        pytest.fail(f"{path} is missing: the tests need ../shared beside the repository "
                    "(datasets, weights and class lists)", pytrace=False)
    return path


@pytest.fixture(scope="session")
def flowers_mini() -> Path:
    """Real photos: 5 classes x 40 images (../shared/datasets/flowers-mini)."""
    return _require_shared("datasets/flowers-mini")


@pytest.fixture(scope="session")
def plants_40() -> Path:
    """Real WebP photos: 40 classes of leaves, 500 x 500 (../shared/datasets/plants-40)."""
    return _require_shared("datasets/plants-40")


@pytest.fixture(scope="session")
def mobilenet_v2_weights() -> Path:
    """ImageNet MobileNetV2 state dict that loads offline."""
    return _require_shared("weights/mobilenet_v2-imagenet-folded.pth")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


@pytest.fixture
def in_tmp_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test with a temporary folder as the working directory (the stages' repo root)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def make_params():
    """Build validated params (every section) from the repository's params.yaml with dotted
    overrides, e.g. make_params({**TINY, "train.epochs": 2})."""
    from imgclf.config.all import AllParams
    from imgclf.core.params import parse_params

    from helpers.config import raw_params

    return lambda overrides=None: parse_params(AllParams, raw_params(overrides))


@pytest.fixture(scope="module")
def web(flowers_mini: Path):
    """A fake of the web on 127.0.0.1 (search pages, catalogue, shop, faults): tests/webfake.py."""
    from helpers.webfake import FakeWeb

    with FakeWeb(flowers_mini) as server:
        yield server


@pytest.fixture
def web_params(make_params, web, in_tmp_repo: Path):
    """Params whose scrape section points at the fake web with tiny timeouts. Keyword arguments
    override scrape.* keys; `classes` (a list of names) writes a class list and uses it."""
    from helpers.webfake import local_settings, write_classes

    def build(classes: list[str] | None = None, **scrape):
        # The web recipes' starting point (the shipped defaults use the offline sample folder).
        settings = {"source": "yandex", **local_settings(web), **scrape}
        overrides = {f"scrape.{key}": value for key, value in settings.items()}
        overrides["classes"] = str(REPO_ROOT / "data/classes/crimean_plants.csv")
        if classes:
            overrides["classes"] = str(write_classes(in_tmp_repo / "classes.csv", classes))
        return make_params(overrides)

    return build


@pytest.fixture
def closing():
    """Pass objects through it to have their close() called when the test ends."""
    made = []

    def keep(instance):
        made.append(instance)
        return instance

    yield keep
    for instance in made:
        instance.close()
