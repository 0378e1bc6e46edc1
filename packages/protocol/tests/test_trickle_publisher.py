"""TricklePublisher against the testkit's trickle server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from byockit.protocol.errors import (
    ChannelNotFoundError,
    StreamClosedError,
    TrickleError,
    TrickleTimeoutError,
)
from byockit.protocol.trickle import TricklePublisher, TrickleSubscriber
from byockit.protocol.trickle.constants import MIME_MPEGTS, RESET_HEADER
from byockit.testkit.trickle_server import TrickleServer

pytestmark = pytest.mark.usefixtures("no_leaks")

TIMEOUT = 15.0


async def read_back(url: str, first: int, count: int) -> list[tuple[int, bytes]]:
    async with asyncio.timeout(TIMEOUT), TrickleSubscriber(url, start=first) as sub:
        got: list[tuple[int, bytes]] = []
        while len(got) < count:
            segment = await sub.next_segment()
            assert segment is not None
            got.append((segment.seq, await segment.read()))
        return got


async def test_segments_are_numbered_from_zero(trickle_server: TrickleServer) -> None:
    url = trickle_server.create_channel("video", MIME_MPEGTS)
    async with TricklePublisher(url) as pub:
        seqs = [await pub.write_segment(b"segment %d" % i) for i in range(3)]
    assert seqs == [0, 1, 2]
    assert await read_back(url, 0, 3) == [(i, b"segment %d" % i) for i in range(3)]


async def test_each_chunk_reaches_a_reader_before_the_segment_ends(
    trickle_server: TrickleServer,
) -> None:
    url = trickle_server.create_channel("live")
    async with (
        asyncio.timeout(TIMEOUT),
        TricklePublisher(url) as pub,
        TrickleSubscriber(url, start=0) as sub,
    ):
        async with pub.segment() as seg:
            await seg.write(b"first")
            segment = await sub.next_segment()
            assert segment is not None
            chunks = segment.iter_chunks()
            assert await anext(chunks) == b"first"
            await seg.write(b"second")
            assert await anext(chunks) == b"second"
        assert [chunk async for chunk in chunks] == []


async def test_next_post_is_open_before_its_segment_starts(
    trickle_server: TrickleServer, request_log: Any
) -> None:
    url = trickle_server.create_channel("pre")
    async with TricklePublisher(url, session=request_log.session) as pub:
        assert await pub.write_segment(b"zero") == 0
        await request_log.wait_for("POST", f"{url}/1")
        assert await pub.write_segment(b"one") == 1
        await request_log.wait_for("POST", f"{url}/2")
    assert request_log.count("POST", f"{url}/1") == 1, "segment 1 used its preconnected POST"
    assert not request_log.session.closed, "a shared session stays open"


async def _stuck_body(release: asyncio.Event) -> AsyncIterator[bytes]:
    yield b"partial"
    await release.wait()


async def test_resume_continues_from_next_and_releases_stuck_readers(
    trickle_server: TrickleServer, request_log: Any
) -> None:
    url = trickle_server.create_channel("resume")
    async with TricklePublisher(url) as first:
        for i in range(3):
            await first.write_segment(b"old %d" % i)
    # A publisher that died mid-segment: segment 3 stays open with its first bytes.
    release = asyncio.Event()
    crashed = asyncio.create_task(request_log.session.post(f"{url}/3", data=_stuck_body(release)))
    async with asyncio.timeout(TIMEOUT), TrickleSubscriber(url, start=3) as sub:
        stuck = await sub.next_segment()
        assert stuck is not None
        assert stuck.seq == 3
        chunks = stuck.iter_chunks()
        assert await anext(chunks) == b"partial"

        async with TricklePublisher(url, resume=True, session=request_log.session) as second:
            assert second.next_seq == 4
            assert await second.write_segment(b"resumed") == 4

        assert [chunk async for chunk in chunks] == [], "the reset ended the stuck segment"
        segment = await sub.next_segment()
        assert segment is not None
        assert (segment.seq, await segment.read()) == (4, b"resumed")
    assert [h.get(RESET_HEADER) for h in request_log.headers_of("POST", f"{url}/4")] == ["1"]
    assert not any(h.get(RESET_HEADER) for h in request_log.headers_of("POST", f"{url}/5"))
    release.set()
    (await crashed).release()


async def test_a_post_that_fails_before_its_first_byte_is_retried(request_log: Any) -> None:
    server = TrickleServer(auto_create=True)
    await server.start()
    url = server.channel_url("late")
    await server.stop()
    try:
        async with TricklePublisher(url, session=request_log.session, retry_interval=0.05) as pub:
            write = asyncio.create_task(pub.write_segment(b"after restart"))
            await request_log.wait_for("POST", f"{url}/0", count=3)
            assert not write.done()
            await server.start()
            async with asyncio.timeout(TIMEOUT):
                assert await write == 0
        assert await read_back(url, 0, 1) == [(0, b"after restart")]
    finally:
        await server.stop()


async def test_404_ends_the_publisher(trickle_server: TrickleServer) -> None:
    url = trickle_server.channel_url("never-created")
    async with asyncio.timeout(TIMEOUT), TricklePublisher(url) as pub:
        with pytest.raises(ChannelNotFoundError):
            await pub.write_segment(b"x")
        with pytest.raises(ChannelNotFoundError):
            await pub.write_segment(b"y")


async def test_a_deleted_channel_ends_the_publisher(trickle_server: TrickleServer) -> None:
    url = trickle_server.create_channel("deleted")
    async with (
        asyncio.timeout(TIMEOUT),
        TricklePublisher(url) as pub,
        TrickleSubscriber(url, start=0) as sub,
    ):

        async def delete_mid_segment() -> None:
            async with pub.segment() as seg:
                await seg.write(b"zero")
                segment = await sub.next_segment()
                assert segment is not None
                assert await anext(segment.iter_chunks()) == b"zero"
                trickle_server.delete_channel("deleted")

        with pytest.raises(StreamClosedError):
            await delete_mid_segment()
        # The preconnected POST saw the deletion too: as a closed channel, or a 404.
        with pytest.raises((StreamClosedError, ChannelNotFoundError)):
            await pub.write_segment(b"one")


async def test_a_segment_that_fails_midway_is_deleted(request_log: Any) -> None:
    async with TrickleServer(max_segment_bytes=16) as server:
        url = server.create_channel("small")
        async with (
            asyncio.timeout(TIMEOUT),
            TricklePublisher(url, session=request_log.session) as pub,
        ):

            async def overflow() -> None:
                async with pub.segment() as seg:
                    await seg.write(b"0123456789")
                    await seg.write(b"too much for this server")

            with pytest.raises(TrickleError):
                await overflow()
            assert request_log.count("DELETE", f"{url}/0") == 1
            assert await pub.write_segment(b"fits") == 1


class Boom(Exception):
    pass


async def test_an_exception_inside_a_segment_abandons_it(
    trickle_server: TrickleServer, request_log: Any
) -> None:
    url = trickle_server.create_channel("boom")
    async with (
        asyncio.timeout(TIMEOUT),
        TricklePublisher(url, session=request_log.session) as pub,
        TrickleSubscriber(url, start=0) as sub,
    ):
        chunks: list[AsyncIterator[bytes]] = []

        async def fail_mid_segment() -> None:
            async with pub.segment() as seg:
                await seg.write(b"half")
                reading = await sub.next_segment()
                assert reading is not None
                chunks.append(reading.iter_chunks())
                assert await anext(chunks[0]) == b"half"
                raise Boom

        with pytest.raises(Boom):
            await fail_mid_segment()
        assert request_log.count("DELETE", f"{url}/0") == 1
        assert [chunk async for chunk in chunks[0]] == [], "DELETE released the reader"
        assert await pub.write_segment(b"whole") == 1
        segment = await sub.next_segment()
        assert segment is not None
        assert (segment.seq, await segment.read()) == (1, b"whole")


async def test_an_unreachable_server_raises_a_timeout_instead_of_hanging() -> None:
    server = TrickleServer()
    await server.start()
    url = server.channel_url("gone")
    await server.stop()
    async with TricklePublisher(url, idle_timeout=0.5, retry_interval=0.05) as pub:
        with pytest.raises(TrickleTimeoutError) as caught:
            async with asyncio.timeout(TIMEOUT):
                await pub.write_segment(b"nobody listens")
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectionError)


async def test_a_stopped_server_ends_the_publisher_with_a_typed_error() -> None:
    async with TrickleServer() as server:
        url = server.create_channel("stopping")
        async with TricklePublisher(url, idle_timeout=1.0, retry_interval=0.05) as pub:
            await pub.write_segment(b"before")
            await server.stop()
            # Closed channel, broken upload or no progress, depending on timing: each typed.
            for attempt in (b"after", b"again"):
                with pytest.raises(TrickleError):
                    async with asyncio.timeout(TIMEOUT):
                        await pub.write_segment(attempt)


async def test_closed_publisher_refuses_segments(trickle_server: TrickleServer) -> None:
    url = trickle_server.create_channel("closed")
    pub = TricklePublisher(url)
    await pub.write_segment(b"zero")
    await pub.close()
    await pub.close()
    with pytest.raises(StreamClosedError):
        await pub.write_segment(b"one")


async def test_segments_are_written_one_at_a_time(trickle_server: TrickleServer) -> None:
    url = trickle_server.create_channel("serial")
    async with TricklePublisher(url) as pub, pub.segment() as seg:
        await seg.write(b"a")
        with pytest.raises(RuntimeError):
            async with pub.segment():
                pass


async def test_write_after_segment_end_is_refused(trickle_server: TrickleServer) -> None:
    url = trickle_server.create_channel("ended")
    async with TricklePublisher(url) as pub:
        async with pub.segment() as seg:
            await seg.write(b"a")
        with pytest.raises(StreamClosedError):
            await seg.write(b"b")


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("ftp://example.com/x", {}),
        ("http://example.com/x", {"idle_timeout": 0}),
        ("http://example.com/x", {"retry_interval": -1}),
    ],
)
def test_bad_settings_are_refused(url: str, options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"URL|idle_timeout|retry_interval"):
        TricklePublisher(url, **options)  # type: ignore[arg-type]


async def test_a_preconnect_outlives_the_servers_interim_answers() -> None:
    server = TrickleServer()
    server.continue_interval = 0.02  # many "100 Continue" while the next POST waits
    async with server:
        url = server.create_channel("patient")
        async with asyncio.timeout(TIMEOUT), TricklePublisher(url) as pub:
            assert await pub.write_segment(b"zero") == 0
            await asyncio.sleep(0.3)
            assert await pub.write_segment(b"one") == 1
        assert await read_back(url, 0, 2) == [(0, b"zero"), (1, b"one")]
