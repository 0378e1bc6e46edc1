"""Parameter updates end to end: FakeOrchestrator -> WorkerServer, by REST and by control channel.

Each update is made between two batches of indexed frames, after every
frame of the first batch came out, so the frame it must take effect at is
known: the first frame of the second batch. Every output frame is matched
to its input by the index in its pixels and checked for the parameters in
force. Assertions are on indexes and contents, never on timings.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

import av
import numpy as np
import numpy.typing as npt
import pytest

from byockit.protocol.models import (
    ErrorEvent,
    Event,
    ParamsUpdateEvent,
    StreamStatus,
)
from byockit.protocol.trickle.channels import DEFAULT_MAX_DOCUMENT_BYTES
from byockit.testkit.orchestrator import FakeOrchestrator, FakeStream
from byockit.testkit.stack import WorkerFactory
from byockit.testkit.synthetic import indexed_frame, read_index, synthetic_frames
from byockit.testkit.watch import OutputWatcher
from byockit.worker.frames import Frame
from byockit.worker.processor import Processor
from byockit.worker.server import WorkerServer
from byockit.worker.session import StreamSession

W, H = 128, 72
BATCH = 15
"""Frames per batch: half a second at 30 fps."""
TIMEOUT = 20.0
"""Only stops a hang."""


@dataclass
class Params:
    invert: bool = True


class Inverter(Processor[Params]):
    """Inverts frames while ``invert`` is on; records each frame's index and ``invert``."""

    params_type = Params

    def __init__(self) -> None:
        self.processed: list[tuple[int, bool]] = []

    def process(self, frame: Frame[npt.NDArray[np.uint8]]) -> object:
        params = frame.stream.params
        assert isinstance(params, Params)
        self.processed.append((read_index(frame.data), params.invert))
        return 255 - frame.data if params.invert else frame.data


def looks(frame: av.VideoFrame) -> tuple[int, bool]:
    """An output frame's index, and whether it is the inverse of its input."""
    pixels = frame.to_ndarray(format="rgb24")
    index = read_index(pixels)
    original = indexed_frame(index, W, H).astype(np.int16)
    to_inverse = np.abs(pixels - (255 - original)).mean()
    to_original = np.abs(pixels - original).mean()
    assert min(to_inverse, to_original) < 20, "neither the input nor its inverse"
    return index, bool(to_inverse < to_original)


@contextlib.asynccontextmanager
async def streaming(
    processor: Inverter, status_interval: float = 0.5
) -> AsyncIterator[tuple[FakeStream, OutputWatcher[bool], WorkerServer]]:
    """A worker serving ``processor`` and one stream on it (started with ``invert: true``)."""
    sessions = functools.partial(StreamSession, status_interval=status_interval)
    async with (
        FakeOrchestrator(keepalive_interval=0.5) as orchestrator,
        WorkerFactory(orchestrator) as workers,
    ):
        served = await workers(processor, session_factory=sessions)
        stream = await served.start_stream({"invert": True})
        async with OutputWatcher(stream, looks) as watcher:
            yield stream, watcher, served.server


async def batch(stream: FakeStream, number: int) -> None:
    """Publish batch ``number`` (frames ``number * BATCH`` onwards), paced as a live source."""
    first = number * BATCH
    frames = synthetic_frames(first + BATCH, width=W, height=H)
    await stream.publish(itertools.islice(frames, first, None))


def update_event(params: dict[str, Any]) -> Callable[[Event], bool]:
    return lambda event: isinstance(event, ParamsUpdateEvent) and event.params == params


def status_with(params: dict[str, Any]) -> Callable[[Event], bool]:
    return lambda event: (
        isinstance(event, StreamStatus)
        and event.inference_status is not None
        and event.inference_status.last_params == params
    )


@pytest.mark.parametrize("via", ["rest", "control"])
async def test_an_update_takes_effect_at_the_next_frame(via: Literal["rest", "control"]) -> None:
    processor = Inverter()
    # Periodic status events far apart: the one with the new params is the update's own.
    async with streaming(processor, status_interval=3600) as (stream, watcher, server):
        await batch(stream, 0)
        await watcher.reaches(BATCH - 1, timeout=TIMEOUT)  # the last frame before the update is out

        if via == "rest":
            reply = await stream.update_params({"invert": False})
            assert reply.status == 200
        else:
            await stream.send_control({"invert": False})
        await stream.wait_event(update_event({"invert": False}), timeout=TIMEOUT)
        # A status follows at once (not after the 10 s status interval): gateways
        # answer status queries with the last status event.
        await stream.wait_event(status_with({"invert": False}), timeout=TIMEOUT)

        await batch(stream, 1)
        await watcher.reaches(2 * BATCH - 1, timeout=TIMEOUT)
        assert stream.stream_id in server.sessions

    switch = BATCH  # the first frame published after the update was accepted
    assert processor.processed
    assert all(invert == (index < switch) for index, invert in processor.processed)
    assert any(index >= switch for index, _ in processor.processed)
    assert watcher.seen == processor.processed  # every processed frame came out, as processed


async def test_an_oversize_control_message_is_reported_and_the_stream_goes_on() -> None:
    processor = Inverter()
    async with streaming(processor) as (stream, watcher, server):
        await stream.wait_event(update_event({"invert": True}), timeout=TIMEOUT)  # start params
        padding = b"x" * DEFAULT_MAX_DOCUMENT_BYTES
        await stream.send_control(b'{"invert": false, "padding": "' + padding + b'"}')
        error = await stream.wait_event(ErrorEvent, timeout=TIMEOUT)
        assert error.message.startswith("malformed control message")
        assert f"larger than {DEFAULT_MAX_DOCUMENT_BYTES} bytes" in error.message

        await batch(stream, 0)
        await watcher.reaches(BATCH - 1, timeout=TIMEOUT)
        assert all(inverted for _, inverted in watcher.seen)  # the oversize update was not applied

        await stream.send_control({"invert": False})  # the channel still works
        await stream.wait_event(update_event({"invert": False}), timeout=TIMEOUT)
        await batch(stream, 1)
        await watcher.reaches(2 * BATCH - 1, timeout=TIMEOUT)
        assert stream.stream_id in server.sessions
        assert server.sessions[stream.stream_id].health == "ok"

    after = [inverted for index, inverted in watcher.seen if index >= BATCH]
    assert after
    assert not any(after)  # the update that followed was applied
    errors = [m.event for m in stream.events if isinstance(m.event, ErrorEvent)]
    assert len(errors) == 1
