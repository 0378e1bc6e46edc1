"""pytrickle's side of the worker benchmark: the benchmark's processors served by pytrickle.

Runs inside the pytrickle environment (pytrickle 0.1.6 pins its own torch
and PyAV), never in byockit's: ``python pytrickle_worker.py PROCESSOR PORT``
serves on 127.0.0.1:PORT with pytrickle's defaults (its REST routes at the
root, so the orchestrator's ``{url}/stream/start`` reaches it). The
processors do what :mod:`benchmarks.worker_processors` does for byockit:
``passthrough`` returns the frame; ``sleep20`` stands for a 20 ms model
call, made the way a pytrickle handler calls a synchronous model (inside
its async handler; pytrickle requires handlers to be coroutines).
"""

from __future__ import annotations

import asyncio
import sys
import time

from pytrickle import StreamProcessor, VideoFrame  # type: ignore[import-not-found, unused-ignore]

MODEL_SECONDS = 0.020


async def passthrough(frame: VideoFrame) -> VideoFrame:
    return frame


async def sleep20(frame: VideoFrame) -> VideoFrame:
    time.sleep(MODEL_SECONDS)  # noqa: ASYNC251 - a synchronous model call, as handlers make
    return frame


PROCESSORS = {"passthrough": passthrough, "sleep20": sleep20}


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] not in PROCESSORS:
        print(f"usage: pytrickle_worker.py {{{','.join(PROCESSORS)}}} PORT", file=sys.stderr)
        return 2
    processor = StreamProcessor(
        video_processor=PROCESSORS[sys.argv[1]],
        name=f"bench-{sys.argv[1]}",
        port=int(sys.argv[2]),
        host="127.0.0.1",
    )
    asyncio.run(processor.run_forever())
    return 0


if __name__ == "__main__":
    sys.exit(main())
