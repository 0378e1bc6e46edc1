"""Fixtures shared by byockit.protocol's tests: a loopback trickle server, leak checks."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from byockit.testkit.trickle_server import TrickleServer


@pytest.fixture
async def trickle_server() -> AsyncIterator[TrickleServer]:
    """A started in-process trickle server on 127.0.0.1 (channels pre-created by the test)."""
    async with TrickleServer() as server:
        yield server


@pytest.fixture
async def no_leaks() -> AsyncIterator[None]:
    """Fail a test that leaves an unclosed aiohttp session, a pending task or a loop error.

    Request it before the fixtures it should outlive (e.g. ``trickle_server``).
    """
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    previous_handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(str(context)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        for _ in range(10):  # let cancelled tasks and closing transports finish
            await asyncio.sleep(0.01)
        gc.collect()
    loop.set_exception_handler(previous_handler)
    leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    unclosed = [str(w.message) for w in caught if "nclosed" in str(w.message)]
    assert not reported, reported
    assert not unclosed, unclosed
    assert not leftover, leftover


@dataclass
class RequestLog:
    """An aiohttp session that records every request it starts: (method, url, headers)."""

    session: aiohttp.ClientSession
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def count(self, method: str, url: str) -> int:
        return sum(1 for m, u, _ in self.requests if m == method and u == url)

    def headers_of(self, method: str, url: str) -> list[dict[str, str]]:
        return [h for m, u, h in self.requests if m == method and u == url]

    async def wait_for(self, method: str, url: str, count: int = 1) -> None:
        """Until ``count`` such requests started; a generous timeout only stops a hang."""
        async with asyncio.timeout(15.0):
            while self.count(method, url) < count:
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def request_log() -> AsyncIterator[RequestLog]:
    """A shared session whose requests are recorded, to observe what a client sends."""
    log: RequestLog

    async def on_start(_session: Any, _ctx: SimpleNamespace, params: Any) -> None:
        log.requests.append((params.method, str(params.url), dict(params.headers)))
        log.changed.set()

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    log = RequestLog(aiohttp.ClientSession(trace_configs=[trace]))
    yield log
    await log.session.close()
