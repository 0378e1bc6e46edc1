"""A trickle server that behaves like go-livepeer's, to run in-process or from the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from typing import Final

from aiohttp import web

from byockit.protocol.lifecycle import Service
from byockit.testkit.trickle_server.channel import ChannelRegistry
from byockit.testkit.trickle_server.faults import TrickleFaults
from byockit.testkit.trickle_server.handlers import CONTINUE_INTERVAL, TrickleHandlers

_log = logging.getLogger(__name__)

_SHUTDOWN_TIMEOUT = 0.5
"""Seconds ``stop()`` lets unfinished requests (mid-stream uploads) run before cancelling them."""


class TrickleServer(Service):
    """Serves trickle channels over HTTP(S) on ``host:port`` under ``base_path``.

    ``auto_create`` lets the first segment POST create a channel (a test
    server); without it channels come from :meth:`create_channel`, as an
    orchestrator pre-creates them. A channel with no segment started for
    ``idle_timeout`` seconds is removed, checked every ``sweep_interval``.
    ``max_segment_bytes`` bounds one segment (413 beyond it).

    ``continue_interval`` (not a constructor argument: only tests change it)
    is the pause between interim ``100 Continue`` answers to a waiting POST.
    :attr:`faults` injects delays, drops, 470s and restarts for tests.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        base_path: str = "/",
        auto_create: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        idle_timeout: float = 300.0,
        sweep_interval: float = 60.0,
        max_segment_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        if idle_timeout <= 0 or sweep_interval <= 0:
            raise ValueError("idle_timeout and sweep_interval must be positive")
        if max_segment_bytes <= 0:
            raise ValueError("max_segment_bytes must be positive")
        self._host = host
        self._port = port
        self._base_path = _normalize_base_path(base_path)
        self._auto_create = auto_create
        self._ssl_context = ssl_context
        self._idle_timeout = idle_timeout
        self._sweep_interval = sweep_interval
        self._max_segment_bytes = max_segment_bytes
        self.continue_interval = CONTINUE_INTERVAL
        self._registry = ChannelRegistry()
        self.faults: Final = TrickleFaults(self)
        self._runner: web.AppRunner | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind and serve. After :meth:`stop`, binds the same port again."""
        if self._runner is not None:
            raise RuntimeError("TrickleServer is already running")
        handlers = TrickleHandlers(
            self._registry,
            auto_create=self._auto_create,
            max_segment_bytes=self._max_segment_bytes,
            continue_interval=self.continue_interval,
            clock=time.monotonic,
            faults=self.faults,
        )
        app = web.Application()
        handlers.add_routes(app, self._base_path)
        app.on_shutdown.append(self._release_waiters)
        runner = web.AppRunner(
            app,
            handler_cancellation=True,  # a reader that hangs up stops waiting
            auto_decompress=False,  # segments are stored as sent, like go-livepeer
            shutdown_timeout=_SHUTDOWN_TIMEOUT,
            access_log=None,
        )
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, ssl_context=self._ssl_context)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._port = _bound_port(runner)
        self._runner = runner
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def stop(self) -> None:
        """Close every channel (releasing waiting readers and publishers), then every connection."""
        if self._runner is None:
            return
        runner, self._runner = self._runner, None
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        await runner.cleanup()
        self._registry.clear()  # also what was created while the server wound down

    @property
    def url(self) -> str:
        """Base URL of the channels, with a trailing slash."""
        scheme = "https" if self._ssl_context is not None else "http"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{host}:{self._port}{self._base_path}"

    def channel_url(self, name: str) -> str:
        return self.url + name

    def create_channel(self, name: str, mime_type: str = "") -> str:
        """Create ``name`` server-side, as an orchestrator does; returns its URL."""
        _check_channel_name(name)
        self._registry.get_or_create(name, mime_type, time.monotonic())
        return self.channel_url(name)

    def delete_channel(self, name: str) -> None:
        """Close and remove ``name``, releasing its waiters (as ``DELETE {name}``).

        Does nothing if there is no such channel (already deleted or swept).
        """
        self._registry.remove(name)

    @property
    def channels(self) -> frozenset[str]:
        """Names of the channels that exist now."""
        return self._registry.names()

    @property
    def buffered_bytes(self) -> int:
        """Bytes held in every channel's ring: what the server's memory use is bounded by."""
        return self._registry.buffered_bytes

    async def _release_waiters(self, app: web.Application) -> None:
        # Runs once the server stopped listening and before it waits for the
        # requests in progress: closing every channel lets waiting ones finish.
        self._registry.clear()

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval)
            for name in self._registry.remove_idle(time.monotonic(), self._idle_timeout):
                _log.info("removed idle trickle channel %s", name)


def _normalize_base_path(base_path: str) -> str:
    stripped = base_path.strip("/")
    return f"/{stripped}/" if stripped else "/"


def _check_channel_name(name: str) -> None:
    if not name or "/" in name:
        raise ValueError(f"invalid trickle channel name {name!r}")


def _bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("trickle server is not bound to a TCP port")
