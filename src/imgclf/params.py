"""Reading and validating `params.yaml`: the one place where parameters enter the code.

Every key is checked at start (pydantic models, strict: no silent casts, booleans are booleans):
a wrong type, an out-of-range value, an unknown or a missing key fails with the key's dotted name,
what is allowed and what was given, before any stage touches data. Messages read
`train.lr: a number > 0 (got -1)`; they are built from each field's type and bounds
(`_allowed`), or given by the field's `description` where words say it better.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import annotated_types
import soupsieve
import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter,
                      ValidationError, model_validator)
from pydantic.fields import FieldInfo

from imgclf.errors import ImgclfError

PARAMS_FILE = Path("params.yaml")


class ParamsError(ImgclfError, ValueError):
    """A parameter has a value that the pipeline cannot use."""


def _number(value: Any) -> Any:
    # PyYAML reads `3e-4` (no dot) as a string; DVC's `-S train.lr=3e-4` writes exactly that.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value  # the float check then reports it with the key's name
    return value


def _empty_string(value: Any) -> Any:
    return "" if value is None else value  # `folder:` with nothing after it reads as None


Number = Annotated[float, BeforeValidator(_number)]
Text = Annotated[str, BeforeValidator(_empty_string)]


def _fail(key: str, allowed: str, value: Any) -> None:
    """Raise from a validator; the key is relative to the model, which prefixes its own path."""
    raise ValueError(f"{key}: {allowed} (got {value!r})")


class Section(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)


# Yandex Images filters and the values its search URL takes (empty: no filter).
class SearchFilters(Section):
    size: Literal["", "large", "medium", "small"]
    orientation: Literal["", "horizontal", "vertical", "square"]
    type: Literal["", "photo", "clipart", "lineart", "face", "demotivator"]


class SiteParams(Section):
    """A catalogue site: a list page linking one page per class, each holding image links."""
    url: Text           # the list page; empty: the site is not used
    class_links: Text   # CSS selector of the list page's links to class pages (text = class name)
    images: Text        # CSS selector of a class page's images (<img src> or <a href>)

    @model_validator(mode="after")
    def _check(self) -> SiteParams:
        if not self.url:
            return self
        if not self.url.startswith(("http://", "https://")):
            _fail("url", "an http(s) URL", self.url)
        for name in ("class_links", "images"):
            _check_selector(name, getattr(self, name))
        return self


def _check_selector(key: str, selector: str) -> None:
    if not selector:
        _fail(key, "a CSS selector when the url is set", selector)
    # soupsieve is BeautifulSoup's CSS engine: a selector it cannot compile would fail mid-run.
    try:
        soupsieve.compile(selector)
    except soupsieve.SelectorSyntaxError as error:
        problem = str(error).splitlines()[0]  # the rest draws the selector with a caret
        _fail(key, f"a CSS selector ({problem})", selector)


Seconds = Annotated[Number, Field(gt=0, description="a number of seconds > 0")]


class ScrapeParams(Section):
    source: Literal["yandex", "web", "folder"]
    folder: Text
    archive_max_entries: int = Field(ge=1)
    archive_max_bytes: int = Field(ge=1)
    search_url: Text
    per_class: int = Field(gt=0)
    similar_from: int = Field(ge=0)
    similar_per_result: int = Field(ge=0)
    filters: SearchFilters
    catalogue: SiteParams
    shop: SiteParams
    workers: int = Field(ge=1)
    timeout: Seconds
    file_timeout: Seconds
    retries: int = Field(ge=0)
    backoff: Number = Field(ge=0)
    host_delay: Number = Field(ge=0)
    max_bytes: int = Field(ge=1024)
    page_timeout: Seconds
    render_wait: Seconds
    local_only: bool
    allow_private: bool

    @model_validator(mode="after")
    def _check(self) -> ScrapeParams:
        if not self.search_url.startswith(("http://", "https://")):
            _fail("search_url", "an http(s) URL", self.search_url)
        if self.source == "folder" and not self.folder:
            _fail("folder", "a directory or .zip file when scrape.source is folder", self.folder)
        if self.source == "web" and not (self.catalogue.url or self.shop.url):
            _fail("catalogue.url", "a list-page URL (or scrape.shop.url) when scrape.source is "
                  "web", self.catalogue.url)
        if self.file_timeout < self.timeout:
            _fail("file_timeout", f"a number of seconds >= scrape.timeout ({self.timeout:g})",
                  self.file_timeout)
        return self


class CleanParams(Section):
    min_side: int = Field(ge=1)
    short_side: int
    hash_distance: int = Field(ge=0, le=64)
    pixel_tolerance: Number = Field(ge=0, le=255)
    jpeg_quality: int = Field(ge=1, le=95)
    workers: int = Field(ge=1)

    @model_validator(mode="after")
    def _check(self) -> CleanParams:
        if self.short_side < self.min_side:
            _fail("short_side", f"an integer >= clean.min_side ({self.min_side})",
                  self.short_side)
        return self


Fraction = Annotated[Number, Field(gt=0, lt=1, description="a fraction between 0 and 1")]


class LabelParams(Section):
    val_size: Fraction
    test_size: Fraction
    group_distance: int = Field(ge=0, le=64)
    group_tolerance: Number = Field(ge=0, le=255)

    @model_validator(mode="after")
    def _check(self) -> LabelParams:
        if self.val_size + self.test_size >= 1:
            _fail("val_size + label.test_size", "less than 1, leaving images to train on",
                  self.val_size + self.test_size)
        return self


class TrainParams(Section):
    arch: str
    pretrained: Union[Literal[False], str] = Field(description=(
        "a torchvision weights name (such as DEFAULT), a state-dict path, or false"))
    freeze_features: bool
    freeze_batchnorm: bool
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    lr: Number = Field(gt=0)
    backbone_lr_factor: Number = Field(gt=0, le=1)
    weight_decay: Number = Field(ge=0)
    label_smoothing: Number = Field(ge=0, lt=1)
    image_size: int = Field(ge=32)
    patience: int = Field(ge=1)
    crop_scale: Number = Field(gt=0, le=1)
    flip: bool
    augment_magnitude: int = Field(ge=0, le=30)
    warmup_epochs: int = Field(ge=0)
    ema_decay: Number = Field(ge=0, lt=1)
    balance: Literal["none", "sampler", "loss"]
    workers: int = Field(ge=0)
    device: Literal["auto", "cpu", "cuda"]
    nproc: int = Field(ge=1)
    compile: bool
    preload: bool

    @model_validator(mode="after")
    def _check(self) -> TrainParams:
        if self.preload and self.augment_magnitude:
            _fail("augment_magnitude", "0 with train.preload (RandAugment runs on Pillow "
                  "images, not on the preloaded tensors)", self.augment_magnitude)
        return self


def _pair(meaning: str) -> Any:
    return Field(min_length=2, max_length=2, description=f"[low, high]: {meaning}")


class TuneParams(Section):
    """The search space of `python -m imgclf tune` (never run by `dvc repro`): the train keys it
    searches, each with the values to try; plus when the median rule may prune a trial."""
    lr: list[Number] = _pair("the range of train.lr, searched on a log scale")
    backbone_lr_factor: list[Number] = _pair("the range of train.backbone_lr_factor (log scale)")
    weight_decay: list[Number] = _pair("the range of train.weight_decay (log scale)")
    label_smoothing: list[Number] = _pair("the range of train.label_smoothing")
    crop_scale: list[Number] = _pair("the range of train.crop_scale")
    augment_magnitude: list[int] = _pair("the range of train.augment_magnitude (integers)")
    batch_size: list[int] = Field(min_length=1, description="a list of train.batch_size values")
    prune_after_trials: int = Field(ge=1)
    prune_from_epoch: int = Field(ge=1)

    LOG_SCALE: ClassVar[tuple[str, ...]] = ("lr", "backbone_lr_factor", "weight_decay")
    RANGES: ClassVar[tuple[str, ...]] = LOG_SCALE + ("label_smoothing", "crop_scale",
                                                     "augment_magnitude")

    @model_validator(mode="after")
    def _check(self) -> TuneParams:
        for key in (*self.RANGES, "batch_size"):
            _check_train_values(key, getattr(self, key))
        for key in self.RANGES:
            low, high = getattr(self, key)
            if low > high:
                _fail(key, "[low, high] with low <= high", [low, high])
            if key in self.LOG_SCALE and low <= 0:
                _fail(key, "[low, high] with low > 0 (searched on a log scale)", [low, high])
        return self


def _check_train_values(key: str, values: list) -> None:
    """Every value a search may give train.<key> must be one that train.<key> allows."""
    field = TrainParams.model_fields[key]
    allowed = TypeAdapter(Annotated[field.annotation, *field.metadata])
    for value in values:
        try:
            allowed.validate_python(value, strict=True)
        except ValidationError:
            _fail(key, f"values that train.{key} allows: {_allowed(field)}", values)


class EvaluateParams(Section):
    batch_size: int = Field(ge=1)
    gallery_size: int = Field(ge=0)


class ExportParams(Section):
    # Float32 noise between PyTorch and ONNX Runtime kernels is about 1e-6 on a probability;
    # a wrong export (a missing layer, other weights) moves probabilities by 1e-2 and more.
    tolerance: Number = Field(gt=0, lt=1)
    batch_size: int = Field(ge=1)


class Params(Section):
    classes: Text
    seed: int = Field(ge=0, lt=2**32)  # numpy and scikit-learn take 32-bit seeds
    scrape: ScrapeParams
    clean: CleanParams
    label: LabelParams
    train: TrainParams
    evaluate: EvaluateParams
    export: ExportParams
    tune: TuneParams

    @model_validator(mode="after")
    def _check(self) -> Params:
        if not self.classes and self.scrape.source != "folder":
            _fail("classes", "a class-list CSV path (it may be empty only with scrape.source: "
                  "folder)", self.classes)
        return self


# ---- Messages ------------------------------------------------------------------------------------

_KINDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
_BOUNDS = ((annotated_types.Gt, "gt", ">"), (annotated_types.Ge, "ge", ">="),
           (annotated_types.Lt, "lt", "<"), (annotated_types.Le, "le", "<="))


def _allowed(field: FieldInfo) -> str:
    """What a field accepts, in words: `an integer in 0..64`, `a number > 0`, `one of a, b`."""
    if field.description:
        return field.description
    if getattr(field.annotation, "__origin__", None) is Literal:
        values = [value for value in field.annotation.__args__ if value != ""]
        prefix = "empty or one of " if "" in field.annotation.__args__ else "one of "
        return prefix + ", ".join(map(str, values))
    kind = _KINDS.get(field.annotation, "a value")
    bounds = {attribute: getattr(item, attribute) for item in field.metadata
              for cls, attribute, _ in _BOUNDS if isinstance(item, cls)}
    if field.annotation is int and set(bounds) == {"ge", "le"}:
        return f"{kind} in {bounds['ge']}..{bounds['le']}"
    words = [f"{symbol} {bounds[attribute]}" for _, attribute, symbol in _BOUNDS
             if attribute in bounds]
    return " ".join([kind, " and ".join(words)]) if words else kind


def _field_at(loc: tuple[str | int, ...]) -> tuple[type[BaseModel], FieldInfo | None]:
    """The model that holds the last part of `loc`, and that field (None when unknown)."""
    model: type[BaseModel] = Params
    for part in loc[:-1]:
        annotation = model.model_fields[str(part)].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return model, model.model_fields.get(str(loc[-1])) if loc else None


def _message(error: dict) -> str:
    """One pydantic error as `key: what is allowed (got value)`."""
    # Items of a list are named by their list (`tune.batch_size`, not `tune.batch_size.0`).
    loc = tuple(part for part in error["loc"] if not isinstance(part, int)
                and not str(part).startswith(("literal[", "str")))
    key = ".".join(map(str, loc))
    if error["type"] == "value_error":  # from a model validator: relative key, whole message
        detail = str(error["ctx"]["error"])
        return f"{key}.{detail}" if key else detail
    model, field = _field_at(loc)
    if error["type"] == "missing":
        return f"{key}: missing"
    if error["type"] == "extra_forbidden":
        where = key.rpartition(".")[0] or "params.yaml"
        return f"{where}: unknown key {key}; allowed: {', '.join(model.model_fields)}"
    if error["type"] in ("model_type", "model_attributes_type", "dict_type"):
        return f"{key or 'params.yaml'}: expected a mapping of keys (got {error['input']!r})"
    allowed = _allowed(field) if field else error["msg"]
    if error["type"] == "finite_number":  # .inf and nan are numbers, but not usable ones
        allowed = f"a finite number ({allowed})"
    return f"{key}: {allowed} (got {error['input']!r})"


# ---- Reading ------------------------------------------------------------------------------------


def parse_params(raw: Any) -> Params:
    """Validate a parsed params mapping and return typed, checked parameters."""
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        # The first problem, as the stage's one-line error; the others follow it on fixing.
        raise ParamsError(_message(error.errors()[0])) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys without a word; a duplicate is a mistake."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> Any:
    """Parse a YAML file, refusing duplicate keys; errors name the file, line and problem."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError as error:
        raise ParamsError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})"
                          ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ParamsError(f"{path}: not valid YAML{where}: {problem}") from None


def load_params(path: Path = PARAMS_FILE) -> Params:
    """Read and validate `params.yaml` (relative to the repository root, the working directory)."""
    if not path.is_file():
        raise ParamsError(f"{path}: not found; run the stages from the repository root")
    return parse_params(read_yaml(path))
