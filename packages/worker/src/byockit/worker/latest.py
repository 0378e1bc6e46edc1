"""A bounded hand-off where the newest items win: when it is full, the oldest is dropped.

Between input and inference a waiting frame is pure latency, so the frame
slot (capacity 1) keeps only the newest frame: a processor slower than its
input costs dropped frames, never a growing delay (PROTOCOL.md 6.1). The same
hand-off, larger, carries events and data lines out of the processor's
thread without ever blocking it.

Producers may be any thread (or the event loop); :meth:`LatestQueue.put`
never blocks. Consumers take items with the blocking :meth:`LatestQueue.get`
from a thread, or with :meth:`LatestQueue.get_async` from the event loop
(one async consumer at a time).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestQueue(Generic[T]):
    """Holds at most ``capacity`` items; putting into a full queue drops the oldest."""

    def __init__(self, capacity: int = 1) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._items: deque[T] = deque()
        self._capacity = capacity
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._async_waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None
        self._dropped = 0
        self._woken = False
        self._closed = False

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def dropped(self) -> int:
        """Items dropped so far because newer ones replaced them."""
        return self._dropped

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: T) -> T | None:
        """Add ``item``; returns the item it displaced (now dropped), if any.

        Putting into a closed queue drops ``item`` itself (and returns it).
        """
        with self._lock:
            if self._closed:
                self._dropped += 1
                return item
            displaced = None
            if len(self._items) >= self._capacity:
                displaced = self._items.popleft()
                self._dropped += 1
            self._items.append(item)
            self._signal()
        return displaced

    def get(self, timeout: float | None = None) -> T | None:
        """The oldest item, waiting for one; ``None`` when closed and empty, woken, or timed out."""
        with self._lock:
            if not self._items and not self._closed and not self._woken:
                self._ready.wait(timeout)
            return self._take()

    async def get_async(self) -> T | None:
        """The oldest item, awaited on the event loop; ``None`` when closed and empty, or woken."""
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self._items or self._closed or self._woken:
                    return self._take()
                future: asyncio.Future[None] = loop.create_future()
                self._async_waiter = (loop, future)
            try:
                await future
            finally:
                with self._lock:
                    if self._async_waiter is not None and self._async_waiter[1] is future:
                        self._async_waiter = None

    def wake(self) -> None:
        """Make the consumer's current (or next) wait return ``None`` at once."""
        with self._lock:
            self._woken = True
            self._signal()

    def clear(self) -> list[T]:
        """Remove and return every waiting item (they do not count as dropped)."""
        with self._lock:
            items = list(self._items)
            self._items.clear()
            return items

    def close(self) -> None:
        """No more items: consumers take what is left, then get ``None``."""
        with self._lock:
            self._closed = True
            self._ready.notify_all()
            self._signal()

    def _take(self) -> T | None:
        """Holding the lock: the oldest item, or ``None`` (consuming a wake-up)."""
        if self._items:
            return self._items.popleft()
        self._woken = False
        return None

    def _signal(self) -> None:
        """Holding the lock: wake one waiting consumer, blocked or async."""
        self._ready.notify()
        if self._async_waiter is not None:
            loop, future = self._async_waiter
            self._async_waiter = None
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
