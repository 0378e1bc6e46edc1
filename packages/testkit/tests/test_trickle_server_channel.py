"""The trickle server's protocol state on its own: segments, the ring, the registry."""

from __future__ import annotations

import asyncio

import pytest

from byockit.testkit.trickle_server.channel import Channel, ChannelRegistry, Segment


async def test_segment_reader_starts_at_byte_zero_and_follows_writes() -> None:
    segment = Segment(0)
    segment.write(b"a")
    segment.write(b"b")
    reader = segment.reader()
    assert await reader.read() == b"a"
    assert await reader.read() == b"b"

    pending = asyncio.ensure_future(reader.read())
    await asyncio.sleep(0)
    assert not pending.done()
    segment.write(b"c")
    assert await asyncio.wait_for(pending, 5) == b"c"

    segment.close()
    assert await reader.read() is None
    assert segment.size == 3


async def test_closing_a_segment_wakes_its_waiters_and_drops_later_writes() -> None:
    segment = Segment(4)
    reader = segment.reader()
    pending = asyncio.ensure_future(reader.read())
    closed = asyncio.ensure_future(segment.wait_closed())
    await asyncio.sleep(0)

    segment.close()

    assert await asyncio.wait_for(pending, 5) is None
    await asyncio.wait_for(closed, 5)
    assert segment.write(b"late") is False
    assert segment.size == 0


def test_empty_writes_are_not_data() -> None:
    segment = Segment(0)
    assert segment.write(b"")
    assert segment.size == 0


def test_resolving_special_seqs() -> None:
    channel = Channel("c", "", now=0.0)
    assert channel.resolve_write(-1) == 0
    assert channel.resolve_read(-1) == 0
    assert channel.resolve_read(-2) == 0

    channel.mark_started(6, now=1.0)

    assert channel.resolve_write(-1) == 7
    assert channel.resolve_read(-1) == 7
    assert channel.resolve_read(-2) == 6
    assert channel.resolve_read(3) == 3


def test_reads_create_only_the_next_segment_or_one_before_anything_was_written() -> None:
    channel = Channel("c", "", now=0.0)
    assert channel.segment_for_read(2) is None
    assert channel.segment_for_read(1) is not None
    assert channel.segment_for_read(0) is not None

    channel.mark_started(0, now=0.0)
    assert channel.segment_for_read(3) is None
    created = channel.segment_for_read(1)
    assert created is channel.find(1)


def test_the_ring_keeps_five_segments_and_evicts_by_slot() -> None:
    channel = Channel("c", "", now=0.0)
    segments = [channel.segment_for_write(seq) for seq in range(7)]

    assert [channel.find(seq) is not None for seq in range(7)] == [False] * 2 + [True] * 5
    assert segments[0].closed
    assert segments[1].closed
    assert not segments[6].closed
    assert channel.segment_for_write(6) is segments[6]


def test_reset_closes_only_older_segments() -> None:
    channel = Channel("c", "", now=0.0)
    older, target, later = (channel.segment_for_write(seq) for seq in (1, 2, 3))

    channel.reset_below(2)

    assert older.closed
    assert not target.closed
    assert not later.closed


def test_closing_a_channel_closes_and_forgets_its_segments() -> None:
    channel = Channel("c", "", now=0.0)
    segment = channel.segment_for_write(0)
    segment.write(b"abc")
    assert channel.buffered_bytes == 3

    channel.close()

    assert segment.closed
    assert channel.closed
    assert channel.find(0) is None
    assert channel.segment_for_read(0) is None
    assert channel.buffered_bytes == 0


def test_registry_sweeps_channels_with_no_segment_started_for_the_idle_timeout() -> None:
    registry = ChannelRegistry()
    busy = registry.get_or_create("busy", "", now=0.0)
    registry.get_or_create("idle", "", now=0.0)
    registry.get_or_create("_internal", "", now=0.0)
    busy.mark_started(0, now=8.0)

    assert registry.remove_idle(now=10.0, idle_timeout=10.0) == []
    assert registry.remove_idle(now=10.5, idle_timeout=10.0) == ["idle"]
    assert registry.names() == {"busy", "_internal"}
    assert registry.remove_idle(now=100.0, idle_timeout=10.0) == ["busy"]
    assert registry.names() == {"_internal"}


def test_registry_fixes_the_mime_type_at_creation() -> None:
    registry = ChannelRegistry()
    first = registry.get_or_create("c", "video/MP2T", now=0.0)
    again = registry.get_or_create("c", "application/json", now=1.0)

    assert again is first
    assert again.mime_type == "video/MP2T"
    assert again.last_activity == 0.0


@pytest.mark.parametrize("name", ["c", "other"])
def test_registry_remove_closes_the_channel(name: str) -> None:
    registry = ChannelRegistry()
    channel = registry.get_or_create("c", "", now=0.0)

    removed = registry.remove(name)

    assert removed is (name == "c")
    assert channel.closed is (name == "c")
