"""Reading and validating `params.yaml`: the one place where parameters enter the code.

Every key is checked at start: a wrong type, an out-of-range value, an unknown or a missing key
fails with the key's dotted name and what is allowed, before any stage touches data.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Union

import soupsieve
import yaml

from imgclf.errors import ImgclfError

PARAMS_FILE = Path("params.yaml")
SOURCES = ("yandex", "web", "folder")
DEVICES = ("auto", "cpu", "cuda")


class ParamsError(ImgclfError, ValueError):
    """A parameter has a value that the pipeline cannot use."""


def _require(condition: bool, key: str, allowed: str, value: Any) -> None:
    if not condition:
        raise ParamsError(f"{key}: {allowed} (got {value!r})")


# Yandex Images filters and the values its search URL takes (empty: no filter).
IMAGE_SIZES = ("", "large", "medium", "small")
ORIENTATIONS = ("", "horizontal", "vertical", "square")
IMAGE_TYPES = ("", "photo", "clipart", "lineart", "face", "demotivator")


def _check_selector(key: str, selector: str) -> None:
    # soupsieve is BeautifulSoup's CSS engine: a selector it cannot compile would fail mid-run.
    try:
        soupsieve.compile(selector)
    except soupsieve.SelectorSyntaxError as error:
        problem = str(error).splitlines()[0]  # the rest draws the selector with a caret
        raise ParamsError(f"{key}: a CSS selector ({problem}) (got {selector!r})") from None


@dataclasses.dataclass(frozen=True)
class SearchFilters:
    size: str
    orientation: str
    type: str

    def check(self) -> None:
        for key, value, allowed in (("size", self.size, IMAGE_SIZES),
                                    ("orientation", self.orientation, ORIENTATIONS),
                                    ("type", self.type, IMAGE_TYPES)):
            _require(value in allowed, f"scrape.filters.{key}",
                     "empty or one of " + ", ".join(filter(None, allowed)), value)


@dataclasses.dataclass(frozen=True)
class SiteParams:
    """A catalogue site: a list page linking one page per class, each holding image links."""
    url: str          # the list page; empty: the site is not used
    class_links: str  # CSS selector of the list page's links to class pages (text = class name)
    images: str       # CSS selector of a class page's images (<img src> or <a href>)

    def check(self, key: str) -> None:
        if not self.url:
            return
        _require(self.url.startswith(("http://", "https://")), f"{key}.url", "an http(s) URL",
                 self.url)
        for name in ("class_links", "images"):
            value = getattr(self, name)
            _require(bool(value), f"{key}.{name}", "a CSS selector when the url is set", value)
            _check_selector(f"{key}.{name}", value)


@dataclasses.dataclass(frozen=True)
class ScrapeParams:
    source: str
    folder: str
    archive_max_entries: int
    archive_max_bytes: int
    search_url: str
    per_class: int
    similar_from: int
    similar_per_result: int
    filters: SearchFilters
    catalogue: SiteParams
    shop: SiteParams
    workers: int
    timeout: float
    file_timeout: float
    retries: int
    backoff: float
    host_delay: float
    max_bytes: int
    page_timeout: float
    render_wait: float
    local_only: bool

    def check(self) -> None:
        _require(self.source in SOURCES, "scrape.source", f"one of {', '.join(SOURCES)}", self.source)
        _require(self.search_url.startswith(("http://", "https://")), "scrape.search_url",
                 "an http(s) URL", self.search_url)
        _require(self.per_class > 0, "scrape.per_class", "a positive integer", self.per_class)
        if self.source == "folder":
            _require(bool(self.folder), "scrape.folder",
                     "a directory or .zip file when scrape.source is folder", self.folder)
        _require(self.archive_max_entries >= 1, "scrape.archive_max_entries", "an integer >= 1",
                 self.archive_max_entries)
        _require(self.archive_max_bytes >= 1, "scrape.archive_max_bytes", "an integer >= 1",
                 self.archive_max_bytes)
        self._check_web_sources()
        self._check_downloads()

    def _check_web_sources(self) -> None:
        _require(self.similar_from >= 0, "scrape.similar_from", "an integer >= 0",
                 self.similar_from)
        _require(self.similar_per_result >= 0, "scrape.similar_per_result", "an integer >= 0",
                 self.similar_per_result)
        self.filters.check()
        self.catalogue.check("scrape.catalogue")
        self.shop.check("scrape.shop")
        if self.source == "web":
            _require(bool(self.catalogue.url or self.shop.url), "scrape.catalogue.url",
                     "a list-page URL (or scrape.shop.url) when scrape.source is web",
                     self.catalogue.url)
        _require(self.page_timeout > 0, "scrape.page_timeout", "a number of seconds > 0",
                 self.page_timeout)
        _require(self.render_wait > 0, "scrape.render_wait", "a number of seconds > 0",
                 self.render_wait)

    def _check_downloads(self) -> None:
        _require(self.workers >= 1, "scrape.workers", "an integer >= 1", self.workers)
        _require(self.timeout > 0, "scrape.timeout", "a number of seconds > 0", self.timeout)
        _require(self.file_timeout >= self.timeout, "scrape.file_timeout",
                 f"a number of seconds >= scrape.timeout ({self.timeout})", self.file_timeout)
        _require(self.retries >= 0, "scrape.retries", "an integer >= 0", self.retries)
        _require(self.backoff >= 0, "scrape.backoff", "a number of seconds >= 0", self.backoff)
        _require(self.host_delay >= 0, "scrape.host_delay", "a number of seconds >= 0",
                 self.host_delay)
        _require(self.max_bytes >= 1024, "scrape.max_bytes", "an integer >= 1024",
                 self.max_bytes)


@dataclasses.dataclass(frozen=True)
class CleanParams:
    min_side: int
    short_side: int
    hash_distance: int
    pixel_tolerance: float
    jpeg_quality: int
    workers: int

    def check(self) -> None:
        _require(self.min_side >= 1, "clean.min_side", "an integer >= 1", self.min_side)
        _require(self.short_side >= self.min_side, "clean.short_side",
                 f"an integer >= clean.min_side ({self.min_side})", self.short_side)
        _require(0 <= self.hash_distance <= 64, "clean.hash_distance", "an integer in 0..64",
                 self.hash_distance)
        _require(0 <= self.pixel_tolerance <= 255, "clean.pixel_tolerance", "a number in 0..255",
                 self.pixel_tolerance)
        _require(1 <= self.jpeg_quality <= 95, "clean.jpeg_quality", "an integer in 1..95",
                 self.jpeg_quality)
        _require(self.workers >= 1, "clean.workers", "an integer >= 1", self.workers)


@dataclasses.dataclass(frozen=True)
class LabelParams:
    val_size: float
    test_size: float
    group_distance: int
    group_tolerance: float

    def check(self) -> None:
        _require(0 < self.val_size < 1, "label.val_size", "a fraction between 0 and 1", self.val_size)
        _require(0 < self.test_size < 1, "label.test_size", "a fraction between 0 and 1",
                 self.test_size)
        _require(self.val_size + self.test_size < 1, "label.val_size + label.test_size",
                 "less than 1, leaving images to train on", self.val_size + self.test_size)
        _require(0 <= self.group_distance <= 64, "label.group_distance", "an integer in 0..64",
                 self.group_distance)
        _require(0 <= self.group_tolerance <= 255, "label.group_tolerance", "a number in 0..255",
                 self.group_tolerance)


@dataclasses.dataclass(frozen=True)
class TrainParams:
    arch: str
    pretrained: Union[str, bool]
    freeze_features: bool
    freeze_batchnorm: bool
    epochs: int
    batch_size: int
    lr: float
    backbone_lr_factor: float
    weight_decay: float
    label_smoothing: float
    image_size: int
    patience: int
    workers: int
    device: str

    def check(self) -> None:
        _require(self.pretrained is not True, "train.pretrained",
                 "a torchvision weights name (such as DEFAULT), a state-dict path, or false",
                 self.pretrained)
        _require(self.epochs >= 1, "train.epochs", "an integer >= 1", self.epochs)
        _require(self.batch_size >= 1, "train.batch_size", "an integer >= 1", self.batch_size)
        _require(self.lr > 0, "train.lr", "a number > 0", self.lr)
        _require(0 < self.backbone_lr_factor <= 1, "train.backbone_lr_factor",
                 "a number in (0, 1]", self.backbone_lr_factor)
        _require(self.weight_decay >= 0, "train.weight_decay", "a number >= 0", self.weight_decay)
        _require(0 <= self.label_smoothing < 1, "train.label_smoothing", "a number in [0, 1)",
                 self.label_smoothing)
        _require(self.image_size >= 32, "train.image_size", "an integer >= 32", self.image_size)
        _require(self.patience >= 1, "train.patience", "an integer >= 1", self.patience)
        _require(self.workers >= 0, "train.workers", "an integer >= 0", self.workers)
        _require(self.device in DEVICES, "train.device", f"one of {', '.join(DEVICES)}",
                 self.device)


@dataclasses.dataclass(frozen=True)
class EvaluateParams:
    batch_size: int
    gallery_size: int

    def check(self) -> None:
        _require(self.batch_size >= 1, "evaluate.batch_size", "an integer >= 1", self.batch_size)
        _require(self.gallery_size >= 0, "evaluate.gallery_size", "an integer >= 0",
                 self.gallery_size)


@dataclasses.dataclass(frozen=True)
class Params:
    classes: str
    seed: int
    scrape: ScrapeParams
    clean: CleanParams
    label: LabelParams
    train: TrainParams
    evaluate: EvaluateParams

    def check(self) -> None:
        _require(self.seed >= 0, "seed", "an integer >= 0", self.seed)
        _require(bool(self.classes) or self.scrape.source == "folder", "classes",
                 "a class-list CSV path (it may be empty only with scrape.source: folder)",
                 self.classes)


def _accepts(annotation: Any, value: Any) -> bool:
    """Whether `value` fits a field annotation (str, int, float, bool or a Union of them)."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return any(_accepts(option, value) for option in typing.get_args(annotation))
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:  # YAML reads 1e-3 as a string without a dot: accept ints, not bools
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, annotation)


def _build(cls: type, raw: Any, prefix: str) -> Any:
    """Instantiate dataclass `cls` from a mapping, checking keys and types."""
    where = prefix.rstrip(".") or "params.yaml"
    if not isinstance(raw, dict):
        raise ParamsError(f"{where}: expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ParamsError(f"{where}: unknown key(s) {', '.join(prefix + k for k in unknown)}; "
                          f"allowed: {', '.join(fields)}")
    values = {}
    for name in fields:
        key = prefix + name
        if name not in raw:
            raise ParamsError(f"{key}: missing")
        hint, value = hints[name], raw[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value, key + ".")
            continue
        if hint is float and isinstance(value, str):
            value = _parse_float(key, value)
        if hint is str and value is None:
            value = ""
        if not _accepts(hint, value):
            raise ParamsError(f"{key}: expected {_describe(hint)}, got {value!r}")
        values[name] = float(value) if hint is float else value
    return cls(**values)


def _parse_float(key: str, text: str) -> float:
    # PyYAML reads `3e-4` (no dot) as a string; DVC's `-S train.lr=3e-4` writes exactly that.
    try:
        return float(text)
    except ValueError:
        raise ParamsError(f"{key}: expected a number, got {text!r}") from None


def _describe(annotation: Any) -> str:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return " or ".join(_describe(option) for option in typing.get_args(annotation))
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}[annotation]


def _check_all(params: Params) -> None:
    params.check()
    for section in (params.scrape, params.clean, params.label, params.train, params.evaluate):
        section.check()


def parse_params(raw: Any) -> Params:
    """Validate a parsed params mapping and return typed, checked parameters."""
    params = _build(Params, raw, "")
    _check_all(params)
    return params


def load_params(path: Path = PARAMS_FILE) -> Params:
    """Read and validate `params.yaml` (relative to the repository root, the working directory)."""
    if not path.is_file():
        raise ParamsError(f"{path}: not found; run the stages from the repository root")
    with path.open(encoding="utf-8") as handle:
        return parse_params(yaml.safe_load(handle))
