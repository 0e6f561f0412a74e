"""Train stage: data/split -> models/model.pt, the network with the best validation accuracy and
its model card; curves and figures to metrics/train/ (dvclive). The test split is never read.

How it trains: imgclf.training.fit. A killed run goes on from its last finished epoch when
started again (imgclf.training.resume). With `train.nproc` > 1 the stage starts itself again in
that many processes under torchrun (imgclf.training.distributed).
"""

from __future__ import annotations

import sys

from imgclf.config.train import TrainStageParams
from imgclf.core.cli import stage_main
from imgclf.training.distributed import relaunch_under_torchrun, under_torchrun
from imgclf.training.fit import fit


def run(params: TrainStageParams) -> None:
    """In this process, or in `train.nproc` processes under torchrun."""
    if params.train.nproc == 1 or under_torchrun():
        fit(params)
    else:
        relaunch_under_torchrun(params.train.nproc, __spec__.name)


def main(argv: list[str] | None = None) -> int:
    return stage_main("train", run, TrainStageParams, argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())
