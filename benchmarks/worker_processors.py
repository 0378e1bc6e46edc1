"""byockit's side of the worker benchmark: the processors ``byockit-worker serve`` runs.

The same two as :mod:`benchmarks.pytrickle_worker`: ``passthrough`` returns
the frame; ``sleep20`` stands for a 20 ms synchronous model call (a sleep:
the time passes without costing this machine's CPU, as a GPU call would).
"""

from __future__ import annotations

import time
from typing import Any

from byockit.worker import Frame

MODEL_SECONDS = 0.020


def passthrough(frame: Frame[Any]) -> Frame[Any]:
    return frame


def sleep20(frame: Frame[Any]) -> Frame[Any]:
    time.sleep(MODEL_SECONDS)
    return frame
