"""TrickleSubscriber against the testkit's trickle server on loopback."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from byockit.protocol.errors import (
    StreamClosedError,
    TooManyFailuresError,
    TrickleError,
    TrickleHTTPError,
    TrickleTimeoutError,
)
from byockit.protocol.trickle import Segment, TricklePublisher, TrickleSubscriber
from byockit.testkit.trickle_server import TrickleServer

pytestmark = pytest.mark.usefixtures("no_leaks")

TIMEOUT = 15.0


async def next_of(sub: TrickleSubscriber) -> Segment:
    async with asyncio.timeout(TIMEOUT):
        segment = await sub.next_segment()
    assert segment is not None
    return segment


async def publish(url: str, *payloads: bytes) -> None:
    async with TricklePublisher(url) as pub:
        for payload in payloads:
            await pub.write_segment(payload)


@pytest.mark.parametrize(
    ("start", "expected"),
    [(-2, [(2, b"two")]), (1, [(1, b"one"), (2, b"two")]), (0, [(0, b"zero"), (1, b"one")])],
)
async def test_start_at_current_or_given_seq(
    trickle_server: TrickleServer, start: int, expected: list[tuple[int, bytes]]
) -> None:
    url = trickle_server.create_channel("start")
    await publish(url, b"zero", b"one", b"two")
    async with TrickleSubscriber(url, start=start) as sub:
        got = []
        for _ in expected:
            segment = await next_of(sub)
            got.append((segment.seq, await segment.read()))
    assert got == expected


async def test_start_at_next_skips_the_current_segment(trickle_server: TrickleServer) -> None:
    url = trickle_server.create_channel("next")
    async with TricklePublisher(url) as pub, TrickleSubscriber(url, start=-1) as sub:
        await pub.write_segment(b"0")
        waiting = asyncio.create_task(next_of(sub))
        # Which segment is "next" depends on when the GET reaches the server: keep writing.
        while not waiting.done():
            seq = await pub.write_segment(b"%d" % (pub.next_seq or 0))
            await asyncio.sleep(0.02 * seq)
        segment = await waiting
        assert segment.seq >= 1
        assert await segment.read() == b"%d" % segment.seq


async def test_start_at_current_on_a_fresh_channel_gets_segment_zero(
    trickle_server: TrickleServer,
) -> None:
    url = trickle_server.create_channel("fresh")
    async with TrickleSubscriber(url) as sub:
        waiting = asyncio.create_task(next_of(sub))
        await publish(url, b"first")
        segment = await waiting
        assert (segment.seq, await segment.read()) == (0, b"first")


async def test_next_get_is_open_while_the_current_segment_is_read(
    trickle_server: TrickleServer, request_log: Any
) -> None:
    url = trickle_server.create_channel("pre")
    async with (
        TricklePublisher(url) as pub,
        TrickleSubscriber(url, start=0, session=request_log.session) as sub,
    ):
        async with pub.segment() as seg:
            await seg.write(b"zero")
            segment = await next_of(sub)
            await request_log.wait_for("GET", f"{url}/1")
        assert await segment.read() == b"zero"
        await pub.write_segment(b"one")
        segment = await next_of(sub)
        assert (segment.seq, await segment.read()) == (1, b"one")
    assert request_log.count("GET", f"{url}/1") == 1, "segment 1 came on the preconnected GET"
    assert not request_log.session.closed, "a shared session stays open"


async def test_a_reader_behind_the_window_jumps_to_latest(
    trickle_server: TrickleServer, request_log: Any
) -> None:
    url = trickle_server.create_channel("behind")
    await publish(url, *(b"old %d" % i for i in range(10)))
    async with (
        TricklePublisher(url, resume=True) as pub,
        TrickleSubscriber(url, start=0, session=request_log.session, retry_pause=0.05) as sub,
    ):
        waiting = asyncio.create_task(next_of(sub))
        await request_log.wait_for("GET", f"{url}/10")
        await pub.write_segment(b"new")
        segment = await waiting
        assert (segment.seq, await segment.read()) == (10, b"new")
    assert request_log.count("GET", f"{url}/0") == 1


async def test_a_470_counts_as_a_failure(trickle_server: TrickleServer) -> None:
    url = trickle_server.create_channel("strict")
    await publish(url, *(b"%d" % i for i in range(10)))
    async with TrickleSubscriber(url, start=0, max_failures=1) as sub:
        with pytest.raises(TooManyFailuresError) as caught:
            await next_of(sub)
    assert isinstance(caught.value.__cause__, TrickleHTTPError)
    assert caught.value.__cause__.status == 470


async def test_a_deleted_channel_ends_iteration_cleanly(trickle_server: TrickleServer) -> None:
    url = trickle_server.create_channel("ending")
    await publish(url, b"only")
    async with asyncio.timeout(TIMEOUT), TrickleSubscriber(url, start=0) as sub:
        got = []
        async for segment in sub:
            got.append(await segment.read())
            trickle_server.delete_channel("ending")
        assert got == [b"only"]
        assert await sub.next_segment() is None


async def test_an_unknown_channel_is_an_empty_stream(trickle_server: TrickleServer) -> None:
    url = trickle_server.channel_url("unknown")
    async with asyncio.timeout(TIMEOUT), TrickleSubscriber(url) as sub:
        assert [segment async for segment in sub] == []


async def test_an_unreachable_server_raises_after_max_failures() -> None:
    server = TrickleServer()
    await server.start()
    url = server.create_channel("gone")
    await server.stop()
    async with TrickleSubscriber(url, max_failures=3, retry_pause=0.01) as sub:
        with pytest.raises(TooManyFailuresError) as caught:
            await next_of(sub)
        assert isinstance(caught.value.__cause__, aiohttp.ClientConnectionError)
        with pytest.raises(TooManyFailuresError):
            await next_of(sub)


async def test_a_long_wait_for_headers_is_reissued_not_failed(
    trickle_server: TrickleServer, request_log: Any
) -> None:
    url = trickle_server.create_channel("quiet")
    async with TrickleSubscriber(
        url, start=-1, session=request_log.session, preconnect_timeout=0.1, max_failures=1
    ) as sub:
        waiting = asyncio.create_task(next_of(sub))
        await request_log.wait_for("GET", f"{url}/-1", count=3)
        await publish(url, b"at last")
        segment = await waiting
        assert (segment.seq, await segment.read()) == (0, b"at last")


async def test_a_segment_that_stalls_raises_and_the_next_one_follows(
    trickle_server: TrickleServer,
) -> None:
    url = trickle_server.create_channel("stall")
    async with (
        TricklePublisher(url) as pub,
        TrickleSubscriber(url, start=0, idle_timeout=0.3) as sub,
    ):
        async with pub.segment() as seg:
            await seg.write(b"start")
            segment = await next_of(sub)
            chunks = segment.iter_chunks()
            assert await anext(chunks) == b"start"
            with pytest.raises(TrickleTimeoutError):
                async with asyncio.timeout(TIMEOUT):
                    await anext(chunks)
            await seg.write(b" rest")
        await pub.write_segment(b"one")
        segment = await next_of(sub)
        assert (segment.seq, await segment.read()) == (1, b"one"), "no re-read of segment 0"


async def test_server_restart_under_a_publisher_and_subscriber_never_hangs() -> None:
    async with TrickleServer(auto_create=True) as server:
        url = server.create_channel("restart")
        three_received = asyncio.Event()
        restarted = asyncio.Event()

        async def publish_until_after_restart() -> None:
            async with TricklePublisher(url, idle_timeout=1.0, retry_interval=0.05) as pub:
                after_restart = 0
                while after_restart < 5:
                    await pub.write_segment(b"x" * 1000)
                    after_restart += restarted.is_set()
                    await asyncio.sleep(0.01)

        async def subscribe() -> None:
            async with TrickleSubscriber(url, start=0, retry_pause=0.05) as sub:
                async for segment in sub:
                    await segment.read()
                    if segment.seq >= 2:
                        three_received.set()

        publishing = asyncio.create_task(publish_until_after_restart())
        subscribing = asyncio.create_task(subscribe())
        async with asyncio.timeout(TIMEOUT):
            await three_received.wait()
        await server.stop()
        await server.start()
        restarted.set()
        async with asyncio.timeout(TIMEOUT):
            outcomes = await asyncio.gather(publishing, subscribing, return_exceptions=True)
    # Each either carried on (the publisher re-created the channel), ended (the subscriber
    # saw the channel close) or raised a typed error.
    for outcome in outcomes:
        assert outcome is None or isinstance(outcome, TrickleError), outcome


async def test_close_ends_a_waiting_iteration(trickle_server: TrickleServer) -> None:
    url = trickle_server.create_channel("closing")
    sub = TrickleSubscriber(url, start=-1)
    waiting = asyncio.create_task(sub.next_segment())
    await asyncio.sleep(0.05)
    await sub.close()
    async with asyncio.timeout(TIMEOUT):
        assert await waiting is None


async def test_a_segment_dropped_by_moving_on_raises_when_read(
    trickle_server: TrickleServer,
) -> None:
    url = trickle_server.create_channel("skip")
    async with TricklePublisher(url) as pub, TrickleSubscriber(url, start=0) as sub:
        async with pub.segment() as seg:
            await seg.write(b"unread")
            skipped = await next_of(sub)
            waiting = asyncio.create_task(sub.next_segment())
            await asyncio.sleep(0)
        await pub.write_segment(b"read")
        async with asyncio.timeout(TIMEOUT):
            segment = await waiting
        assert segment is not None
        assert await segment.read() == b"read"
        with pytest.raises(StreamClosedError):
            await skipped.read()


async def test_a_segment_is_read_once_and_within_its_limit(trickle_server: TrickleServer) -> None:
    url = trickle_server.create_channel("limits")
    await publish(url, b"0123456789", b"abc")
    async with TrickleSubscriber(url, start=0) as sub:
        segment = await next_of(sub)
        with pytest.raises(TrickleError, match="larger than 4 bytes"):
            await segment.read(max_bytes=4)
        segment = await next_of(sub)
        assert await segment.read() == b"abc"
        with pytest.raises(TrickleError, match="already been read"):
            await segment.read()


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("ws://example.com/x", {}),
        ("http://example.com/x", {"start": -3}),
        ("http://example.com/x", {"max_failures": 0}),
        ("http://example.com/x", {"preconnect_timeout": 0}),
    ],
)
def test_bad_settings_are_refused(url: str, options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"URL|start|max_failures|preconnect_timeout"):
        TrickleSubscriber(url, **options)  # type: ignore[arg-type]
