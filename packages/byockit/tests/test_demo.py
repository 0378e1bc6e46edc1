"""The demo end to end: the whole loop on loopback, looks changing live, a summary and an MP4."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import av
import torch

import byockit.demo
from byockit.demo import LOOKS, DemoProgress, DemoSettings, run_demo


def test_installed_version_matches_module() -> None:
    assert byockit.demo.__version__ == version("byockit")


async def test_the_demo_streams_through_every_stage_and_changes_looks(tmp_path: Path) -> None:
    out = tmp_path / "demo.mp4"
    reports: list[DemoProgress] = []
    settings = DemoSettings(
        seconds=9, size=(256, 144), fps=15, record=str(out), preview=True, look_interval=2
    )
    result = await run_demo(settings, on_progress=reports.append)
    summary = result.summary
    assert 0 < summary.frames_out <= summary.frames_in
    assert summary.latency_p50 is not None  # the index survives most looks
    assert summary.latency_p95 is not None
    assert result.looks_failed == 0
    assert result.looks_applied >= 3
    assert {report.look.name for report in reports} >= {LOOKS[0].name, LOOKS[1].name}
    stages = [stage for stage, _, _ in reports[-1].stages]
    assert stages == [
        "orchestrator",
        "trickle server",
        f"worker (reference effects, {'CUDA' if torch.cuda.is_available() else 'CPU'})",
        "gateway",
    ]
    assert any("registered" in state for _, _, state in reports[-1].stages)
    assert reports[-1].client.preview_url is not None
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) > 0


def demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "byockit.demo", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_the_command_ends_with_a_summary_and_exit_0(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    result = demo("--seconds", "4", "--size", "160x96", "--fps", "10", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert "frames out" in result.stdout
    assert "latency p50 / p95" in result.stdout
    assert out.stat().st_size > 0


def test_bad_arguments_are_named() -> None:
    result = demo("--size", "big")
    assert result.returncode == 2
    assert "expected WIDTHxHEIGHT" in result.stderr
    result = demo("--seconds", "0")
    assert result.returncode == 2
    assert "--seconds: must be > 0" in result.stderr
    result = demo("--file", "/nonexistent/clip.mp4")
    assert result.returncode == 1
    assert "--file /nonexistent/clip.mp4: no such file" in result.stderr


async def test_a_run_without_an_end_stops_when_told() -> None:
    """What Ctrl-C does in the CLI: ``until`` ends a ``--forever`` run, with its summary."""
    until = asyncio.Event()

    def stop_after_some_output(progress: DemoProgress) -> None:
        if progress.client.frames_out >= 10:
            until.set()

    settings = DemoSettings(seconds=None, size=(160, 96), fps=15, record=None, preview=False)
    async with asyncio.timeout(60):
        result = await run_demo(settings, on_progress=stop_after_some_output, until=until)
    assert until.is_set()
    assert result.summary.frames_out >= 10
    assert result.summary.recorded is None
