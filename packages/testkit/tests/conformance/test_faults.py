"""Faults: crashed publishers, vanished or slow readers, oversized bodies, publisher restarts."""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

import pytest
from yarl import URL

if TYPE_CHECKING:
    from packages.testkit.tests.conformance.conftest import Channel


async def test_publisher_gone_before_its_first_byte_leaves_the_segment_waiting(
    channel: Channel,
) -> None:
    await channel.publish(0, b"zero")
    crashed = await channel.upload(1)
    reader = await channel.reader(1)

    await crashed.abort()
    await channel.barrier()

    assert await channel.next_write() == 1
    assert not reader.answered
    await channel.publish(1, b"retry")
    assert (await reader.reply()).body == b"retry"


async def test_publisher_gone_mid_segment_leaves_it_open_until_deleted(channel: Channel) -> None:
    crashed = await channel.upload(0)
    crashed.send(b"partial")
    reader = await channel.reader(0)
    assert await reader.chunk() == b"partial"

    await crashed.abort()
    await channel.barrier()
    more = asyncio.ensure_future(reader.chunk())
    await channel.barrier()
    assert not more.done()
    assert await channel.next_write() == 1

    assert (await channel.delete(0)).status == 200
    assert await more == b""
    assert (await channel.get(0)).body == b"partial"


async def test_reader_gone_mid_segment_disturbs_nobody(channel: Channel) -> None:
    upload = await channel.upload(0)
    upload.send(b"a")
    leaving = await channel.reader(0)
    staying = await channel.reader(0)
    assert await leaving.chunk() == b"a"
    assert await staying.chunk() == b"a"

    await leaving.close()
    upload.send(b"b")

    assert await staying.chunk() == b"b"
    assert (await upload.finish()).status == 200
    assert (await staying.reply()).body == b"ab"
    assert (await channel.get(0)).body == b"ab"


async def test_a_reader_that_stops_reading_never_stalls_the_publisher(
    channel: Channel, other_channel: Channel
) -> None:
    await channel.create()
    stalled = await channel.reader(0)
    big = os.urandom(4 * 1024 * 1024)

    await channel.publish(0, big)
    assert (await stalled.response()).status == 200
    for seq in range(1, 8):
        await channel.publish(seq, f"segment {seq}".encode())
    await other_channel.publish(0, b"elsewhere")

    assert (await channel.get(7)).body == b"segment 7"
    assert (await other_channel.get(0)).body == b"elsewhere"
    assert (await stalled.reply()).body == big


async def test_restarted_publisher_resets_and_readers_move_on(channel: Channel) -> None:
    await channel.publish(0, b"zero")
    crashed = await channel.upload(1)
    crashed.send(b"half")
    reader = await channel.reader(1)
    assert await reader.chunk() == b"half"
    await crashed.abort()

    restart_at = await channel.next_write()
    reply = await channel.post(restart_at, b"fresh", lp_trickle_reset="1")

    assert restart_at == 2
    assert reply.status == 200
    first = await reader.reply()
    assert first.body == b"half"
    follow = await channel.get(int(first.headers["Lp-Trickle-Seq"]) + 1)
    assert follow.body == b"fresh"


@pytest.mark.hardening
async def test_body_over_the_segment_limit_is_refused_413(
    channel: Channel, trickle_url: str
) -> None:
    """go-livepeer buffers any size; byockit refuses more than max_segment_bytes (64 MiB)."""
    await channel.publish(0, b"zero")
    url = URL(trickle_url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(
            f"POST {URL(channel.url).path}/1 HTTP/1.1\r\nHost: {url.host}\r\n"
            f"Content-Length: {64 * 1024 * 1024 + 1}\r\n\r\n".encode()
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
        await writer.wait_closed()

    assert status_line.startswith(b"HTTP/1.1 413 ")
    assert await channel.next_write() == 1
    assert (await channel.get(0)).body == b"zero"
