"""WhipPublisher and WhepPlayer over loopback: client -> FakeGateway -> FakeOrchestrator -> worker.

Indexed frames go out over WHIP, the worker inverts them, and they come back
over WHEP with their indexes readable and in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import threading
from collections.abc import AsyncIterator, Container, Iterator

import aiohttp
import av
import numpy as np
import numpy.typing as npt
import pytest
from aiohttp import web

from byockit.client import GatewayClient, GatewayError, GatewayUnavailable
from byockit.client.webrtc import WhepPlayer, WhipPublisher
from byockit.protocol.models import CapabilityRegistration
from byockit.testkit.gateway import FakeGateway
from byockit.testkit.orchestrator import FakeOrchestrator
from byockit.testkit.synthetic import indexed_frame, read_index
from byockit.testkit.webrtc import loopback_ice
from byockit.worker.frames import Frame
from byockit.worker.processor import Processor
from byockit.worker.server import WorkerServer

CAPABILITY = "inverter"
TIMEOUT = 30.0
WIDTH, HEIGHT, FPS = 160, 96, 15


class Inverter(Processor[None]):
    def process(self, frame: Frame[npt.NDArray[np.uint8]]) -> npt.NDArray[np.uint8]:
        return 255 - frame.data


async def indexed_source(count: int | None = None) -> AsyncIterator[av.VideoFrame]:
    """Indexed test frames at ``FPS`` in real time, ``count`` of them (``None``: endless)."""
    index = 0
    while count is None or index < count:
        await asyncio.sleep(1 / FPS)
        frame = av.VideoFrame.from_ndarray(indexed_frame(index, WIDTH, HEIGHT), "rgb24")
        frame.pts, frame.time_base = index * 90_000 // FPS, fractions.Fraction(1, 90_000)
        yield frame
        index += 1


@pytest.fixture(autouse=True)
def loopback() -> Iterator[None]:
    with loopback_ice():
        yield


@pytest.fixture
async def gateway() -> AsyncIterator[FakeGateway]:
    async with (
        FakeOrchestrator(keepalive_interval=0.5, event_timeout=10.0) as orch,
        WorkerServer(Inverter, port=0) as worker,
    ):
        await worker.wait_loaded()
        await orch.register(
            CapabilityRegistration(name=CAPABILITY, url=worker.url, capacity=worker.capacity)
        )
        async with FakeGateway([orch]) as gateway:
            yield gateway


async def read_indexes(player: WhepPlayer, count: int) -> list[int]:
    """The indexes of the next ``count`` readable frames (a frame damaged in transit is skipped)."""
    indexes: list[int] = []
    async with asyncio.timeout(TIMEOUT):
        async for frame in player:
            with contextlib.suppress(ValueError):
                indexes.append(read_index(frame.to_ndarray(format="rgb24")))
            if len(indexes) == count:
                break
    return indexes


def media_tasks(tasks: set[asyncio.Task[object]]) -> list[str]:
    """The tasks besides the fake servers' HTTP connections (which end with the servers)."""
    return [
        repr(task)
        for task in tasks
        if task.get_coro().__qualname__ != "RequestHandler.start"  # type: ignore[union-attr]
    ]


def assert_ascending(indexes: list[int]) -> None:
    assert indexes == sorted(indexes)
    assert len(set(indexes)) == len(indexes)


async def test_publish_and_play_through_a_worker(gateway: FakeGateway) -> None:
    threads_before = {t.ident for t in threading.enumerate()}
    tasks_before = asyncio.all_tasks()
    async with GatewayClient(gateway.url) as client:
        stream = await client.start(CAPABILITY)
        async with (
            WhipPublisher(stream.urls.whip_url, indexed_source()) as publisher,
            WhepPlayer(stream.urls.whep_url) as player,
        ):
            assert publisher.playback_url == stream.urls.whep_url
            assert str(publisher.resource_url).startswith(f"{stream.urls.whip_url}/")
            indexes = await read_indexes(player, 20)
        assert_ascending(indexes)
        assert publisher.resource_url is None  # deleted
        await stream.stop()
    with contextlib.suppress(TimeoutError):  # tasks closing down get a moment to finish
        async with asyncio.timeout(5):
            while media_tasks(asyncio.all_tasks() - tasks_before):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    assert media_tasks(asyncio.all_tasks() - tasks_before) == []
    leaked = [
        t.name
        for t in threading.enumerate()
        if t.ident not in threads_before and t.name.startswith("byockit")
    ]
    assert leaked == []


async def test_a_finite_source_is_sent_to_the_end(gateway: FakeGateway) -> None:
    async with GatewayClient(gateway.url) as client:
        stream = await client.start(CAPABILITY)
        async with (
            WhepPlayer(stream.urls.whep_url) as player,
            WhipPublisher(stream.urls.whip_url, indexed_source(30)) as publisher,
        ):
            async with asyncio.timeout(TIMEOUT):
                await publisher.wait()
            indexes = await read_indexes(player, 5)
        assert_ascending(indexes)
        await stream.stop()


async def test_a_connection_closed_by_the_server_is_replaced(gateway: FakeGateway) -> None:
    async with GatewayClient(gateway.url) as client:
        stream = await client.start(CAPABILITY)
        async with (
            WhipPublisher(stream.urls.whip_url, indexed_source()) as publisher,
            WhepPlayer(stream.urls.whep_url) as player,
        ):
            first = await read_indexes(player, 5)
            old = publisher.resource_url
            assert old is not None
            await client.http.delete(old)  # the server drops the WHIP session
            async with asyncio.timeout(TIMEOUT):
                while publisher.resource_url in (old, None):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            assert publisher.reconnects == 1
            later = await read_indexes(player, 20)
        assert max(later) > max(first)
        await stream.stop()


async def test_an_error_answer_is_raised_with_its_body(gateway: FakeGateway) -> None:
    with pytest.raises(GatewayError) as caught:
        async with WhipPublisher(f"{gateway.url}/process/stream/nope/whip", indexed_source()):
            pass
    assert caught.value.status == 404
    assert "Stream not found" in caught.value.body


@contextlib.asynccontextmanager
async def flaky_proxy(
    target: str, failures: int, *, later: Container[int] = ()
) -> AsyncIterator[tuple[str, list[int]]]:
    """A WHIP/WHEP URL answering 503 to the first ``failures`` offers and to those whose
    1-based number is in ``later``, relaying the others to ``target``."""
    tries: list[int] = []

    async def handle(request: web.Request) -> web.Response:
        tries.append(1)
        if len(tries) <= failures or len(tries) in later:
            return web.Response(status=503, text="busy")
        body = await request.read()
        headers = {"Content-Type": "application/sdp"}
        async with (
            aiohttp.ClientSession() as relay,
            relay.post(target, data=body, headers=headers) as resp,
        ):
            answer = await resp.text()
            if resp.status != 201:
                return web.Response(status=resp.status, text=answer)
            location = str(resp.url.with_path(resp.headers["Location"]))
            return web.Response(status=resp.status, text=answer, headers={"Location": location})

    app = web.Application()
    app.router.add_post("/offer", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/offer", tries
    finally:
        await runner.cleanup()


async def test_a_busy_endpoint_is_retried(gateway: FakeGateway) -> None:
    async with GatewayClient(gateway.url) as client:
        stream = await client.start(CAPABILITY)
        async with (
            flaky_proxy(stream.urls.whip_url, failures=2) as (url, tries),
            WhipPublisher(url, indexed_source(), retries=2) as publisher,
            WhepPlayer(stream.urls.whep_url) as player,
        ):
            assert len(tries) == 3
            assert publisher.resource_url is not None
            assert_ascending(await read_indexes(player, 5))
        async with flaky_proxy(stream.urls.whip_url, failures=1) as (url, tries):
            with pytest.raises(GatewayError) as caught:
                async with WhipPublisher(url, indexed_source(), retries=0):
                    pass
            assert len(tries) == 1
        assert caught.value.status == 503
        await stream.stop()


async def test_an_unreachable_endpoint_is_unavailable() -> None:
    with pytest.raises(GatewayUnavailable):
        async with WhipPublisher("http://127.0.0.1:9/whip", indexed_source(), retries=1, timeout=2):
            pass
    with pytest.raises(ValueError, match="http"):
        WhepPlayer("ftp://example/whep")


async def play_to_the_end(player: WhepPlayer) -> None:
    async for _ in player:
        pass


async def resource_replaced(player: WhepPlayer, old: str) -> None:
    """Until the player has reconnected (the new resource exists before the count moves)."""
    async with asyncio.timeout(TIMEOUT):
        while player.reconnects == 0:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert player.resource_url not in (old, None)


async def test_a_player_whose_session_the_server_deleted_reconnects(gateway: FakeGateway) -> None:
    async with GatewayClient(gateway.url) as client:
        stream = await client.start(CAPABILITY)
        async with (
            WhipPublisher(stream.urls.whip_url, indexed_source()) as publisher,
            WhepPlayer(stream.urls.whep_url) as player,
        ):
            first = await read_indexes(player, 5)
            old = player.resource_url
            assert old is not None
            await client.http.delete(old)  # the server drops the WHEP session
            await resource_replaced(player, old)
            later = await read_indexes(player, 20)
            assert player.reconnects == 1
            assert publisher.reconnects == 0
            received = await player.bytes_received()
            sent = await publisher.bytes_sent()
        assert max(later) > max(first)
        assert_ascending(later[-10:])  # frames queued before the swap may come first
        assert received > 0
        assert sent > 0
        assert await player.bytes_received() >= received  # counted after stop too
        await stream.stop()


async def test_a_busy_player_endpoint_is_retried(gateway: FakeGateway) -> None:
    async with GatewayClient(gateway.url) as client:
        stream = await client.start(CAPABILITY)
        async with (
            WhipPublisher(stream.urls.whip_url, indexed_source()),
            flaky_proxy(stream.urls.whep_url, failures=1, later={3}) as (url, tries),
            WhepPlayer(url, retries=2) as player,
        ):
            assert len(tries) == 2  # 503, then the session
            first = await read_indexes(player, 5)
            old = player.resource_url
            assert old is not None
            await client.http.delete(old)
            await resource_replaced(player, old)
            assert len(tries) == 4  # 503 again, then the new session
            assert player.reconnects == 1
            later = await read_indexes(player, 10)
        assert max(later) > max(first)
        await stream.stop()


async def test_a_player_ends_when_the_stream_is_stopped(gateway: FakeGateway) -> None:
    async with GatewayClient(gateway.url) as client:
        stream = await client.start(CAPABILITY)
        async with (
            WhipPublisher(stream.urls.whip_url, indexed_source()) as publisher,
            WhepPlayer(stream.urls.whep_url) as player,
        ):
            await read_indexes(player, 3)
            await stream.stop()
            async with asyncio.timeout(TIMEOUT):
                await play_to_the_end(player)
                await publisher.wait()  # the stream is gone: publishing ends too
            assert player.reconnects == 0


async def test_a_player_out_of_retries_raises(gateway: FakeGateway) -> None:
    async with GatewayClient(gateway.url) as client:
        stream = await client.start(CAPABILITY)
        async with (
            WhipPublisher(stream.urls.whip_url, indexed_source()),
            WhepPlayer(stream.urls.whep_url, retries=0) as player,
        ):
            await read_indexes(player, 3)
            old = player.resource_url
            assert old is not None
            await client.http.delete(old)
            with pytest.raises(GatewayUnavailable, match="lost 1 times"):
                await asyncio.wait_for(play_to_the_end(player), TIMEOUT)
        await stream.stop()
