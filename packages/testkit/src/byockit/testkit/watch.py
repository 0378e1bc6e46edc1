"""Watching a stream's output while a test goes on: every frame classified as it comes.

A test that publishes, changes params and publishes again wants to know,
for each output frame, which input it was and what was done to it, without
stopping to read. :class:`OutputWatcher` reads a
:class:`~byockit.testkit.orchestrator.FakeStream`'s output in a task of its
own and records ``classify(frame)``; a check that fails inside ``classify``
is raised by the next :meth:`~OutputWatcher.reaches` or on exit, never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Final, Generic, TypeVar

import av

from byockit.protocol.lifecycle import Closeable
from byockit.testkit.orchestrator import FakeStream

T = TypeVar("T")

POLL_INTERVAL: Final = 0.01
"""Seconds between two looks at what has been seen."""


class OutputWatcher(Closeable, Generic[T]):
    """``seen``: ``classify(frame)`` of every output frame, an ``(index, what)`` pair, in order.

    Use it as an async context manager (or call :meth:`close`)::

        async with OutputWatcher(stream, lambda f: (clip.index_of(f), f.width)) as watcher:
            await stream.publish(frames)
            await watcher.reaches(29)
    """

    def __init__(
        self, stream: FakeStream, classify: Callable[[av.VideoFrame], tuple[int, T]]
    ) -> None:
        self.seen: list[tuple[int, T]] = []
        self._classify = classify
        self._task = asyncio.create_task(self._watch(stream))

    async def reaches(
        self,
        index: int,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 - a test helper bounds its own wait
    ) -> None:
        """Until a frame of ``index`` or later was seen; :class:`TimeoutError` after ``timeout``.

        Raises what stopped the watching: a failed check in ``classify``, a broken output.
        """
        async with asyncio.timeout(timeout):
            while not any(seen >= index for seen, _ in self.seen):
                if self._task.done():
                    self._task.result()
                    raise AssertionError(f"the output ended before frame {index}")
                await asyncio.sleep(POLL_INTERVAL)

    async def close(self) -> None:
        """Stop watching; raises if a frame failed its check."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _watch(self, stream: FakeStream) -> None:
        async with contextlib.aclosing(stream.output_frames()) as frames:
            async for frame in frames:
                self.seen.append(self._classify(frame))
