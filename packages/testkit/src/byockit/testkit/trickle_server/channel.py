"""Trickle server state: channels, their five-segment rings, and segments.

Pure protocol logic with no I/O, so every rule of PROTOCOL.md 1.3 lives in one
place and the HTTP layer only translates requests into calls on it. Time is
passed in (``now``) rather than read, which keeps sweeping deterministic.

A segment is an append-only list of chunks. The publisher appends and wakes
readers; each reader keeps its own position, so a slow reader costs nothing
but the chunks the ring keeps anyway and never holds anyone else up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from byockit.protocol.trickle.constants import RING_SIZE, SEQ_CURRENT, SEQ_NEXT


class Segment:
    """One numbered segment: bytes so far, whether it is complete, and waiters."""

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.size = 0
        self._chunks: list[bytes] = []
        self._closed = False
        self._changed = asyncio.Event()

    @property
    def closed(self) -> bool:
        return self._closed

    def write(self, data: bytes) -> bool:
        """Append ``data`` and wake readers; False (data dropped) once closed."""
        if self._closed:
            return False
        if data:
            self._chunks.append(data)
            self.size += len(data)
            self._notify()
        return True

    def close(self) -> None:
        """Mark the segment complete: readers reach EOF, waiting publishers are released."""
        if not self._closed:
            self._closed = True
            self._notify()

    async def wait_closed(self) -> None:
        while not self._closed:
            await self._changed.wait()

    def reader(self) -> SegmentReader:
        return SegmentReader(self)

    def _notify(self) -> None:
        # A fresh event per change: waiters hold the old one, which is set
        # exactly once, so no wake-up can be lost between check and wait.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


class SegmentReader:
    """A reader's own position in a segment, from byte 0."""

    def __init__(self, segment: Segment) -> None:
        self._segment = segment
        self._index = 0

    async def read(self) -> bytes | None:
        """The next chunk, waiting for it; ``None`` at the end of the segment."""
        segment = self._segment
        chunks = segment._chunks
        while self._index >= len(chunks):
            if segment.closed:
                return None
            await segment._changed.wait()
        chunk = chunks[self._index]
        self._index += 1
        return chunk


class Channel:
    """One trickle channel: a ring of the last five segments plus ``next_write``."""

    def __init__(self, name: str, mime_type: str, now: float) -> None:
        self.name = name
        self.mime_type = mime_type
        self.next_write = 0
        self.last_activity = now
        self.closed = False
        self._ring: list[Segment | None] = [None] * RING_SIZE

    def segments(self) -> Iterator[Segment]:
        return (segment for segment in self._ring if segment is not None)

    @property
    def buffered_bytes(self) -> int:
        return sum(segment.size for segment in self.segments())

    def find(self, seq: int) -> Segment | None:
        """The segment numbered ``seq`` if the ring still holds it."""
        segment = self._ring[seq % RING_SIZE]
        return segment if segment is not None and segment.seq == seq else None

    def resolve_write(self, seq: int) -> int:
        return self.next_write if seq == SEQ_NEXT else seq

    def resolve_read(self, seq: int) -> int:
        if seq == SEQ_NEXT:
            return self.next_write
        if seq == SEQ_CURRENT:
            return max(self.next_write - 1, 0)
        return seq

    def segment_for_write(self, seq: int) -> Segment:
        """The segment ``seq`` (a resolved index), evicting whatever else holds its slot."""
        existing = self.find(seq)
        if existing is not None:
            return existing
        return self._replace_slot(seq)

    def segment_for_read(self, seq: int) -> Segment | None:
        """The segment ``seq`` (resolved), or ``None`` when it is outside the window.

        A read for the next write index (or for 1 before anything was written)
        creates the segment so the reader waits for its publisher.
        """
        existing = self.find(seq)
        if existing is not None or self.closed:
            return existing
        if seq == self.next_write or (self.next_write == 0 and seq == 1):
            return self._replace_slot(seq)
        return None

    def mark_started(self, seq: int, now: float) -> None:
        """A POST to ``seq`` got its first byte (or was empty): it is the write head."""
        self.next_write = seq + 1
        self.last_activity = now

    def reset_below(self, seq: int) -> None:
        """Close every buffered segment below ``seq`` (a publisher restarted)."""
        for segment in self.segments():
            if segment.seq < seq:
                segment.close()

    def close(self) -> None:
        """End the channel: every segment closes and the ring empties."""
        self.closed = True
        for segment in self.segments():
            segment.close()
        self._ring = [None] * RING_SIZE

    def _replace_slot(self, seq: int) -> Segment:
        slot = seq % RING_SIZE
        evicted = self._ring[slot]
        if evicted is not None:
            evicted.close()
        segment = Segment(seq)
        self._ring[slot] = segment
        return segment


class ChannelRegistry:
    """Every channel of one server, by name."""

    def __init__(self) -> None:
        self._channels: dict[str, Channel] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._channels

    def names(self) -> frozenset[str]:
        return frozenset(self._channels)

    def get(self, name: str) -> Channel | None:
        return self._channels.get(name)

    def get_or_create(self, name: str, mime_type: str, now: float) -> Channel:
        """The channel ``name``; a new one fixes ``mime_type`` for its lifetime."""
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = Channel(name, mime_type, now)
        return channel

    def remove(self, name: str) -> bool:
        """Close and forget ``name``; False if there was no such channel."""
        channel = self._channels.pop(name, None)
        if channel is None:
            return False
        channel.close()
        return True

    def remove_idle(self, now: float, idle_timeout: float) -> list[str]:
        """Remove channels with no segment started for ``idle_timeout``.

        Names starting with ``_`` are internal and never swept.
        """
        idle = [
            name
            for name, channel in self._channels.items()
            if not name.startswith("_") and now - channel.last_activity > idle_timeout
        ]
        for name in idle:
            self.remove(name)
        return idle

    def clear(self) -> None:
        for name in list(self._channels):
            self.remove(name)

    @property
    def buffered_bytes(self) -> int:
        return sum(channel.buffered_bytes for channel in self._channels.values())
