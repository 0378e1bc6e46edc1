"""``python -m benchmarks.gpu`` on the CPU: a row per case and size; figures not checked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[4]
CASES = [
    "sketch",
    "cartoon",
    "grade",
    "pixelate",
    "chroma_key",
    "chain (default: cartoon)",
    "model (TorchScript conv)",
]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_short_cpu_run_prints_every_case_at_every_size() -> None:
    result = run("--device", "cpu", "--frames", "3", "--sizes", "64x64,96x48")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith("| ")]
    table = {(cells[0].strip(), cells[1].strip()): cells for cells in rows[1:]}
    assert set(table) == {(case, size) for case in CASES for size in ("64x64", "96x48")}
    for cells in table.values():
        assert float(cells[2]) > 0  # frames/s
        assert cells[5].strip() == "-"  # no GPU: nothing compared


def test_bad_arguments_are_refused_with_the_reason() -> None:
    result = run("--device", "cpu", "--sizes", "63x64")
    assert result.returncode == 2
    assert "63x64: sizes are even, at least 56x36" in result.stderr
