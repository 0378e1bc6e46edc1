"""Faults a :class:`TrickleServer` injects into its own answers, to test what its clients survive.

Each fault targets one channel, named or given by URL, and happens on the
wire, as the network or go-livepeer would produce it:

- **delay**: every chunk of the channel's segments reaches each reader
  ``seconds`` after the reader could have had it, as over a slow link;
- **drop**: the next ``count`` segments that start on the channel are taken
  (the publisher gets its 200) and thrown away: readers find them empty, so
  exactly the frames (or documents) of those segments are lost;
- **470**: the next ``count`` reads of the channel get 470 with
  ``Lp-Trickle-Latest``, the server's answer to a reader that fell out of the
  five-segment window: the reader jumps to the latest segment, skipping
  whatever it had not read yet;
- **restart**: the server stops and starts again on the same port and every
  channel is gone, as when an orchestrator restarts.

A fault stays until it has fired ``count`` times (a delay: until removed);
:meth:`TrickleFaults.clear` removes them all.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncGenerator
from types import TracebackType
from typing import Final

from byockit.protocol.lifecycle import Service
from byockit.testkit.trickle_server.channel import SegmentReader


class FaultKind(enum.Enum):
    DELAY = "delay"
    DROP = "drop"
    ANSWER_470 = "470"


MAX_HITS_KEPT: Final = 1000
"""Seqs a fault remembers in ``hits``: an armed delay strikes every segment read."""


class Fault:
    """One injected fault. ``hits`` lists the seqs it struck, in order (the first
    :data:`MAX_HITS_KEPT`); ``strikes`` counts them all.

    Also a context manager that removes the fault on exit.
    """

    def __init__(
        self,
        faults: TrickleFaults,
        kind: FaultKind,
        channel: str,
        count: int | None,
        seconds: float,
    ) -> None:
        self.kind: Final = kind
        self.channel: Final = channel
        self.seconds: Final = seconds
        self.hits: list[int] = []
        self.strikes = 0
        self._faults = faults
        self._remaining = count
        self._struck = asyncio.Event()

    def __repr__(self) -> str:
        return f"<Fault {self.kind.value} on {self.channel!r}, hits {self.hits}>"

    @property
    def active(self) -> bool:
        return self in self._faults.active

    def remove(self) -> None:
        """Undo the fault (harmless when it is spent or removed)."""
        self._faults._remove(self)

    async def wait(
        self,
        hits: int = 1,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 - a test helper bounds its own wait
    ) -> None:
        """Until the fault has struck ``hits`` times; :class:`TimeoutError` after ``timeout``."""
        async with asyncio.timeout(timeout):
            while self.strikes < hits:
                await self._struck.wait()

    def _strike(self, seq: int) -> None:
        self.strikes += 1
        if len(self.hits) < MAX_HITS_KEPT:
            self.hits.append(seq)
        struck, self._struck = self._struck, asyncio.Event()
        struck.set()
        if self._remaining is not None:
            self._remaining -= 1
            if self._remaining == 0:
                self.remove()

    def __enter__(self) -> Fault:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()


class TrickleFaults:
    """The faults armed on one server; ``server.faults``. Channels: a name, or a channel URL."""

    def __init__(self, server: Service) -> None:
        self._server = server
        self._faults: list[Fault] = []

    @property
    def active(self) -> tuple[Fault, ...]:
        return tuple(self._faults)

    def delay(self, channel: str, seconds: float) -> Fault:
        """Deliver the channel's segment data to readers ``seconds`` late, until removed.

        Delays on one channel add up. Headers wait for the first delayed chunk.
        """
        if not seconds > 0:
            raise ValueError(f"a delay must be positive, got {seconds!r}")
        return self._add(FaultKind.DELAY, channel, None, seconds)

    def drop(self, channel: str, count: int = 1) -> Fault:
        """Throw away the next ``count`` segments to start on the channel (read back empty)."""
        return self._add(FaultKind.DROP, channel, _positive_count(count), 0.0)

    def answer_470(self, channel: str, count: int = 1) -> Fault:
        """Answer the next ``count`` reads of the channel 470, as to a reader that fell behind."""
        return self._add(FaultKind.ANSWER_470, channel, _positive_count(count), 0.0)

    async def restart(self, downtime: float = 0.0) -> None:
        """Stop the server, wait ``downtime`` seconds (connections are refused), start it again.

        Stopping closes every channel (their waiting readers and publishers
        are told so, later requests get 404) and keeps the port; armed faults
        stay armed.
        """
        if downtime < 0:
            raise ValueError(f"downtime must not be negative, got {downtime!r}")
        await self._server.stop()
        await asyncio.sleep(downtime)
        await self._server.start()

    def clear(self) -> None:
        """Remove every fault."""
        self._faults.clear()

    # -- what the handlers ask ------------------------------------------------

    def delay_for(self, channel: str, seq: int) -> float:
        """Seconds to hold back the data of ``channel``'s segment ``seq`` (0: none)."""
        delays = self._matching(FaultKind.DELAY, channel)
        for fault in delays:
            fault._strike(seq)
        return sum(fault.seconds for fault in delays)

    def take_drop(self, channel: str, seq: int) -> bool:
        """Whether segment ``seq`` of ``channel``, just started, is to be thrown away."""
        return self._take(FaultKind.DROP, channel, seq)

    def take_470(self, channel: str, seq: int) -> bool:
        """Whether this read of ``channel`` (for ``seq``) is to be answered 470."""
        return self._take(FaultKind.ANSWER_470, channel, seq)

    # -- internals ------------------------------------------------------------

    def _add(self, kind: FaultKind, channel: str, count: int | None, seconds: float) -> Fault:
        fault = Fault(self, kind, _channel_name(channel), count, seconds)
        self._faults.append(fault)
        return fault

    def _remove(self, fault: Fault) -> None:
        if fault in self._faults:
            self._faults.remove(fault)

    def _matching(self, kind: FaultKind, channel: str) -> list[Fault]:
        return [f for f in self._faults if f.kind is kind and f.channel == channel]

    def _take(self, kind: FaultKind, channel: str, seq: int) -> bool:
        matching = self._matching(kind, channel)
        if not matching:
            return False
        matching[0]._strike(seq)
        return True


async def relayed(reader: SegmentReader, first: bytes, delay: float) -> AsyncGenerator[bytes, None]:
    """A segment's chunks from ``first`` on, each ``delay`` seconds after it was read.

    A task reads ahead and stamps each chunk, so chunks that arrive while an
    earlier one is held back are not delayed twice. What it holds are
    references to chunks the segment keeps anyway.
    """
    if delay <= 0:
        chunk: bytes | None = first
        while chunk is not None:
            yield chunk
            chunk = await reader.read()
        return
    loop = asyncio.get_running_loop()
    line: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()
    line.put_nowait((loop.time() + delay, first))

    async def stamp() -> None:
        while True:
            chunk = await reader.read()
            line.put_nowait((loop.time() + delay, chunk))
            if chunk is None:
                return

    stamping = asyncio.create_task(stamp())
    try:
        while True:
            due, chunk = await line.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if chunk is None:
                return
            yield chunk
    finally:
        stamping.cancel()
        await asyncio.gather(stamping, return_exceptions=True)


def _channel_name(channel: str) -> str:
    """A channel's name, from its name or its URL (the last path component)."""
    name = channel.rstrip("/").rsplit("/", 1)[-1]
    if not name:
        raise ValueError(f"not a channel name or URL: {channel!r}")
    return name


def _positive_count(count: int) -> int:
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count!r}")
    return count
