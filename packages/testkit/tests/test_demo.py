"""The demo is also the end-to-end round trip: publisher -> server -> subscriber -> decoder."""

from __future__ import annotations

import subprocess
import sys

from rich.console import Console

from byockit.testkit.demo import run_demo


async def test_ten_second_clip_arrives_whole_in_order() -> None:
    console = Console(quiet=True)
    progress = await run_demo(10.0, 30, 320, 180, console)
    assert progress.received == list(range(300))
    assert progress.unreadable == 0
    assert progress.segments >= 9  # one GOP of 1 s per segment
    assert len(progress.latencies) == 300


def test_command_prints_summary_and_exits_zero() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "byockit.testkit.demo", "--seconds", "1", "--size", "160x90"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every frame arrived, in order, intact" in result.stdout


def test_command_rejects_bad_size() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "byockit.testkit.demo", "--size", "big"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--size must look like 640x360" in result.stderr
