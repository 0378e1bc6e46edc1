"""The output encoder's x264 preset: superfast unless the worker is told otherwise.

x264 writes its settings into the first picture of a stream (an SEI
message), so the preset shows in the output bytes: ``subme`` is 0 for
ultrafast, 1 for superfast and 2 for veryfast.
"""

from __future__ import annotations

import asyncio
import re

import numpy as np
import numpy.typing as npt
import pytest

from byockit.protocol.models import CapabilityRegistration
from byockit.protocol.trickle import TrickleSubscriber
from byockit.testkit.orchestrator import FakeOrchestrator
from byockit.testkit.synthetic import synthetic_frames
from byockit.worker.frames import Frame
from byockit.worker.server import WorkerServer

TIMEOUT = 20.0
"""Only stops a hang."""


def passthrough(frame: Frame[npt.NDArray[np.uint8]]) -> npt.NDArray[np.uint8]:
    return frame.data


async def output_subme(**server_options: str) -> int:
    """x264's ``subme`` in the output of a worker made with ``server_options``."""
    async with (
        FakeOrchestrator() as orchestrator,
        WorkerServer(passthrough, port=0, **server_options) as server,
    ):
        await asyncio.wait_for(server.wait_loaded(), TIMEOUT)
        await orchestrator.register(CapabilityRegistration(name="pass", url=server.url, capacity=1))
        stream = await orchestrator.start_stream("pass", {})
        assert stream.output_url is not None
        await stream.publish(list(synthetic_frames(10, width=128, height=72)))
        received = b""
        async with (
            asyncio.timeout(TIMEOUT),
            TrickleSubscriber(stream.output_url, start=0, verify_tls=False) as output,
        ):
            segment = await output.next_segment()
            assert segment is not None
            async for chunk in segment.iter_chunks():
                received += chunk
                if found := re.search(rb"subme=(\d+)", received):
                    return int(found.group(1))
        raise AssertionError("no x264 settings in the first output segment")


async def test_the_output_is_encoded_superfast_by_default() -> None:
    assert await output_subme() == 1


async def test_the_worker_encodes_with_the_preset_it_is_given() -> None:
    assert await output_subme(x264_preset="ultrafast") == 0


def test_an_unknown_preset_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="x264_preset must be one of ultrafast, superfast"):
        WorkerServer(passthrough, x264_preset="quick")
