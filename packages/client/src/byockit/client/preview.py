"""Live preview page: a stream's input and output side by side in a browser.

:class:`PreviewServer` serves a small page (``preview_page/``, plain HTML, JS
and CSS, nothing fetched from elsewhere) and one WebSocket (``/ws``, through
the ``websockets`` library, on the same port) that carries to every open page:

- the newest input and output frame as JPEG, in a binary message whose first
  byte says which side (0: input, 1: output);
- a JSON ``state`` message: fps of each side, output latency, the app's stats
  and the stream's current params.

The page's params form sends the JSON text back; the server parses it and
hands the dict to ``on_params``, whose answer (status, body) the page shows.

Feeding the preview never slows the stream: :meth:`PreviewServer.show_input`
and :meth:`PreviewServer.show_output` only keep a reference to the newest frame.
A pump encodes at most :data:`MAX_PREVIEW_FPS` frames a second per side, in a
thread of its own and scaled down to :data:`MAX_PREVIEW_WIDTH`, and only while
a page is open. Each page has one slot per kind of message, so a slow browser
skips to the newest image instead of queueing them.

The page is for a local browser: the server binds 127.0.0.1 by default, and it
refuses WebSocket connections from other origins (another site open in the
same browser must not be able to change the stream's params).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from fractions import Fraction
from http import HTTPStatus
from importlib import resources
from types import TracebackType
from typing import Any, Final, Self

import av
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

logger = logging.getLogger(__name__)

ParamsHandler = Callable[[dict[str, Any]], Awaitable[tuple[int, str]]]
"""Applies params sent from the page; returns the (status, body) to show there."""

MAX_PREVIEW_FPS: Final = 10.0
"""Frames a second per side sent to the page, at most."""
MAX_PREVIEW_WIDTH: Final = 640
"""Wider frames are scaled down to this width (keeping their aspect) before encoding."""
MAX_VIEWERS: Final = 8
"""Pages connected at once; more are refused."""
MAX_MESSAGE: Final = 64 * 1024
"""Largest message a page may send (its params), in bytes."""
PARAMS_TIMEOUT: Final = 30.0
"""Seconds ``on_params`` gets to answer before the page is told it did not."""
STATE_INTERVAL: Final = 1.0
"""Seconds between state messages while nothing changes (so fps falls to 0 when frames stop)."""
FPS_WINDOW: Final = 2.0
"""Seconds of frame arrivals that fps is measured over."""
RECENT: Final = 64
"""Frame arrivals and latencies remembered per side for fps and the latency median."""

WS_PATH: Final = "/ws"
_PAGE_FILES: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/preview.js": ("preview.js", "text/javascript; charset=utf-8"),
    "/preview.css": ("preview.css", "text/css; charset=utf-8"),
}
_SIDES: Final = ("input", "output")


class PreviewServer:
    """The preview page's server; an async context manager, ``url`` is the page.

    ``on_params``: called with the dict a page submits (already parsed, always
    a JSON object); without it the page's params form is disabled.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        on_params: ParamsHandler | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._on_params = on_params
        self._sides = {name: _Side() for name in _SIDES}
        self._latencies: deque[float] = deque(maxlen=RECENT)
        self._stats: dict[str, Any] = {}
        self._params: dict[str, Any] | None = None
        self._viewers: set[_Viewer] = set()
        self._changed = asyncio.Event()
        self._files = {
            name: (resources.files("byockit.client") / "preview_page" / name).read_bytes()
            for name, _ in _PAGE_FILES.values()
        }
        self._server: Server | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """The page's address (``RuntimeError`` before the server is started)."""
        if self._url is None:
            raise RuntimeError("PreviewServer is not started: use it as `async with`")
        return self._url

    async def __aenter__(self) -> Self:
        if self._server is not None:
            raise RuntimeError("PreviewServer is already started")
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="byockit-preview"
        )
        self._server = await serve(
            self._serve_viewer,
            self._host,
            self._port,
            process_request=self._process_request,
            max_size=MAX_MESSAGE,
            max_queue=4,
        )
        port = next(iter(self._server.sockets)).getsockname()[1]
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._url = f"http://{host}:{port}/"
        self._pump_task = asyncio.create_task(self._pump(), name="byockit-preview-pump")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._pump_task is not None:
            self._pump_task.cancel()
            await asyncio.wait([self._pump_task])
            self._pump_task = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self._url = None

    def show_input(self, frame: av.VideoFrame) -> None:
        """Show ``frame`` as the newest input frame (cheap: nothing is encoded here)."""
        self._sides["input"].offer(frame)
        self._changed.set()

    def show_output(self, frame: av.VideoFrame, latency: float | None) -> None:
        """Show ``frame`` as the newest output frame; ``latency``: seconds after its input."""
        self._sides["output"].offer(frame)
        if latency is not None:
            self._latencies.append(latency)
        self._changed.set()

    def set_stats(self, stats: Mapping[str, Any]) -> None:
        """Show these stats (name -> JSON-serialisable value) on the page, replacing the last."""
        self._stats = _json_object(stats, "stats")
        self._changed.set()

    def set_params(self, params: Mapping[str, Any]) -> None:
        """Show these as the stream's current params (they also fill an untouched form)."""
        self._params = _json_object(params, "params")
        self._changed.set()

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Serve the page's files; let same-origin handshakes on :data:`WS_PATH` through."""
        path = request.path.partition("?")[0]
        if path == WS_PATH:
            origin = request.headers.get("Origin")
            if origin is not None and origin != f"http://{request.headers.get('Host')}":
                return connection.respond(
                    HTTPStatus.FORBIDDEN, "preview connections from other origins are refused\n"
                )
            return None
        page = _PAGE_FILES.get(path)
        if page is None:
            return connection.respond(HTTPStatus.NOT_FOUND, f"no such page: {path}\n")
        name, content_type = page
        body = self._files[name]
        headers = Headers(
            [
                ("Content-Type", content_type),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
            ]
        )
        return Response(HTTPStatus.OK, "OK", headers, body)

    async def _serve_viewer(self, connection: ServerConnection) -> None:
        if len(self._viewers) >= MAX_VIEWERS:
            await connection.close(1013, f"at most {MAX_VIEWERS} preview pages at once")
            return
        viewer = _Viewer(connection)
        for tag, side in enumerate(self._sides.values()):
            if side.jpeg is not None:
                viewer.post(f"frame{tag}", bytes([tag]) + side.jpeg)
        viewer.post("state", self._state())
        self._viewers.add(viewer)
        self._changed.set()  # frames held back while nobody watched get encoded now
        sender = asyncio.create_task(viewer.send_forever(), name="byockit-preview-sender")
        try:
            async for message in connection:
                viewer.post("reply", json.dumps(await self._answer(message)))
        except ConnectionClosed:
            pass
        finally:
            self._viewers.discard(viewer)
            sender.cancel()
            await asyncio.wait([sender])

    async def _answer(self, message: str | bytes) -> dict[str, Any]:
        """The reply to a page's message (only ``{"type": "params", "text": ...}`` is expected)."""
        reply: dict[str, Any] = {"type": "reply"}
        try:
            request = json.loads(message)
            if not isinstance(request, dict) or request.get("type") != "params":
                raise ValueError("expected {'type': 'params', 'text': ...}")
            text = request.get("text")
            if not isinstance(text, str):
                raise ValueError("'text' must be a string")
            params = json.loads(text)
        except ValueError as error:  # json.JSONDecodeError and UnicodeDecodeError included
            reply["error"] = f"params must be a JSON object: {error}"
            return reply
        if not isinstance(params, dict):
            reply["error"] = f"params must be a JSON object, not {type(params).__name__}"
        elif self._on_params is None:
            reply["error"] = "this preview cannot change params (no on_params handler)"
        else:
            try:
                async with asyncio.timeout(PARAMS_TIMEOUT):
                    reply["status"], reply["body"] = await self._on_params(params)
            except TimeoutError:
                reply["error"] = f"no answer within {PARAMS_TIMEOUT:g} s"
            except Exception as error:
                logger.warning("preview on_params failed", exc_info=True)
                reply["error"] = f"{type(error).__name__}: {error}"
        return reply

    async def _pump(self) -> None:
        """Encode the newest frames for the open pages, at most :data:`MAX_PREVIEW_FPS` a second."""
        loop = asyncio.get_running_loop()
        assert self._executor is not None
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STATE_INTERVAL):
                    await self._changed.wait()
            self._changed.clear()
            started = loop.time()
            if self._viewers:
                for tag, side in enumerate(self._sides.values()):
                    frame = side.take()
                    if frame is None:
                        continue
                    jpeg = await loop.run_in_executor(self._executor, side.encode, frame)
                    side.jpeg = jpeg
                    self._broadcast(f"frame{tag}", bytes([tag]) + jpeg)
            self._broadcast("state", self._state())
            await asyncio.sleep(max(0.0, 1 / MAX_PREVIEW_FPS - (loop.time() - started)))

    def _broadcast(self, slot: str, message: str | bytes) -> None:
        for viewer in self._viewers:
            viewer.post(slot, message)

    def _state(self) -> str:
        latency_ms = statistics.median(self._latencies) * 1000 if self._latencies else None
        return json.dumps(
            {
                "type": "state",
                "input": {"fps": self._sides["input"].fps()},
                "output": {"fps": self._sides["output"].fps(), "latency_ms": latency_ms},
                "stats": self._stats,
                "params": self._params,
                "params_form": self._on_params is not None,
            }
        )


class _Side:
    """One side's newest frame, its arrival times and its JPEG encoder."""

    def __init__(self) -> None:
        self._frame: av.VideoFrame | None = None
        self._arrivals: deque[float] = deque(maxlen=RECENT)
        self._codec: av.VideoCodecContext | None = None
        self._pts = 0
        self.jpeg: bytes | None = None
        """The last frame sent, for pages that open later."""

    def offer(self, frame: av.VideoFrame) -> None:
        if not isinstance(frame, av.VideoFrame):
            raise TypeError(f"expected an av.VideoFrame, got {type(frame).__name__}")
        self._frame = frame
        self._arrivals.append(time.monotonic())

    def take(self) -> av.VideoFrame | None:
        frame, self._frame = self._frame, None
        return frame

    def fps(self) -> float | None:
        """Frames a second over the last :data:`FPS_WINDOW` seconds (``None``: none arrived yet)."""
        if not self._arrivals:
            return None
        recent = [t for t in self._arrivals if t >= time.monotonic() - FPS_WINDOW]
        if len(recent) < 2 or recent[-1] == recent[0]:
            return 0.0
        return (len(recent) - 1) / (recent[-1] - recent[0])

    def encode(self, frame: av.VideoFrame) -> bytes:
        """``frame`` as a JPEG at most :data:`MAX_PREVIEW_WIDTH` wide (in the pump's thread)."""
        width, height = frame.width, frame.height
        if width > MAX_PREVIEW_WIDTH:
            width, height = MAX_PREVIEW_WIDTH, max(2, round(height * MAX_PREVIEW_WIDTH / width))
        if self._codec is None or (self._codec.width, self._codec.height) != (width, height):
            codec = av.CodecContext.create("mjpeg", "w")
            assert isinstance(codec, av.VideoCodecContext)
            codec.width, codec.height = width, height
            codec.pix_fmt = "yuvj420p"
            codec.time_base = Fraction(1, 90_000)
            self._codec = codec
        image = frame.reformat(width=width, height=height, format="yuvj420p")
        # the encoder wants increasing timestamps; the real ones do not matter here
        image.pts = self._pts
        self._pts += 1
        return b"".join(bytes(packet) for packet in self._codec.encode(image))


class _Viewer:
    """One open page: the newest message of each kind, sent as fast as the page takes them."""

    def __init__(self, connection: ServerConnection) -> None:
        self._connection = connection
        self._slots: dict[str, str | bytes] = {}
        self._ready = asyncio.Event()

    def post(self, slot: str, message: str | bytes) -> None:
        """Queue ``message``, replacing any unsent one in the same slot."""
        self._slots[slot] = message
        self._ready.set()

    async def send_forever(self) -> None:
        try:
            while True:
                await self._ready.wait()
                self._ready.clear()
                slots, self._slots = self._slots, {}
                for message in slots.values():
                    await self._connection.send(message)
        except ConnectionClosed:
            return


def _json_object(mapping: Mapping[str, Any], what: str) -> dict[str, Any]:
    """A JSON-ready copy of ``mapping``; ``TypeError`` naming ``what`` if it cannot be sent."""
    copy = dict(mapping)
    try:
        json.dumps(copy, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{what} must be JSON-serialisable: {error}") from error
    return copy
