"""The two workers under test, each in a process of its own, and what ``/proc`` says about them.

byockit's worker is its CLI (``byockit-worker serve``) serving
:mod:`benchmarks.worker_processors`; pytrickle's is
:mod:`benchmarks.pytrickle_worker` run by the Python of pytrickle's own
environment. Each serves on 127.0.0.1 and is ready once ``/health`` says
``IDLE``. The process's output goes to a log file, shown when it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import aiohttp

from benchmarks.server_process import free_port

REPO: Final = Path(__file__).resolve().parent.parent
BENCHMARKS: Final = Path(__file__).resolve().parent
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
READY_TIMEOUT: Final = 120.0
"""Seconds a worker may take to answer ``/health`` with ``IDLE`` (pytrickle imports torch)."""
STOP_TIMEOUT: Final = 10.0
PROCESSORS: Final = ("passthrough", "sleep20")


class WorkerFailed(RuntimeError):
    """A worker process exited or never became ready; the message ends with its log."""


def worker_argv(
    implementation: str, processor: str, port: int, pytrickle_python: str | None
) -> list[str]:
    """The command line that serves ``processor`` on ``port`` with ``implementation``."""
    if processor not in PROCESSORS:
        raise ValueError(f"unknown processor {processor!r}")
    if implementation == "byockit":
        target = f"benchmarks.worker_processors:{processor}"
        return [sys.executable, "-m", "byockit.worker.cli", "serve", target, "--port", str(port)]
    if implementation == "pytrickle":
        if pytrickle_python is None:
            raise ValueError("pytrickle needs --pytrickle-python")
        return [pytrickle_python, str(BENCHMARKS / "pytrickle_worker.py"), processor, str(port)]
    raise ValueError(f"unknown implementation {implementation!r}")


@contextlib.asynccontextmanager
async def worker_process(
    implementation: str, processor: str, pytrickle_python: str | None, log_dir: Path
) -> AsyncIterator[tuple[int, str]]:
    """Start a worker, wait until it is ``IDLE``; yields its pid and base URL; stops it after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = log_dir / f"{implementation}-{processor}-{port}.log"
    argv = worker_argv(implementation, processor, port, pytrickle_python)
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=REPO, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log
        )
    try:
        await _wait_idle(process, url, log_path)
        yield process.pid, url
        if process.returncode is not None:
            raise WorkerFailed(f"{implementation} exited ({process.returncode}){_tail(log_path)}")
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _wait_idle(process: asyncio.subprocess.Process, url: str, log_path: Path) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT
    async with aiohttp.ClientSession() as session:
        while loop.time() < deadline:
            if process.returncode is not None:
                raise WorkerFailed(f"worker exited ({process.returncode}){_tail(log_path)}")
            with contextlib.suppress(aiohttp.ClientError, ValueError):
                async with session.get(f"{url}/health") as response:
                    if (await response.json()).get("status") == "IDLE":
                        return
            await asyncio.sleep(0.2)
    raise WorkerFailed(f"worker not IDLE after {READY_TIMEOUT:.0f} s{_tail(log_path)}")


def _tail(log_path: Path, lines: int = 30) -> str:
    text = log_path.read_text(errors="replace").splitlines()[-lines:]
    return f"; last lines of {log_path}:\n" + "\n".join(text)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """The process's resident memory."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
