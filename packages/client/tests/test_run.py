"""run() end to end on loopback: WHIP -> FakeGateway -> FakeOrchestrator -> worker -> WHEP.

The worker inverts frames; the summary must count frames both ways, match
them by the pattern's index for latency, and the recording must play.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import numpy.typing as npt
import pytest

from byockit.client import InvalidGatewayAnswer, NoGatewayAvailable
from byockit.client.run import Progress, percentile, run
from byockit.client.sources import TestPatternSource
from byockit.protocol.errors import MediaError, ParseError
from byockit.protocol.models import CapabilityRegistration
from byockit.testkit.gateway import FakeGateway
from byockit.testkit.orchestrator import FakeOrchestrator
from byockit.testkit.webrtc import loopback_ice
from byockit.worker import session as worker_session
from byockit.worker.frames import Frame
from byockit.worker.processor import ParamsRejected, Processor
from byockit.worker.server import WorkerServer

CAPABILITY = "inverter"
TIMEOUT = 40.0
WIDTH, HEIGHT, FPS = 160, 96, 15
SESSIONS = functools.partial(worker_session.StreamSession, status_interval=0.2)


@dataclass
class Params:
    invert: bool = True


class Inverter(Processor[Params]):
    params_type = Params

    def validate_params(self, params: Params) -> None:
        if not isinstance(params.invert, bool):
            raise ParamsRejected("invert must be a boolean")

    def process(self, frame: Frame[npt.NDArray[np.uint8]]) -> npt.NDArray[np.uint8]:
        params = frame.stream.params
        assert isinstance(params, Params)
        return 255 - frame.data if params.invert else frame.data


@pytest.fixture(autouse=True)
def loopback() -> Iterator[None]:
    with loopback_ice():
        yield


@contextlib.asynccontextmanager
async def network(*, webrtc: bool = True) -> AsyncIterator[FakeGateway]:
    async with (
        FakeOrchestrator(keepalive_interval=0.5, event_timeout=10.0) as orch,
        WorkerServer(Inverter, port=0, session_factory=SESSIONS) as worker,
    ):
        await worker.wait_loaded()
        await orch.register(
            CapabilityRegistration(name=CAPABILITY, url=worker.url, capacity=worker.capacity)
        )
        async with FakeGateway([orch], webrtc=webrtc) as gateway:
            yield gateway


def pattern(count: int | None = None) -> TestPatternSource:
    return TestPatternSource(FPS, WIDTH, HEIGHT, count)


def media_tasks(tasks: set[asyncio.Task[object]]) -> list[str]:
    """The tasks besides the fake servers' HTTP connections (which end with the servers)."""
    return [
        repr(task)
        for task in tasks
        if task.get_coro().__qualname__ != "RequestHandler.start"  # type: ignore[union-attr]
    ]


async def test_a_timed_run_measures_and_records(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    reports: list[Progress] = []
    threads_before = {t.ident for t in threading.enumerate()}
    tasks_before = asyncio.all_tasks()
    async with network() as gateway:
        async with asyncio.timeout(TIMEOUT):
            summary = await run(
                gateway.url,
                CAPABILITY,
                source=pattern(),
                seconds=5,
                record=str(out),
                on_progress=reports.append,
            )
        assert gateway.stream_ids == frozenset()  # stopped
    assert summary.gateway == gateway.url
    assert summary.stream_id
    assert 5 <= summary.seconds < TIMEOUT
    assert 0 < summary.frames_out <= summary.frames_in
    assert summary.frames_in <= 5 * FPS + 2
    assert summary.latency_p50 is not None
    assert summary.latency_p95 is not None
    assert 0 < summary.latency_p50 <= summary.latency_p95 < 5
    assert summary.dropped is not None
    assert 0 <= summary.dropped < summary.frames_out
    for sent_or_received, bitrate in (
        (summary.bytes_in, summary.bitrate_in),
        (summary.bytes_out, summary.bitrate_out),
    ):  # 160x96 video at 15 fps: between 1 kbit/s and 20 Mbit/s, whatever the encoder
        assert 1_000 < bitrate < 20_000_000
        assert bitrate == sent_or_received * 8 / summary.seconds
    assert any(report.bitrate_in > 0 and report.bitrate_out > 0 for report in reports)
    assert all(0 <= report.bitrate_in < 20_000_000 for report in reports)
    live_dropped = [report.dropped for report in reports if report.dropped is not None]
    assert live_dropped  # the live view counts them as it goes
    assert all(0 <= dropped <= summary.dropped for dropped in live_dropped)
    assert summary.status is not None
    assert summary.status["stream_id"] == summary.stream_id
    assert summary.recorded == str(out)
    assert reports
    assert reports[-1].stream_id == summary.stream_id
    assert reports[-1].urls.whip_url.startswith(gateway.url)
    assert any(report.state == "ONLINE" for report in reports)
    with av.open(str(out)) as container:
        decoded = sum(1 for _ in container.decode(video=0))
    assert 0 < decoded <= summary.frames_out
    with contextlib.suppress(TimeoutError):  # closing tasks get a moment to finish
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


async def test_a_finite_source_ends_the_run_after_its_output() -> None:
    async with network() as gateway:
        async with asyncio.timeout(TIMEOUT):
            summary = await run(gateway.url, CAPABILITY, source=pattern(30))
    assert summary.frames_in == 30
    assert 0 < summary.frames_out <= 30
    assert summary.recorded is None


async def test_until_ends_the_run() -> None:
    stop = asyncio.Event()
    async with network() as gateway:
        async with asyncio.timeout(TIMEOUT):
            task = asyncio.create_task(run(gateway.url, CAPABILITY, source=pattern(), until=stop))
            while not gateway.stream_ids:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            stop.set()
            summary = await task
    assert summary.stream_id


async def test_cancelling_stops_the_stream() -> None:
    async with network() as gateway:
        task = asyncio.create_task(run(gateway.url, CAPABILITY, source=pattern()))
        async with asyncio.timeout(TIMEOUT):
            while not gateway.stream_ids:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert gateway.stream_ids == frozenset()


async def test_bad_gateways_and_answers_are_typed_errors() -> None:
    with pytest.raises(NoGatewayAvailable):
        await run("http://127.0.0.1:9", CAPABILITY, source=pattern())
    async with network(webrtc=False) as gateway:
        with pytest.raises(InvalidGatewayAnswer, match="whip_url"):
            await run(gateway.url, CAPABILITY, source=pattern())
        assert gateway.stream_ids == frozenset()  # stopped again


async def test_a_failing_source_ends_the_run_with_its_error(tmp_path: Path) -> None:
    async with network() as gateway:
        with pytest.raises(MediaError, match=r"missing\.mp4"):
            async with asyncio.timeout(TIMEOUT):
                await run(gateway.url, CAPABILITY, source=str(tmp_path / "missing.mp4"))
        assert gateway.stream_ids == frozenset()


async def test_bad_arguments_are_refused_before_anything_is_sent() -> None:
    with pytest.raises(ValueError, match="seconds"):
        await run("http://127.0.0.1:9", CAPABILITY, seconds=0)
    with pytest.raises(ValueError, match="source"):
        await run("http://127.0.0.1:9", CAPABILITY, source="")
    with pytest.raises(ParseError, match="capability"):
        await run("http://127.0.0.1:9", "", source=pattern())
    with pytest.raises(ValueError, match="gateway URL"):
        await run("ftp://nowhere", CAPABILITY, source=pattern())


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(n) for n in range(1, 101)], 95) == 95.0


async def page_message(page: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    """The next JSON message of ``kind`` on the preview page's WebSocket (images skipped)."""
    while True:
        message = await page.receive()
        if message.type == aiohttp.WSMsgType.TEXT:
            decoded: dict[str, Any] = json.loads(message.data)
            if decoded["type"] == kind:
                return decoded
        elif message.type != aiohttp.WSMsgType.BINARY:
            raise AssertionError(f"preview socket: {message!r}")


async def test_the_preview_shows_the_run_and_updates_its_params() -> None:
    shown: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_progress(progress: Progress) -> None:
        if progress.preview_url is not None and not shown.done():
            shown.set_result(progress.preview_url)

    stop = asyncio.Event()
    async with network() as gateway, aiohttp.ClientSession() as http:
        task = asyncio.create_task(
            run(
                gateway.url,
                CAPABILITY,
                source=pattern(),
                params={"invert": True},
                preview=True,
                on_progress=on_progress,
                until=stop,
            )
        )
        try:
            async with asyncio.timeout(TIMEOUT):
                url = await asyncio.shield(shown)
                async with http.get(url) as resp:
                    assert resp.status == 200
                    assert "text/html" in resp.headers["Content-Type"]
                async with http.ws_connect(f"{url}ws") as page:
                    sides: set[int] = set()
                    while sides != {0, 1}:
                        message = await page.receive()
                        if message.type == aiohttp.WSMsgType.BINARY:
                            sides.add(message.data[0])
                    state = await page_message(page, "state")
                    while state["stats"].get("frames out", 0) == 0:
                        state = await page_message(page, "state")
                    assert state["params"] == {"invert": True}
                    assert state["output"]["latency_ms"] > 0
                    await page.send_json({"type": "params", "text": '{"invert": false}'})
                    assert (await page_message(page, "reply"))["status"] == 200
                    await page.send_json({"type": "params", "text": '{"invert": 3}'})
                    refused = await page_message(page, "reply")
                    assert refused["status"] == 400
                    assert "must be a boolean" in refused["body"]
                    while state["params"] != {"invert": False}:  # the accepted params show
                        state = await page_message(page, "state")
                stop.set()
                summary = await task
        finally:
            task.cancel()
    assert summary.frames_out > 0
