"""TrickleDirect: frames into one trickle channel and out of another, on loopback.

First against a bare TrickleServer (one channel read back: what goes in
comes out), then through a real WorkerServer started by the FakeOrchestrator,
its channel URLs used directly, output matched to input by index.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import numpy as np
import numpy.typing as npt
import pytest

from byockit.client.sinks import FrameSink
from byockit.client.sources import TestPatternSource
from byockit.client.trickle_direct import TrickleDirect
from byockit.protocol.errors import ChannelNotFoundError, StreamClosedError
from byockit.protocol.media import SegmentEncoder
from byockit.protocol.media.pattern import read_index
from byockit.protocol.models import CapabilityRegistration
from byockit.testkit.orchestrator import FakeOrchestrator
from byockit.testkit.trickle_server import TrickleServer
from byockit.worker import Frame, WorkerServer

TIMEOUT = 30.0
W, H = 160, 90


@pytest.fixture
async def trickle() -> AsyncIterator[TrickleServer]:
    async with TrickleServer() as server:
        yield server


def fast_encoder() -> SegmentEncoder:
    return SegmentEncoder(preset="ultrafast", segment_seconds=0.5)


async def test_frames_published_into_a_channel_come_back_decoded(trickle: TrickleServer) -> None:
    url = trickle.create_channel("loop", "video/mp2t")
    source = TestPatternSource(width=W, height=H, count=30, realtime=False)
    received = []
    direct = TrickleDirect(url, url, encoder=fast_encoder())
    async with asyncio.timeout(TIMEOUT), direct, contextlib.aclosing(direct.run(source)) as frames:
        async for frame in frames:
            received.append((read_index(frame.to_ndarray(format="rgb24")), frame.pts))
            if received[-1][0] == 29:
                break
    assert received == [(i, i * 3000) for i in range(30)]


async def test_a_publishing_failure_is_raised_by_run(trickle: TrickleServer) -> None:
    output = trickle.create_channel("out", "video/mp2t")
    missing = trickle.channel_url("missing")
    source = TestPatternSource(width=W, height=H, count=30, realtime=False)
    async with asyncio.timeout(TIMEOUT), TrickleDirect(missing, output) as direct:
        with pytest.raises(ChannelNotFoundError):
            async for _ in direct.run(source):
                pass


async def test_close_ends_reading_and_publishing(trickle: TrickleServer) -> None:
    url = trickle.create_channel("endless", "video/mp2t")
    direct = TrickleDirect(url, url, encoder=fast_encoder())
    publishing = asyncio.create_task(direct.publish(TestPatternSource(width=W, height=H)))
    async with asyncio.timeout(TIMEOUT):
        frames = direct.frames()
        await anext(frames)
        await direct.close()
        assert len([frame async for frame in frames]) < 30  # ends instead of waiting for more
        with pytest.raises(StreamClosedError):
            await publishing


def invert(frame: Frame[npt.NDArray[np.uint8]]) -> npt.NDArray[np.uint8]:
    return 255 - frame.data


async def test_through_a_real_worker_with_latency_matched_by_index() -> None:
    count = 45
    async with (
        asyncio.timeout(60),
        FakeOrchestrator() as orchestrator,
        WorkerServer(invert, port=0) as worker,
    ):
        await worker.wait_loaded()
        await orchestrator.register(
            CapabilityRegistration(name="invert", url=worker.url, capacity=1)
        )
        stream = await orchestrator.start_stream("invert", data_output=False)
        assert stream.input_url is not None
        assert stream.output_url is not None
        direct = TrickleDirect(
            stream.input_url, stream.output_url, verify_tls=False, encoder=fast_encoder()
        )
        source = TestPatternSource(fps=30, width=W, height=H, count=count)
        sink = FrameSink(direct.frames())
        sending = asyncio.create_task(direct.publish(sink.track(source)))
        received = []
        async for item in sink:
            received.append(item)
            if item.index == count - 1:
                break
        await sink.close()
        await sending
        await direct.close()
        await stream.stop()
    indexes = [item.index for item in received]
    assert indexes == sorted(indexes)
    assert len(indexes) >= count // 2  # a busy worker may drop frames, never reorder them
    assert all(item.latency is not None and item.latency > 0 for item in received)
    for item in received:  # the worker inverted them: the white reference cell is dark
        assert item.frame.to_ndarray(format="rgb24")[H // 18, W // 28].mean() < 128
