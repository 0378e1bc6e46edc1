"""The worker benchmark harness runs (a short byockit-only pass); figures are not checked."""

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
