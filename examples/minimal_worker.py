"""A complete BYOC worker in three lines, served and driven end to end on loopback.

The processor is a plain function of a ``Frame`` (``frame.data`` is numpy
uint8 RGB, H x W x 3; ``frame.pts``, ``frame.time`` and ``frame.index`` say
when it is) returning the new pixels. ``WorkerServer`` serves it over the
REST contract an orchestrator calls; the testkit's ``FakeOrchestrator``
starts a stream on it, publishes synthetic video into its input channel and
decodes its output channel, as go-livepeer would. Each frame carries its
index in its pixels, so the output can be matched to the input frame by
frame.

To serve the same function to a real orchestrator:

    byockit-worker serve minimal_worker:invert --port 8000 --capability invert \\
        --orch-url https://orchestrator:8935 --orch-secret "$ORCH_SECRET"
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

import numpy as np
import numpy.typing as npt

from byockit.protocol.models import CapabilityRegistration
from byockit.testkit.orchestrator import FakeOrchestrator
from byockit.testkit.synthetic import read_index, synthetic_frames
from byockit.worker import Frame, WorkerServer


def invert(frame: Frame[npt.NDArray[np.uint8]]) -> npt.NDArray[np.uint8]:
    return 255 - frame.data


async def main(count: int) -> list[int]:
    """Streams ``count`` frames through the worker; returns the indexes that came back."""
    async with FakeOrchestrator() as orchestrator, WorkerServer(invert, port=0) as worker:
        await worker.wait_loaded()
        await orchestrator.register(
            CapabilityRegistration(name="invert", url=worker.url, capacity=1)
        )
        stream = await orchestrator.start_stream("invert")
        sending = asyncio.create_task(
            stream.publish(synthetic_frames(count, width=320, height=180))
        )
        received: list[int] = []
        async with asyncio.timeout(60), contextlib.aclosing(stream.output_frames()) as frames:
            async for frame in frames:
                received.append(read_index(frame.to_ndarray(format="rgb24")))
                if received[-1] == count - 1:
                    break
        await sending
        await stream.stop()
        return received


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=90)
    indexes = asyncio.run(main(parser.parse_args().frames))
    print(f"{len(indexes)} frames came back through the worker; last index {indexes[-1]}")
