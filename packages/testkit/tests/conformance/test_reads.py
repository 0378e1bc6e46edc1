"""Reading segments: index resolution, waiting, the five-segment window (PROTOCOL.md 1.2, 1.3)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from packages.testkit.tests.conformance.conftest import Channel


async def test_published_segment_reads_back(channel: Channel) -> None:
    await channel.publish(0, b"hello")

    reply = await channel.get(0)

    assert reply.status == 200
    assert reply.body == b"hello"
    assert reply.header("Lp-Trickle-Seq") == "0"
    assert reply.header("Lp-Trickle-Latest") == "1"
    assert reply.header("Lp-Trickle-Closed") is None


async def test_large_segment_reads_back_intact(channel: Channel) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)
    await channel.publish(0, data)

    assert (await channel.get(0)).body == data


async def test_latest_is_left_out_when_it_equals_the_seq(channel: Channel) -> None:
    await channel.create()
    reader = await channel.reader(0)

    await channel.publish(0, b"a")

    reply = await reader.reply()
    assert reply.header("Lp-Trickle-Seq") == "0"
    assert reply.header("Lp-Trickle-Latest") is None


async def test_get_minus_one_waits_for_the_next_segment(channel: Channel) -> None:
    await channel.publish(0, b"zero")
    reader = await channel.reader(-1)
    assert not reader.answered

    await channel.publish(1, b"one")

    reply = await reader.reply()
    assert reply.status == 200
    assert reply.body == b"one"
    assert reply.header("Lp-Trickle-Seq") == "1"
    assert reply.header("Lp-Trickle-Latest") is None


async def test_get_minus_two_reads_the_current_segment(channel: Channel) -> None:
    await channel.publish(0, b"zero")
    await channel.publish(1, b"one")

    reply = await channel.get(-2)

    assert reply.body == b"one"
    assert reply.header("Lp-Trickle-Seq") == "1"
    assert reply.header("Lp-Trickle-Latest") == "2"


async def test_get_minus_two_before_any_write_waits_for_segment_zero(channel: Channel) -> None:
    await channel.create()
    reader = await channel.reader(-2)
    assert not reader.answered

    await channel.publish(0, b"zero")

    reply = await reader.reply()
    assert reply.body == b"zero"
    assert reply.header("Lp-Trickle-Seq") == "0"


async def test_waiting_get_gets_headers_with_the_first_byte_then_streams(channel: Channel) -> None:
    await channel.create("video/MP2T")
    reader = await channel.reader(0)
    upload = await channel.upload(0)
    await channel.barrier()
    assert not reader.answered

    upload.send(b"a")
    response = await reader.response()
    assert response.status == 200
    assert response.headers["Lp-Trickle-Seq"] == "0"
    assert response.headers["Content-Type"] == "video/MP2T"
    assert await reader.chunk() == b"a"
    assert not upload.answered

    upload.send(b"b")
    assert await reader.chunk() == b"b"
    assert (await upload.finish()).status == 200
    assert (await reader.reply()).body == b"ab"


async def test_get_one_ahead_waits_before_anything_was_written(channel: Channel) -> None:
    await channel.create()
    reader = await channel.reader(1)

    await channel.publish(0, b"zero")
    await channel.barrier()
    assert not reader.answered
    await channel.publish(1, b"one")

    reply = await reader.reply()
    assert reply.body == b"one"
    assert reply.header("Lp-Trickle-Seq") == "1"


async def test_get_too_far_ahead_is_470(channel: Channel) -> None:
    await channel.create()

    reply = await channel.get(2)

    assert reply.status == 470
    assert reply.body == b"Entry not found"
    assert reply.header("Lp-Trickle-Latest") == "0"
    assert reply.header("Lp-Trickle-Seq") == "2"

    await channel.publish(0, b"a")
    reply = await channel.get(3)
    assert reply.status == 470
    assert reply.header("Lp-Trickle-Latest") == "1"
    assert reply.header("Lp-Trickle-Seq") == "3"


async def test_only_the_last_five_segments_are_kept(channel: Channel) -> None:
    for seq in range(7):
        await channel.publish(seq, f"segment {seq}".encode())

    for seq in (0, 1):
        reply = await channel.get(seq)
        assert reply.status == 470
        assert reply.header("Lp-Trickle-Latest") == "7"
        assert reply.header("Lp-Trickle-Seq") == str(seq)
    for seq in range(2, 7):
        reply = await channel.get(seq)
        assert reply.status == 200
        assert reply.body == f"segment {seq}".encode()


async def test_reader_joining_mid_segment_gets_it_from_byte_zero_then_live(
    channel: Channel,
) -> None:
    upload = await channel.upload(0)
    upload.send(b"abc")
    first = await channel.reader(0)
    assert await first.chunk() == b"abc"

    late = await channel.reader(0)
    assert await late.chunk() == b"abc"
    upload.send(b"def")
    assert await late.chunk() == b"def"

    await upload.finish()
    assert (await late.reply()).body == b"abcdef"
    assert (await first.reply()).body == b"abcdef"


async def test_empty_segment_reads_as_empty_200(channel: Channel) -> None:
    await channel.create("video/MP2T")
    await channel.publish(0, b"")

    reply = await channel.get(0)

    assert reply.status == 200
    assert reply.body == b""
    assert reply.header("Lp-Trickle-Seq") == "0"
    assert reply.header("Lp-Trickle-Latest") == "1"
    assert reply.header("Lp-Trickle-Closed") is None
    assert "Content-Type" not in reply.headers


async def test_many_readers_get_the_same_bytes(channel: Channel) -> None:
    await channel.create()
    readers = [await channel.reader(0) for _ in range(5)]
    data = os.urandom(256 * 1024)

    await channel.publish(0, data)

    for reader in readers:
        assert (await reader.reply()).body == data
