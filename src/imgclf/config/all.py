"""The whole of params.yaml, every section checked: for tools and tests that build or rewrite the
file (tuning writes its best values back through it). No stage reads it: each reads its view."""

from __future__ import annotations

from pydantic import ConfigDict, model_validator

from imgclf.config.audit import AuditParams
from imgclf.config.clean import CleanParams
from imgclf.config.evaluate import EvaluateParams
from imgclf.config.export import ExportParams
from imgclf.config.label import LabelParams
from imgclf.config.scrape import ScrapeParams, check_class_list
from imgclf.config.train import TrainParams
from imgclf.core.params import Seed, StageParams, Text
from imgclf.tuning.params import TuneParams


class AllParams(StageParams):
    """Every section; an unknown key anywhere fails."""
    model_config = ConfigDict(extra="forbid")

    classes: Text
    seed: Seed
    scrape: ScrapeParams
    clean: CleanParams
    audit: AuditParams
    label: LabelParams
    train: TrainParams
    evaluate: EvaluateParams
    export: ExportParams
    tune: TuneParams

    @model_validator(mode="after")
    def _check(self) -> AllParams:
        check_class_list(self.classes, self.scrape)
        return self
