"""Streams coming and going, and broken input, end to end: FakeOrchestrator -> WorkerServer.

A worker serves one stream after another; streams get damaged input and
channel URLs that are missing (404) or unreachable. Each either goes on or
ends cleanly with an error event, and always frees its slot. Assertions are
on indexes, events and states, never on timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest

from byockit.protocol.models import (
    CapabilityRegistration,
    ErrorEvent,
    HealthStatus,
    JSONObject,
    StreamStatus,
    StreamStoppedEvent,
)
from byockit.testkit.orchestrator import FakeOrchestrator, FakeStream
from byockit.testkit.synthetic import (
    indexed_frame,
    make_ts_clip,
    read_index,
    split_segments,
    synthetic_frames,
)
from byockit.worker.frames import Frame
from byockit.worker.processor import Processor, StreamContext
from byockit.worker.server import WorkerServer
from byockit.worker.session import StreamSession

W, H = 128, 72
FRAMES = 15
TIMEOUT = 20.0
"""Only stops a hang."""
UNREACHABLE = "http://127.0.0.1:1/nowhere"


class Inverter(Processor[JSONObject]):
    """Inverts every frame; records its lifecycle."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def on_stream_start(self, stream: StreamContext, params: JSONObject) -> None:
        self.calls.append(f"start {stream.stream_id}")

    def process(self, frame: Frame[npt.NDArray[np.uint8]]) -> object:
        return 255 - frame.data

    def on_stream_stop(self) -> None:
        self.calls.append("stop")


@contextlib.asynccontextmanager
async def serving(
    processor: object, **session_options: Any
) -> AsyncIterator[tuple[FakeOrchestrator, WorkerServer]]:
    """A worker serving ``processor``, registered with a fake orchestrator as "inverter"."""
    sessions = functools.partial(StreamSession, status_interval=0.3, **session_options)
    async with FakeOrchestrator(keepalive_interval=0.5) as orchestrator:
        server = WorkerServer(processor, port=0, session_factory=sessions)
        async with server:
            await asyncio.wait_for(server.wait_loaded(), TIMEOUT)
            await orchestrator.register(
                CapabilityRegistration(name="inverter", url=server.url, capacity=1)
            )
            yield orchestrator, server


async def output_indexes(stream: FakeStream, last: int) -> list[int]:
    """Indexes of the output frames up to ``last``, each checked to be its input inverted."""
    seen = []
    async with asyncio.timeout(TIMEOUT), contextlib.aclosing(stream.output_frames()) as frames:
        async for frame in frames:
            seen.append(inverted_index(frame))
            if seen[-1] >= last:
                return seen
    raise AssertionError(f"the output ended at {seen[-1:]}, before frame {last}")


def inverted_index(frame: av.VideoFrame) -> int:
    pixels = frame.to_ndarray(format="rgb24")
    index = read_index(pixels)
    expected = 255 - indexed_frame(index, W, H).astype(np.int16)
    assert np.abs(pixels.astype(np.int16) - expected).mean() < 10, index
    return index


async def eventually(condition: Any, what: str) -> None:
    try:
        async with asyncio.timeout(TIMEOUT):
            while not condition():  # noqa: ASYNC110 - state derived from other tasks
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def errors(stream: FakeStream) -> list[str]:
    return [m.event.message for m in stream.events if isinstance(m.event, ErrorEvent)]


# --- one stream after another ------------------------------------------------------------------


async def test_a_stream_can_start_after_another_stopped_and_frames_flow_again() -> None:
    processor = Inverter()
    async with serving(processor) as (orchestrator, server):
        streams = []
        for _ in range(2):
            stream = await orchestrator.start_stream("inverter")
            await stream.publish(synthetic_frames(FRAMES, width=W, height=H))
            indexes = await output_indexes(stream, FRAMES - 1)
            assert indexes == sorted(set(indexes))
            assert indexes[-1] == FRAMES - 1
            assert (await stream.stop(b"next please")).status == 200
            stopped = await stream.wait_event(StreamStoppedEvent)
            assert stopped.reason == "next please"
            await eventually(lambda: server.health == HealthStatus.IDLE, "an idle worker")
            streams.append(stream.stream_id)
    assert processor.calls == [f"start {streams[0]}", "stop", f"start {streams[1]}", "stop"]


# --- damaged input -----------------------------------------------------------------------------


def damaged(segment: bytes) -> bytes:
    """The segment with a run of garbage over its middle third (packets, headers and all)."""
    third = len(segment) // 3
    garbage = np.random.default_rng(7).integers(0, 256, third, dtype=np.uint8).tobytes()
    return segment[:third] + garbage + segment[2 * third :]


async def test_corrupted_input_segments_are_skipped_and_the_stream_goes_on() -> None:
    clip = make_ts_clip(2.0, width=W, height=H, gop_seconds=0.5)
    segments = split_segments(clip)
    assert len(segments) == 4
    sent = [segments[0], damaged(segments[1]), bytes(range(256)) * 40, segments[2], segments[3]]
    async with serving(Inverter()) as (orchestrator, server):
        stream = await orchestrator.start_stream("inverter")
        for segment in sent:
            await stream.publish_segments([segment])
            await asyncio.sleep(0.1)
        indexes = await output_indexes(stream, 59)
        assert indexes == sorted(set(indexes))
        assert any(index < 15 for index in indexes)  # before the damage
        assert any(index >= 30 for index in indexes)  # and after it
        assert stream.stream_id in server.sessions
        assert server.sessions[stream.stream_id].health == "ok"
        assert (await stream.stop()).status == 200


# --- channels that are missing or unreachable --------------------------------------------------


@pytest.mark.parametrize("channel", ["control_url", "events_url", "data_url"])
@pytest.mark.parametrize("broken", ["missing", "unreachable"])
async def test_a_broken_side_channel_leaves_the_video_running(channel: str, broken: str) -> None:
    async with serving(Inverter()) as (orchestrator, server):
        url = orchestrator.trickle.url + "no-such-channel" if broken == "missing" else UNREACHABLE
        stream = await orchestrator.start_stream("inverter", extra={channel: url})
        await stream.publish(synthetic_frames(FRAMES, width=W, height=H))
        assert (await output_indexes(stream, FRAMES - 1))[-1] == FRAMES - 1
        if channel == "control_url":  # the stream is told that no update can reach it
            await eventually(lambda: errors(stream), "an error event")
            assert url in errors(stream)[0]
        assert (await stream.stop()).status == 200
        await eventually(lambda: server.health == HealthStatus.IDLE, "an idle worker")


async def test_an_unreachable_input_fails_the_stream_cleanly_and_frees_its_slot() -> None:
    async with serving(Inverter()) as (orchestrator, server):
        stream = await orchestrator.start_stream("inverter", extra={"subscribe_url": UNREACHABLE})
        error = await stream.wait_event(ErrorEvent, timeout=TIMEOUT)
        assert error.message.startswith("stream failed: TooManyFailuresError")
        assert UNREACHABLE in error.message
        await stream.wait_event(StreamStoppedEvent, timeout=TIMEOUT)
        await eventually(lambda: not server.sessions, "the slot to be freed")
        assert server.health == HealthStatus.IDLE
        next_stream = await orchestrator.start_stream("inverter")
        await next_stream.publish(synthetic_frames(FRAMES, width=W, height=H))
        assert (await output_indexes(next_stream, FRAMES - 1))[-1] == FRAMES - 1
        await next_stream.stop()


async def test_an_unreachable_output_shows_as_an_error_until_stopped() -> None:
    # The publisher retries a segment's upload for as long as it is being written (as
    # go-livepeer's does), so the stream does not end by itself: frames stop coming
    # through, which health and status report; a stop ends it within the drain time.
    async with serving(Inverter(), stall_timeout=0.5, drain_timeout=0.5) as (orchestrator, server):
        stream = await orchestrator.start_stream("inverter", extra={"publish_url": UNREACHABLE})
        publishing = asyncio.create_task(stream.publish(synthetic_frames(300, width=W, height=H)))
        try:
            status = await stream.wait_event(
                lambda event: isinstance(event, StreamStatus) and event.state == "ERROR",
                timeout=TIMEOUT,
            )
            assert isinstance(status, StreamStatus)
            assert status.input_status is not None
            assert status.input_status.frames
            health = server.health  # the worker's too
            assert health == HealthStatus.ERROR
            assert (await stream.stop()).status == 200
            await eventually(lambda: server.health == HealthStatus.IDLE, "an idle worker")
        finally:
            publishing.cancel()
            await asyncio.gather(publishing, return_exceptions=True)
