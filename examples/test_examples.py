"""Every example runs here, with a short duration, and its result is checked."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent


def load(name: str) -> dict[str, object]:
    return runpy.run_path(str(EXAMPLES / name))


async def test_trickle_video_loop() -> None:
    main = load("trickle_video_loop.py")["main"]
    assert await main(45) == list(range(45))  # type: ignore[operator]


async def test_json_events() -> None:
    main = load("json_events.py")["main"]
    documents, problems = await main()  # type: ignore[operator]
    assert documents == [{"type": "status", "state": "ONLINE"}, {"type": "stopped"}]
    assert len(problems) == 1
    assert "segment 2" in str(problems[0])


async def test_minimal_worker() -> None:
    main = load("minimal_worker.py")["main"]
    indexes = await main(45)  # type: ignore[operator]
    assert indexes == sorted(set(indexes))  # in order, none twice
    assert indexes[-1] == 44


@pytest.mark.parametrize(
    "name", sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("test_"))
)
def test_example_runs_as_a_script(name: str) -> None:
    args = ["--frames", "30"] if name in {"trickle_video_loop.py", "minimal_worker.py"} else []
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
