"""LatestQueue: bounded, newest wins, never blocks a producer, wakes thread and loop consumers."""

from __future__ import annotations

import asyncio
import threading

import pytest

from byockit.worker.latest import LatestQueue

TIMEOUT = 10.0


def test_a_full_queue_drops_the_oldest_and_counts_it() -> None:
    slot: LatestQueue[int] = LatestQueue(1)
    assert slot.put(1) is None
    assert slot.put(2) == 1
    assert slot.put(3) == 2
    assert slot.dropped == 2
    assert len(slot) == 1
    assert slot.get(timeout=0) == 3
    assert slot.get(timeout=0) is None

    queue: LatestQueue[int] = LatestQueue(3)
    for item in range(5):
        queue.put(item)
    assert queue.clear() == [2, 3, 4]
    assert queue.dropped == 2


def test_a_blocked_thread_gets_an_item_put_from_elsewhere() -> None:
    slot: LatestQueue[str] = LatestQueue(1)
    taken: list[str | None] = []
    consumer = threading.Thread(target=lambda: taken.append(slot.get(timeout=TIMEOUT)))
    consumer.start()
    slot.put("frame")
    consumer.join(TIMEOUT)
    assert taken == ["frame"]


def test_close_lets_consumers_take_what_is_left_then_ends_them() -> None:
    queue: LatestQueue[int] = LatestQueue(2)
    queue.put(1)
    queue.close()
    assert queue.put(2) == 2  # too late: dropped
    assert queue.get() == 1
    assert queue.get() is None
    assert queue.closed


def test_wake_interrupts_a_wait_once() -> None:
    slot: LatestQueue[int] = LatestQueue(1)
    results: list[int | None] = []
    consumer = threading.Thread(target=lambda: results.append(slot.get(timeout=TIMEOUT)))
    consumer.start()
    slot.wake()
    consumer.join(TIMEOUT)
    assert results == [None]
    assert not slot.closed
    slot.put(7)
    assert slot.get(timeout=0) == 7


async def test_an_async_consumer_is_woken_by_a_thread() -> None:
    queue: LatestQueue[int] = LatestQueue(4)
    getter = asyncio.create_task(queue.get_async())
    await asyncio.sleep(0)
    assert not getter.done()
    threading.Thread(target=queue.put, args=(5,)).start()
    async with asyncio.timeout(TIMEOUT):
        assert await getter == 5
    queue.put(6)
    queue.close()
    assert await queue.get_async() == 6
    assert await queue.get_async() is None


async def test_a_cancelled_async_wait_leaves_the_queue_usable() -> None:
    queue: LatestQueue[int] = LatestQueue(1)
    getter = asyncio.create_task(queue.get_async())
    await asyncio.sleep(0)
    getter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await getter
    queue.put(1)
    assert await queue.get_async() == 1


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        LatestQueue(0)
