"""A fake go-livepeer orchestrator that drives a BYOC worker over its real REST API.

:class:`FakeOrchestrator` does, on loopback, what an orchestrator and its
gateway do to a worker (PROTOCOL.md sections 2-4):

- accepts ``POST /capability/register`` and ``/capability/unregister``,
  checking the raw secret in ``Authorization`` (400 ``invalid authorization``)
  and the body (400 ``Error registering capability: ...``); registrations
  live in memory and are lost by :meth:`FakeOrchestrator.stop`, as a restart loses them;
- :meth:`FakeOrchestrator.start_stream` creates the stream's trickle channels
  on a :class:`TrickleServer` and calls the worker's ``/stream/start`` at the
  URL it registered, with ``X-Stream-Id``, the Bearer token it registered and
  the body go-livepeer builds;
- then, like the gateway, writes the start params once to the control channel
  followed by a keepalive every ``keepalive_interval`` seconds, reads the
  events channel and fails the stream when no event arrived for
  ``event_timeout`` seconds (stopping the worker, as go-livepeer does), and
  relays ``/stream/params`` and ``/stream/stop``; a worker answering 401
  loses its registration, as go-livepeer removes it.

A :class:`FakeStream` also publishes input video, decodes the output, and
records every event and data line, so that tests can check what a worker did.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import ssl
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
)
from typing import Any, Final, TypeVar, overload

import aiohttp
import attrs
import av
from aiohttp import web

from byockit.protocol.errors import ByockitError, ParseError, TrickleError
from byockit.protocol.lifecycle import Service
from byockit.protocol.media.aio import decode_segments, publish_stream
from byockit.protocol.media.encoder import SegmentEncoder
from byockit.protocol.models import CapabilityRegistration, Event, EventMessage, StreamStoppedEvent
from byockit.protocol.trickle.channels import JsonLinesReader, JsonReader, JsonWriter
from byockit.protocol.trickle.constants import MIME_JSON, MIME_JSONL
from byockit.protocol.trickle.http import create_session, require_positive
from byockit.protocol.trickle.publisher import TricklePublisher
from byockit.protocol.trickle.subscriber import TrickleSubscriber
from byockit.testkit.trickle_server import TrickleServer

logger = logging.getLogger(__name__)

TRICKLE_BASE_PATH: Final = "/ai/trickle/"
"""Where go-livepeer serves its trickle channels."""
MIME_VIDEO: Final = "video/MP2T"
"""The input and output channels' MIME type, as go-livepeer writes it."""
EVENTS_TIMEOUT_REASON: Final = "timeout waiting for events"
"""The stop body go-livepeer sends when a worker's events went quiet."""
DEFAULT_KEEPALIVE_INTERVAL: Final = 10.0
DEFAULT_EVENT_TIMEOUT: Final = 30.0
DEFAULT_REQUEST_TIMEOUT: Final = 30.0
"""Seconds the worker gets to answer start, params and stop (the job's ``timeout_seconds``)."""
STOP_GRACE: Final = 2.0
"""Seconds a stop waits for the worker's ``stream_stopped`` event before closing the channels."""
_BODY_LIMIT: Final = 64 * 1024

EventT = TypeVar("EventT", bound=Event)


class WorkerRequestError(ByockitError):
    """A call to the worker failed: no answer (``status is None``) or a refused start."""

    def __init__(self, message: str, *, status: int | None = None, body: str = "") -> None:
        self.status = status
        self.body = body
        super().__init__(message)


@attrs.frozen
class WorkerReply:
    """The worker's answer to ``/stream/params`` or ``/stream/stop``, relayed as is."""

    status: int
    body: str


class FakeOrchestrator(Service):
    """Serves the registration API on ``host:port`` and drives registered workers.

    ``trickle``: the :class:`TrickleServer` holding the streams' channels (one
    of its own, under ``/ai/trickle/``, when not given; it is started and
    stopped with the orchestrator). ``ssl_context`` serves HTTPS (also for
    its own trickle server). ``keepalive_interval``, ``event_timeout`` and
    ``request_timeout`` are go-livepeer's 10 s, 30 s and the job's timeout;
    tests shorten them.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        secret: str = "orch-secret",
        trickle: TrickleServer | None = None,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_interval: float = DEFAULT_KEEPALIVE_INTERVAL,
        event_timeout: float = DEFAULT_EVENT_TIMEOUT,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        require_positive(
            keepalive_interval=keepalive_interval,
            event_timeout=event_timeout,
            request_timeout=request_timeout,
        )
        if not secret:
            raise ValueError("the orchestrator secret must not be empty")
        self.secret: Final = secret
        self.keepalive_interval: Final = keepalive_interval
        self.event_timeout: Final = event_timeout
        self.request_timeout: Final = request_timeout
        self._host = host
        self._port = port
        self._ssl_context = ssl_context
        self._owns_trickle = trickle is None
        self.trickle: Final = trickle or TrickleServer(
            host, base_path=TRICKLE_BASE_PATH, ssl_context=ssl_context
        )
        self._registrations: dict[str, CapabilityRegistration] = {}
        self._changed = asyncio.Condition()
        self._streams: dict[str, FakeStream] = {}
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self._trickle_http: aiohttp.ClientSession | None = None
        self.unregistered: list[str] = []
        """Capability names unregistered, in order (kept across restarts)."""

    async def start(self) -> None:
        """Bind and serve. After :meth:`stop`, binds the same port again (a restart)."""
        if self._runner is not None:
            raise RuntimeError("FakeOrchestrator is already running")
        if self._owns_trickle:
            await self.trickle.start()
        app = web.Application()
        app.router.add_post("/capability/register", self._handle_register)
        app.router.add_post("/capability/unregister", self._handle_unregister)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, ssl_context=self._ssl_context)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            if self._owns_trickle:
                await self.trickle.stop()
            raise
        self._port = _bound_port(runner)
        self._runner = runner
        self._http = aiohttp.ClientSession()
        self._trickle_http = create_session(verify_tls=False)

    async def stop(self) -> None:
        """Go away like a killed orchestrator: streams' channels vanish, registrations are lost."""
        if self._runner is None:
            return
        runner, self._runner = self._runner, None
        for stream in list(self._streams.values()):
            await stream.close("the orchestrator stopped")
        await runner.cleanup()
        for session in (self._http, self._trickle_http):
            if session is not None:
                await session.close()
        self._http = self._trickle_http = None
        if self._owns_trickle:
            await self.trickle.stop()
        self._registrations.clear()

    @property
    def url(self) -> str:
        """The orchestrator's base URL (no trailing slash), what a worker's ``ORCH_URL`` holds."""
        scheme = "https" if self._ssl_context is not None else "http"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{host}:{self._port}"

    @property
    def registrations(self) -> Mapping[str, CapabilityRegistration]:
        """The capabilities registered now, by name."""
        return dict(self._registrations)

    @property
    def streams(self) -> Mapping[str, FakeStream]:
        """The streams running now, by stream id."""
        return dict(self._streams)

    async def register(self, registration: CapabilityRegistration) -> None:
        """Register a capability directly, as if its worker had (a worker with no registrar)."""
        self._registrations[registration.name] = registration
        async with self._changed:
            self._changed.notify_all()

    def forget(self, name: str) -> None:
        """Drop a registration, as an orchestrator does when the worker answers 401."""
        self._registrations.pop(name, None)

    async def wait_registered(
        self,
        name: str,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 - a test helper bounds its own wait
    ) -> CapabilityRegistration:
        """The registration of ``name`` once there is one; :class:`TimeoutError` if none comes."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: name in self._registrations)
        return self._registrations[name]

    async def start_stream(
        self,
        capability: str,
        params: Mapping[str, object] | None = None,
        *,
        stream_id: str | None = None,
        video_ingress: bool = True,
        video_egress: bool = True,
        data_output: bool = True,
        extra: Mapping[str, object] | None = None,
    ) -> FakeStream:
        """Start a stream on the worker registered for ``capability``.

        ``params`` are the client's start params (``None``: it sent none);
        ``extra`` other keys of the gateway's body, merged into the start body
        (they may override the channel URLs, to test a worker with bad ones).
        Raises :class:`LookupError` when nothing is registered under that name,
        :class:`WorkerRequestError` when the worker cannot be reached or
        answers with a status above 399 (its channels are then removed again).
        """
        registration = self._registrations.get(capability)
        if registration is None:
            raise LookupError(f"no worker registered the capability {capability!r}")
        stream_id = stream_id or f"stream-{secrets.token_hex(6)}"
        if stream_id in self._streams:
            raise ValueError(f"stream {stream_id!r} is already running")
        body: dict[str, object] = {"gateway_request_id": stream_id}
        channels = {"control_url": ("-control", MIME_JSON), "events_url": ("-events", MIME_JSON)}
        if video_ingress:
            channels["subscribe_url"] = ("", MIME_VIDEO)
        if video_egress:
            channels["publish_url"] = ("-out", MIME_VIDEO)
        if data_output:
            channels["data_url"] = ("-data", MIME_JSONL)
        urls = {}
        for key, (suffix, mime) in channels.items():
            urls[key] = self.trickle.create_channel(stream_id + suffix, mime)
        start_params = dict(params) if params is not None else None
        body |= urls | {"params": start_params} | dict(extra or {})
        stream = FakeStream(self, registration, stream_id, body, urls, start_params)
        self._streams[stream_id] = stream
        stream.begin_watching()
        try:
            reply = await stream.call("/stream/start", json.dumps(body).encode(), MIME_JSON)
        except WorkerRequestError:
            await stream.close("the worker could not be reached")
            raise
        if reply.status > 399:
            await stream.close(f"the worker refused the start ({reply.status})")
            raise WorkerRequestError(
                f"the worker refused the start: {reply.status} {reply.body!r}",
                status=reply.status,
                body=reply.body,
            )
        stream.begin_control()
        return stream

    def _forget_stream(self, stream: FakeStream) -> None:
        if self._streams.get(stream.stream_id) is stream:
            del self._streams[stream.stream_id]

    def _sessions(self) -> tuple[aiohttp.ClientSession, aiohttp.ClientSession]:
        if self._http is None or self._trickle_http is None:
            raise RuntimeError("the FakeOrchestrator is not running")
        return self._http, self._trickle_http

    async def _handle_register(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != self.secret:
            return web.Response(status=400, text="invalid authorization")
        try:
            registration = CapabilityRegistration.from_json(await request.read())
        except ParseError as exc:
            return web.Response(status=400, text=f"Error registering capability: {exc}")
        await self.register(registration)
        return web.Response(text="ok")

    async def _handle_unregister(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != self.secret:
            return web.Response(status=400, text="invalid authorization")
        name = (await request.read()).decode(errors="replace")
        self._registrations.pop(name, None)
        self.unregistered.append(name)
        return web.Response(text="ok")


class FakeStream:
    """One stream the fake orchestrator started; made by :meth:`FakeOrchestrator.start_stream`.

    ``start_body`` is what the worker got, ``channels`` the channels the
    orchestrator serves (the same URLs unless a test overrode them in the
    start body); ``events`` every event the worker wrote
    (in order), ``malformed_events`` descriptions of what was not a valid
    event, ``data`` every JSON line from the data channel. ``failure`` says
    why the orchestrator failed the stream (``None`` while it has not).
    """

    def __init__(
        self,
        orchestrator: FakeOrchestrator,
        registration: CapabilityRegistration,
        stream_id: str,
        start_body: Mapping[str, object],
        channels: Mapping[str, str],
        start_params: Mapping[str, object] | None,
    ) -> None:
        self.stream_id: Final = stream_id
        self.registration: Final = registration
        self.start_body: Final = dict(start_body)
        self.channels: Final = dict(channels)
        """The URL of each channel the orchestrator made, by start-body key (``control_url``...)."""
        self.events: list[EventMessage] = []
        self.malformed_events: list[str] = []
        self.data: list[Any] = []
        self.failure: str | None = None
        self._orchestrator = orchestrator
        self._start_params = start_params
        self._http, self._trickle_http = orchestrator._sessions()
        self._tasks: list[asyncio.Task[None]] = []
        self._received = asyncio.Condition()
        self._last_event = time.monotonic()
        self._control: TricklePublisher | None = None
        self._control_lock = asyncio.Lock()
        self._input: TricklePublisher | None = None
        self._ended = asyncio.Event()
        self._closing = False

    @property
    def input_url(self) -> str | None:
        return self.channels.get("subscribe_url")

    @property
    def output_url(self) -> str | None:
        return self.channels.get("publish_url")

    @property
    def control_url(self) -> str:
        return self.channels["control_url"]

    @property
    def events_url(self) -> str:
        return self.channels["events_url"]

    @property
    def data_url(self) -> str | None:
        return self.channels.get("data_url")

    @property
    def ended(self) -> bool:
        """Whether the stream is over (stopped, failed, or the orchestrator went away)."""
        return self._ended.is_set()

    async def wait_ended(self) -> None:
        await self._ended.wait()

    # -- what a test does -------------------------------------------------

    async def publish(
        self,
        frames: AsyncIterable[av.VideoFrame] | Iterable[av.VideoFrame],
        *,
        realtime: bool = True,
    ) -> None:
        """Encode ``frames`` (``pts`` in 1/90000) into the input channel, one GOP per segment.

        ``realtime`` paces them by their timestamps, as a live source sends.
        Later calls continue the same channel. Returns once the last segment is complete.
        """
        encoder = SegmentEncoder(preset="ultrafast")
        await publish_stream(_frames(frames, realtime), self._input_publisher(), encoder)

    async def publish_segments(self, segments: Iterable[bytes]) -> None:
        """Write raw MPEG-TS segments into the input channel, as a gateway relays a client's."""
        publisher = self._input_publisher()
        for segment in segments:
            await publisher.write_segment(segment)

    async def output_frames(self) -> AsyncGenerator[av.VideoFrame, None]:
        """Decode the output channel from its first segment; stop iterating to let go."""
        if self.output_url is None:
            raise ValueError("this stream has no video egress")
        async with (
            TrickleSubscriber(
                self.output_url, start=0, session=self._trickle_http, verify_tls=False
            ) as subscriber,
            contextlib.aclosing(decode_segments(subscriber)) as items,
        ):
            async for item in items:
                if isinstance(item, av.VideoFrame):
                    yield item

    async def update_params(self, params: Mapping[str, object] | bytes) -> WorkerReply:
        """POST ``params`` (or raw bytes) to the worker's ``/stream/params``; relay its answer."""
        body = params if isinstance(params, bytes) else json.dumps(dict(params)).encode()
        return await self.call("/stream/params", body, MIME_JSON)

    async def send_control(self, message: Mapping[str, object] | bytes) -> None:
        """Write one control-channel segment (a document, or raw bytes to test bad input)."""
        data = message if isinstance(message, bytes) else json.dumps(dict(message)).encode()
        async with self._control_lock:
            await self._control_publisher().write_segment(data)

    async def stop(self, body: bytes = b"") -> WorkerReply:
        """Relay a stop to the worker, then remove the stream's channels.

        Waits up to :data:`STOP_GRACE` seconds for the worker's
        ``stream_stopped`` event first, so that a test can see it.
        """
        try:
            return await self._stop_worker(body)
        finally:
            await self.close("stopped")

    @overload
    async def wait_event(
        self,
        match: type[EventT],
        *,
        timeout: float = ...,  # noqa: ASYNC109
    ) -> EventT: ...
    @overload
    async def wait_event(
        self,
        match: Callable[[Event], bool],
        *,
        timeout: float = ...,  # noqa: ASYNC109
    ) -> Event: ...
    async def wait_event(
        self,
        match: type[Any] | Callable[[Event], bool],
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 - a test helper bounds its own wait
    ) -> Event:
        """The first event (since the start) that is of type ``match`` or satisfies it.

        Waits for one to arrive: :class:`TimeoutError` after ``timeout`` seconds,
        :class:`LookupError` if the stream ends first.
        """

        def matches(event: Event) -> bool:
            return isinstance(event, match) if isinstance(match, type) else match(event)

        def found() -> Event | None:
            return next((m.event for m in self.events if matches(m.event)), None)

        async with asyncio.timeout(timeout), self._received:
            await self._received.wait_for(lambda: found() is not None or self.ended)
        event = found()
        if event is None:
            raise LookupError(f"stream {self.stream_id} ended without such an event")
        return event

    async def wait_data(
        self,
        count: int,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 - a test helper bounds its own wait
    ) -> list[Any]:
        """The first ``count`` data lines once they arrived.

        :class:`TimeoutError` after ``timeout`` seconds, :class:`LookupError`
        if the stream ends with fewer.
        """
        async with asyncio.timeout(timeout), self._received:
            await self._received.wait_for(lambda: len(self.data) >= count or self.ended)
        if len(self.data) < count:
            raise LookupError(f"stream {self.stream_id} ended after {len(self.data)} data lines")
        return self.data[:count]

    # -- what the orchestrator does ---------------------------------------

    async def call(self, path: str, body: bytes, content_type: str | None) -> WorkerReply:
        """POST to the worker at its registered URL + ``path``, with its headers.

        A 401 drops the worker's registration, as go-livepeer does.
        """
        url = self.registration.url + path  # plain concatenation, as go-livepeer does
        headers = {"X-Stream-Id": self.stream_id}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if self.registration.token:
            headers["Authorization"] = f"Bearer {self.registration.token}"
        timeout = aiohttp.ClientTimeout(total=self._orchestrator.request_timeout)
        try:
            async with self._http.post(
                url,
                data=body,
                headers=headers,
                timeout=timeout,
                skip_auto_headers=() if content_type else ("Content-Type",),
            ) as resp:
                reply = WorkerReply(
                    resp.status, (await resp.content.read(_BODY_LIMIT)).decode(errors="replace")
                )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise WorkerRequestError(f"cannot reach the worker at {url}: {exc!r}") from exc
        if reply.status == 401:  # go-livepeer drops a capability whose worker refuses it
            logger.warning(
                "worker of %r answered 401: registration dropped", self.registration.name
            )
            self._orchestrator.forget(self.registration.name)
        return reply

    def begin_watching(self) -> None:
        """Read events (and data) and watch for silence, from before the start request."""
        self._spawn(self._read_events())
        self._spawn(self._watch_events())
        if self.data_url is not None:
            self._spawn(self._read_data(self.data_url))

    def begin_control(self) -> None:
        """Write the start params once, then keepalives, as the gateway's control publisher does."""
        self._spawn(self._keep_control_alive())

    async def close(self, reason: str) -> None:
        """End the stream on the orchestrator's side: tasks stop, channels are removed."""
        if self._closing:
            await self._ended.wait()
            return
        self._closing = True
        logger.info("stream %s closed: %s", self.stream_id, reason)
        current = asyncio.current_task()
        tasks = [task for task in self._tasks if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for publisher in (self._control, self._input):
            if publisher is not None:
                await publisher.close()
        for url in self.channels.values():
            self._orchestrator.trickle.delete_channel(url.rsplit("/", 1)[-1])
        self._orchestrator._forget_stream(self)
        self._ended.set()
        async with self._received:
            self._received.notify_all()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        task.add_done_callback(self._report)
        self._tasks.append(task)

    def _report(self, task: asyncio.Task[None]) -> None:
        """Log how a background job failed: a trickle failure ends only that job."""
        if task.cancelled() or (error := task.exception()) is None:
            return
        level = logging.WARNING if isinstance(error, TrickleError) else logging.ERROR
        logger.log(level, "stream %s: %s", self.stream_id, error, exc_info=error)

    def _input_publisher(self) -> TricklePublisher:
        if self.input_url is None:
            raise ValueError("this stream has no video ingress")
        if self._input is None:
            self._input = TricklePublisher(
                self.input_url, MIME_VIDEO, session=self._trickle_http, verify_tls=False
            )
        return self._input

    def _control_publisher(self) -> TricklePublisher:
        if self._control is None:
            self._control = TricklePublisher(
                self.control_url, MIME_VIDEO, session=self._trickle_http, verify_tls=False
            )  # go-livepeer's publisher labels every POST video/MP2T
        return self._control

    async def _keep_control_alive(self) -> None:
        await self.send_control({"params": self._start_params})
        writer = JsonWriter(self._control_publisher())
        while True:
            await asyncio.sleep(self._orchestrator.keepalive_interval)
            try:
                async with self._control_lock:
                    await writer.send_keepalive()
            except TrickleError as exc:
                logger.warning("stream %s: control keepalive failed: %s", self.stream_id, exc)

    async def _read_events(self) -> None:
        async with TrickleSubscriber(
            self.events_url, start=0, session=self._trickle_http, verify_tls=False
        ) as subscriber:
            reader = JsonReader(subscriber, on_invalid=self._malformed)
            async for document in reader:
                self._last_event = time.monotonic()
                try:
                    message = EventMessage.from_json(document)
                except ParseError as exc:
                    self._malformed(exc)
                    continue
                self.events.append(message)
                async with self._received:
                    self._received.notify_all()

    def _malformed(self, error: ParseError) -> None:
        self.malformed_events.append(str(error))

    async def _watch_events(self) -> None:
        limit = self._orchestrator.event_timeout
        while True:
            await asyncio.sleep(limit / 3)
            if time.monotonic() - self._last_event > limit:
                break
        self.failure = f"no event from the worker for {limit} s"
        logger.warning("stream %s failed: %s", self.stream_id, self.failure)
        with contextlib.suppress(WorkerRequestError):
            await self._stop_worker(EVENTS_TIMEOUT_REASON.encode())
        await self.close(self.failure)

    async def _stop_worker(self, body: bytes) -> WorkerReply:
        reply = await self.call("/stream/stop", body, None)
        with contextlib.suppress(TimeoutError, LookupError):
            await self.wait_event(StreamStoppedEvent, timeout=STOP_GRACE)
        return reply

    async def _read_data(self, url: str) -> None:
        async with TrickleSubscriber(
            url, start=0, session=self._trickle_http, verify_tls=False
        ) as subscriber:
            async for line in JsonLinesReader(subscriber):
                self.data.append(line)
                async with self._received:
                    self._received.notify_all()


async def _frames(
    frames: AsyncIterable[av.VideoFrame] | Iterable[av.VideoFrame], realtime: bool
) -> AsyncIterator[av.VideoFrame]:
    """``frames`` as an async iterator, paced by their pts when ``realtime``."""
    start: float | None = None
    first_time = 0.0
    async for frame in _aiter(frames):
        if realtime and frame.time is not None:
            if start is None:
                start, first_time = time.monotonic(), frame.time
            delay = start + frame.time - first_time - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        yield frame


async def _aiter(
    items: AsyncIterable[av.VideoFrame] | Iterable[av.VideoFrame],
) -> AsyncIterator[av.VideoFrame]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


def _bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("the fake orchestrator is not bound to a TCP port")
