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


async def test_torch_processor() -> None:
    main = load("torch_processor.py")["main"]
    first_tinted, refused = await main(45)  # type: ignore[operator]
    assert first_tinted > 15  # switched on when frame 15 came back, so later
    assert refused.startswith("HTTP 400")
    assert "strength" in refused


async def test_serve_your_model() -> None:
    main = load("serve_your_model.py")["main"]
    indexes, from_model, from_input = await main(30)  # type: ignore[operator]
    assert indexes == sorted(set(indexes))
    assert indexes[-1] == 29
    assert from_model < 6  # the model's own output, but for H.264's losses...
    assert from_input > 20  # ...and far from the input


async def test_client_record_file(tmp_path: Path) -> None:
    main = load("client_record_file.py")["main"]
    output = tmp_path / "out.mp4"
    result = await main(60, str(output))  # type: ignore[operator]
    assert result.recorded == result.received  # the MP4 holds every frame that came back
    assert 20 <= result.recorded <= 60  # live: the first frames go while connections set up
    assert result.colour_in > 20
    assert result.colour_out < 3  # the noir look is grey


async def test_client_params() -> None:
    main = load("client_params.py")["main"]
    result = await main(30)  # type: ignore[operator]
    cool, neutral, warm = result.warmth
    assert cool + 10 < neutral < warm - 10
    assert result.refused.startswith("HTTP 400")
    assert "temperature" in result.refused
    last_accepted = {"stages": [{"effect": "grade", "temperature": 1.0}]}
    assert result.echoed == last_accepted


SCRIPT_ARGS = {
    "client_params.py": ["--frames", "20"],
    "client_record_file.py": ["--frames", "30", "--output", "{tmp}/out.mp4"],
    "minimal_worker.py": ["--frames", "30"],
    "serve_your_model.py": ["--frames", "30"],
    "torch_processor.py": ["--frames", "30"],
    "trickle_video_loop.py": ["--frames", "30"],
}
"""Short runs: the examples' own defaults are for people watching."""


@pytest.mark.parametrize(
    "name", sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("test_"))
)
def test_example_runs_as_a_script(name: str, tmp_path: Path) -> None:
    args = [arg.format(tmp=tmp_path) for arg in SCRIPT_ARGS.get(name, [])]
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.strip()  # a short human-readable result
