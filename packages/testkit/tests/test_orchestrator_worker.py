"""The real byockit worker driven through the FakeOrchestrator, end to end on loopback.

Registration (Registrar), the REST calls, trickle channels, video through
the pipeline, params by REST and by control channel, events, stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest

from byockit.protocol.models import (
    CapabilityRegistration,
    ErrorEvent,
    HealthStatus,
    ParamsUpdateEvent,
    StreamStatus,
    StreamStoppedEvent,
    TraceEvent,
)
from byockit.testkit.orchestrator import (
    EVENTS_TIMEOUT_REASON,
    FakeOrchestrator,
    FakeStream,
    WorkerRequestError,
)
from byockit.testkit.synthetic import indexed_frame, read_index, synthetic_frames
from byockit.worker.frames import Frame
from byockit.worker.processor import ParamsRejected, Processor
from byockit.worker.registration import Registrar
from byockit.worker.server import WorkerServer
from byockit.worker.session import StreamSession

SECRET = "orch-secret"
TOKEN = "worker-token"
TIMEOUT = 20.0
WIDTH, HEIGHT = 320, 180


@dataclass
class Params:
    invert: bool = True


class Inverter(Processor[Params]):
    """Inverts frames while ``invert`` is on; refuses nothing but wrong types and keys."""

    params_type = Params

    def validate_params(self, params: Params) -> None:
        if not isinstance(params.invert, bool):
            raise ParamsRejected("invert must be a boolean")

    def process(self, frame: Frame[npt.NDArray[np.uint8]]) -> npt.NDArray[np.uint8]:
        params = frame.stream.params
        assert isinstance(params, Params)
        return 255 - frame.data if params.invert else frame.data


def inverted(frame: av.VideoFrame) -> tuple[int, bool]:
    """The frame's index, and whether its pixels are the inverted original."""
    pixels = frame.to_ndarray(format="rgb24").astype(np.int16)
    index = read_index(pixels.astype(np.uint8))
    original = indexed_frame(index, WIDTH, HEIGHT).astype(np.int16)
    to_inverted = np.abs(pixels - (255 - original)).mean()
    to_original = np.abs(pixels - original).mean()
    assert min(to_inverted, to_original) < 20, "neither the original nor its inverse"
    return index, bool(to_inverted < to_original)


@contextlib.asynccontextmanager
async def worker(
    orch: FakeOrchestrator, *, token: str = TOKEN, status_interval: float = 0.5, **kwargs: Any
) -> AsyncIterator[WorkerServer]:
    """A worker serving Inverter, registered with ``orch`` by its Registrar."""
    sessions = functools.partial(StreamSession, status_interval=status_interval)
    server = WorkerServer(Inverter, port=0, token=TOKEN, session_factory=sessions, **kwargs)
    async with server:
        await server.wait_loaded()
        registration = CapabilityRegistration(
            name="inverter", url=server.url, capacity=server.capacity, token=token
        )
        async with Registrar(orch.url, SECRET, registration, refresh_interval=0.2):
            await orch.wait_registered("inverter")
            yield server


async def outputs(stream: FakeStream, last: int) -> list[tuple[int, bool]]:
    """Output frames (index, inverted) up to the one with index ``last`` or beyond."""
    seen: list[tuple[int, bool]] = []
    async with asyncio.timeout(TIMEOUT), contextlib.aclosing(stream.output_frames()) as frames:
        async for frame in frames:
            seen.append(inverted(frame))
            if seen[-1][0] >= last:
                break
    return seen


async def eventually_idle(server: WorkerServer) -> None:
    async with asyncio.timeout(TIMEOUT):
        while server.health != HealthStatus.IDLE:  # noqa: ASYNC110 - derived state, no event
            await asyncio.sleep(0.02)


@pytest.fixture
async def orchestrator() -> AsyncIterator[FakeOrchestrator]:
    async with FakeOrchestrator(secret=SECRET, keepalive_interval=0.5, event_timeout=5.0) as orch:
        yield orch


async def test_a_stream_end_to_end(orchestrator: FakeOrchestrator) -> None:
    async with worker(orchestrator) as server:
        stream = await orchestrator.start_stream("inverter", {"invert": True})
        assert stream.stream_id in server.sessions

        await stream.publish(synthetic_frames(45, width=WIDTH, height=HEIGHT))
        seen = await outputs(stream, 44)
        indexes = [index for index, _ in seen]
        assert indexes == sorted(set(indexes))  # in order, none twice
        assert set(indexes) <= set(range(45))
        assert all(flipped for _, flipped in seen)
        assert server.health == HealthStatus.OK

        await stream.wait_event(TraceEvent)
        status = await stream.wait_event(
            lambda event: (
                isinstance(event, StreamStatus)
                and event.inference_status is not None
                and bool(event.inference_status.frames)
            )
        )
        assert isinstance(status, StreamStatus)
        assert status.stream_id == stream.stream_id
        assert status.inference_status is not None
        assert status.inference_status.last_params == {"invert": True}

        refused = await stream.update_params({"invert": "yes"})
        assert refused.status == 400
        assert "invert" in refused.body
        unknown = await stream.update_params({"colour": 1})
        assert (unknown.status, "colour" in unknown.body) == (400, True)
        accepted = await stream.update_params({"invert": False})
        assert accepted.status == 200
        # The first params_update came from the control channel: go-livepeer writes the
        # start params there once.
        await stream.wait_event(
            lambda event: isinstance(event, ParamsUpdateEvent) and event.params == {"invert": False}
        )

        await stream.publish(
            itertools.islice(synthetic_frames(90, width=WIDTH, height=HEIGHT), 45, None)
        )
        later = await outputs(stream, 89)
        assert later[-1] == (89, False)  # the update took effect

        reply = await stream.stop(b"client left")
        assert reply.status == 200
        stopped = await stream.wait_event(StreamStoppedEvent)
        assert stopped.reason == "client left"
        await eventually_idle(server)
        assert server.sessions == {}
        assert stream.failure is None


async def test_params_through_the_control_channel(orchestrator: FakeOrchestrator) -> None:
    async with worker(orchestrator):
        stream = await orchestrator.start_stream("inverter", {"invert": True})
        await stream.send_control({"invert": False})
        await stream.wait_event(
            lambda event: isinstance(event, ParamsUpdateEvent) and event.params == {"invert": False}
        )
        await stream.send_control({"invert": "sometimes"})
        error = await stream.wait_event(ErrorEvent)
        assert "invert" in error.message
        assert (await stream.stop()).status == 200  # the stream went on


async def test_status_events_keep_the_stream_alive() -> None:
    orchestrator = FakeOrchestrator(secret=SECRET, keepalive_interval=0.2, event_timeout=1.5)
    async with orchestrator, worker(orchestrator, status_interval=0.2):
        stream = await orchestrator.start_stream("inverter")
        await asyncio.sleep(4.0)  # more than two event timeouts
        assert stream.failure is None
        assert not stream.ended
        await stream.stop()


async def test_a_quiet_worker_is_failed_and_freed() -> None:
    orchestrator = FakeOrchestrator(secret=SECRET, event_timeout=0.6)
    async with orchestrator, worker(orchestrator, status_interval=30.0) as server:
        stream = await orchestrator.start_stream("inverter", video_ingress=False)
        async with asyncio.timeout(TIMEOUT):
            await stream.wait_ended()
        assert stream.failure is not None
        await eventually_idle(server)
        stopped = [m.event for m in stream.events if isinstance(m.event, StreamStoppedEvent)]
        assert [event.reason for event in stopped] == [EVENTS_TIMEOUT_REASON]


async def test_capacity_is_enforced_and_a_stream_can_follow_another(
    orchestrator: FakeOrchestrator,
) -> None:
    async with worker(orchestrator) as server:
        first = await orchestrator.start_stream("inverter", video_ingress=False)
        with pytest.raises(WorkerRequestError) as busy:
            await orchestrator.start_stream("inverter", video_ingress=False)
        assert busy.value.status == 409
        assert first.stream_id in server.sessions
        await first.stop()
        await eventually_idle(server)
        second = await orchestrator.start_stream("inverter", {"invert": True})
        await second.publish(synthetic_frames(30, width=WIDTH, height=HEIGHT))
        seen = await outputs(second, 29)
        assert seen[-1] == (29, True)
        await second.stop()


async def test_a_refused_token_drops_the_registration_until_refreshed(
    orchestrator: FakeOrchestrator,
) -> None:
    async with worker(orchestrator, token="not-the-worker-token"):
        with pytest.raises(WorkerRequestError) as refused:
            await orchestrator.start_stream("inverter")
        assert refused.value.status == 401
        assert "inverter" not in orchestrator.registrations
        await orchestrator.wait_registered("inverter")  # the registrar puts it back


async def test_a_bad_channel_url_in_the_start_body_fails_the_stream_cleanly(
    orchestrator: FakeOrchestrator,
) -> None:
    async with worker(orchestrator) as server:
        missing = orchestrator.trickle.url + "no-such-channel"
        stream = await orchestrator.start_stream("inverter", extra={"subscribe_url": missing})
        assert stream.start_body["subscribe_url"] == missing
        assert stream.input_url != missing  # the orchestrator's own side is intact
        error = await stream.wait_event(ErrorEvent)
        assert "no-such-channel" in error.message
        await eventually_idle(server)
