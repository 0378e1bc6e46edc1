"""The benchmark harnesses run (short byockit-only passes); figures are not checked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def run_benchmark(*args: str) -> str:
    """``python -m ARGS`` from the repository root; its output, once it exited 0."""
    result = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_worker_benchmark_quick_pass_runs() -> None:
    assert "passthrough" in run_benchmark("benchmarks.worker_bench", "--quick")


@pytest.mark.slow
def test_frame_path_benchmark_runs() -> None:
    output = run_benchmark("benchmarks.frame_path", "--size", "64x48", "--frames", "12")
    assert output.splitlines()[-1].startswith("| 64x48 | ")


def test_a_case_with_rounds_reports_its_median_round_and_every_round(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(REPO))
    from benchmarks.worker_bench import CASES
    from benchmarks.worker_drive import Measured
    from benchmarks.worker_report import Results, Run, goals, markdown, median_run

    def run(fps: float) -> Run:
        return Run(Measured(100, 90, 0, fps, 0.01, 0.02, 0.01, 0.01, 0.05, 0.004))

    ceiling = next(case for case in CASES if case.key == "ceiling-512")
    assert ceiling.rounds == 3
    byockit, pytrickle = [run(250.0), run(310.0), run(290.0)], [run(150.0), run(140.0), run(160.0)]
    results = Results(["byockit", "pytrickle"])
    results.runs[ceiling.key, "byockit"] = median_run(byockit)
    results.runs[ceiling.key, "pytrickle"] = median_run(pytrickle)
    results.round_fps[ceiling.key, "byockit"] = [250.0, 310.0, 290.0]
    results.round_fps[ceiling.key, "pytrickle"] = [150.0, 140.0, 160.0]

    [goal, *_] = goals(results, [ceiling])
    assert goal.measured == "290.0 vs 150.0 fps"  # median against median
    assert goal.met is False
    report = markdown(results, [ceiling], "python -m benchmarks.worker_bench", 0)
    assert f"| {ceiling.label} | byockit | 250.0, 310.0, 290.0 | 290.0 |" in report
    failed = Run(None, "worker exited")
    assert median_run([run(300.0), failed, run(310.0)]) is failed  # a failure is never hidden
