"""Async adapters: decoding and encoding in one dedicated thread each, trickle in and out.

Codec work must stay off the event loop (HTTP, trickle and control run
there), but a hop per frame (``asyncio.to_thread``) queues each frame behind
whatever else the loop is doing and, on a busy loop, backlogs without bound
(PROTOCOL.md 6.1). Here each codec lives in its own thread for the whole
stream and takes the next input the moment it is free; the loop only passes
items in and out through bounded queues (:data:`QUEUE_DEPTH` each way), so a
slow consumer holds the producer back instead of growing a backlog.

Waking the loop from a thread costs tens of microseconds of CPU (a write to
its self-pipe, an ``epoll`` round, a turn of the loop), so a codec thread
wakes it only to hand over outputs, or to free room for an input the loop
is waiting to hand in (:class:`_Room`), not for every input it takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import AsyncGenerator, AsyncIterable, Callable
from typing import Final, Generic, NamedTuple, TypeVar

import av

from byockit.protocol.errors import StreamClosedError, TrickleError
from byockit.protocol.media.audio import AudioPacket
from byockit.protocol.media.decoder import MediaItem, StreamDecoder
from byockit.protocol.media.encoder import EncodedChunk, SegmentEncoder
from byockit.protocol.trickle.publisher import TricklePublisher
from byockit.protocol.trickle.subscriber import Segment

logger = logging.getLogger(__name__)

QUEUE_DEPTH: Final = 4
"""Items waiting on each side of a codec thread."""

InT = TypeVar("InT")
OutT = TypeVar("OutT")


class _SegmentEnd(NamedTuple):
    broken: bool


class _Failure(NamedTuple):
    error: Exception


class _EndOfInput:
    pass


class _Done:
    pass


_END_OF_INPUT: Final = _EndOfInput()
_DONE: Final = _Done()


class _Room:
    """Free places in a queue that the loop fills and a thread empties.

    The loop takes a place (one task at a time) and waits only when none is
    free; the thread gives places back and wakes the loop only if it waits.
    """

    def __init__(self, places: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._free = places
        self._lock = threading.Lock()
        self._waiter: asyncio.Future[None] | None = None

    async def take(self) -> None:
        while True:
            with self._lock:
                if self._free:
                    self._free -= 1
                    return
                waiter = self._waiter = self._loop.create_future()
            await waiter

    def give(self) -> None:
        """From any thread: one more place."""
        with self._lock:
            self._free += 1
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                self._loop.call_soon_threadsafe(_wake, waiter)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class CodecThread(Generic[InT, OutT]):
    """Runs ``step`` on each input and ``finish`` at the end, in one thread of its own.

    Create it inside the event loop; feed it with :meth:`put` and
    :meth:`end_input`, take outputs with :meth:`get` (``None`` once
    ``finish``'s outputs are out), and always :meth:`stop` it. An exception
    in ``step`` or ``finish`` (or one handed to :meth:`fail`) is raised by
    :meth:`get` after the outputs before it.
    """

    def __init__(
        self,
        name: str,
        step: Callable[[InT], list[OutT]],
        finish: Callable[[], list[OutT]],
    ) -> None:
        self._step = step
        self._finish = finish
        self._loop = asyncio.get_running_loop()
        self._free_inputs = _Room(QUEUE_DEPTH)
        self._inbox: queue.SimpleQueue[InT | _EndOfInput | _Failure] = queue.SimpleQueue()
        self._free_outputs = threading.Semaphore(QUEUE_DEPTH)
        self._outbox: asyncio.Queue[OutT | _Failure | _Done] = asyncio.Queue()
        self._stopping = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    async def put(self, item: InT) -> None:
        """Hand in the next input; waits while :data:`QUEUE_DEPTH` inputs are waiting."""
        await self._free_inputs.take()
        self._inbox.put(item)

    async def end_input(self) -> None:
        """No more inputs: ``finish`` runs after the last one."""
        await self._free_inputs.take()
        self._inbox.put(_END_OF_INPUT)

    async def fail(self, error: Exception) -> None:
        """The input failed: :meth:`get` raises ``error`` after the outputs of earlier inputs."""
        await self._free_inputs.take()
        self._inbox.put(_Failure(error))

    async def get(self) -> OutT | None:
        """The next output, or ``None`` when there are no more."""
        if self._done:
            return None
        item = await self._outbox.get()
        if isinstance(item, _Done):
            self._done = True
            return None
        if isinstance(item, _Failure):
            self._done = True
            raise item.error
        self._free_outputs.release()
        return item

    async def stop(self) -> None:
        """Stop the thread (dropping inputs not yet taken) and wait until it has ended."""
        self._stopping.set()
        self._free_outputs.release()  # wake the thread if it waits for room
        self._inbox.put(_END_OF_INPUT)  # or for input
        await asyncio.to_thread(self._thread.join)

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                item = self._inbox.get()
                self._free_inputs.give()
                if self._stopping.is_set():
                    return
                if isinstance(item, _Failure):
                    self._to_loop(self._outbox.put_nowait, item)
                    return
                if isinstance(item, _EndOfInput):
                    self._emit(self._finish())
                    self._to_loop(self._outbox.put_nowait, _DONE)
                    return
                self._emit(self._step(item))
        except Exception as exc:
            self._to_loop(self._outbox.put_nowait, _Failure(exc))

    def _emit(self, outputs: list[OutT]) -> None:
        for output in outputs:
            self._free_outputs.acquire()
            if self._stopping.is_set():
                return
            self._to_loop(self._outbox.put_nowait, output)

    def _to_loop(self, callback: Callable[..., object], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
            self._loop.call_soon_threadsafe(callback, *args)


async def _through(
    thread: CodecThread[InT, OutT], inputs: AsyncIterable[InT]
) -> AsyncGenerator[OutT, None]:
    """Run ``inputs`` through ``thread``; yields its outputs, raises the inputs' errors."""

    async def feeder() -> None:
        try:
            async for item in inputs:
                await thread.put(item)
            await thread.end_input()
        except Exception as exc:
            await thread.fail(exc)

    task = asyncio.create_task(feeder())
    try:
        while (output := await thread.get()) is not None:
            yield output
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await thread.stop()


async def decode_stream(
    chunks: AsyncIterable[bytes], decoder: StreamDecoder | None = None
) -> AsyncGenerator[MediaItem, None]:
    """Decode one continuous MPEG-TS byte stream, yielding frames and audio as they complete.

    ``decoder`` (used only by the codec thread while this runs) lets the
    caller read its error counters.
    """
    if decoder is None:
        decoder = StreamDecoder()
    thread: CodecThread[bytes, MediaItem] = CodecThread(
        "byockit-decoder", decoder.feed, decoder.flush
    )
    async with contextlib.aclosing(_through(thread, chunks)) as items:
        async for item in items:
            yield item


async def decode_segments(
    segments: AsyncIterable[Segment],
    decoder: StreamDecoder | None = None,
    *,
    on_frame: Callable[[av.VideoFrame], None] | None = None,
) -> AsyncGenerator[MediaItem, None]:
    """Decode a trickle subscriber's segments as one stream.

    Each segment's end completes its last frame at once. A segment that
    breaks off (a :class:`TrickleError` from its reader) is logged and
    skipped; decoding resumes with the next segment's IDR picture.

    ``on_frame``, if given, takes each video frame in the decoder's thread
    (it must be thread-safe and quick) instead of the frame being yielded:
    a consumer that hands frames to another thread anyway saves the event
    loop a wake-up per frame. What it raises ends the stream, as a decoding
    failure would.
    """
    if decoder is None:
        decoder = StreamDecoder()

    def hand_over(items: list[MediaItem]) -> list[MediaItem]:
        if on_frame is None:
            return items
        rest: list[MediaItem] = []
        for item in items:
            if isinstance(item, av.VideoFrame):
                on_frame(item)
            else:
                rest.append(item)
        return rest

    async def feed() -> AsyncGenerator[bytes | _SegmentEnd, None]:
        async for segment in segments:
            try:
                async for chunk in segment.iter_chunks():
                    yield chunk
            except StreamClosedError as exc:
                # Our own side let go of the segment (the subscriber closed or moved on).
                logger.debug("segment %d closed while decoding: %s", segment.seq, exc)
                yield _SegmentEnd(broken=True)
            except TrickleError as exc:
                logger.warning("segment %d broke off: %s", segment.seq, exc)
                yield _SegmentEnd(broken=True)
            else:
                yield _SegmentEnd(broken=False)

    def step(item: bytes | _SegmentEnd) -> list[MediaItem]:
        if isinstance(item, _SegmentEnd):
            return hand_over(decoder.end_segment(broken=item.broken))
        return hand_over(decoder.feed(item))

    thread: CodecThread[bytes | _SegmentEnd, MediaItem] = CodecThread(
        "byockit-decoder", step, lambda: hand_over(decoder.flush())
    )
    async with contextlib.aclosing(_through(thread, feed())) as items:
        async for item in items:
            yield item


async def encode_stream(
    items: AsyncIterable[MediaItem], encoder: SegmentEncoder | None = None
) -> AsyncGenerator[EncodedChunk, None]:
    """Encode frames (passing audio through) into MPEG-TS chunks, in the encoder's own thread.

    ``encoder`` carries the settings; it is used only by the codec thread
    while this runs.
    """
    if encoder is None:
        encoder = SegmentEncoder()

    def step(item: MediaItem) -> list[EncodedChunk]:
        if isinstance(item, AudioPacket):
            return encoder.add_audio(item)
        return encoder.encode(item)

    thread: CodecThread[MediaItem, EncodedChunk] = CodecThread(
        "byockit-encoder", step, encoder.flush
    )
    async with contextlib.aclosing(_through(thread, items)) as chunks:
        async for chunk in chunks:
            yield chunk


async def publish_stream(
    items: AsyncIterable[MediaItem],
    publisher: TricklePublisher,
    encoder: SegmentEncoder | None = None,
) -> None:
    """Encode ``items`` and publish them, one trickle segment per GOP, each chunk as it is made.

    Returns when ``items`` ends and the last segment is complete. On an
    error the segment being written is abandoned (the publisher deletes it).
    """
    async with contextlib.aclosing(encode_stream(items, encoder)) as chunks:
        first = await anext(chunks, None)
        while first is not None:
            async with publisher.segment() as segment:
                await segment.write(first.data)
                first = None
                async for chunk in chunks:
                    if chunk.segment_start:
                        first = chunk  # it opens the next segment
                        break
                    await segment.write(chunk.data)
