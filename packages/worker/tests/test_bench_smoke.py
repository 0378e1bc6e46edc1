"""The benchmark harnesses run (short byockit-only passes); figures are not checked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_worker_benchmark_quick_pass_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.worker_bench", "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "passthrough" in result.stdout


@pytest.mark.slow
def test_frame_path_benchmark_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.frame_path", "--size", "64x48", "--frames", "12"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.splitlines()[-1].startswith("| 64x48 | ")
