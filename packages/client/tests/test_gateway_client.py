"""GatewayClient and StreamSession against a scriptable gateway double on loopback.

The double serves whatever each test scripts per route and records every
request, so that tests see the error paths a real gateway rarely shows
(5xx, timeouts, 4xx bodies, dropped connections) and count the tries.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import pytest
import trustme
from aiohttp import web

from byockit.client import (
    GatewayClient,
    GatewayError,
    GatewayTLSError,
    GatewayUnavailable,
    InvalidGatewayAnswer,
    NoGatewayAvailable,
    StreamFailed,
    StreamSession,
)
from byockit.client.session import MAX_EVENT_BYTES, EventStreamParser, ServerSentEvent
from byockit.protocol.errors import ParseError

TIMEOUT = 10.0
START = "POST /process/stream/start"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@attrs.frozen
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class GatewayDouble:
    """Serves whatever handlers a test sets, by ``"METHOD /path"``; 404 for the rest."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.requests: list[Recorded] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    def count(self, route: str) -> int:
        return sum(f"{r.method} {r.path}" == route for r in self.requests)

    def sent(self, route: str) -> list[Recorded]:
        return [r for r in self.requests if f"{r.method} {r.path}" == route]

    async def start(self, ssl_context: Any = None) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = next(a[1] for a in self._runner.addresses if isinstance(a, tuple))
        self.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(Recorded(request.method, request.path, dict(request.headers), body))
        handler = self.handlers.get(f"{request.method} {request.path}")
        if handler is None:
            return web.Response(status=404, text="no such route")
        return await handler(request)

    def start_answer(self, stream_id: str = "s1", *, data: bool = True) -> dict[str, str]:
        """The StreamUrls a gateway answers, with relative URLs (resolved by the client)."""
        base = f"/process/stream/{stream_id}"
        return {
            "stream_id": stream_id,
            "update_url": f"{base}/update",
            "status_url": f"{base}/status",
            "data_url": f"{base}/data" if data else "",
            "stop_url": f"{base}/stop",
        }

    def accept_starts(self, *, data: bool = True) -> None:
        """Answer starts with fresh stream ids s1, s2... and accept stops."""

        async def start(_: web.Request) -> web.Response:
            number = self.count("POST /process/stream/start")
            return web.json_response(self.start_answer(f"s{number}", data=data))

        self.handlers["POST /process/stream/start"] = start
        for number in range(1, 10):
            self.handlers[f"POST /process/stream/s{number}/stop"] = reply(200, "")


def reply(status: int, text: str = "") -> Handler:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(status=status, text=text)

    return handler


def json_reply(document: object) -> Handler:
    async def handler(_: web.Request) -> web.Response:
        return web.json_response(document)

    return handler


@pytest.fixture
async def double() -> AsyncIterator[GatewayDouble]:
    gateway = GatewayDouble()
    await gateway.start()
    yield gateway
    await gateway.stop()


@pytest.fixture
async def closed_url() -> str:
    """The URL of a port nothing listens on (bound, then released)."""
    gateway = GatewayDouble()
    await gateway.start()
    await gateway.stop()
    return gateway.url


def client(*urls: str, **kwargs: Any) -> GatewayClient:
    """A client with quick retries, so that retry tests stay fast."""
    options: dict[str, Any] = {"timeout": 2.0, "retries": 2, "backoff": 0.01} | kwargs
    return GatewayClient(list(urls), **options)


def header(recorded: Recorded) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(base64.b64decode(recorded.headers["Livepeer"]))
    return decoded


async def started(double: GatewayDouble, **kwargs: Any) -> tuple[GatewayClient, StreamSession]:
    double.accept_starts()
    gateway = client(double.url, **kwargs)
    return gateway, await gateway.start("cap", {"a": 1}, data_output=True)


# -- start ------------------------------------------------------------------------------------


async def test_start_sends_the_contract_and_resolves_returned_urls(double: GatewayDouble) -> None:
    double.accept_starts()
    async with client(double.url + "/") as gateway:
        stream = await gateway.start(
            "cap",
            {"prompt": "x"},
            stream_name="cam",
            data_output=True,
            video_egress=False,
            include=["https://o1"],
            exclude=["https://o2"],
            timeout_seconds=12,
        )
    (sent,) = double.sent(START)
    assert header(sent) == {
        "capability": "cap",
        "timeout_seconds": 12,
        "request": "{}",
        "parameters": json.dumps(
            {
                "enable_video_ingress": True,
                "enable_video_egress": False,
                "enable_data_output": True,
                "orchestrators": {"include": ["https://o1"], "exclude": ["https://o2"]},
            },
            separators=(",", ":"),
        ),
    }
    assert json.loads(sent.body) == {
        "stream_name": "cam",
        "stream_id": "",
        "rtmp_output": "",
        "params": '{"prompt":"x"}',
    }
    assert stream.stream_id == "s1"
    assert stream.gateway_url == double.url
    assert stream.urls.status_url == f"{double.url}/process/stream/s1/status"
    assert stream.urls.whip_url == ""
    assert stream.params == {"prompt": "x"}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"capability": ""}, "capability"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"stream_name": "cam-out"}, "stream_name"),
        ({"params": {"x": float("nan")}}, "params.x"),
    ],
)
async def test_start_refuses_what_the_contract_forbids_before_sending(
    double: GatewayDouble, kwargs: dict[str, Any], field: str
) -> None:
    arguments: dict[str, Any] = {"capability": "cap"} | kwargs
    async with client(double.url) as gateway:
        with pytest.raises(ParseError) as caught:
            await gateway.start(**arguments)
    assert caught.value.field == field
    assert double.requests == []


async def test_start_rejected_surfaces_the_body_without_retry_or_failover(
    double: GatewayDouble,
) -> None:
    double.handlers[START] = reply(400, "invalid model params")
    second = GatewayDouble()
    await second.start()
    second.accept_starts()
    try:
        async with client(double.url, second.url) as gateway:
            with pytest.raises(GatewayError) as caught:
                await gateway.start("cap")
    finally:
        await second.stop()
    assert (caught.value.status, caught.value.body) == (400, "invalid model params")
    assert caught.value.url == f"{double.url}/process/stream/start"
    assert double.count(START) == 1
    assert second.requests == []


async def test_start_fails_over_to_the_next_gateway_and_says_which(
    double: GatewayDouble, closed_url: str
) -> None:
    third = GatewayDouble()
    await third.start()
    third.accept_starts()
    double.handlers[START] = reply(503, "overloaded")
    try:
        async with client(closed_url, double.url, third.url) as gateway:
            stream = await gateway.start("cap")
    finally:
        await third.stop()
    assert stream.gateway_url == third.url
    assert double.count(START) == 1, "a start is not retried on the same gateway"


async def test_start_reports_every_failure_when_no_gateway_takes_it(
    double: GatewayDouble, closed_url: str
) -> None:
    double.handlers[START] = json_reply({"stream_id": ""})
    async with client(closed_url, double.url) as gateway:
        with pytest.raises(NoGatewayAvailable) as caught:
            await gateway.start("cap")
    failures = caught.value.failures
    assert isinstance(failures[closed_url], GatewayUnavailable)
    assert isinstance(failures[double.url], InvalidGatewayAnswer)
    assert "stream_id" in str(failures[double.url])


async def test_client_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="gateway URL"):
        GatewayClient("ftp://gateway")
    with pytest.raises(ValueError, match="at least one"):
        GatewayClient([])
    with pytest.raises(ValueError, match="timeout"):
        GatewayClient("http://gateway", timeout=0)
    with pytest.raises(ValueError, match="retries"):
        GatewayClient("http://gateway", retries=-1)


async def test_tls_is_verified_by_default(double: GatewayDouble) -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    secure = GatewayDouble()
    await secure.start(server_context)
    secure.accept_starts()
    try:
        async with client(secure.url) as gateway:
            with pytest.raises(NoGatewayAvailable) as caught:
                await gateway.start("cap")
        assert isinstance(caught.value.failures[secure.url], GatewayTLSError)
        assert secure.requests == []
        trusting = ssl.create_default_context()
        authority.configure_trust(trusting)
        async with client(secure.url, verify_tls=trusting) as gateway:
            assert (await gateway.start("cap")).stream_id == "s1"
    finally:
        await secure.stop()


# -- status, update, stop -----------------------------------------------------------------


async def test_status_is_none_until_the_gateway_has_one_then_the_document(
    double: GatewayDouble,
) -> None:
    gateway, stream = await started(double)
    async with gateway:
        double.handlers["GET /process/stream/s1/status"] = reply(404, "Stream not found")
        assert await stream.status() is None
        document = {"state": "ONLINE", "stream_id": "s1", "orchestrator_info": {"url": "o"}}
        double.handlers["GET /process/stream/s1/status"] = json_reply(document)
        assert await stream.status() == document
        double.handlers["GET /process/stream/s1/status"] = reply(200, "[1]")
        with pytest.raises(InvalidGatewayAnswer, match="not a JSON object"):
            await stream.status()


async def test_status_retries_transient_failures_then_gives_up_typed(
    double: GatewayDouble,
) -> None:
    gateway, stream = await started(double)
    route = "GET /process/stream/s1/status"
    answers = iter([reply(503, "busy"), reply(502, "proxy"), json_reply({"state": "ONLINE"})])

    async def flaky(request: web.Request) -> web.StreamResponse:
        return await next(answers)(request)

    async with gateway:
        double.handlers[route] = flaky
        assert await stream.status() == {"state": "ONLINE"}
        assert double.count(route) == 3
        double.handlers[route] = reply(503, "still busy")
        with pytest.raises(GatewayError) as caught:
            await stream.status()
        assert (caught.value.status, caught.value.body) == (503, "still busy")
        assert double.count(route) == 3 + 3, "one try and two retries"
        double.handlers[route] = reply(500, "bug")
        with pytest.raises(GatewayError):
            await stream.status()
        assert double.count(route) == 7, "a 500 is a verdict, not retried"


async def test_a_gateway_that_does_not_answer_times_out_after_retries(
    double: GatewayDouble,
) -> None:
    gateway, stream = await started(double, timeout=0.3)
    route = "GET /process/stream/s1/status"

    async def hang(_: web.Request) -> web.Response:
        await asyncio.sleep(TIMEOUT)
        return web.Response()

    async with gateway:
        double.handlers[route] = hang
        with pytest.raises(GatewayUnavailable, match=r"no answer within 0\.3 s"):
            await stream.status()
    assert double.count(route) == 3


async def test_a_gateway_that_went_down_is_unavailable(double: GatewayDouble) -> None:
    gateway, stream = await started(double)
    async with gateway:
        await double.stop()
        with pytest.raises(GatewayUnavailable, match="cannot reach"):
            await stream.status()


async def test_update_relays_the_answer_and_is_never_retried(double: GatewayDouble) -> None:
    gateway, stream = await started(double)
    route = "POST /process/stream/s1/update"
    async with gateway:
        double.handlers[route] = reply(200, '{"status":"ok"}')
        answer = await stream.update({"a": 2})
        assert (answer.status, answer.body) == (200, '{"status":"ok"}')
        assert stream.params == {"a": 2}
        (sent,) = double.sent(route)
        assert json.loads(sent.body) == {"a": 2}
        assert json.loads(header(sent)["request"]) == {"stream_id": "s1"}
        assert header(sent)["capability"] == "cap"

        double.handlers[route] = reply(400, '{"error":"a must be small"}')
        with pytest.raises(GatewayError) as caught:
            await stream.update({"a": 99})
        assert (caught.value.status, caught.value.body) == (400, '{"error":"a must be small"}')
        assert caught.value.url == f"{double.url}/process/stream/s1/update"
        assert stream.params == {"a": 2}, "refused params are not kept"

        double.handlers[route] = reply(503, "busy")
        with pytest.raises(GatewayError):
            await stream.update({"a": 3})
        assert double.count(route) == 3


async def test_stop_is_idempotent_and_forwards_its_body(double: GatewayDouble) -> None:
    gateway, stream = await started(double)
    async with gateway:
        await stream.stop(b"bye")
        await stream.stop(b"again")
    assert [r.body for r in double.sent("POST /process/stream/s1/stop")] == [b"bye"]
    assert stream.stopped


async def test_stop_of_a_stream_already_gone_succeeds(double: GatewayDouble) -> None:
    gateway, stream = await started(double)
    async with gateway:
        double.handlers["POST /process/stream/s1/stop"] = reply(404, "Stream not found")
        await stream.stop()


async def test_stop_that_could_not_be_sent_is_tried_again(double: GatewayDouble) -> None:
    gateway, stream = await started(double)
    route = "POST /process/stream/s1/stop"
    async with gateway:
        double.handlers[route] = reply(504, "timeout")
        with pytest.raises(GatewayError):
            await stream.stop()
        double.handlers[route] = reply(200)
        await stream.stop()
    assert double.count(route) == 4


# -- data -------------------------------------------------------------------------------------


def sse(*chunks: bytes, hold: bool = False) -> Handler:
    """An SSE answer writing ``chunks`` one by one; ``hold`` keeps it open afterwards."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in chunks:
            await response.write(chunk)
            await asyncio.sleep(0.01)
        if hold:
            await asyncio.sleep(TIMEOUT)
        return response

    return handler


async def collect(stream: StreamSession, count: int) -> list[Any]:
    values = []
    async with asyncio.timeout(TIMEOUT), contextlib.aclosing(stream.data()) as events:
        async for value in events:
            values.append(value)
            if len(values) == count:
                break
    return values


async def test_data_yields_parsed_events_and_reconnects(double: GatewayDouble) -> None:
    gateway, stream = await started(double)
    route = "GET /process/stream/s1/data"
    async with gateway:
        double.handlers[route] = sse(
            b'data: {"i":', b"1}\n\n: comment\ndata: not json\n\ndata: [2]\n\n"
        )
        assert await collect(stream, 3) == [{"i": 1}, [2], {"i": 1}]
    assert double.count(route) == 2, "the ended event stream was reconnected"
    assert double.requests[-1].headers["Accept"] == "text/event-stream"


async def test_data_gives_up_typed_after_retries(double: GatewayDouble) -> None:
    gateway, stream = await started(double)
    route = "GET /process/stream/s1/data"
    async with gateway:
        double.handlers[route] = reply(503, "Stream data not available")
        with pytest.raises(GatewayError) as caught:
            await collect(stream, 1)
        assert caught.value.status == 503
        assert double.count(route) == 3
        double.handlers[route] = reply(404, "Stream not found")
        with pytest.raises(GatewayError):
            await collect(stream, 1)
        assert double.count(route) == 4, "a 404 is final"


async def test_data_ends_cleanly_on_stop(double: GatewayDouble) -> None:
    gateway, stream = await started(double)
    double.handlers["GET /process/stream/s1/data"] = sse(b"data: 1\n\n", hold=True)
    async with gateway:
        values = []

        async def read() -> None:
            async for value in stream.data():
                values.append(value)
                await stream.stop()

        async with asyncio.timeout(TIMEOUT):
            await read()
    assert values == [1]


async def test_data_ends_with_the_gateway_end_event_or_fails_on_an_error(
    double: GatewayDouble,
) -> None:
    gateway, stream = await started(double)
    end = b'event: end\ndata: {"type":"stream_ended"}\n\n'
    double.handlers["GET /process/stream/s1/data"] = sse(b"data: 1\n\n", end, hold=True)
    double.handlers["GET /process/stream/s1/status"] = json_reply({"state": "OFFLINE"})
    async with gateway:
        assert await collect(stream, 5) == [1]
        error = {"error": {"error_message": "All Orchestrators exhausted"}}
        double.handlers["GET /process/stream/s1/status"] = json_reply(error)
        with pytest.raises(StreamFailed, match="All Orchestrators exhausted"):
            await collect(stream, 5)


async def test_data_needs_data_output(double: GatewayDouble) -> None:
    double.accept_starts(data=False)
    async with client(double.url) as gateway:
        stream = await gateway.start("cap")
        with pytest.raises(InvalidGatewayAnswer, match="no data_url"):
            await collect(stream, 1)


def test_event_stream_parser_handles_fields_and_bounds_events() -> None:
    parser = EventStreamParser("http://g/data")
    assert parser.feed(b"event: end\r\ndata: a\r\ndata:b\r\n") == []
    assert parser.feed(b"\r\nid: 3\n\n") == [ServerSentEvent("end", "a\nb")]
    assert parser.feed(b"data: x\n\n") == [ServerSentEvent("message", "x")]
    with pytest.raises(InvalidGatewayAnswer, match="longer than"):
        parser.feed(b"data: " + b"x" * MAX_EVENT_BYTES)


# -- watch ----------------------------------------------------------------------------------


async def test_watch_reports_a_stream_that_never_comes_up(double: GatewayDouble) -> None:
    gateway, stream = await started(double)
    double.handlers["GET /process/stream/s1/status"] = reply(404, "Stream not found")
    async with gateway, asyncio.timeout(TIMEOUT):
        with pytest.raises(StreamFailed, match=r"no status within 0\.2 s") as caught:
            await stream.watch(startup_timeout=0.2, poll_interval=0.05)
    assert caught.value.stream_id == "s1"
    assert caught.value.status is None
    assert stream.failure is caught.value


async def test_watch_reports_silence_and_an_error_that_persists(double: GatewayDouble) -> None:
    gateway, stream = await started(double)
    route = "GET /process/stream/s1/status"
    double.handlers[route] = json_reply({"state": "ONLINE", "timestamp": 1})
    async with gateway, asyncio.timeout(TIMEOUT):
        with pytest.raises(StreamFailed, match=r"unchanged for 0\.3 s") as caught:
            await stream.watch(silence_timeout=0.3, poll_interval=0.05)
        assert caught.value.status == {"state": "ONLINE", "timestamp": 1}
        erring = {"state": "ERROR", "inference_status": {"last_error": "CUDA out of memory"}}
        double.handlers[route] = json_reply(erring)
        with pytest.raises(StreamFailed, match="CUDA out of memory"):
            await stream.watch(error_grace=0.2, poll_interval=0.05)


async def test_watch_forgives_a_passing_error_and_ends_on_stop(double: GatewayDouble) -> None:
    gateway, stream = await started(double)
    documents = iter(
        [{"error": {"error_message": "swapping"}}] * 2
        + [{"state": "ONLINE", "n": n} for n in range(1000)]
    )

    seen_online = asyncio.Event()

    async def status(_: web.Request) -> web.Response:
        document = next(documents)
        if document.get("n") == 3:
            seen_online.set()
        return web.json_response(document)

    double.handlers["GET /process/stream/s1/status"] = status
    async with gateway, asyncio.timeout(TIMEOUT):
        watching = asyncio.create_task(stream.watch(error_grace=1.0, poll_interval=0.05))
        await seen_online.wait()
        await stream.stop()
        await watching
    assert stream.failure is None


async def test_watch_restarts_a_failed_stream_with_the_latest_params(
    double: GatewayDouble,
) -> None:
    gateway, stream = await started(double)
    double.handlers["POST /process/stream/s1/update"] = reply(200, "ok")
    double.handlers["GET /process/stream/s1/status"] = reply(404, "Stream not found")
    double.handlers["GET /process/stream/s2/status"] = reply(404, "Stream not found")
    async with gateway, asyncio.timeout(TIMEOUT):
        await stream.update({"a": 5})
        with pytest.raises(StreamFailed, match="stream s2 failed: no status"):
            await stream.watch(
                restart=True, startup_timeout=0.1, poll_interval=0.02, max_restarts=1
            )
    assert stream.restarts == 1
    assert stream.stream_id == "s2"
    starts = double.sent(START)
    assert [json.loads(s.body)["params"] for s in starts] == ['{"a":1}', '{"a":5}']
    assert double.sent("POST /process/stream/s1/stop")[0].body.startswith(b"restarting: ")
