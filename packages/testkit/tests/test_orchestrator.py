"""FakeOrchestrator against a minimal worker written here: real HTTP and trickle on loopback.

The worker relays input segments to its output unchanged, writes a data line
per segment and status events (unless told to stay silent), and records what
the orchestrator sent it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from byockit.protocol.models import (
    CapabilityRegistration,
    EventMessage,
    StreamStatus,
    StreamStoppedEvent,
    WorkerStartRequest,
)
from byockit.protocol.trickle import (
    JsonLinesWriter,
    JsonWriter,
    TricklePublisher,
    TrickleSubscriber,
)
from byockit.testkit.orchestrator import (
    EVENTS_TIMEOUT_REASON,
    FakeOrchestrator,
    WorkerReply,
    WorkerRequestError,
)
from byockit.testkit.synthetic import make_ts_clip, read_index, split_segments, synthetic_frames
from byockit.testkit.trickle_server import TrickleServer

SECRET = "orch-secret-value"
TOKEN = "worker-token"
TIMEOUT = 10.0


class MiniWorker:
    """Just enough of a BYOC worker to be driven: one stream at a time, passthrough video."""

    def __init__(self, *, silent: bool = False, start_status: int = 200) -> None:
        self.silent = silent
        self.start_status = start_status
        self.calls: list[tuple[str, dict[str, str], bytes]] = []
        self.control: list[Any] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._events: JsonWriter | None = None
        self._events_lock = asyncio.Lock()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> MiniWorker:
        app = web.Application()
        app.router.add_post("/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._end()
        assert self._runner is not None
        await self._runner.cleanup()

    def paths(self, action: str) -> list[str]:
        return [path for path, _, _ in self.calls if path.endswith(action)]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.calls.append((request.path, dict(request.headers), body))
        action = request.path.rsplit("/", 1)[-1]
        if action == "start":
            if self.start_status != 200:
                return web.Response(status=self.start_status, text="busy")
            self._begin(WorkerStartRequest.from_json(body))
        elif action == "params":
            params = json.loads(body)
            if "bad" in params:
                return web.Response(status=400, text="bad: not a known parameter")
        elif action == "stop":
            await self._send_event(StreamStoppedEvent(reason=body.decode()))
            await self._end()
        return web.Response(text="ok")

    def _begin(self, start: WorkerStartRequest) -> None:
        events = TricklePublisher(start.events_url, "application/json")
        self._events = JsonWriter(events)
        self._tasks = [asyncio.create_task(self._read_control(start.control_url))]
        if not self.silent:
            self._tasks.append(asyncio.create_task(self._report(start.stream_id)))
        if start.subscribe_url and start.publish_url and start.data_url:
            urls = (start.subscribe_url, start.publish_url, start.data_url)
            self._tasks.append(asyncio.create_task(self._relay(*urls)))

    async def _end(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._events is not None:
            await self._events.publisher.close()
            self._events = None

    async def _send_event(self, event: StreamStatus | StreamStoppedEvent) -> None:
        async with self._events_lock:
            if self._events is not None:
                await self._events.send(EventMessage(event).to_json())

    async def _report(self, stream_id: str) -> None:
        while True:
            await self._send_event(StreamStatus(state="ONLINE", stream_id=stream_id))
            await asyncio.sleep(0.05)

    async def _read_control(self, url: str) -> None:
        async with TrickleSubscriber(url, start=0) as subscriber:
            # Keepalives are dropped by JsonReader; count them from the raw segments instead.
            async for segment in subscriber:
                self.control.append(json.loads(await segment.read()))

    async def _relay(self, source: str, sink: str, data: str) -> None:
        async with (
            TrickleSubscriber(source, start=0) as subscriber,
            TricklePublisher(sink) as publisher,
            TricklePublisher(data, "application/jsonl") as data_publisher,
            JsonLinesWriter(data_publisher, segment_seconds=0.05) as lines,
        ):
            async for segment in subscriber:
                await publisher.write_segment(await segment.read())
                await lines.send({"segment": segment.seq})


@pytest.fixture
async def orchestrator() -> AsyncIterator[FakeOrchestrator]:
    async with FakeOrchestrator(secret=SECRET, keepalive_interval=0.05) as orch:
        yield orch


@pytest.fixture
async def worker() -> AsyncIterator[MiniWorker]:
    async with MiniWorker() as mini:
        yield mini


async def register(orch: FakeOrchestrator, url: str, token: str | None = TOKEN) -> None:
    await orch.register(CapabilityRegistration(name="relay", url=url, capacity=1, token=token))


async def eventually(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not condition():  # noqa: ASYNC110 - polling another object's state
            await asyncio.sleep(0.01)


async def post(url: str, body: bytes, secret: str | None) -> tuple[int, str]:
    headers = {} if secret is None else {"Authorization": secret}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as r,
    ):
        return r.status, await r.text()


async def test_registration_checks_the_raw_secret_and_the_body(
    orchestrator: FakeOrchestrator,
) -> None:
    good = CapabilityRegistration(name="relay", url="http://127.0.0.1:9", capacity=1).dumps()
    register_url = orchestrator.url + "/capability/register"
    assert await post(register_url, good.encode(), None) == (400, "invalid authorization")
    assert await post(register_url, good.encode(), f"Bearer {SECRET}") == (
        400,
        "invalid authorization",
    )
    status, text = await post(register_url, b'{"name": "relay", "url": "x", "capacity": 1}', SECRET)
    assert status == 400
    assert text.startswith("Error registering capability: field 'url'")
    currency = good.replace('"currency":""', '"currency":"usd"').encode()
    status, text = await post(register_url, currency, SECRET)
    assert (status, "currency" in text) == (400, True)
    assert orchestrator.registrations == {}
    assert await post(register_url, good.encode(), SECRET) == (200, "ok")
    assert orchestrator.registrations["relay"].url == "http://127.0.0.1:9"

    unregister_url = orchestrator.url + "/capability/unregister"
    assert await post(unregister_url, b"relay", "wrong") == (400, "invalid authorization")
    assert "relay" in orchestrator.registrations
    assert await post(unregister_url, b"relay", SECRET) == (200, "ok")
    assert await post(unregister_url, b"never-registered", SECRET) == (200, "ok")
    assert orchestrator.registrations == {}
    assert orchestrator.unregistered == ["relay", "never-registered"]


async def test_a_restart_loses_registrations_and_keeps_the_port(
    orchestrator: FakeOrchestrator,
) -> None:
    await register(orchestrator, "http://127.0.0.1:9")
    url = orchestrator.url
    await orchestrator.stop()
    await orchestrator.start()
    assert orchestrator.url == url
    assert orchestrator.registrations == {}
    with pytest.raises(TimeoutError):
        await orchestrator.wait_registered("relay", timeout=0.05)


async def test_starting_an_unregistered_capability_is_a_lookup_error(
    orchestrator: FakeOrchestrator,
) -> None:
    with pytest.raises(LookupError, match="relay"):
        await orchestrator.start_stream("relay")


async def test_start_sends_what_go_livepeer_sends(
    orchestrator: FakeOrchestrator, worker: MiniWorker
) -> None:
    await register(orchestrator, worker.url + "/")  # a trailing slash: go-livepeer concatenates
    stream = await orchestrator.start_stream(
        "relay", {"width": 64, "height": 64, "strength": 0.5}, extra={"request_id": "r1"}
    )
    [(path, headers, body)] = worker.calls
    assert path == "//stream/start"
    assert headers["X-Stream-Id"] == stream.stream_id
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Content-Type"] == "application/json"
    document = json.loads(body)
    base = orchestrator.trickle.url + stream.stream_id
    assert orchestrator.trickle.url.endswith("/ai/trickle/")
    assert document == {
        "gateway_request_id": stream.stream_id,
        "control_url": base + "-control",
        "events_url": base + "-events",
        "subscribe_url": base,
        "publish_url": base + "-out",
        "data_url": base + "-data",
        "params": {"width": 64, "height": 64, "strength": 0.5},
        "request_id": "r1",
    }
    assert stream.start_body == document
    assert WorkerStartRequest.from_json(body).stream_id == stream.stream_id
    suffixes = ["", "-out", "-control", "-events", "-data"]
    assert orchestrator.trickle.channels == {stream.stream_id + s for s in suffixes}
    assert orchestrator.streams == {stream.stream_id: stream}


async def test_disabled_features_leave_their_channels_out(
    orchestrator: FakeOrchestrator, worker: MiniWorker
) -> None:
    await register(orchestrator, worker.url, token=None)
    stream = await orchestrator.start_stream(
        "relay", video_ingress=False, video_egress=False, data_output=False, stream_id="s1"
    )
    [(_, headers, body)] = worker.calls
    assert "Authorization" not in headers
    document = json.loads(body)
    assert set(document) == {"gateway_request_id", "control_url", "events_url", "params"}
    assert document["params"] is None
    assert (stream.input_url, stream.output_url, stream.data_url) == (None, None, None)
    assert orchestrator.trickle.channels == {"s1-control", "s1-events"}
    with pytest.raises(ValueError, match="already running"):
        await orchestrator.start_stream("relay", stream_id="s1")
    with pytest.raises(ValueError, match="no video ingress"):
        await stream.publish([])
    with pytest.raises(ValueError, match="no video egress"):
        await anext(stream.output_frames())


async def test_control_gets_the_start_params_then_keepalives(
    orchestrator: FakeOrchestrator, worker: MiniWorker
) -> None:
    await register(orchestrator, worker.url)
    stream = await orchestrator.start_stream("relay", {"prompt": "cat"})
    await eventually(lambda: len(worker.control) >= 3)
    assert worker.control[0] == {"params": {"prompt": "cat"}}
    assert worker.control[1:3] == [{"keep": "alive"}] * 2
    await stream.send_control({"prompt": "dog"})
    await eventually(lambda: {"prompt": "dog"} in worker.control)


async def test_events_are_recorded_and_waited_for(
    orchestrator: FakeOrchestrator, worker: MiniWorker
) -> None:
    await register(orchestrator, worker.url)
    stream = await orchestrator.start_stream("relay")
    status = await stream.wait_event(StreamStatus)
    assert status.state == "ONLINE"
    assert status.stream_id == stream.stream_id
    online = await stream.wait_event(lambda event: isinstance(event, StreamStatus))
    assert online == status
    assert stream.malformed_events == []
    assert stream.failure is None


async def test_malformed_events_are_kept_apart(
    orchestrator: FakeOrchestrator, worker: MiniWorker
) -> None:
    worker.silent = True
    await register(orchestrator, worker.url)
    stream = await orchestrator.start_stream("relay")
    async with TricklePublisher(stream.events_url, "application/json") as events:
        await events.write_segment(b"{not json")
        await events.write_segment(b'{"type": "status"}')  # a status needs a state
        await events.write_segment(b'{"type": "status", "state": "OK"}')
    assert (await stream.wait_event(StreamStatus)).state == "OK"
    assert len(stream.malformed_events) == 2
    assert "state" in stream.malformed_events[1]


async def test_a_silent_worker_is_failed_and_stopped(worker: MiniWorker) -> None:
    worker.silent = True
    async with FakeOrchestrator(secret=SECRET, event_timeout=0.3) as orch:
        await register(orch, worker.url)
        stream = await orch.start_stream("relay")
        async with asyncio.timeout(TIMEOUT):
            await stream.wait_ended()
        assert stream.failure is not None
        assert "no event" in stream.failure
        [(_, headers, body)] = [call for call in worker.calls if call[0].endswith("/stop")]
        assert body == EVENTS_TIMEOUT_REASON.encode()
        assert "Content-Type" not in headers
        assert orch.trickle.channels == frozenset()
        assert orch.streams == {}
        with pytest.raises(LookupError, match="ended"):
            await stream.wait_event(StreamStatus)


async def test_a_talking_worker_is_not_failed(worker: MiniWorker) -> None:
    async with FakeOrchestrator(secret=SECRET, event_timeout=0.3) as orch:
        await register(orch, worker.url)
        stream = await orch.start_stream("relay")
        await asyncio.sleep(1.0)  # several event timeouts
        assert not stream.ended
        assert stream.failure is None


async def test_params_updates_relay_the_workers_answer(
    orchestrator: FakeOrchestrator, worker: MiniWorker
) -> None:
    await register(orchestrator, worker.url)
    stream = await orchestrator.start_stream("relay")
    assert await stream.update_params({"strength": 1}) == WorkerReply(200, "ok")
    assert await stream.update_params({"bad": 1}) == WorkerReply(400, "bad: not a known parameter")
    [first, _] = [call for call in worker.calls if call[0] == "/stream/params"]
    assert first[1]["X-Stream-Id"] == stream.stream_id
    assert first[1]["Authorization"] == f"Bearer {TOKEN}"
    assert json.loads(first[2]) == {"strength": 1}


async def test_video_goes_through_and_data_lines_are_recorded(
    orchestrator: FakeOrchestrator, worker: MiniWorker
) -> None:
    await register(orchestrator, worker.url)
    stream = await orchestrator.start_stream("relay")
    await stream.publish(synthetic_frames(45, width=160, height=90), realtime=False)
    received = []
    async with asyncio.timeout(TIMEOUT), contextlib.aclosing(stream.output_frames()) as frames:
        async for frame in frames:
            received.append(read_index(frame.to_ndarray(format="rgb24")))
            if received[-1] == 44:
                break
    assert received == list(range(45))
    assert await stream.wait_data(2) == [{"segment": 0}, {"segment": 1}]


async def test_raw_segments_go_in_as_given(
    orchestrator: FakeOrchestrator, worker: MiniWorker
) -> None:
    await register(orchestrator, worker.url)
    stream = await orchestrator.start_stream("relay")
    segments = split_segments(make_ts_clip(2.0, width=160, height=90, gop_seconds=1.0))
    await stream.publish_segments(segments)
    relayed = []
    async with asyncio.timeout(TIMEOUT), TrickleSubscriber(str(stream.output_url), start=0) as out:
        async for segment in out:
            relayed.append(await segment.read())
            if len(relayed) == len(segments):
                break
    assert relayed == segments


async def test_stop_relays_the_body_and_removes_the_channels(
    orchestrator: FakeOrchestrator, worker: MiniWorker
) -> None:
    await register(orchestrator, worker.url)
    stream = await orchestrator.start_stream("relay")
    assert await stream.stop(b"stream ended") == WorkerReply(200, "ok")
    stopped = await stream.wait_event(StreamStoppedEvent)
    assert stopped.reason == "stream ended"
    assert stream.ended
    assert stream.failure is None
    assert orchestrator.trickle.channels == frozenset()
    assert orchestrator.streams == {}


async def test_a_refused_start_raises_and_cleans_up(orchestrator: FakeOrchestrator) -> None:
    async with MiniWorker(start_status=409) as busy:
        await register(orchestrator, busy.url)
        with pytest.raises(WorkerRequestError) as refused:
            await orchestrator.start_stream("relay")
    assert (refused.value.status, refused.value.body) == (409, "busy")
    assert orchestrator.trickle.channels == frozenset()
    assert orchestrator.streams == {}


async def test_an_unreachable_worker_raises_and_cleans_up(orchestrator: FakeOrchestrator) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    await register(orchestrator, f"http://127.0.0.1:{port}")
    with pytest.raises(WorkerRequestError) as unreachable:
        await orchestrator.start_stream("relay")
    assert unreachable.value.status is None
    assert orchestrator.trickle.channels == frozenset()


async def test_stopping_the_orchestrator_ends_its_streams(worker: MiniWorker) -> None:
    async with TrickleServer() as shared:
        orch = FakeOrchestrator(secret=SECRET, trickle=shared)
        async with orch:
            await register(orch, worker.url)
            stream = await orch.start_stream("relay")
            assert stream.control_url.startswith(shared.url)
        assert stream.ended
        assert shared.channels == frozenset()
        async with (  # the shared server keeps running
            aiohttp.ClientSession() as session,
            session.get(shared.url + "nothing/next") as response,
        ):
            assert response.status == 404


def test_timings_and_secret_are_checked() -> None:
    with pytest.raises(ValueError, match="event_timeout"):
        FakeOrchestrator(event_timeout=0)
    with pytest.raises(ValueError, match="secret"):
        FakeOrchestrator(secret="")
