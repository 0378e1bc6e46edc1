"""The fake gateway driving real workers through fake orchestrators, over real HTTP.

What a client sees: status from the worker's events, updates relayed both
ways, data lines as Server-Sent Events, stop, and orchestrator failover.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt
import pytest

from byockit.protocol.models import (
    CapabilityRegistration,
    JobParameters,
    JobRequestDetails,
    LivepeerHeader,
    ParamsUpdateEvent,
    StreamStoppedEvent,
    StreamUrls,
)
from byockit.testkit.gateway import FakeGateway
from byockit.testkit.orchestrator import FakeOrchestrator
from byockit.testkit.synthetic import synthetic_frames
from byockit.worker.frames import Frame
from byockit.worker.processor import ParamsRejected, Processor
from byockit.worker.server import WorkerServer
from byockit.worker.session import StreamSession

CAPABILITY = "inverter"
TIMEOUT = 20.0
ACCEPTED = '{"status": "ok", "stream_id": "s1"}'
"""The worker's answer to accepted params, relayed as is."""


@dataclass
class Params:
    invert: bool = True


class DataInverter(Processor[Params]):
    """Inverts frames while ``invert`` is on and reports each frame's index as data."""

    params_type = Params

    def validate_params(self, params: Params) -> None:
        if not isinstance(params.invert, bool):
            raise ParamsRejected("invert must be a boolean")

    def process(self, frame: Frame[npt.NDArray[np.uint8]]) -> npt.NDArray[np.uint8]:
        frame.stream.emit_data({"index": frame.index})
        params = frame.stream.params
        assert isinstance(params, Params)
        return 255 - frame.data if params.invert else frame.data


@contextlib.asynccontextmanager
async def worker(orch: FakeOrchestrator) -> AsyncIterator[WorkerServer]:
    sessions = functools.partial(StreamSession, status_interval=0.2)
    async with WorkerServer(DataInverter, port=0, session_factory=sessions) as server:
        await server.wait_loaded()
        await orch.register(
            CapabilityRegistration(name=CAPABILITY, url=server.url, capacity=server.capacity)
        )
        yield server


def livepeer(
    stream_id: str | None = None, *, video: bool = False, data: bool = False
) -> dict[str, str]:
    value = LivepeerHeader(
        capability=CAPABILITY,
        timeout_seconds=10,
        request=JobRequestDetails(stream_id=stream_id),
        parameters=JobParameters(
            enable_video_ingress=video, enable_video_egress=video, enable_data_output=data
        ),
    )
    return {"Livepeer": value.to_header()}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
        yield session


def orchestrator() -> FakeOrchestrator:
    return FakeOrchestrator(keepalive_interval=0.5, event_timeout=5.0)


async def start_stream(
    http: aiohttp.ClientSession,
    gateway: FakeGateway,
    params: dict[str, Any],
    *,
    video: bool = False,
    data: bool = False,
) -> StreamUrls:
    body = {"stream_id": "s1", "params": json.dumps(params)}
    headers = livepeer(video=video, data=data)
    async with http.post(f"{gateway.url}/process/stream/start", json=body, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        return StreamUrls.from_json(await resp.text())


def at(document: object, path: str) -> object:
    """The value at a dotted ``path`` in nested objects (``None`` when absent)."""
    for part in path.split("."):
        document = document.get(part) if isinstance(document, dict) else None
    return document


async def status_where(
    http: aiohttp.ClientSession, urls: StreamUrls, **expected: object
) -> dict[str, Any]:
    """The first status document holding ``expected`` (keys: dotted paths with ``__``)."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            async with http.get(urls.status_url) as resp:
                if resp.status == 200:
                    document: dict[str, Any] = await resp.json()
                    if all(at(document, k.replace("__", ".")) == v for k, v in expected.items()):
                        return document
                else:
                    assert resp.status == 404
            await asyncio.sleep(0.05)


async def update(
    http: aiohttp.ClientSession, urls: StreamUrls, body: object, headers: dict[str, str]
) -> tuple[int, str]:
    async with http.post(urls.update_url, json=body, headers=headers) as resp:
        return resp.status, await resp.text()


async def sse_events(resp: aiohttp.ClientResponse, count: int) -> list[str]:
    """The next ``count`` SSE events (their ``data:``/``event:`` lines joined)."""
    events: list[str] = []
    lines: list[str] = []
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line:
            lines.append(line)
            continue
        events.append("\n".join(lines))
        lines = []
        if len(events) == count:
            break
    return events


async def test_status_update_data_and_stop(http: aiohttp.ClientSession) -> None:
    async with orchestrator() as orch, worker(orch) as server, FakeGateway([orch]) as gateway:
        urls = await start_stream(http, gateway, {"invert": True}, video=True, data=True)
        status = await status_where(http, urls, inference_status__last_params={"invert": True})
        assert status["type"] == "status"
        assert (status["stream_id"], status["pipeline_id"]) == ("s1", "")
        assert status["request_id"]
        assert status["orchestrator_info"] == {"address": "", "url": orch.url}
        assert "error" not in status

        assert await update(http, urls, {"invert": False}, livepeer("s1")) == (200, ACCEPTED)
        refused, reason = await update(http, urls, {"invert": "yes"}, livepeer("s1"))
        assert refused == 400
        assert "invert" in reason
        no_header = await update(http, urls, {"invert": False}, {})
        assert no_header == (400, "missing Livepeer header")

        async with http.get(urls.data_url) as sse:
            assert sse.status == 200
            assert sse.headers["Content-Type"] == "text/event-stream"
            stream = await gateway.stream("s1")
            publishing = asyncio.create_task(
                stream.publish(synthetic_frames(30, width=160, height=96))
            )
            async with asyncio.timeout(TIMEOUT):
                events = await sse_events(sse, 3)
            for event in events:
                assert event.startswith("data: ")
                assert set(json.loads(event.removeprefix("data: "))) == {"index"}
            await publishing

            async with http.post(urls.stop_url, data=b"client left") as resp:
                assert resp.status == 200
            assert "s1" not in gateway.stream_ids
            stopped = await stream.wait_event(StreamStoppedEvent)
            assert stopped.reason == "client left"
            async with asyncio.timeout(TIMEOUT):
                rest = [line async for line in sse.content]
            assert b"event: end\n" in rest
        async with http.post(urls.stop_url) as resp:
            assert resp.status == 404
        async with asyncio.timeout(TIMEOUT):
            while server.sessions:  # noqa: ASYNC110 - the worker tears down on its own
                await asyncio.sleep(0.05)


async def test_a_refused_start_moves_on_to_the_next_orchestrator(
    http: aiohttp.ClientSession,
) -> None:
    async with (
        orchestrator() as dead,
        orchestrator() as good,
        worker(good),
        FakeGateway([dead, good]) as gateway,
    ):
        await dead.register(
            CapabilityRegistration(name=CAPABILITY, url="http://127.0.0.1:9", capacity=1)
        )
        for _ in range(3):  # the order is random: each time the stream ends up on `good`
            urls = await start_stream(http, gateway, {"invert": True})
            stream = await gateway.stream(urls.stream_id)
            assert urls.stream_id in good.streams
            assert stream is good.streams[urls.stream_id]
            status = await status_where(http, urls, orchestrator_info__url=good.url)
            assert "error" not in status  # a refused start is silent, as in go-livepeer
            async with http.post(urls.stop_url) as resp:
                assert resp.status == 200


async def test_a_failed_orchestrator_is_swapped_with_the_last_params(
    http: aiohttp.ClientSession,
) -> None:
    async with (
        orchestrator() as one,
        orchestrator() as two,
        worker(one),
        worker(two),
        FakeGateway([one, two]) as gateway,
    ):
        urls = await start_stream(http, gateway, {"invert": True})
        first = await gateway.stream("s1")
        failing, other = (one, two) if "s1" in one.streams else (two, one)
        assert await update(http, urls, {"invert": False}, livepeer("s1")) == (200, ACCEPTED)

        await failing.stop()  # the orchestrator goes away mid-stream
        second = await gateway.stream("s1")
        assert second is not first
        assert second is other.streams["s1"]
        assert second.start_body["params"] == {"invert": True}  # the same start body
        await second.wait_event(  # and the client's last params on control
            lambda event: isinstance(event, ParamsUpdateEvent) and event.params == {"invert": False}
        )
        await status_where(
            http,
            urls,
            orchestrator_info__url=other.url,
            inference_status__last_params={"invert": False},
        )
        assert await update(http, urls, {"invert": True}, livepeer("s1")) == (200, ACCEPTED)
        async with http.post(urls.stop_url) as resp:
            assert resp.status == 200
