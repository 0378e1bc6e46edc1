"""TrickleServer behaviour that needs its internals: server-side channels, lifecycle,
TLS, sweeping, limits, keepalives, and staying healthy when clients misbehave."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from yarl import URL

from byockit.testkit.trickle_server import TrickleServer

TIMEOUT = 10.0


@pytest.fixture(autouse=True)
def _no_errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.WARNING)
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait for ``condition`` to hold, giving up after TIMEOUT."""
    async with asyncio.timeout(TIMEOUT):
        while not condition():  # noqa: ASYNC110 - server internals have no event to wait on
            await asyncio.sleep(0.01)


async def fetch(
    session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, dict[str, str], bytes]:
    async with asyncio.timeout(TIMEOUT):
        async with session.request(method, url, **kwargs) as response:
            return response.status, dict(response.headers), await response.read()


async def raw_request(
    server: TrickleServer, head: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    url = URL(server.url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(head.encode())
    await writer.drain()
    return reader, writer


async def close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    await writer.wait_closed()


def test_url_and_base_path() -> None:
    server = TrickleServer("127.0.0.1", 8123, base_path="ai/trickle")
    assert server.url == "http://127.0.0.1:8123/ai/trickle/"
    assert server.channel_url("s-out") == "http://127.0.0.1:8123/ai/trickle/s-out"
    assert TrickleServer(port=1, base_path="/").url == "http://127.0.0.1:1/"


@pytest.mark.parametrize(
    "kwargs", [{"idle_timeout": 0}, {"sweep_interval": -1}, {"max_segment_bytes": 0}]
)
def test_invalid_settings_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        TrickleServer(**kwargs)


async def test_channels_live_under_the_base_path(session: aiohttp.ClientSession) -> None:
    async with TrickleServer(base_path="/ai/trickle/", auto_create=True) as server:
        assert server.url.endswith("/ai/trickle/")
        status, _, _ = await fetch(session, "POST", server.channel_url("c") + "/0", data=b"x")
        assert status == 200
        root = str(URL(server.url).with_path("/c/0"))
        assert (await fetch(session, "GET", root))[0] == 404
        assert (await fetch(session, "GET", server.channel_url("c") + "/0"))[2] == b"x"


async def test_without_auto_create_only_server_side_channels_exist(
    session: aiohttp.ClientSession,
) -> None:
    async with TrickleServer() as server:
        status, headers, body = await fetch(
            session, "POST", server.channel_url("c") + "/0", data=b"x"
        )
        assert status == 404
        assert headers["Connection"].lower() == "close"
        assert body.strip() == b"Stream not found"
        assert (await fetch(session, "POST", server.channel_url("c")))[0] == 404
        assert server.channels == frozenset()

        url = server.create_channel("c", "application/json")

        assert url == server.channel_url("c")
        assert server.channels == {"c"}
        assert (await fetch(session, "POST", url + "/0", data=b"{}"))[0] == 200
        status, headers, body = await fetch(session, "GET", url + "/0")
        assert body == b"{}"
        assert headers["Content-Type"] == "application/json"


@pytest.mark.parametrize("name", ["", "a/b"])
def test_server_side_channel_names_are_checked(name: str) -> None:
    with pytest.raises(ValueError, match="invalid trickle channel name"):
        TrickleServer().create_channel(name)


async def test_server_side_delete_releases_waiters(session: aiohttp.ClientSession) -> None:
    async with TrickleServer() as server:
        url = server.create_channel("c")
        waiting = asyncio.ensure_future(fetch(session, "GET", url + "/0"))
        await eventually(lambda: server.buffered_bytes == 0 and _has_reader(server))

        server.delete_channel("c")
        server.delete_channel("c")

        status, headers, body = await waiting
        assert (status, body) == (200, b"")
        assert headers["Lp-Trickle-Closed"] == "terminated"
        assert server.channels == frozenset()


def _has_reader(server: TrickleServer) -> bool:
    # A GET at the write head creates segment 0 before it waits.
    channel = server._registry.get("c")
    return channel is not None and channel.find(0) is not None


async def test_restart_binds_the_same_port_with_fresh_state(session: aiohttp.ClientSession) -> None:
    server = TrickleServer(auto_create=True)
    await server.start()
    try:
        url = server.url
        assert (await fetch(session, "POST", url + "c/0", data=b"x"))[0] == 200
        await server.stop()
        await server.stop()

        await server.start()

        assert server.url == url
        assert server.channels == frozenset()
        assert (await fetch(session, "GET", url + "c/0"))[0] == 404
    finally:
        await server.stop()


async def test_starting_twice_is_refused() -> None:
    async with TrickleServer() as server:
        with pytest.raises(RuntimeError, match="already running"):
            await server.start()


async def test_stop_releases_waiting_readers_and_publishers() -> None:
    server = TrickleServer(auto_create=True)
    await server.start()
    async with aiohttp.ClientSession() as session:
        assert (await fetch(session, "POST", server.url + "c/0", data=b"x"))[0] == 200
        reader = asyncio.ensure_future(fetch(session, "GET", server.url + "c/1"))
        body = asyncio.Queue[bytes | None]()

        async def later_body() -> AsyncIterator[bytes]:
            while (chunk := await body.get()) is not None:
                yield chunk

        publisher = asyncio.ensure_future(
            fetch(session, "POST", server.url + "c/2", data=later_body(), expect100=True)
        )
        await eventually(lambda: _segment_exists(server, 1) and _segment_exists(server, 2))

        await server.stop()

        for waiter in (reader, publisher):
            status, headers, _ = await waiter
            assert status == 200
            assert headers["Lp-Trickle-Closed"] == "terminated"


def _segment_exists(server: TrickleServer, seq: int) -> bool:
    channel = server._registry.get("c")
    return channel is not None and channel.find(seq) is not None


async def test_stop_ends_a_segment_still_uploading(session: aiohttp.ClientSession) -> None:
    server = TrickleServer(auto_create=True)
    await server.start()
    sent = asyncio.Event()

    async def endless_body() -> AsyncIterator[bytes]:
        yield b"first"
        sent.set()
        await asyncio.Event().wait()

    upload = asyncio.ensure_future(fetch(session, "POST", server.url + "c/0", data=endless_body()))
    await asyncio.wait_for(sent.wait(), TIMEOUT)
    await eventually(lambda: server.buffered_bytes == len(b"first"))

    await asyncio.wait_for(server.stop(), TIMEOUT)

    with pytest.raises(aiohttp.ClientError):
        await upload


async def test_tls(tmp_path: Path) -> None:
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)

    async with TrickleServer(auto_create=True, ssl_context=server_context) as server:
        assert server.url.startswith("https://127.0.0.1:")
        connector = aiohttp.TCPConnector(ssl=client_context)
        async with aiohttp.ClientSession(connector=connector) as session:
            assert (await fetch(session, "POST", server.url + "c/0", data=b"secret"))[0] == 200
            assert (await fetch(session, "GET", server.url + "c/0"))[2] == b"secret"


async def test_idle_channels_are_swept_but_internal_ones_are_not(
    session: aiohttp.ClientSession,
) -> None:
    async with TrickleServer(idle_timeout=0.05, sweep_interval=0.02) as server:
        url = server.create_channel("c")
        server.create_channel("_changes")
        waiting = asyncio.ensure_future(fetch(session, "GET", url + "/0"))
        await eventually(lambda: _has_reader(server))

        await eventually(lambda: "c" not in server.channels)

        status, headers, _ = await waiting
        assert status == 200
        assert headers["Lp-Trickle-Closed"] == "terminated"
        assert server.channels == {"_changes"}


async def test_memory_stays_bounded_by_the_ring_under_a_stalled_reader(
    session: aiohttp.ClientSession,
) -> None:
    segment = os.urandom(512 * 1024)
    async with TrickleServer(auto_create=True) as server:
        assert (await fetch(session, "POST", server.url + "c/0", data=segment))[0] == 200
        async with session.get(server.url + "c/0") as stalled:
            assert stalled.status == 200
            for seq in range(1, 25):
                status, _, _ = await fetch(session, "POST", server.url + f"c/{seq}", data=segment)
                assert status == 200
                assert server.buffered_bytes <= 5 * len(segment)
            assert await asyncio.wait_for(stalled.read(), TIMEOUT) == segment


async def test_segment_over_the_limit_is_cut_off_with_413(session: aiohttp.ClientSession) -> None:
    async with TrickleServer(auto_create=True, max_segment_bytes=1000) as server:
        assert (await fetch(session, "POST", server.url + "other/0", data=b"fine"))[0] == 200

        async def body() -> AsyncIterator[bytes]:
            yield b"a" * 600
            await eventually(lambda: server.buffered_bytes >= 600 + len(b"fine"))
            yield b"b" * 600

        reader = asyncio.ensure_future(fetch(session, "GET", server.url + "big/0"))
        status, headers, _ = await fetch(session, "POST", server.url + "big/0", data=body())

        assert status == 413
        assert headers["Connection"].lower() == "close"
        assert (await reader)[2] == b"a" * 600
        assert (await fetch(session, "GET", server.url + "other/0"))[2] == b"fine"
        assert (await fetch(session, "POST", server.url + "other/1", data=b"more"))[0] == 200


async def test_waiting_post_gets_interim_100_continue_until_its_body_arrives() -> None:
    server = TrickleServer(auto_create=True)
    server.continue_interval = 0.01
    async with server:
        reader, writer = await raw_request(
            server, "POST /c/0 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n"
        )
        try:
            for _ in range(3):
                assert (
                    await asyncio.wait_for(reader.readline(), TIMEOUT)
                    == b"HTTP/1.1 100 Continue\r\n"
                )
                assert await asyncio.wait_for(reader.readline(), TIMEOUT) == b"\r\n"
            writer.write(b"data")
            await writer.drain()
            while (line := await asyncio.wait_for(reader.readline(), TIMEOUT)).startswith(
                b"HTTP/1.1 100"
            ):
                assert await reader.readline() == b"\r\n"
            assert line.startswith(b"HTTP/1.1 200 ")
        finally:
            await close_writer(writer)


async def test_aiohttp_client_skips_unsolicited_100_continue(
    session: aiohttp.ClientSession,
) -> None:
    """Clients written with aiohttp survive the keepalives above."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" * 3)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nLp-Trickle-Seq: 0\r\n\r\nok")
        await writer.drain()
        await close_writer(writer)

    listener = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with listener:
        port = listener.sockets[0].getsockname()[1]
        status, headers, body = await fetch(
            session, "POST", f"http://127.0.0.1:{port}/c/0", data=b"x"
        )
    assert (status, headers["Lp-Trickle-Seq"], body) == (200, "0", b"ok")


async def test_clients_hanging_up_leave_the_server_healthy(session: aiohttp.ClientSession) -> None:
    async with TrickleServer(auto_create=True) as server:
        assert (await fetch(session, "POST", server.url + "c/0", data=b"zero"))[0] == 200
        # A reader waiting for headers, a publisher waiting for its body, a
        # publisher mid-body and a reader mid-body all disconnect.
        _, waiting_reader = await raw_request(server, "GET /c/1 HTTP/1.1\r\nHost: x\r\n\r\n")
        _, waiting_publisher = await raw_request(
            server, "POST /c/2 HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n"
        )
        _, mid_body = await raw_request(
            server, "POST /c/3 HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"
        )
        mid_read, reading = await raw_request(server, "GET /c/3 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await asyncio.wait_for(mid_read.readline(), TIMEOUT)).startswith(b"HTTP/1.1 200")
        await eventually(lambda: server.buffered_bytes == 7 and _handler_tasks() == 4)
        for writer in (waiting_reader, waiting_publisher, mid_body, reading):
            await close_writer(writer)

        await eventually(lambda: _handler_tasks() == 0)
        assert (await fetch(session, "POST", server.url + "c/4", data=b"next"))[0] == 200
        assert (await fetch(session, "GET", server.url + "c/4"))[2] == b"next"


def _handler_tasks() -> int:
    """Requests the server is still handling (idle keep-alive connections do not count)."""
    return sum(
        1
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", "") == "RequestHandler._handle_request"
    )


async def test_stop_leaves_no_tasks_behind(session: aiohttp.ClientSession) -> None:
    async with TrickleServer(auto_create=True) as server:
        assert (await fetch(session, "POST", server.url + "c/0", data=b"x"))[0] == 200
        waiting = asyncio.ensure_future(fetch(session, "GET", server.url + "c/1"))
        await eventually(lambda: _segment_exists(server, 1))
        assert _handler_tasks() == 1
    assert (await waiting)[0] == 200
    await session.close()
    assert asyncio.all_tasks() == {asyncio.current_task()}
