"""Where benchmark results go, and a description of the machine they came from."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_description() -> str:
    """One Markdown paragraph: date, CPU, cores, OS, Python."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"Date: {now}. Machine: {cpu_model()}, {os.cpu_count()} cores, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}."
    )


def results_path(name: str) -> Path:
    """``benchmarks/results/{name}-{date}.md``."""
    RESULTS.mkdir(exist_ok=True)
    return RESULTS / f"{name}-{datetime.date.today().isoformat()}.md"
