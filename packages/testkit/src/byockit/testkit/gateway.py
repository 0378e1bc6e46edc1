"""A fake go-livepeer gateway: the client-facing ``/process/stream`` API over fake orchestrators.

:class:`FakeGateway` serves, on loopback, what a go-livepeer gateway serves a
BYOC client (PROTOCOL.md section 5) and validates requests as go-livepeer
does, so that a client can be tested end to end: client -> FakeGateway ->
:class:`~byockit.testkit.orchestrator.FakeOrchestrator` -> a real worker.

- ``POST /process/stream/start`` checks the ``Livepeer`` header and the
  ``StartRequest``, lists the orchestrators that registered the capability
  (include/exclude filters, exact URL match; none: 400), then answers
  ``StreamUrls`` at once: the orchestrators are tried in the background, in a
  random order, each at most once. A failed start moves on to the next one
  silently; a stream that fails mid-way (its orchestrator stopped, its events
  went quiet) is swapped to the next one with the same start body, its
  control channel getting the client's last params, and an ``error`` entry in
  the status. When every orchestrator was tried, the stream ends with the
  error ``All Orchestrators exhausted, restart the stream``.
- ``GET .../status``: 404 until the worker's first ``status`` event or an
  error; then that document plus ``stream_id``, ``request_id``,
  ``pipeline_id`` and ``orchestrator_info``, replaced by each status event
  (``inference_status.last_params`` carried over when an event lacks it, as
  go-livepeer does). Kept after the stream ended, as go-livepeer keeps it.
- ``POST .../update`` relays the raw body to the worker's ``/stream/params``
  and the worker's answer back (401 becomes 500); ``POST .../stop`` relays
  the body to the worker's ``/stream/stop``, answers 200 with the worker's
  body and forgets the stream; ``GET .../data`` streams the data channel as
  Server-Sent Events from the moment the client connects, ending with
  ``event: end`` when the stream ends (503 without data output).

- WebRTC (``webrtc=True``, the default; :mod:`byockit.testkit.webrtc`):
  ``POST .../whip`` takes an SDP offer (``application/sdp``, else 415) and
  answers 201 with the SDP answer, a ``Location`` to ``DELETE`` when done and
  ``Livepeer-Playback-URL`` (the stream's WHEP URL); the received video goes,
  as MPEG-TS segments, into the input channel of the orchestrator running the
  stream. ``POST .../whep`` is this fake's stand-in for the media server
  (MediaMTX) that a real gateway's ``whep_url`` points at: it sends the
  decoded output channel as a video track, with its own ``Location``.
  ``whip_url``/``whep_url`` are returned for streams with video ingress /
  egress; stopping a stream closes its WebRTC sessions. With
  ``webrtc=False`` both are ``""`` and the routes are not served.

Not served (no RTMP in the testkit): ``rtmp_url`` and ``rtmp_output_url`` are
always ``""``. Tests may feed video instead through :meth:`FakeGateway.stream`,
a test-side hook giving the
:class:`~byockit.testkit.orchestrator.FakeStream` that runs the stream now.

Where go-livepeer misbehaves, this gateway does the sensible thing:
a stream name ending in ``-out`` gets 400 (go-livepeer drops the connection),
a stream id that is not URL-safe or that ends in ``-out`` gets 400 (it would
break the routes or collide with another stream's output channel), and an
update while no orchestrator runs the stream gets 503 (go-livepeer: 400).
The orchestrators' own ``request_timeout`` bounds calls to the worker, not
the header's ``timeout_seconds``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import random
import re
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final

import aiohttp
from aiohttp import web

from byockit.protocol.errors import ParseError, TrickleError
from byockit.protocol.lifecycle import Service
from byockit.protocol.models import JSONValue, LivepeerHeader, StartRequest, StreamUrls
from byockit.protocol.trickle.channels import JsonLinesReader, JsonReader, encode_document
from byockit.protocol.trickle.http import create_session
from byockit.protocol.trickle.subscriber import TrickleSubscriber
from byockit.testkit.orchestrator import FakeOrchestrator, FakeStream, WorkerRequestError
from byockit.testkit.webrtc import OfferError, WhepPlayback, WhipIngest

logger = logging.getLogger(__name__)

API_ROOT: Final = "/process/stream"
LIVEPEER_HEADER: Final = "Livepeer"
MAX_BODY_BYTES: Final = 10 * 1024 * 1024
"""Start and update bodies beyond this get 413, as in go-livepeer."""
EXHAUSTED_ERROR: Final = "All Orchestrators exhausted, restart the stream"
"""The status error of a stream no orchestrator is left to run."""
DATA_WINDOW: Final = 64
"""Data lines held for slow SSE readers; a reader further behind skips ahead."""
ENDED_STATUSES_KEPT: Final = 100
"""Status documents of ended streams kept for clients to read; older ones are dropped."""
MIME_SDP: Final = "application/sdp"
MAX_SDP_BYTES: Final = 64 * 1024
"""SDP offers beyond this get 413."""
_STREAM_ID = re.compile(r"[A-Za-z0-9._~-]{1,200}")


class FakeGateway(Service):
    """Serves the ``/process/stream`` API on ``host:port`` over ``orchestrators``.

    ``orchestrators`` are running :class:`FakeOrchestrator`\\ s (their
    registrations decide who offers a capability); ``ssl_context`` serves HTTPS;
    ``webrtc`` serves WHIP ingest and WHEP playback.
    """

    def __init__(
        self,
        orchestrators: Sequence[FakeOrchestrator],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        webrtc: bool = True,
    ) -> None:
        self.orchestrators: Final = tuple(orchestrators)
        self.webrtc: Final = webrtc
        self._host = host
        self._port = port
        self._ssl_context = ssl_context
        self._streams: dict[str, _GatewayStream] = {}
        self._statuses: dict[str, dict[str, Any]] = {}
        self._runner: web.AppRunner | None = None
        self._trickle_http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Bind and serve."""
        if self._runner is not None:
            raise RuntimeError("FakeGateway is already running")
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_route("OPTIONS", f"{API_ROOT}/", self._handle_options)
        app.router.add_route("OPTIONS", f"{API_ROOT}/start", self._handle_options)
        app.router.add_post(f"{API_ROOT}/start", self._handle_start)
        app.router.add_post(API_ROOT + "/{stream_id}/update", self._handle_update)
        app.router.add_post(API_ROOT + "/{stream_id}/stop", self._handle_stop)
        app.router.add_get(API_ROOT + "/{stream_id}/status", self._handle_status)
        app.router.add_get(API_ROOT + "/{stream_id}/data", self._handle_data)
        if self.webrtc:
            app.router.add_post(API_ROOT + "/{stream_id}/{kind:whip|whep}", self._handle_offer)
            app.router.add_delete(
                API_ROOT + "/{stream_id}/{kind:whip|whep}/{session_id}", self._handle_delete
            )
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, ssl_context=self._ssl_context)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._port = _bound_port(runner)
        self._runner = runner
        self._trickle_http = create_session(verify_tls=False)

    async def stop(self) -> None:
        """Stop every stream (telling its worker), then stop serving."""
        if self._runner is None:
            return
        for stream in list(self._streams.values()):
            await stream.stop(b"")
        runner, self._runner = self._runner, None
        await runner.cleanup()
        if self._trickle_http is not None:
            await self._trickle_http.close()
            self._trickle_http = None

    @property
    def url(self) -> str:
        """The gateway's base URL (no trailing slash)."""
        scheme = "https" if self._ssl_context is not None else "http"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{host}:{self._port}"

    @property
    def stream_ids(self) -> frozenset[str]:
        """The streams running now (started and not yet stopped or exhausted)."""
        return frozenset(self._streams)

    async def stream(
        self,
        stream_id: str,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 - a test helper bounds its own wait
    ) -> FakeStream:
        """Test-side hook: the orchestrator's stream that runs ``stream_id`` now.

        Waits until an orchestrator runs it (selection and swaps take a
        while); after a swap it gives the new one. Publish input video through
        it in place of WHIP. :class:`LookupError` if the gateway has no such
        stream or it ends first, :class:`TimeoutError` after ``timeout``.
        """
        stream = self._streams.get(stream_id)
        if stream is None:
            raise LookupError(f"the gateway has no stream {stream_id!r}")
        async with asyncio.timeout(timeout):
            return await stream.wait_current()

    # -- handlers -----------------------------------------------------------

    async def _handle_options(self, _: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _handle_start(self, request: web.Request) -> web.Response:
        header = _parse_header(request)
        body = await request.read()
        try:
            start = StartRequest.from_json(body)
        except ParseError as exc:
            if exc.field.split(".")[0] == "params":
                raise web.HTTPBadRequest(text="invalid model params") from None
            raise web.HTTPBadRequest(text=f"invalid JSON request body: {exc}") from None
        candidates = self._candidates(header)
        if not candidates:
            raise web.HTTPBadRequest(
                text=f"No orchestrators found for capability {header.capability}"
            )
        stream_id = start.stream_id or secrets.token_hex(4)
        if start.stream_name:
            stream_id = f"{start.stream_name}-{stream_id}"
        if not _STREAM_ID.fullmatch(stream_id) or stream_id.endswith("-out"):
            raise web.HTTPBadRequest(
                text=f"invalid stream id {stream_id!r}: use 1-200 of A-Z a-z 0-9 . _ ~ -, "
                "not ending in '-out'"
            )
        if stream_id in self._streams:
            raise web.HTTPBadRequest(text=f"stream already exists: {stream_id}")
        self._statuses.pop(stream_id, None)
        stream = _GatewayStream(self, stream_id, header, start.params, candidates)
        self._streams[stream_id] = stream
        stream.run()
        base = f"{self.url}{API_ROOT}/{stream_id}"
        parameters = header.parameters
        enabled = parameters.enable_data_output
        urls = StreamUrls(
            stream_id=stream_id,
            whip_url=f"{base}/whip" if self.webrtc and parameters.enable_video_ingress else "",
            whep_url=f"{base}/whep" if self.webrtc and parameters.enable_video_egress else "",
            update_url=f"{base}/update",
            status_url=f"{base}/status",
            data_url=f"{base}/data" if enabled else "",
            stop_url=f"{base}/stop",
        )
        return web.json_response(urls.to_json())

    async def _handle_update(self, request: web.Request) -> web.Response:
        stream = self._lookup(request)
        _parse_header(request)
        body = await request.read()
        reply = await stream.update(body)
        return web.Response(status=reply[0], text=reply[1])

    async def _handle_stop(self, request: web.Request) -> web.Response:
        stream = self._lookup(request)
        body = await request.read()
        return web.Response(text=await stream.stop(body))

    async def _handle_status(self, request: web.Request) -> web.Response:
        status = self._statuses.get(request.match_info["stream_id"])
        if status is None:
            raise web.HTTPNotFound(text="Stream not found")
        return web.json_response(status)

    async def _handle_data(self, request: web.Request) -> web.StreamResponse:
        stream = self._lookup(request)
        if stream.data is None:
            raise web.HTTPServiceUnavailable(text="Stream data not available")
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            async for line in stream.data.follow():
                await response.write(b"data: " + line + b"\n\n")
            await response.write(b'event: end\ndata: {"type":"stream_ended"}\n\n')
        return response

    async def _handle_offer(self, request: web.Request) -> web.Response:
        stream = self._lookup(request)
        kind = request.match_info["kind"]
        if request.content_type != MIME_SDP:
            raise web.HTTPUnsupportedMediaType(text=f"Content-Type must be {MIME_SDP}")
        parameters = stream.header.parameters
        if not (
            parameters.enable_video_ingress if kind == "whip" else parameters.enable_video_egress
        ):
            direction = "ingress" if kind == "whip" else "egress"
            raise web.HTTPBadRequest(text=f"the stream has no video {direction}")
        offer = await request.content.read(MAX_SDP_BYTES + 1)
        if len(offer) > MAX_SDP_BYTES:
            raise web.HTTPRequestEntityTooLarge(
                max_size=MAX_SDP_BYTES, actual_size=len(offer), text="SDP offer too large"
            )
        session = (WhipIngest if kind == "whip" else WhepPlayback)(stream.wait_current)
        try:
            answer = await session.accept(offer.decode(errors="replace"))
        except OfferError as exc:
            await session.close()
            raise web.HTTPBadRequest(text=str(exc)) from None
        if stream.ended:  # stopped while the offer was being answered
            await session.close()
            raise web.HTTPNotFound(text="Stream not found")
        session_id = secrets.token_hex(8)
        stream.webrtc[session_id] = session
        location = f"{API_ROOT}/{stream.stream_id}/{kind}/{session_id}"
        headers = {"Location": location, "Content-Type": MIME_SDP}
        if parameters.enable_video_egress:
            headers["Livepeer-Playback-URL"] = f"{self.url}{API_ROOT}/{stream.stream_id}/whep"
        return web.Response(status=201, text=answer, headers=headers)

    async def _handle_delete(self, request: web.Request) -> web.Response:
        stream = self._lookup(request)
        session = stream.webrtc.pop(request.match_info["session_id"], None)
        if session is None:
            raise web.HTTPNotFound(text="WebRTC session not found")
        await session.close()
        return web.Response(status=200)

    # -- what the handlers share ----------------------------------------------

    def _lookup(self, request: web.Request) -> _GatewayStream:
        stream = self._streams.get(request.match_info["stream_id"])
        if stream is None:
            raise web.HTTPNotFound(text="Stream not found")
        return stream

    def _candidates(self, header: LivepeerHeader) -> list[FakeOrchestrator]:
        """Who may run the stream: offering the capability, passing the filters, shuffled."""
        include = header.parameters.orchestrators.include
        exclude = header.parameters.orchestrators.exclude
        candidates = [
            orch
            for orch in self.orchestrators
            if header.capability in orch.registrations
            and orch.url not in exclude
            and (not include or orch.url in include)
        ]
        random.shuffle(candidates)
        return candidates

    def _sessions(self) -> aiohttp.ClientSession:
        if self._trickle_http is None:
            raise RuntimeError("the FakeGateway is not running")
        return self._trickle_http

    def _store_status(self, stream_id: str, status: dict[str, Any]) -> None:
        self._statuses.pop(stream_id, None)
        self._statuses[stream_id] = status

    def _forget(self, stream: _GatewayStream) -> None:
        """Drop an ended stream; keep its status, within :data:`ENDED_STATUSES_KEPT`."""
        if self._streams.get(stream.stream_id) is stream:
            del self._streams[stream.stream_id]
        ended = [sid for sid in self._statuses if sid not in self._streams]
        for stream_id in ended[: max(0, len(ended) - ENDED_STATUSES_KEPT)]:
            del self._statuses[stream_id]


class _GatewayStream:
    """One client stream: picks orchestrators in turn, keeps status and data for the client."""

    def __init__(
        self,
        gateway: FakeGateway,
        stream_id: str,
        header: LivepeerHeader,
        params: Mapping[str, JSONValue] | None,
        candidates: list[FakeOrchestrator],
    ) -> None:
        self.stream_id: Final = stream_id
        self.request_id: Final = secrets.token_hex(4)
        self.data: Final = _DataFeed() if header.parameters.enable_data_output else None
        self.header: Final = header
        self.webrtc: dict[str, WhipIngest | WhepPlayback] = {}
        """Open WHIP/WHEP sessions by id, closed when the stream ends."""
        self._gateway = gateway
        self._params = dict(params) if params is not None else None
        self._candidates = candidates
        self._current: FakeStream | None = None
        self._current_orchestrator: FakeOrchestrator | None = None
        self._last_update: bytes | None = None
        self._changed = asyncio.Condition()
        self._handover = asyncio.Lock()
        """Held while an orchestrator is being started and while the stream stops."""
        self._stopping = False
        self._ended = False
        self._runner: asyncio.Task[None] | None = None

    @property
    def ended(self) -> bool:
        return self._ended

    def run(self) -> None:
        self._runner = asyncio.create_task(self._run())
        self._runner.add_done_callback(self._report)

    def _report(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.error("stream %s: selection failed", self.stream_id, exc_info=error)

    async def wait_current(self) -> FakeStream:
        def running() -> bool:
            current = self._current
            return self._ended or (current is not None and not current.ended)

        async with self._changed:
            await self._changed.wait_for(running)
        if self._current is None or self._current.ended:
            raise LookupError(f"stream {self.stream_id} ended")
        return self._current

    async def update(self, body: bytes) -> tuple[int, str]:
        """Relay an update to the worker: its status (401 becomes 500) and body."""
        current = self._current
        if current is None or current.ended:
            return 503, "no orchestrator is running the stream yet"
        self._last_update = body
        try:
            reply = await current.update_params(body)
        except WorkerRequestError as exc:
            return 500, str(exc)
        return (500 if reply.status == 401 else reply.status), reply.body

    async def stop(self, body: bytes) -> str:
        """Stop the stream on its orchestrator (relaying ``body``); the worker's answer."""
        answer = ""
        async with self._handover:
            self._stopping = True
            current = self._current
            if current is not None and not current.ended:
                try:
                    answer = (await current.stop(body)).body
                except WorkerRequestError as exc:
                    logger.warning("stream %s: stop not relayed: %s", self.stream_id, exc)
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        await self._end()
        return answer

    async def _run(self) -> None:
        for orchestrator in self._candidates:
            stream = await self._start_on(orchestrator)
            if stream is None:
                if self._stopping:
                    return
                continue
            await self._follow(orchestrator, stream)
            if self._stopping:
                return
            reason = stream.failure or f"the stream ended on {orchestrator.url}"
            logger.info("stream %s: swapping orchestrator: %s", self.stream_id, reason)
            self._record_error(reason, replace=False)
        self._record_error(EXHAUSTED_ERROR, replace=True)
        await self._end()

    async def _start_on(self, orchestrator: FakeOrchestrator) -> FakeStream | None:
        """Start the stream there; ``None`` when refused, unreachable or stopping."""
        parameters = self.header.parameters
        async with self._handover:
            if self._stopping:
                return None
            try:
                stream = await orchestrator.start_stream(
                    self.header.capability,
                    self._params,
                    stream_id=self.stream_id,
                    video_ingress=parameters.enable_video_ingress,
                    video_egress=parameters.enable_video_egress,
                    data_output=parameters.enable_data_output,
                )
            except (WorkerRequestError, LookupError, ValueError, RuntimeError) as exc:
                logger.info(
                    "stream %s: %s did not start it: %s", self.stream_id, orchestrator.url, exc
                )
                return None
            if self._last_update is not None:
                await self._resend_params(stream, self._last_update)
            self._current, self._current_orchestrator = stream, orchestrator
        async with self._changed:
            self._changed.notify_all()
        return stream

    async def _follow(self, orchestrator: FakeOrchestrator, stream: FakeStream) -> None:
        """Keep status (and data) from ``stream`` until it ends."""
        readers = [asyncio.create_task(self._read_events(orchestrator, stream))]
        if self.data is not None and stream.data_url is not None:
            readers.append(asyncio.create_task(self._read_data(stream.data_url)))
        try:
            await stream.wait_ended()
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            async with self._changed:
                self._changed.notify_all()

    async def _resend_params(self, stream: FakeStream, body: bytes) -> None:
        """Write the client's last params after the start params the stream writes first.

        go-livepeer writes the last params once when a new control publisher
        starts; the fake orchestrator writes the start params, so the last
        update follows them once they are in (segment 0 of the control channel).
        """
        try:
            async with TrickleSubscriber(
                stream.control_url, start=0, session=self._gateway._sessions(), verify_tls=False
            ) as control:
                first = await control.next_segment()
                if first is not None:
                    await first.read()
            await stream.send_control(body)
        except TrickleError as exc:
            logger.warning("stream %s: last params not resent: %s", self.stream_id, exc)

    async def _read_events(self, orchestrator: FakeOrchestrator, stream: FakeStream) -> None:
        """Store each ``status`` event, as go-livepeer's events subscriber does."""
        with contextlib.suppress(TrickleError):
            async with TrickleSubscriber(
                stream.events_url, start=0, session=self._gateway._sessions(), verify_tls=False
            ) as subscriber:
                async for document in JsonReader(subscriber, on_invalid=_ignore):
                    event = _unwrap_event(document)
                    if event is not None and event.get("type") == "status":
                        self._keep_status(orchestrator, event)

    async def _read_data(self, url: str) -> None:
        assert self.data is not None
        with contextlib.suppress(TrickleError):
            async with TrickleSubscriber(
                url, start=0, session=self._gateway._sessions(), verify_tls=False
            ) as subscriber:
                async for document in JsonLinesReader(subscriber, on_invalid=_ignore):
                    await self.data.publish(encode_document(document))

    def _keep_status(self, orchestrator: FakeOrchestrator, event: dict[str, Any]) -> None:
        previous = self._gateway._statuses.get(self.stream_id, {}).get("inference_status")
        inference = event.get("inference_status")
        if isinstance(inference, dict) and isinstance(previous, dict):
            for key in ("last_params", "last_restart_logs"):
                if inference.get(key) is None and key in previous:
                    inference[key] = previous[key]
        event |= {
            "stream_id": self.stream_id,
            "request_id": self.request_id,
            "pipeline_id": "",
            "orchestrator_info": {"address": "", "url": orchestrator.url},
        }
        self._gateway._store_status(self.stream_id, event)

    def _record_error(self, message: str, *, replace: bool) -> None:
        """Add an ``error`` to the status: only the first sticks, unless ``replace``."""
        status = self._gateway._statuses.get(self.stream_id, {})
        if replace or "error" not in status:
            error = {"error_message": message, "error_time": int(time.time() * 1000)}
            self._gateway._store_status(self.stream_id, status | {"error": error})

    async def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        if self.data is not None:
            await self.data.close()
        sessions = list(self.webrtc.values())
        self.webrtc.clear()
        await asyncio.gather(*(session.close() for session in sessions))
        self._gateway._forget(self)
        async with self._changed:
            self._changed.notify_all()


class _DataFeed:
    """The data lines of one stream, fanned out to any number of SSE readers, bounded."""

    def __init__(self) -> None:
        self._lines: collections.deque[bytes] = collections.deque(maxlen=DATA_WINDOW)
        self._next = 0
        """The number of the next line published; the window holds the last few."""
        self._closed = False
        self._changed = asyncio.Condition()

    async def publish(self, line: bytes) -> None:
        self._lines.append(line)
        self._next += 1
        async with self._changed:
            self._changed.notify_all()

    async def close(self) -> None:
        self._closed = True
        async with self._changed:
            self._changed.notify_all()

    def _has_news(self, cursor: int) -> bool:
        return self._closed or self._next > cursor

    async def follow(self) -> AsyncIterator[bytes]:
        """Lines published from now on, until closed; a slow reader skips what it missed."""
        cursor = self._next
        while True:
            async with self._changed:
                await self._changed.wait_for(functools.partial(self._has_news, cursor))
            missed = min(self._next - cursor, len(self._lines))
            batch = list(self._lines)[len(self._lines) - missed :] if missed else []
            cursor = self._next
            for line in batch:
                yield line
            if self._closed and not batch:
                return


def _parse_header(request: web.Request) -> LivepeerHeader:
    value = request.headers.get(LIVEPEER_HEADER)
    if not value:
        raise web.HTTPBadRequest(text=f"missing {LIVEPEER_HEADER} header")
    try:
        return LivepeerHeader.from_header(value)
    except ParseError as exc:
        raise web.HTTPBadRequest(text=f"invalid {LIVEPEER_HEADER} header: {exc}") from None


def _unwrap_event(document: object) -> dict[str, Any] | None:
    """The event of an events-channel document: ``event`` when an object, else the document."""
    if not isinstance(document, dict):
        return None
    inner = document.get("event")
    return inner if isinstance(inner, dict) else document


def _ignore(_: ParseError) -> None:
    """Bad documents are skipped, as go-livepeer skips them."""


def _bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("the fake gateway is not bound to a TCP port")
