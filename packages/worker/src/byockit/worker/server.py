"""The worker's HTTP server: the REST contract an orchestrator drives (PROTOCOL.md 2).

``POST /stream/start|params|stop`` and ``GET /stream/status`` (also under
``/api/stream/``, and with doubled slashes, since orchestrators concatenate
the registered URL and the path), ``GET /health``, ``/version``,
``/hardware/info`` and ``/hardware/stats``.

The decisions (which endpoint a path is, whether a caller is authorised,
whether a start fits, which session a request means) are small pure
functions; :class:`WorkerServer` only does the I/O around them. Admission
runs with no ``await`` between the capacity check and taking the slot, so two
starts arriving together cannot both win, and a running stream is never
replaced. Sessions that end on their own (input over, channels unreachable)
are dropped from the table the next time it is looked at, which frees their
slot and their say in ``/health``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hmac
import importlib.metadata
import json
import logging
import re
import ssl
import types
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, Final, Protocol

import attrs
from aiohttp import web

from byockit.protocol.errors import ParseError
from byockit.protocol.lifecycle import Service
from byockit.protocol.models import HealthStatus, StreamStatus, WorkerHealth, WorkerStartRequest
from byockit.worker.hardware import PIPELINE, HardwareMonitor
from byockit.worker.health import SessionHealth, SessionSnapshot, WorkerSnapshot, worker_health
from byockit.worker.pipeline import DEFAULT_X264_PRESET, check_x264_preset
from byockit.worker.processor import ParamsRejected, ProcessorRuntime
from byockit.worker.session import StreamSession

logger = logging.getLogger(__name__)

STREAM_ID_HEADER: Final = "X-Stream-Id"
MAX_BODY_BYTES: Final = 10 * 1024 * 1024
"""Largest start or params body: the gateway's own limit on what it forwards."""
MAX_STOP_REASON_BYTES: Final = 1024
"""Only this much of a stop body is read: it is a reason for the logs and the stopped event."""
SESSION_STOP_TIMEOUT: Final = 15.0
"""How long :meth:`WorkerServer.stop` waits for its sessions (each bounds its own drain)."""
_HTTP_SHUTDOWN_TIMEOUT: Final = 1.0


# --- the decisions, apart from I/O ----------------------------------------------------------


class Endpoint(enum.Enum):
    START = "start"
    PARAMS = "params"
    STATUS = "status"
    STOP = "stop"
    HEALTH = "health"
    VERSION = "version"
    HARDWARE_INFO = "hardware_info"
    HARDWARE_STATS = "hardware_stats"


@attrs.frozen
class Route:
    """An endpoint, the method it answers, and whether it is a (token-protected) stream endpoint."""

    endpoint: Endpoint
    method: str
    stream: bool


_ROUTES: Final[Mapping[str, Route]] = {
    "/stream/start": Route(Endpoint.START, "POST", stream=True),
    "/stream/params": Route(Endpoint.PARAMS, "POST", stream=True),
    "/stream/status": Route(Endpoint.STATUS, "GET", stream=True),
    "/stream/stop": Route(Endpoint.STOP, "POST", stream=True),
    "/health": Route(Endpoint.HEALTH, "GET", stream=False),
    "/version": Route(Endpoint.VERSION, "GET", stream=False),
    "/hardware/info": Route(Endpoint.HARDWARE_INFO, "GET", stream=False),
    "/hardware/stats": Route(Endpoint.HARDWARE_STATS, "GET", stream=False),
}
_SLASHES: Final = re.compile("/{2,}")


def find_route(path: str) -> Route | None:
    """The route a request path names.

    Runs of slashes count as one, and ``/api/stream/...`` as ``/stream/...``.
    """
    path = _SLASHES.sub("/", path)
    if path.startswith("/api/stream/"):
        path = path.removeprefix("/api")
    return _ROUTES.get(path)


def is_authorized(authorization: str | None, token: str | None) -> bool:
    """Whether ``authorization`` carries ``Bearer {token}``; without a token anyone passes."""
    if token is None:
        return True
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        credentials.strip().encode(), token.encode()
    )


class RequestRefused(Exception):
    """A request answered with an error: HTTP ``status``, a ``message``, maybe a ``field``."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field

    def to_json(self) -> dict[str, str]:
        body = {"error": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body


def check_admission(running: Collection[str], stream_id: str, capacity: int) -> None:
    """Refuse (409) a start for a stream already running, or beyond capacity."""
    if stream_id in running:
        raise RequestRefused(409, f"stream {stream_id!r} is already running on this worker")
    if len(running) >= capacity:
        raise RequestRefused(409, f"at capacity: {len(running)} of {capacity} streams running")


def choose_stream(running: Collection[str], requested: str | None) -> str:
    """The stream a params/status/stop request means: its ``X-Stream-Id``, or the only one.

    404 when it names no running stream (or none runs), 400 when several run
    and the request does not say which.
    """
    if requested:
        if requested not in running:
            raise RequestRefused(404, f"no stream {requested!r} is running")
        return requested
    if not running:
        raise RequestRefused(404, "no stream is running")
    if len(running) > 1:
        raise RequestRefused(
            400, f"{len(running)} streams are running: say which in {STREAM_ID_HEADER}"
        )
    return next(iter(running))


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A request body that must be one JSON object; :class:`ParseError` says what is wrong."""
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise ParseError("", f"not UTF-8 text (byte {exc.start})") from None
    except (ValueError, RecursionError) as exc:
        raise ParseError("", f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ParseError("", f"expected a JSON object, found {type(value).__name__}")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def processor_name(target: object) -> str:
    """A readable name for what is being served (``module.function``), for ``model_id``."""
    named = target if hasattr(target, "__qualname__") else type(target)
    module = getattr(named, "__module__", None)
    qualname = getattr(named, "__qualname__", type(target).__qualname__)
    return f"{module}.{qualname}" if module else str(qualname)


# --- the server -----------------------------------------------------------------------------


class ServedSession(Protocol):
    """What the server needs of a stream session (:class:`StreamSession` is the real one)."""

    @property
    def stream_id(self) -> str: ...
    @property
    def health(self) -> SessionHealth: ...
    @property
    def ended(self) -> bool: ...
    def start(self) -> None: ...
    async def update_params(self, raw: Mapping[str, object]) -> None: ...
    def status(self) -> StreamStatus: ...
    async def stop(self, reason: str = "") -> None: ...


class SessionFactory(Protocol):
    """Makes the session of an accepted start: :class:`StreamSession`, or a partial of it."""

    def __call__(
        self,
        request: WorkerStartRequest,
        runtime: ProcessorRuntime,
        *,
        verify_tls: bool | ssl.SSLContext,
        x264_preset: str,
    ) -> ServedSession: ...


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WorkerServer(Service):
    """Serves a processor as a BYOC worker on ``host:port`` (``port=0``: any free port).

    ``processor`` is anything :meth:`ProcessorRuntime.wrap` takes (a function,
    a :class:`~byockit.worker.processor.Processor` instance or class).
    ``capacity`` streams run at once; with a ``token``, stream endpoints want
    ``Authorization: Bearer {token}``. ``verify_tls`` is the sessions' policy
    for the orchestrator's trickle certificate (self-signed: off by default).
    ``x264_preset`` is the output encoder's (:data:`DEFAULT_X264_PRESET`).
    A server runs once: :meth:`start`, then :meth:`stop`.
    """

    def __init__(
        self,
        processor: object,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        capacity: int = 1,
        token: str | None = None,
        verify_tls: bool | ssl.SSLContext = False,
        x264_preset: str = DEFAULT_X264_PRESET,
        session_factory: SessionFactory = StreamSession,
    ) -> None:
        check_x264_preset(x264_preset)
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        if token is not None and not token.strip():
            raise ValueError("token must not be empty (pass None for no token)")
        self._runtime = ProcessorRuntime.wrap(processor)
        self._model_id = processor_name(processor)
        self._host = host
        self._port = port
        self._capacity = capacity
        self._token = token
        self._verify_tls = verify_tls
        self._x264_preset = x264_preset
        self._session_factory = session_factory
        self._sessions: dict[str, ServedSession] = {}
        self._hardware = HardwareMonitor()
        self._loading = True
        self._load_error: str | None = None
        self._loaded = asyncio.Event()
        self._load_task: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self._closing = False
        self._handlers: Mapping[Endpoint, Handler] = {
            Endpoint.START: self._start_stream,
            Endpoint.PARAMS: self._update_params,
            Endpoint.STATUS: self._stream_status,
            Endpoint.STOP: self._stop_stream,
            Endpoint.HEALTH: self._health,
            Endpoint.VERSION: self._version,
            Endpoint.HARDWARE_INFO: self._hardware_info,
            Endpoint.HARDWARE_STATS: self._hardware_stats,
        }

    # -- lifecycle

    async def start(self) -> None:
        """Bind and serve at once; ``/health`` says ``LOADING`` while the processor loads."""
        if self._runner is not None or self._closing:
            raise RuntimeError("a WorkerServer starts once")
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_route("*", "/{path:.*}", self._dispatch)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_HTTP_SHUTDOWN_TIMEOUT)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._port = _bound_port(runner)
        self._runner = runner
        self._load_task = asyncio.create_task(self._load(), name="byockit-worker-load")
        logger.info(
            "worker serving %s on %s (capacity %d)", self._model_id, self.url, self._capacity
        )

    async def stop(self) -> None:
        """Refuse new starts, stop every session (bounded), then close the HTTP server."""
        if self._closing:
            return
        self._closing = True
        await self._stop_sessions("worker shutting down")
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()  # the load thread itself runs on; nothing waits for it
            with contextlib.suppress(asyncio.CancelledError):
                await self._load_task
        if self._runner is not None:
            await self._runner.cleanup()
        self._hardware.close()
        logger.info("worker stopped")

    async def wait_loaded(self) -> None:
        """Until the processor's ``load()`` has finished, well or not (see :attr:`load_error`)."""
        await self._loaded.wait()

    # -- state

    @property
    def url(self) -> str:
        """Where the server answers, with a trailing slash."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}/"

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def load_error(self) -> str | None:
        """Why the processor failed to load (``None``: loaded, or still loading)."""
        return self._load_error

    @property
    def sessions(self) -> Mapping[str, ServedSession]:
        """The running sessions by stream id (a read-only copy)."""
        return types.MappingProxyType(dict(self._running()))

    @property
    def health(self) -> HealthStatus:
        return worker_health(
            loading=self._loading,
            load_error=self._load_error,
            sessions=[session.health for session in self._running().values()],
        )

    def snapshot(self) -> WorkerSnapshot:
        """Health, capacity and each session's rates and latency, for a live status line."""
        running = self._running()
        return WorkerSnapshot(
            health=self.health,
            capacity=self._capacity,
            sessions=tuple(
                SessionSnapshot.of(stream_id, session.health, session.status())
                for stream_id, session in running.items()
            ),
            load_error=self._load_error,
        )

    def _running(self) -> dict[str, ServedSession]:
        """The session table, after dropping sessions that ended on their own."""
        for stream_id in [sid for sid, session in self._sessions.items() if session.ended]:
            logger.info("stream %s ended", stream_id)
            del self._sessions[stream_id]
        return self._sessions

    async def _load(self) -> None:
        try:
            await self._runtime.load()
        except Exception as exc:
            self._load_error = f"{type(exc).__name__}: {exc}"
            logger.exception("processor %s failed to load", self._model_id)
        else:
            logger.info("processor %s loaded", self._model_id)
        finally:
            self._loading = False
            self._loaded.set()

    async def _stop_sessions(self, reason: str) -> None:
        sessions = list(self._running().values())
        if not sessions:
            return
        try:
            async with asyncio.timeout(SESSION_STOP_TIMEOUT):
                results = await asyncio.gather(
                    *(session.stop(reason) for session in sessions), return_exceptions=True
                )
        except TimeoutError:
            logger.warning("sessions did not stop within %.0f s", SESSION_STOP_TIMEOUT)
            return
        for session, result in zip(sessions, results, strict=True):
            if isinstance(result, Exception):
                logger.error("stopping stream %s failed: %r", session.stream_id, result)
        self._running()

    # -- HTTP

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        route = find_route(request.path)
        if route is None:
            return _error(RequestRefused(404, f"no such endpoint: {request.path}"))
        method = "GET" if request.method == "HEAD" else request.method
        if method != route.method:
            refused = RequestRefused(405, f"{request.method} not allowed: use {route.method}")
            return _error(refused, headers={"Allow": route.method})
        if route.stream and not is_authorized(request.headers.get("Authorization"), self._token):
            refused = RequestRefused(401, "missing or wrong bearer token")
            return _error(refused, headers={"WWW-Authenticate": "Bearer"})
        try:
            return await self._handlers[route.endpoint](request)
        except RequestRefused as refused:
            if refused.status >= 500 or refused.status in (409, 413):
                logger.warning("%s %s refused: %s", request.method, request.path, refused.message)
            return _error(refused)
        except Exception:
            logger.exception("%s %s failed", request.method, request.path)
            return _error(RequestRefused(500, "internal error in the worker (see its logs)"))

    async def _start_stream(self, request: web.Request) -> web.StreamResponse:
        body = await _read_body(request)
        try:
            start_request = WorkerStartRequest.from_json(body)
        except ParseError as exc:
            raise RequestRefused(400, str(exc), exc.field) from None
        # Everything from here on is synchronous: admission cannot interleave with another start.
        self._check_ready()
        stream_id = start_request.stream_id  # go-livepeer sends the same in X-Stream-Id
        check_admission(self._running().keys(), stream_id, self._capacity)
        try:
            session = self._session_factory(
                start_request,
                self._runtime,
                verify_tls=self._verify_tls,
                x264_preset=self._x264_preset,
            )
        except ParamsRejected as exc:  # the session parses its start params at once
            raise RequestRefused(400, exc.message, "params") from None
        session.start()
        self._sessions[stream_id] = session
        logger.info("stream %s started (%d of %d)", stream_id, len(self._sessions), self._capacity)
        return web.json_response({"status": "started", "stream_id": stream_id})

    def _check_ready(self) -> None:
        if self._closing:
            raise RequestRefused(503, "the worker is shutting down")
        if self._loading:
            raise RequestRefused(503, "the processor is still loading: try again shortly")
        if self._load_error is not None:
            raise RequestRefused(503, f"the processor failed to load: {self._load_error}")

    async def _update_params(self, request: web.Request) -> web.StreamResponse:
        try:
            raw = parse_json_object(await _read_body(request))
        except ParseError as exc:
            raise RequestRefused(400, str(exc), exc.field) from None
        session = self._chosen_session(request)
        try:
            await session.update_params(raw)
        except ParamsRejected as exc:
            raise RequestRefused(400, exc.message) from None
        logger.info("stream %s: params updated", session.stream_id)
        return web.json_response({"status": "ok", "stream_id": session.stream_id})

    async def _stream_status(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._chosen_session(request).status().to_json())

    async def _stop_stream(self, request: web.Request) -> web.StreamResponse:
        reason = (await _read_prefix(request, MAX_STOP_REASON_BYTES)).decode("utf-8", "replace")
        try:
            session = self._chosen_session(request)
        except RequestRefused as refused:
            if refused.status != 404:
                raise
            return web.json_response({"status": "not running"})
        logger.info("stopping stream %s: %s", session.stream_id, reason.strip() or "(no reason)")
        await session.stop(reason.strip())
        self._running()
        return web.json_response({"status": "stopped", "stream_id": session.stream_id})

    def _chosen_session(self, request: web.Request) -> ServedSession:
        running = self._running()
        requested = request.headers.get(STREAM_ID_HEADER, "").strip() or None
        return running[choose_stream(running.keys(), requested)]

    async def _health(self, request: web.Request) -> web.StreamResponse:
        extras = {} if self._load_error is None else {"error": self._load_error}
        return web.json_response(WorkerHealth(status=self.health, extras=extras).to_json())

    async def _version(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "pipeline": PIPELINE,
                "model_id": self._model_id,
                "version": importlib.metadata.version("byockit-worker"),
            }
        )

    async def _hardware_info(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(await asyncio.to_thread(self._hardware.info, self._model_id))

    async def _hardware_stats(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(await asyncio.to_thread(self._hardware.stats, self._model_id))


def _error(refused: RequestRefused, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(refused.to_json(), status=refused.status, headers=headers)


async def _read_body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise RequestRefused(413, f"body larger than {MAX_BODY_BYTES} bytes") from None


async def _read_prefix(request: web.Request, limit: int) -> bytes:
    """At most ``limit`` bytes of the body; aiohttp discards the rest."""
    data = bytearray()
    while len(data) < limit:
        chunk = await request.content.read(limit - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def _bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("worker server is not bound to a TCP port")
