"""Fixtures of the trickle conformance suite.

The suite speaks raw HTTP (aiohttp, no byockit client) to a trickle server at
a base URL, so it can judge any server. By default it starts byockit's own
``TrickleServer(auto_create=True)`` in-process; with ``BYOCKIT_TRICKLE_URL``
set it runs against that server instead, which must auto-create channels on
the first segment POST (go-livepeer: ``Autocreate: true``). Every test uses
its own uuid-named channel, so a shared server is fine. Tests marked
``hardening`` check byockit's answers where go-livepeer crashes or has no
limit, and are skipped against an external server.

Waiting is always on a condition with a timeout (``TIMEOUT``), never a sleep:
the timeout only stops a broken server from hanging the suite.
"""

from __future__ import annotations

import asyncio
import io
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from byockit.testkit.trickle_server import TrickleServer

EXTERNAL_URL_ENV = "BYOCKIT_TRICKLE_URL"
TIMEOUT = 10.0


@dataclass(frozen=True)
class Reply:
    """A complete answer: status, headers and body."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


async def _bounded(awaitable: Any) -> Any:
    return await asyncio.wait_for(awaitable, TIMEOUT)


class Reader:
    """A GET in flight, whose headers and chunks the test takes one at a time."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.url = url
        self._sent = asyncio.Event()
        self._received = bytearray()
        self._task = asyncio.create_task(
            session.get(url, trace_request_ctx=SimpleNamespace(sent=self._sent))
        )

    @property
    def answered(self) -> bool:
        """True once the response headers arrived."""
        return self._task.done()

    async def sent(self) -> None:
        await _bounded(self._sent.wait())

    async def response(self) -> aiohttp.ClientResponse:
        response: aiohttp.ClientResponse = await _bounded(asyncio.shield(self._task))
        return response

    async def chunk(self) -> bytes:
        """The next bytes the server flushed (``b""`` at the end of the body)."""
        response = await self.response()
        data: bytes = await _bounded(response.content.readany())
        self._received += data
        return data

    async def reply(self) -> Reply:
        """Wait for the whole answer (including chunks already taken)."""
        response = await self.response()
        rest: bytes = await _bounded(response.read())
        return Reply(response.status, response.headers, bytes(self._received) + rest)

    async def close(self) -> None:
        """Hang up, whatever state the request is in."""
        self._task.cancel()
        results = await asyncio.gather(self._task, return_exceptions=True)
        if isinstance(results[0], aiohttp.ClientResponse):
            results[0].close()


class Upload:
    """A POST whose body the test feeds chunk by chunk (a preconnect until the first)."""

    def __init__(self, session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> None:
        self.url = url
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._connected = asyncio.Event()
        self._task = asyncio.create_task(self._run(session, headers))

    async def _body(self) -> AsyncIterator[bytes]:
        self._connected.set()
        while (chunk := await self._queue.get()) is not None:
            yield chunk

    async def _run(self, session: aiohttp.ClientSession, headers: dict[str, str]) -> Reply:
        # expect100 makes the client send the headers now and wait for the
        # server's 100 Continue, which comes once the server has the request.
        response = await session.post(self.url, data=self._body(), headers=headers, expect100=True)
        try:
            body = await response.read()
            return Reply(response.status, response.headers, body)
        finally:
            response.close()

    @property
    def answered(self) -> bool:
        return self._task.done()

    async def connected(self) -> None:
        """Wait until the server has taken the request: it asked for the body, or answered."""
        asked = asyncio.create_task(self._connected.wait())
        try:
            await _bounded(asyncio.wait({asked, self._task}, return_when=asyncio.FIRST_COMPLETED))
        finally:
            asked.cancel()

    def send(self, data: bytes) -> None:
        self._queue.put_nowait(data)

    async def finish(self) -> Reply:
        """End the body and wait for the answer."""
        self._queue.put_nowait(None)
        return await self.reply()

    async def reply(self) -> Reply:
        reply: Reply = await _bounded(asyncio.shield(self._task))
        return reply

    async def abort(self) -> None:
        """Drop the connection mid-upload, as a crashed publisher would."""
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


class Channel:
    """One uniquely named channel on the server under test, spoken to over raw HTTP."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.name = f"conformance-{uuid.uuid4().hex[:16]}"
        self.url = base_url + self.name
        self._pending: list[Reader | Upload] = []

    def seq_url(self, seq: int | str) -> str:
        return f"{self.url}/{seq}"

    async def request(
        self,
        method: str,
        url: str,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        body = None if data is None else io.BytesIO(data)  # big bodies without a warning

        async def exchange() -> Reply:
            async with self.session.request(method, url, data=body, headers=headers) as response:
                return Reply(response.status, response.headers, await response.read())

        reply: Reply = await _bounded(exchange())
        return reply

    async def create(self, mime_type: str | None = None) -> Reply:
        headers = {} if mime_type is None else {"Expect-Content": mime_type}
        return await self.request("POST", self.url, headers=headers)

    async def post(
        self, seq: int | str, data: bytes, content_type: str = "video/MP2T", **headers: str
    ) -> Reply:
        """POST a whole segment (Content-Length body)."""
        all_headers = {"Content-Type": content_type, **_header_names(headers)}
        return await self.request("POST", self.seq_url(seq), data=data, headers=all_headers)

    async def publish(self, seq: int, data: bytes, content_type: str = "video/MP2T") -> None:
        reply = await self.post(seq, data, content_type)
        assert reply.status == 200, reply
        assert reply.header("Lp-Trickle-Seq") == str(seq)

    async def get(self, seq: int | str) -> Reply:
        return await self.request("GET", self.seq_url(seq))

    async def next_write(self) -> int:
        reply = await self.request("GET", self.seq_url("next"))
        assert reply.status == 200, reply
        return int(reply.body)

    async def delete(self, seq: int | str | None = None) -> Reply:
        return await self.request("DELETE", self.url if seq is None else self.seq_url(seq))

    async def barrier(self) -> None:
        """One round trip after earlier requests went out, so the server has seen them."""
        await self.request("GET", self.seq_url("next"))

    async def reader(self, seq: int | str) -> Reader:
        """Start a GET and return once the server has it (it may be waiting)."""
        reader = Reader(self.session, self.seq_url(seq))
        self._pending.append(reader)
        await reader.sent()
        await self.barrier()
        return reader

    async def upload(
        self, seq: int | str, content_type: str = "video/MP2T", **headers: str
    ) -> Upload:
        """Start a preconnected POST and return once the server has it."""
        all_headers = {"Content-Type": content_type, **_header_names(headers)}
        upload = Upload(self.session, self.seq_url(seq), all_headers)
        self._pending.append(upload)
        await upload.connected()
        return upload

    async def aclose(self) -> None:
        """Hang up every request still in flight."""
        for pending in self._pending:
            if isinstance(pending, Reader):
                await pending.close()
            else:
                await pending.abort()


def _header_names(headers: dict[str, str]) -> dict[str, str]:
    """``lp_trickle_reset="1"`` -> ``{"Lp-Trickle-Reset": "1"}``."""
    return {"-".join(part.capitalize() for part in k.split("_")): v for k, v in headers.items()}


def external_url() -> str | None:
    url = os.environ.get(EXTERNAL_URL_ENV)
    if not url:
        return None
    return url if url.endswith("/") else url + "/"


@pytest.fixture(autouse=True)
def _skip_hardening_on_external_server(request: pytest.FixtureRequest) -> None:
    if external_url() is not None and request.node.get_closest_marker("hardening"):
        pytest.skip("byockit hardening: not expected of another server")


@pytest.fixture
async def trickle_url() -> AsyncIterator[str]:
    """Base URL (trailing slash) of an auto-creating trickle server."""
    url = external_url()
    if url is not None:
        yield url
        return
    async with TrickleServer(auto_create=True) as server:
        yield server.url


async def _on_headers_sent(
    session: aiohttp.ClientSession,
    context: SimpleNamespace,
    params: aiohttp.TraceRequestHeadersSentParams,
) -> None:
    marker = context.trace_request_ctx
    if marker is not None:
        marker.sent.set()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(_on_headers_sent)
    # Certificates are not checked: orchestrators serve trickle with self-signed ones.
    connector = aiohttp.TCPConnector(ssl=False)
    async with aiohttp.ClientSession(connector=connector, trace_configs=[trace]) as session:
        yield session


@pytest.fixture
async def channel(session: aiohttp.ClientSession, trickle_url: str) -> AsyncIterator[Channel]:
    channel = Channel(session, trickle_url)
    yield channel
    await channel.aclose()


@pytest.fixture
async def other_channel(session: aiohttp.ClientSession, trickle_url: str) -> AsyncIterator[Channel]:
    """A second channel on the same server."""
    channel = Channel(session, trickle_url)
    yield channel
    await channel.aclose()
