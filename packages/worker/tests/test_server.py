"""The worker's REST contract (PROTOCOL.md 2), over real HTTP on loopback.

Every session here is a real :class:`StreamSession` talking to real trickle
channels on a testkit :class:`TrickleServer`, as an orchestrator sets them up.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import io
import logging
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import pytest

from byockit.protocol.models import (
    ErrorEvent,
    Event,
    EventMessage,
    HealthStatus,
    StreamStatus,
    StreamStoppedEvent,
)
from byockit.protocol.trickle import JsonReader, TricklePublisher, TrickleSubscriber
from byockit.protocol.trickle.constants import MIME_JSON, MIME_JSONL, MIME_MPEGTS
from byockit.testkit.synthetic import make_ts_clip, split_segments
from byockit.testkit.trickle_server import TrickleServer
from byockit.worker.processor import ParamsRejected, Processor
from byockit.worker.server import WorkerServer

TIMEOUT = 15.0
"""Only stops a hang; nothing here should come near it."""

JSONDict = dict[str, Any]


def passthrough(frame: Any) -> Any:
    return frame


class Picky(Processor[JSONDict]):
    """Accepts any params but ``{"strength": x}`` outside [0, 1]."""

    def process(self, frame: Any) -> Any:
        return frame

    def validate_params(self, params: JSONDict) -> None:
        strength = params.get("strength", 0.5)
        if not isinstance(strength, int | float) or not 0 <= strength <= 1:
            raise ParamsRejected(f"strength must be a number in [0, 1], found {strength!r}")


def start_body(trickle: TrickleServer, stream_id: str, **overrides: Any) -> JSONDict:
    """A ``/stream/start`` body as go-livepeer builds it, its five channels created."""
    names = {
        "subscribe_url": (stream_id, MIME_MPEGTS),
        "publish_url": (f"{stream_id}-out", MIME_MPEGTS),
        "control_url": (f"{stream_id}-control", MIME_JSON),
        "events_url": (f"{stream_id}-events", MIME_JSON),
        "data_url": (f"{stream_id}-data", MIME_JSONL),
    }
    body: JSONDict = {
        key: trickle.create_channel(name, mime) for key, (name, mime) in names.items()
    }
    body.update(gateway_request_id=stream_id, params={"width": 160, "height": 96})
    body.update(overrides)
    return body


class Client:
    """An orchestrator's view of one worker: its URL, token and an HTTP session."""

    def __init__(self, http: aiohttp.ClientSession, server: WorkerServer, token: str | None):
        self.http = http
        self.server = server
        self.token = token

    def headers(self, stream_id: str | None = None, **extra: str) -> dict[str, str]:
        headers = dict(extra)
        if self.token is not None:
            headers.setdefault("Authorization", f"Bearer {self.token}")
        if stream_id is not None:
            headers["X-Stream-Id"] = stream_id
        return headers

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """(status, decoded JSON body) of one request; ``path`` is appended as Go does."""
        url = self.server.url.rstrip("/") + path
        async with self.http.request(
            method,
            url,
            json=json,
            data=data,
            headers=headers if headers is not None else self.headers(),
        ) as response:
            return response.status, await response.json(content_type=None)

    async def start(self, body: JSONDict, path: str = "/stream/start") -> tuple[int, Any]:
        return await self.call(
            "POST", path, json=body, headers=self.headers(body["gateway_request_id"])
        )

    async def health(self) -> str:
        status, body = await self.call("GET", "/health")
        assert status == 200
        return str(body["status"])


ServeFn = Callable[..., Awaitable[Client]]


@pytest.fixture
async def trickle() -> AsyncIterator[TrickleServer]:
    """The orchestrator's trickle server; torn down last, then nothing may be left running."""
    async with TrickleServer() as server:
        yield server
    for _ in range(10):  # let cancelled tasks finish
        await asyncio.sleep(0.01)
    leftover = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    assert not leftover, leftover


@pytest.fixture
async def serve(trickle: TrickleServer) -> AsyncIterator[ServeFn]:
    """Start a worker (``port=0``) for a test; everything is stopped at the end, workers first."""
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(aiohttp.ClientSession())

        async def start(
            processor: object = passthrough, *, wait_loaded: bool = True, **options: Any
        ) -> Client:
            server = WorkerServer(processor, port=0, **options)
            await stack.enter_async_context(server)
            if wait_loaded:
                await asyncio.wait_for(server.wait_loaded(), TIMEOUT)
            return Client(http, server, options.get("token"))

        yield start


async def eventually(check: Callable[[], bool]) -> None:
    """Wait until ``check()`` holds; the timeout only stops a hang."""
    async with asyncio.timeout(TIMEOUT):
        while not check():  # noqa: ASYNC110 - polling what the server exposes, as a client would
            await asyncio.sleep(0.02)


# --- routing -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/stream/start", "//stream/start", "/api/stream/start"])
async def test_start_on_every_path_orchestrators_use(
    serve: ServeFn, trickle: TrickleServer, path: str
) -> None:
    client = await serve()
    status, body = await client.start(start_body(trickle, "s1"), path)
    assert (status, body) == (200, {"status": "started", "stream_id": "s1"})
    assert list(client.server.sessions) == ["s1"]
    status, body = await client.call("GET", "/api/stream/status")
    assert status == 200
    assert StreamStatus.from_json(body).stream_id == "s1"
    assert await client.call("POST", "//stream/stop", data=b"") == (
        200,
        {"status": "stopped", "stream_id": "s1"},
    )
    assert client.server.sessions == {}


async def test_unknown_paths_and_wrong_methods(serve: ServeFn) -> None:
    client = await serve()
    assert await client.call("GET", "/stream/nope") == (
        404,
        {"error": "no such endpoint: /stream/nope"},
    )
    async with client.http.get(client.server.url + "stream/start") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "POST"
    status, _ = await client.call("POST", "/health")
    assert status == 405


# --- authorisation -----------------------------------------------------------------------


async def test_bearer_token_guards_every_stream_endpoint(
    serve: ServeFn, trickle: TrickleServer
) -> None:
    client = await serve(token="s3cret")
    body = start_body(trickle, "s1")
    for headers in [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}]:
        for method, path in [
            ("POST", "/stream/start"),
            ("POST", "/stream/params"),
            ("GET", "/stream/status"),
            ("POST", "/api/stream/stop"),
        ]:
            status, answer = await client.call(method, path, json=body, headers=headers)
            assert (status, answer) == (401, {"error": "missing or wrong bearer token"}), path
    assert client.server.sessions == {}
    for path in ["/health", "/version", "/hardware/info", "/hardware/stats"]:
        status, _ = await client.call("GET", path, headers={})
        assert status == 200, path
    status, _ = await client.start(body)
    assert status == 200


# --- start ----------------------------------------------------------------------------------


async def test_bad_start_bodies_name_the_field(serve: ServeFn, trickle: TrickleServer) -> None:
    client = await serve(Picky)
    good = start_body(trickle, "s1")
    cases: list[tuple[Any, str]] = [
        ({k: v for k, v in good.items() if k != "gateway_request_id"}, "gateway_request_id"),
        ({**good, "control_url": "not a url"}, "control_url"),
        ({**good, "params": {"width": 160}}, "params.height"),
        ({**good, "params": {"max_framerate": "30"}}, "params.max_framerate"),
        ({**good, "params": {"max_framerate": 120}}, "params.max_framerate"),
        ({**good, "params": {"strength": 7}}, "params"),
        ([good], ""),
    ]
    for body, field in cases:
        status, answer = await client.call("POST", "/stream/start", json=body)
        assert status == 400, body
        assert answer["field"] == field, answer
    status, answer = await client.call("POST", "/stream/start", data=b"{not json")
    assert (status, answer["field"]) == (400, "")
    assert "not valid JSON" in answer["error"]
    status, answer = await client.call(
        "POST", "/stream/start", json={**good, "params": {"strength": 7}}
    )
    assert answer["error"] == "strength must be a number in [0, 1], found 7"
    assert client.server.sessions == {}
    assert (await client.start(good))[0] == 200


async def test_params_as_json_text_are_accepted(serve: ServeFn, trickle: TrickleServer) -> None:
    client = await serve()
    body = start_body(trickle, "s1", params='{"width": 160, "height": 96, "prompt": "cat"}')
    assert (await client.start(body))[0] == 200
    body = start_body(trickle, "s2", params=None)
    await client.call("POST", "/stream/stop", data=b"")
    assert (await client.start(body))[0] == 200


async def test_oversize_body_is_refused(serve: ServeFn) -> None:
    client = await serve()
    big = io.BytesIO(b" " * (11 * 1024 * 1024))
    status, answer = await client.call("POST", "/stream/start", data=big)
    assert status == 413
    assert "body larger than" in answer["error"]


async def test_capacity_is_never_exceeded_nor_a_stream_replaced(
    serve: ServeFn, trickle: TrickleServer
) -> None:
    client = await serve(capacity=2)
    assert (await client.start(start_body(trickle, "a")))[0] == 200
    assert await client.start(start_body(trickle, "a", params=None)) == (
        409,
        {"error": "stream 'a' is already running on this worker"},
    )
    assert (await client.start(start_body(trickle, "b")))[0] == 200
    assert await client.start(start_body(trickle, "c")) == (
        409,
        {"error": "at capacity: 2 of 2 streams running"},
    )
    assert sorted(client.server.sessions) == ["a", "b"]
    assert client.server.snapshot().capacity == 2


async def test_two_concurrent_starts_cannot_both_win(
    serve: ServeFn, trickle: TrickleServer
) -> None:
    client = await serve()
    bodies = [start_body(trickle, name) for name in ("a", "b")]
    results = await asyncio.gather(*(client.start(body) for body in bodies))
    assert sorted(status for status, _ in results) == [200, 409]
    (winner,) = [body["stream_id"] for status, body in results if status == 200]
    assert list(client.server.sessions) == [winner]


async def test_start_while_loading_is_refused_then_accepted(
    serve: ServeFn, trickle: TrickleServer
) -> None:
    release = threading.Event()

    class SlowToLoad(Processor[JSONDict]):
        def load(self) -> None:
            release.wait(TIMEOUT)

        def process(self, frame: Any) -> Any:
            return frame

    client = await serve(SlowToLoad, wait_loaded=False)
    try:
        assert await client.health() == "LOADING"
        assert await client.start(start_body(trickle, "s1")) == (
            503,
            {"error": "the processor is still loading: try again shortly"},
        )
    finally:
        release.set()
    await asyncio.wait_for(client.server.wait_loaded(), TIMEOUT)
    assert await client.health() == "IDLE"
    assert (await client.start(start_body(trickle, "s1", params=None)))[0] == 200
    assert await client.health() == "OK"


async def test_load_failure_is_an_error_with_its_reason(
    serve: ServeFn, trickle: TrickleServer, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(Processor[JSONDict]):
        def load(self) -> None:
            raise RuntimeError("weights not found")

        def process(self, frame: Any) -> Any:
            return frame

    with caplog.at_level(logging.ERROR, logger="byockit.worker.server"):
        client = await serve(Broken)
    assert client.server.load_error == "RuntimeError: weights not found"
    assert await client.call("GET", "/health") == (
        200,
        {"status": "ERROR", "error": "RuntimeError: weights not found"},
    )
    assert "weights not found" in caplog.text
    assert await client.start(start_body(trickle, "s1")) == (
        503,
        {"error": "the processor failed to load: RuntimeError: weights not found"},
    )


# --- params, status, stop -----------------------------------------------------------------


async def test_params(serve: ServeFn, trickle: TrickleServer) -> None:
    client = await serve(Picky)
    assert await client.call("POST", "/stream/params", json={"strength": 0.2}) == (
        404,
        {"error": "no stream is running"},
    )
    await client.start(start_body(trickle, "s1"))
    assert await client.call("POST", "/stream/params", json={"strength": 0.2}) == (
        200,
        {"status": "ok", "stream_id": "s1"},
    )
    assert await client.call(
        "POST", "/api/stream/params", json={"strength": 3}, headers=client.headers("s1")
    ) == (400, {"error": "strength must be a number in [0, 1], found 3"})
    assert await client.call(
        "POST", "/stream/params", json={"strength": 0.1}, headers=client.headers("other")
    ) == (404, {"error": "no stream 'other' is running"})
    status, answer = await client.call("POST", "/stream/params", data=b"[1, 2]")
    assert (status, answer["field"]) == (400, "")


async def test_status_of_no_stream_is_404(serve: ServeFn) -> None:
    client = await serve()
    assert await client.call("GET", "/stream/status") == (404, {"error": "no stream is running"})


async def test_several_streams_need_the_stream_id(serve: ServeFn, trickle: TrickleServer) -> None:
    client = await serve(capacity=2)
    for name in ("a", "b"):
        await client.start(start_body(trickle, name))
    status, answer = await client.call("POST", "/stream/params", json={})
    assert (status, answer) == (400, {"error": "2 streams are running: say which in X-Stream-Id"})
    status, answer = await client.call("GET", "/stream/status", headers=client.headers("b"))
    assert (status, answer["stream_id"]) == (200, "b")
    status, _ = await client.call("POST", "/stream/stop", data=b"")
    assert status == 400  # never a guess at which stream to stop
    status, _ = await client.call("POST", "/stream/stop", data=b"", headers=client.headers("b"))
    assert status == 200
    assert list(client.server.sessions) == ["a"]


async def test_stop_takes_any_body_and_twice_is_harmless(
    serve: ServeFn, trickle: TrickleServer
) -> None:
    client = await serve()
    assert await client.call("POST", "/stream/stop", data=b"") == (200, {"status": "not running"})
    await client.start(start_body(trickle, "s1"))
    headers = client.headers("s1")  # no Content-Type: aiohttp sends raw bytes as they are
    for body in [b"\xff\xfe swapped to another orchestrator", b"stream ended"]:
        status, _ = await client.call("POST", "/stream/stop", data=body, headers=headers)
        assert status == 200
    assert client.server.sessions == {}
    assert await client.health() == "IDLE"
    assert (await client.start(start_body(trickle, "s2")))[0] == 200  # the slot is free again


# --- health, version, hardware, snapshot --------------------------------------------------


async def test_health_follows_sessions(serve: ServeFn, trickle: TrickleServer) -> None:
    client = await serve()
    assert await client.health() == "IDLE"
    await client.start(start_body(trickle, "s1"))
    assert await client.health() == "OK"
    snapshot = client.server.snapshot()
    assert snapshot.health == HealthStatus.OK
    assert [s.stream_id for s in snapshot.sessions] == ["s1"]
    await client.call("POST", "/stream/stop", data=b"")
    assert await client.health() == "IDLE"
    assert client.server.snapshot().sessions == ()


async def test_version_and_hardware(serve: ServeFn) -> None:
    client = await serve()
    name = f"{__name__}.passthrough"
    assert await client.call("GET", "/version") == (
        200,
        {
            "pipeline": "byoc",
            "model_id": name,
            "version": importlib.metadata.version("byockit-worker"),
        },
    )
    status, info = await client.call("GET", "/hardware/info")
    assert status == 200
    assert (info["pipeline"], info["model_id"]) == ("byoc", name)
    assert info["cpu_info"]["logical_cores"] >= 1
    assert isinstance(info["gpu_info"], dict)
    status, stats = await client.call("GET", "/hardware/stats")
    assert status == 200
    assert stats["cpu_stats"]["process_rss"] > 0
    assert stats["gpu_stats"].keys() == info["gpu_info"].keys()


async def test_stopping_the_server_stops_its_sessions(
    serve: ServeFn, trickle: TrickleServer
) -> None:
    client = await serve()
    await client.start(start_body(trickle, "s1"))
    session = client.server.sessions["s1"]
    await client.server.stop()
    assert session.ended
    assert client.server.sessions == {}


def test_constructor_refuses_what_cannot_work() -> None:
    with pytest.raises(ValueError, match="capacity"):
        WorkerServer(passthrough, capacity=0)
    with pytest.raises(ValueError, match="token"):
        WorkerServer(passthrough, token=" ")
    with pytest.raises(TypeError):
        WorkerServer(42)


# --- sessions that fail or end on their own -----------------------------------------------


async def read_events(trickle: TrickleServer, stream_id: str) -> AsyncGenerator[Event, None]:
    """The stream's events from the first, as the gateway reads them."""
    url = trickle.channel_url(f"{stream_id}-events")
    async with TrickleSubscriber(url, start=0) as subscriber:
        async for document in JsonReader(subscriber):
            yield EventMessage.from_json(document).event


async def publish_input(trickle: TrickleServer, stream_id: str, seconds: float) -> None:
    """Indexed video into the stream's input channel, one half-second GOP per segment."""
    clip = make_ts_clip(seconds, width=160, height=96, gop_seconds=0.5)
    async with TricklePublisher(trickle.channel_url(stream_id), MIME_MPEGTS) as publisher:
        for segment in split_segments(clip):
            await publisher.write_segment(segment)
            await asyncio.sleep(0.1)  # keep input coming while the test watches the worker


async def test_a_stream_that_cannot_connect_reports_and_frees_its_slot(
    serve: ServeFn, trickle: TrickleServer
) -> None:
    client = await serve()
    body = start_body(trickle, "s1")
    trickle.delete_channel("s1")  # the input channel does not exist (any more)
    events = read_events(trickle, "s1")
    first = asyncio.ensure_future(anext(events))  # subscribed before the stream starts
    assert (await client.start(body))[0] == 200
    async with asyncio.timeout(TIMEOUT):
        seen = [await first]
        while not isinstance(seen[-1], StreamStoppedEvent):
            seen.append(await anext(events))
    await events.aclose()
    errors = [event.message for event in seen if isinstance(event, ErrorEvent)]
    assert len(errors) == 1
    assert trickle.channel_url("s1") in errors[0]
    await eventually(lambda: not client.server.sessions)
    assert await client.health() == "IDLE"
    assert (await client.start(start_body(trickle, "s2")))[0] == 200


async def test_a_stream_whose_input_ends_frees_its_slot(
    serve: ServeFn, trickle: TrickleServer
) -> None:
    client = await serve()
    await client.start(start_body(trickle, "s1"))
    await publish_input(trickle, "s1", seconds=1.0)
    await eventually(lambda: client.server.snapshot().fps_out > 0)
    trickle.delete_channel("s1")  # what a gateway's input ending looks like to the worker
    await eventually(lambda: not client.server.sessions)
    assert await client.health() == "IDLE"


async def test_a_failing_processor_is_an_error_that_does_not_stick(
    serve: ServeFn, trickle: TrickleServer
) -> None:
    failing = threading.Event()
    failing.set()

    def flaky(frame: Any) -> Any:
        if failing.is_set():
            raise RuntimeError("out of GPU memory")
        return frame

    client = await serve(flaky)
    await client.start(start_body(trickle, "s1"))
    publisher = asyncio.create_task(publish_input(trickle, "s1", seconds=8.0))
    try:
        await eventually(lambda: client.server.health == HealthStatus.ERROR)
        assert await client.health() == "ERROR"
        status, body = await client.call("GET", "/stream/status")
        assert status == 200
        assert "out of GPU memory" in body["inference_status"]["last_error"]
        failing.clear()  # the processor recovers: so does the worker
        await eventually(lambda: client.server.health == HealthStatus.OK)
        failing.set()  # fails again, and this time the stream is stopped
        await eventually(lambda: client.server.health == HealthStatus.ERROR)
        await client.call("POST", "/stream/stop", data=b"")
        assert await client.health() == "IDLE"
    finally:
        publisher.cancel()
        await asyncio.gather(publisher, return_exceptions=True)
