"""Publishing: preconnects, ``nextWrite``, eviction, appends, deletes, reset (PROTOCOL.md 1.3)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from packages.testkit.tests.conformance.conftest import Channel


async def test_post_minus_one_writes_the_next_index(channel: Channel) -> None:
    await channel.publish(0, b"zero")

    reply = await channel.post(-1, b"one")

    assert reply.status == 200
    assert reply.header("Lp-Trickle-Seq") == "1"
    assert (await channel.get(1)).body == b"one"
    assert await channel.next_write() == 2


async def test_expect_100_continue_is_answered_before_the_body(channel: Channel) -> None:
    upload = await channel.upload(0)
    assert not upload.answered

    upload.send(b"body")
    reply = await upload.finish()

    assert reply.status == 200
    assert reply.header("Lp-Trickle-Seq") == "0"


async def test_preconnected_post_moves_next_write_on_its_first_byte(channel: Channel) -> None:
    await channel.publish(0, b"zero")
    upload = await channel.upload(1)
    assert await channel.next_write() == 1

    upload.send(b"x")
    reader = await channel.reader(1)
    assert await reader.chunk() == b"x"
    assert await channel.next_write() == 2

    reply = await upload.finish()
    assert reply.status == 200
    assert reply.header("Lp-Trickle-Seq") == "1"


async def test_get_of_a_preconnected_seq_waits_for_it(channel: Channel) -> None:
    await channel.publish(0, b"zero")
    upload = await channel.upload(3)
    reader = await channel.reader(3)
    assert not reader.answered

    upload.send(b"three")
    await upload.finish()

    reply = await reader.reply()
    assert reply.body == b"three"
    assert reply.header("Lp-Trickle-Seq") == "3"


async def test_empty_post_completes_the_segment_and_advances(channel: Channel) -> None:
    await channel.create()
    reader = await channel.reader(0)

    reply = await channel.post(0, b"")

    assert reply.status == 200
    assert reply.header("Lp-Trickle-Seq") == "0"
    assert (await reader.reply()).body == b""
    assert await channel.next_write() == 1


async def test_repost_of_an_old_seq_moves_next_write_back_and_evicts_its_slot(
    channel: Channel,
) -> None:
    for seq in range(7):
        await channel.publish(seq, b"old")

    await channel.publish(0, b"new")

    assert await channel.next_write() == 1
    assert (await channel.get(0)).body == b"new"
    evicted = await channel.get(5)
    assert evicted.status == 470
    assert evicted.header("Lp-Trickle-Latest") == "1"


async def test_post_into_an_occupied_slot_releases_the_old_segment_readers(
    channel: Channel,
) -> None:
    for seq in range(5):
        await channel.publish(seq, b"data")
    reader = await channel.reader(5)

    await channel.publish(10, b"ten")

    reply = await reader.reply()
    assert reply.status == 200
    assert reply.body == b""
    assert reply.header("Lp-Trickle-Seq") == "5"
    assert reply.header("Lp-Trickle-Latest") is not None
    assert reply.header("Lp-Trickle-Closed") is None
    assert await channel.next_write() == 11


async def test_second_post_to_an_open_seq_appends(channel: Channel) -> None:
    first = await channel.upload(0)
    first.send(b"a")
    reader = await channel.reader(0)
    assert await reader.chunk() == b"a"

    second = await channel.post(0, b"b")

    assert second.status == 200
    assert (await reader.reply()).body == b"ab"
    first.send(b"c")
    assert (await first.finish()).status == 200
    assert (await channel.get(0)).body == b"ab"


async def test_post_to_a_closed_seq_is_answered_at_once_and_discarded(channel: Channel) -> None:
    await channel.publish(0, b"original")

    reply = await channel.post(0, b"other")
    assert reply.status == 200
    assert reply.header("Lp-Trickle-Seq") == "0"

    preconnected = await channel.upload(0)
    reply = await preconnected.reply()
    assert reply.status == 200
    assert reply.header("Lp-Trickle-Seq") == "0"

    assert (await channel.get(0)).body == b"original"
    assert await channel.next_write() == 1


async def test_deleting_a_segment_completes_it_for_readers(channel: Channel) -> None:
    upload = await channel.upload(0)
    upload.send(b"partial")
    reader = await channel.reader(0)
    assert await reader.chunk() == b"partial"

    assert (await channel.delete(0)).status == 200

    assert (await reader.reply()).body == b"partial"
    assert (await channel.get(0)).body == b"partial"


async def test_deleting_a_segment_releases_a_waiting_reader(channel: Channel) -> None:
    await channel.create()
    reader = await channel.reader(0)

    assert (await channel.delete(0)).status == 200

    reply = await reader.reply()
    assert reply.status == 200
    assert reply.body == b""
    assert reply.header("Lp-Trickle-Seq") == "0"
    assert reply.header("Lp-Trickle-Latest") is not None
    assert reply.header("Lp-Trickle-Closed") is None


async def test_deleting_a_segment_releases_its_waiting_publisher(channel: Channel) -> None:
    await channel.publish(0, b"zero")
    upload = await channel.upload(1)

    assert (await channel.delete(1)).status == 200

    reply = await upload.reply()
    assert reply.status == 200
    assert reply.header("Lp-Trickle-Seq") == "1"
    assert reply.headers.get("Connection", "").lower() == "close"
    assert reply.header("Lp-Trickle-Closed") is None
    assert await channel.next_write() == 2


async def test_deleting_a_missing_segment_is_400(channel: Channel) -> None:
    for seq in range(7):
        await channel.publish(seq, b"data")

    for seq in (0, 7, 20):
        reply = await channel.delete(seq)
        assert reply.status == 400, seq
        assert reply.body.strip() == b"Nonexistent segment"


async def test_deleting_the_channel_releases_waiting_readers(channel: Channel) -> None:
    await channel.publish(0, b"zero")
    reader = await channel.reader(-1)

    assert (await channel.delete()).status == 200

    reply = await reader.reply()
    assert reply.status == 200
    assert reply.body == b""
    assert reply.header("Lp-Trickle-Seq") == "1"
    assert reply.header("Lp-Trickle-Closed") == "terminated"


async def test_deleting_the_channel_releases_waiting_publishers(channel: Channel) -> None:
    await channel.publish(0, b"zero")
    upload = await channel.upload(1)

    assert (await channel.delete()).status == 200

    reply = await upload.reply()
    assert reply.status == 200
    assert reply.header("Lp-Trickle-Seq") == "1"
    assert reply.header("Lp-Trickle-Closed") == "terminated"
    assert reply.headers.get("Connection", "").lower() == "close"


async def test_deleting_the_channel_ends_a_segment_being_read(channel: Channel) -> None:
    upload = await channel.upload(0)
    upload.send(b"partial")
    reader = await channel.reader(0)
    assert await reader.chunk() == b"partial"

    await channel.delete()

    assert (await reader.reply()).body == b"partial"
    upload.send(b"more")
    assert (await upload.finish()).status == 200


async def test_reset_closes_every_older_segment(channel: Channel) -> None:
    stuck = await channel.upload(0)
    stuck.send(b"half")
    reader = await channel.reader(0)
    assert await reader.chunk() == b"half"

    reply = await channel.post(1, b"one", lp_trickle_reset="1")

    assert reply.status == 200
    assert (await reader.reply()).body == b"half"
    assert (await channel.get(1)).body == b"one"


async def test_reset_leaves_later_segments_alone(channel: Channel) -> None:
    await channel.create()
    ahead = await channel.upload(3)
    reader = await channel.reader(3)

    assert (await channel.post(1, b"one", lp_trickle_reset="1")).status == 200

    await channel.barrier()
    assert not ahead.answered
    assert not reader.answered
    ahead.send(b"three")
    assert (await ahead.finish()).status == 200
    assert (await reader.reply()).body == b"three"


async def test_reset_releases_a_waiting_publisher_of_an_older_segment(channel: Channel) -> None:
    await channel.create()
    old = await channel.upload(0)

    assert (await channel.post(2, b"two", lp_trickle_reset="1")).status == 200

    reply = await old.reply()
    assert reply.status == 200
    assert reply.header("Lp-Trickle-Seq") == "0"
    assert reply.headers.get("Connection", "").lower() == "close"
