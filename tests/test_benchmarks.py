"""Every benchmark has a smoke run on tiny input, so none can rot unnoticed.

The figures they print belong in the docs, never in assertions: here a benchmark only has to run
to the end (`--smoke`) and print something.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers.dvcrepo import environment
from helpers.paths import REPO_ROOT

BENCHMARKS = sorted((REPO_ROOT / "benchmarks").glob("bench_*.py"))


def test_there_are_benchmarks() -> None:
    assert BENCHMARKS, "benchmarks/ holds no bench_*.py"


@pytest.mark.slow  # each starts a process that imports torch and runs real stages
@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda path: path.stem)
def test_benchmark_smoke_run(script: Path, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(script), "--smoke"], cwd=tmp_path,
                            env=environment(REPO_ROOT), capture_output=True, text=True,
                            timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{script.name} --smoke failed:\n{output[-4000:]}"
    assert result.stdout.strip(), f"{script.name} --smoke printed no figures"
