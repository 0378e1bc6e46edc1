"""Video sinks: output frames with their measured latency, and an MP4 recorder.

- :class:`FrameSink`: an async iterator of :class:`ReceivedFrame` (the frame,
  its timestamp, when it arrived and how long after its input frame was
  sent). Frames are matched to their input by the indexed test pattern's
  index when the input carried one (robust to a worker that changes
  timestamps), else by ``pts`` (workers keep the input's timestamps).
- :class:`Recorder`: writes frames to an MP4 file (H.264 through PyAV) in a
  thread of its own, finalised on close so the file plays.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable
from fractions import Fraction
from typing import BinaryIO, Final, Self

import attrs
import av

from byockit.protocol.errors import MediaError
from byockit.protocol.lifecycle import Closeable
from byockit.protocol.media import TIME_BASE
from byockit.protocol.media.pattern import read_index

MAX_TRACKED: Final = 1024
"""Input frames whose send time a :class:`FrameSink` remembers (the oldest are forgotten)."""


@attrs.frozen
class ReceivedFrame:
    """An output frame; ``latency``: seconds since its input frame was sent (``None``: no match)."""

    frame: av.VideoFrame
    pts: int | None
    """The frame's timestamp in 1/90000."""
    index: int | None
    """The test pattern index it shows, when the input carried one and it is readable."""
    received_at: float
    """``time.monotonic()`` when it arrived."""
    latency: float | None


class FrameSink:
    """Output frames with latency measured against the input frames that :meth:`track` saw.

    ``frames``: the output (a :class:`~byockit.client.trickle_direct.TrickleDirect`'s
    or a WHEP player's frames). Wrap the input with :meth:`track` before it
    is sent, then iterate the sink. Memory is bounded: the last
    :data:`MAX_TRACKED` input frames are remembered.
    """

    def __init__(self, frames: AsyncIterable[av.VideoFrame]) -> None:
        self._frames = frames
        self._output: AsyncIterator[av.VideoFrame] | None = None
        self._by_index: OrderedDict[int, float] = OrderedDict()
        self._by_pts: OrderedDict[int, float] = OrderedDict()
        self._indexed = False
        self.matched = 0
        """Output frames matched to an input frame so far."""

    async def track(
        self, frames: AsyncIterable[av.VideoFrame]
    ) -> AsyncGenerator[av.VideoFrame, None]:
        """Pass ``frames`` through, noting when each is handed on (sent)."""
        async for frame in frames:
            self.note_sent(frame)
            yield frame

    def note_sent(self, frame: av.VideoFrame) -> None:
        """Note that ``frame`` is being sent now (what :meth:`track` does for each frame)."""
        now = time.monotonic()
        if frame.pts is not None:
            _remember(self._by_pts, frame.pts, now)
        try:
            index = read_index(frame.to_ndarray(format="rgb24"))
        except ValueError:
            return
        self._indexed = True
        _remember(self._by_index, index, now)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ReceivedFrame:
        if self._output is None:
            self._output = aiter(self._frames)
        frame = await anext(self._output)
        received_at = time.monotonic()
        index = None
        sent_at = None
        if self._indexed:
            try:
                index = read_index(frame.to_ndarray(format="rgb24"))
            except ValueError:
                pass
            else:
                sent_at = self._by_index.get(index)
        if sent_at is None and index is None and frame.pts is not None:
            sent_at = self._by_pts.get(frame.pts)
        if sent_at is not None:
            self.matched += 1
        return ReceivedFrame(
            frame=frame,
            pts=frame.pts,
            index=index,
            received_at=received_at,
            latency=None if sent_at is None else received_at - sent_at,
        )

    async def close(self) -> None:
        """Let go of the output (closes it when it is an async generator). Idempotent."""
        output = self._output if self._output is not None else self._frames
        if isinstance(output, AsyncGenerator):
            await output.aclose()


def _remember(table: OrderedDict[int, float], key: int, when: float) -> None:
    table[key] = when
    table.move_to_end(key)
    while len(table) > MAX_TRACKED:
        table.popitem(last=False)


class Recorder(Closeable):
    """Writes frames to an MP4 file, H.264 (libx264) at the first frame's size.

    ``await recorder.write(frame)`` (or :meth:`record` an async iterable),
    then ``await recorder.close()``, which flushes the encoder and writes the
    MP4 index: a recorder that is not closed leaves no playable file, and
    one closed before any frame writes no file. Frames keep their
    timestamps (any time base; frames whose timestamp does not increase are
    dropped); frames of another size are scaled. Encoding runs in a thread
    of its own; a failure raises :class:`~byockit.protocol.errors.MediaError`.
    """

    def __init__(self, path: str, *, fps: int = 30, crf: int = 23) -> None:
        if not 1 <= fps <= 240:
            raise ValueError(f"fps must be 1-240, got {fps}")
        if not 0 <= crf <= 51:
            raise ValueError(f"crf must be 0-51, got {crf}")
        self.path: Final = str(path)
        self._fps = fps
        self._crf = crf
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "byockit-recorder")
        self._file: BinaryIO | None = None
        self._container: av.container.OutputContainer | None = None
        self._stream: av.VideoStream | None = None
        self._first_pts: int | None = None
        self._last_pts = -1
        self._closed = False
        self.frames_written = 0
        self.frames_dropped = 0

    async def write(self, frame: av.VideoFrame) -> None:
        """Encode one frame (waits while the encoder is busy with the previous one)."""
        if self._closed:
            raise MediaError(f"the recorder of {self.path} is closed")
        await self._in_thread(self._write, frame)

    async def record(self, frames: AsyncIterable[av.VideoFrame]) -> None:
        """Write every frame of ``frames`` until it ends (the recorder stays open)."""
        async for frame in frames:
            await self.write(frame)

    async def close(self) -> None:
        """Flush the encoder and finish the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._in_thread(self._finish)
        finally:
            self._executor.shutdown(wait=False)

    async def _in_thread(self, work: Callable[..., None], *args: object) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, work, *args)

    def _write(self, frame: av.VideoFrame) -> None:
        if frame.pts is None or frame.time_base is None:
            raise MediaError("a frame to record needs pts and time_base")
        ticks = round(frame.pts * frame.time_base / TIME_BASE)
        if self._first_pts is None:
            self._first_pts = ticks
        pts = ticks - self._first_pts
        if pts <= self._last_pts:
            self.frames_dropped += 1
            return
        stream = self._stream if self._stream is not None else self._open(frame)
        image = frame.reformat(width=stream.width, height=stream.height, format="yuv420p")
        image.pts = pts
        image.time_base = TIME_BASE
        self._mux(stream, image)
        self._last_pts = pts
        self.frames_written += 1

    def _open(self, frame: av.VideoFrame) -> av.VideoStream:
        if frame.width % 2 or frame.height % 2:
            raise MediaError(f"frame size {frame.width}x{frame.height} must be even for H.264")
        try:
            # opened here, not by FFmpeg (which opens it at the first packet), to fail at once
            file = open(self.path, "wb")  # noqa: SIM115 - closed in _finish
        except OSError as exc:
            raise MediaError(f"cannot create {self.path}: {exc}") from exc
        try:
            container = av.open(file, "w", format="mp4")
        except av.error.FFmpegError as exc:
            file.close()
            raise MediaError(f"cannot create {self.path}: {exc}") from exc
        stream = container.add_stream("libx264", rate=self._fps)
        stream.width = frame.width
        stream.height = frame.height
        stream.pix_fmt = "yuv420p"
        stream.time_base = TIME_BASE
        stream.codec_context.time_base = TIME_BASE
        stream.codec_context.framerate = Fraction(self._fps)
        stream.codec_context.options = {"preset": "veryfast", "crf": str(self._crf)}
        self._file = file
        self._container = container
        self._stream = stream
        return stream

    def _mux(self, stream: av.VideoStream, image: av.VideoFrame | None) -> None:
        assert self._container is not None
        try:
            self._container.mux(stream.encode(image))
        except av.error.FFmpegError as exc:
            raise MediaError(f"cannot record to {self.path}: {exc}") from exc

    def _finish(self) -> None:
        if self._container is None or self._stream is None or self._file is None:
            return
        try:
            self._mux(self._stream, None)
        finally:
            try:
                self._container.close()
            finally:
                self._file.close()
