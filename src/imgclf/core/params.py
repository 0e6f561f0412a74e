"""Reading and validating `params.yaml`: the one place where parameters enter the code.

Each stage reads a view of the file (a `StageParams`: the sections it runs on, defined in
`imgclf.config`), so that a stage's code depends on its own sections' models only. Every key of
those sections is checked at start (pydantic models, strict: no silent casts, booleans are booleans):
a wrong type, an out-of-range value, an unknown or a missing key fails with the key's dotted name,
what is allowed and what was given, before any stage touches data. Messages read
`train.lr: a number > 0 (got -1)`; they are built from each field's type and bounds
(`allowed_values`), or given by the field's `description` where words say it better. A key at
the top of the file that is no section of the pipeline (a typo such as `trian:`) fails in every
stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import annotated_types
import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo

from imgclf.core.errors import ImgclfError

PARAMS_FILE = Path("params.yaml")
Model = TypeVar("Model", bound=BaseModel)


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


def fail(key: str, allowed: str, value: Any) -> None:
    """Raise from a validator; the key is relative to the model, which prefixes its own path."""
    raise ValueError(f"{key}: {allowed} (got {value!r})")


Seed = Annotated[int, Field(ge=0, lt=2**32)]  # numpy and scikit-learn take 32-bit seeds

# The top-level keys of params.yaml: what a stage's view may ignore, but a typo may not add.
TOP_LEVEL_KEYS = ("classes", "seed", "scrape", "clean", "audit", "label", "train", "evaluate",
                  "export", "tune")


class Section(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)


class StageParams(Section):
    """The part of params.yaml that one command reads: other sections are left to theirs."""
    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _known_top_level_keys(cls, raw: Any) -> Any:
        if isinstance(raw, dict):
            for key in raw:
                if key not in TOP_LEVEL_KEYS:
                    raise ValueError(f"params.yaml: unknown key {key}; allowed: "
                                     f"{', '.join(TOP_LEVEL_KEYS)}")
        return raw


# ---- Messages ------------------------------------------------------------------------------------

_KINDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
_BOUNDS = ((annotated_types.Gt, "gt", ">"), (annotated_types.Ge, "ge", ">="),
           (annotated_types.Lt, "lt", "<"), (annotated_types.Le, "le", "<="))


def allowed_values(field: FieldInfo) -> str:
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


def _field_at(root: type[BaseModel], loc: tuple[str | int, ...]
              ) -> tuple[type[BaseModel], FieldInfo | None]:
    """The model that holds the last part of `loc`, and that field (None when unknown)."""
    model = root
    for part in loc[:-1]:
        annotation = model.model_fields[str(part)].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return model, model.model_fields.get(str(loc[-1])) if loc else None


def describe_error(root: type[BaseModel], error: dict) -> str:
    """One pydantic error as `key: what is allowed (got value)`."""
    # Items of a list are named by their list (`tune.batch_size`, not `tune.batch_size.0`).
    loc = tuple(part for part in error["loc"] if not isinstance(part, int)
                and not str(part).startswith(("literal[", "str")))
    key = ".".join(map(str, loc))
    if error["type"] == "value_error":  # from a model validator: relative key, whole message
        detail = str(error["ctx"]["error"])
        return f"{key}.{detail}" if key else detail
    model, field = _field_at(root, loc)
    if error["type"] == "missing":
        return f"{key}: missing"
    if error["type"] == "extra_forbidden":
        where = key.rpartition(".")[0] or "params.yaml"
        return f"{where}: unknown key {key}; allowed: {', '.join(model.model_fields)}"
    if error["type"] in ("model_type", "model_attributes_type", "dict_type"):
        return f"{key or 'params.yaml'}: expected a mapping of keys (got {error['input']!r})"
    allowed = allowed_values(field) if field else error["msg"]
    if error["type"] == "finite_number":  # .inf and nan are numbers, but not usable ones
        allowed = f"a finite number ({allowed})"
    return f"{key}: {allowed} (got {error['input']!r})"


# ---- Reading ------------------------------------------------------------------------------------


def parse_params(view: type[Model], raw: Any) -> Model:
    """Validate a parsed params mapping as `view` and return typed, checked parameters."""
    try:
        return view.model_validate(raw)
    except ValidationError as error:
        # The first problem, as the stage's one-line error; the others follow it on fixing.
        raise ParamsError(describe_error(view, error.errors()[0])) from None


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


def load_params(view: type[Model], path: Path = PARAMS_FILE) -> Model:
    """Read `params.yaml` (relative to the repository root, the working directory) and validate
    the part of it that `view` holds."""
    if not path.is_file():
        raise ParamsError(f"{path}: not found; run the stages from the repository root")
    return parse_params(view, read_yaml(path))
