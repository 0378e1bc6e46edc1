"""The client's media end to end on loopback, beyond the happy path.

WhipPublisher / WhepPlayer / run() -> FakeGateway -> FakeOrchestrator(s) ->
real WorkerServer(s): a params update seen in the output at one frame index,
an orchestrator killed mid-stream, a consumer that reads slowly, and what
is left of a run once it is over. WebRTC is lossy, so frames are matched by
the pattern's index (damaged frames skipped) and orders, not timings, are
asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import functools
import os
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import av
import numpy as np
import numpy.typing as npt
import pytest

from byockit.client import (
    GatewayClient,
    GatewayError,
    GatewayUnavailable,
    NoGatewayAvailable,
    StreamSession,
)
from byockit.client.run import Progress, run
from byockit.client.sources import TestPatternSource
from byockit.client.webrtc import PLAYER_QUEUE, WhepPlayer, WhipPublisher
from byockit.protocol.models import CapabilityRegistration
from byockit.testkit.gateway import FakeGateway
from byockit.testkit.orchestrator import FakeOrchestrator
from byockit.testkit.synthetic import indexed_frame, read_index
from byockit.testkit.webrtc import loopback_ice
from byockit.worker import session as worker_session
from byockit.worker.frames import Frame
from byockit.worker.processor import Processor
from byockit.worker.server import WorkerServer

CAPABILITY = "painter"
TIMEOUT = 30.0
WIDTH, HEIGHT, FPS = 160, 96, 15
SESSIONS = functools.partial(worker_session.StreamSession, status_interval=0.2)


@dataclass
class Params:
    paint: bool = False


class Painter(Processor[Params]):
    """Blacks out the bottom half of each frame while ``paint`` is on (the index code stays)."""

    params_type = Params

    def process(self, frame: Frame[npt.NDArray[np.uint8]]) -> npt.NDArray[np.uint8]:
        params = frame.stream.params
        assert isinstance(params, Params)
        if not params.paint:
            return frame.data
        painted = frame.data.copy()
        painted[painted.shape[0] // 2 :] = 0
        return painted


def painted(image: npt.NDArray[np.uint8]) -> bool:
    """Whether the bottom half is black (the pattern there averages about 128)."""
    return float(image[image.shape[0] // 2 :].mean()) < 40


@pytest.fixture(autouse=True)
def loopback() -> Iterator[None]:
    with loopback_ice():
        yield


@contextlib.asynccontextmanager
async def network(orchestrators: int = 1) -> AsyncIterator[FakeGateway]:
    """A gateway over ``orchestrators`` fake orchestrators, each with a worker of its own."""
    async with contextlib.AsyncExitStack() as stack:
        orchs = []
        for _ in range(orchestrators):
            orch = await stack.enter_async_context(
                FakeOrchestrator(keepalive_interval=0.5, event_timeout=5.0)
            )
            worker = await stack.enter_async_context(
                WorkerServer(Painter, port=0, session_factory=SESSIONS)
            )
            await worker.wait_loaded()
            await orch.register(
                CapabilityRegistration(name=CAPABILITY, url=worker.url, capacity=worker.capacity)
            )
            orchs.append(orch)
        yield await stack.enter_async_context(FakeGateway(orchs))


class Source:
    """Indexed frames at ``FPS`` in real time, endless; ``sent`` is the last index handed on."""

    def __init__(self) -> None:
        self.sent = -1

    async def __aiter__(self) -> AsyncIterator[av.VideoFrame]:
        while True:
            await asyncio.sleep(1 / FPS)
            index = self.sent + 1
            frame = av.VideoFrame.from_ndarray(indexed_frame(index, WIDTH, HEIGHT), "rgb24")
            frame.pts, frame.time_base = index * 90_000 // FPS, fractions.Fraction(1, 90_000)
            self.sent = index
            yield frame


async def next_readable(frames: AsyncIterator[av.VideoFrame]) -> tuple[int, bool]:
    """The index of the next frame whose index survived transport, and whether it is painted."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            image = (await anext(frames)).to_ndarray(format="rgb24")
            with contextlib.suppress(ValueError):
                return read_index(image), painted(image)


async def read_frames(frames: AsyncIterator[av.VideoFrame], count: int) -> list[tuple[int, bool]]:
    return [await next_readable(frames) for _ in range(count)]


def orchestrator_running(gateway: FakeGateway, stream: StreamSession) -> FakeOrchestrator:
    (orch,) = [o for o in gateway.orchestrators if stream.stream_id in o.streams]
    return orch


async def test_a_rejected_start_and_a_gateway_gone_down_are_typed_errors() -> None:
    async with network() as gateway, GatewayClient(gateway.url, retries=1) as client:
        with pytest.raises(GatewayError) as refused:
            await client.start("nobody-offers-this")
        assert refused.value.status == 400
        assert "No orchestrators found for capability nobody-offers-this" in refused.value.body
        assert refused.value.url == f"{gateway.url}/process/stream/start"
        stream = await client.start(CAPABILITY)
        await gateway.stop()  # the gateway goes down under a running stream
        with pytest.raises(GatewayUnavailable) as down:
            await stream.status()
        assert down.value.url == stream.urls.status_url
        with pytest.raises(NoGatewayAvailable) as none:
            await client.start(CAPABILITY)
        assert set(none.value.failures) == {gateway.url}


async def test_an_update_changes_every_frame_from_one_index_on() -> None:
    async with network() as gateway, GatewayClient(gateway.url) as client:
        stream = await client.start(CAPABILITY, {"paint": False})
        async with (
            WhipPublisher(stream.urls.whip_url, Source()) as publisher,
            WhepPlayer(stream.urls.whep_url) as player,
        ):
            assert publisher.resource_url is not None
            frames = aiter(player)
            before = await read_frames(frames, 10)
            answer = await stream.update({"paint": True})
            assert answer.status == 200
            seen = before + await read_frames(frames, 10)
            while not seen[-1][1]:  # until painted frames come
                seen.append(await next_readable(frames))
            seen += await read_frames(frames, 10)
        await stream.stop()
    indexes = [index for index, _ in seen]
    assert indexes == sorted(indexes)
    assert not any(paint for _, paint in before)
    switch = next(i for i, (_, paint) in enumerate(seen) if paint)
    assert all(paint for _, paint in seen[switch:]), "a frame after the switch was not painted"
    assert len(seen) - switch >= 10


async def test_the_output_carries_on_when_the_orchestrator_dies() -> None:
    async with network(orchestrators=2) as gateway, GatewayClient(gateway.url) as client:
        stream = await client.start(CAPABILITY, {"paint": True})
        watching = asyncio.create_task(stream.watch(poll_interval=0.1))
        async with (
            WhipPublisher(stream.urls.whip_url, Source()),
            WhepPlayer(stream.urls.whep_url) as player,
        ):
            frames = aiter(player)
            before = await read_frames(frames, 5)
            first = orchestrator_running(gateway, stream)
            await first.stop()
            after = await read_frames(frames, 10)
            status = await stream.status()
        assert not watching.done(), f"the watchdog gave up: {stream.failure}"
        await stream.stop()
        async with asyncio.timeout(TIMEOUT):
            await watching
    assert stream.failure is None
    assert status is not None
    (survivor,) = [o for o in gateway.orchestrators if o is not first]
    assert status["orchestrator_info"] == {"address": "", "url": survivor.url}
    assert min(index for index, _ in after) > max(index for index, _ in before)
    assert all(paint for _, paint in after), "the last params did not reach the new worker"


async def test_a_slow_reader_gets_recent_frames_not_a_backlog() -> None:
    source = Source()
    async with network() as gateway, GatewayClient(gateway.url) as client:
        stream = await client.start(CAPABILITY)
        async with (
            WhipPublisher(stream.urls.whip_url, source),
            WhepPlayer(stream.urls.whep_url) as player,
        ):
            frames = aiter(player)
            await read_frames(frames, 5)
            paused_at, _ = await next_readable(frames)
            sent_at_pause = source.sent
            # the buffer's worth and 4 s more of video go by unread
            while source.sent < sent_at_pause + PLAYER_QUEUE + 4 * FPS:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            resumed_at, _ = await next_readable(frames)
            assert player.dropped > 0
        await stream.stop()
    # A backlog would give the frame after paused_at; a bounded buffer gives one of the
    # last PLAYER_QUEUE frames that arrived, about 4 s of video later.
    assert resumed_at - paused_at > 2 * FPS


def new_threads(before: set[threading.Thread]) -> list[str]:
    """Threads started since ``before`` and still alive, but the event loop's default executor's
    (``asyncio_N``: the loop owns them and reuses them until it closes)."""
    return [
        t.name for t in set(threading.enumerate()) - before if not t.name.startswith("asyncio_")
    ]


def open_sockets() -> int:
    fds = os.listdir("/proc/self/fd")
    count = 0
    for fd in fds:
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts sockets through /proc")
async def test_a_run_leaves_no_tasks_sockets_or_threads() -> None:
    tasks_before = asyncio.all_tasks()
    threads_before = set(threading.enumerate())
    sockets_before = open_sockets()
    reports: list[Progress] = []
    async with network() as gateway:
        async with asyncio.timeout(TIMEOUT):
            summary = await run(
                gateway.url,
                CAPABILITY,
                source=TestPatternSource(FPS, WIDTH, HEIGHT),
                seconds=3,
                on_progress=reports.append,
            )
        assert gateway.stream_ids == frozenset()
    assert summary.frames_out > 0
    with contextlib.suppress(TimeoutError):  # closing tasks and threads get a moment
        async with asyncio.timeout(5):
            while (  # noqa: ASYNC110
                asyncio.all_tasks() - tasks_before
                or new_threads(threads_before)
                or open_sockets() > sockets_before
            ):
                await asyncio.sleep(0.05)
    assert asyncio.all_tasks() - tasks_before == set()
    assert new_threads(threads_before) == []
    assert open_sockets() <= sockets_before
