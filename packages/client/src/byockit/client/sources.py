"""Video sources: async iterators of ``av.VideoFrame`` with ``pts`` in 1/90000 from 0.

Each source is a small object in the manner of aiortc's ``MediaPlayer``:
``async for frame in source`` and ``await source.close()`` (or ``async
with source``). Every frame has ``time_base`` 1/90000 and strictly
increasing ``pts`` starting at 0, what
:class:`~byockit.protocol.media.SegmentEncoder` and a WebRTC track expect.

- :class:`TestPatternSource`: the indexed test pattern
  (:mod:`byockit.protocol.media.pattern`), so output frames can be matched
  to the input frame they came from.
- :class:`FileSource`: any file or URL PyAV can open, decoded in a thread.
- :class:`WebcamSource`: a camera through PyAV (v4l2 on Linux), else OpenCV.
- :class:`PushSource`: frames the application pushes (numpy or torch).

Files and the test pattern are paced in real time by their timestamps by
default (a live stream's rate); cameras and pushed frames come when they come.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Generator
from typing import Any, Final, NamedTuple, Self

import av
import numpy as np
import numpy.typing as npt

from byockit.protocol.errors import MediaError, StreamClosedError
from byockit.protocol.lifecycle import Closeable
from byockit.protocol.media import CLOCK_HZ, TIME_BASE, video_frame
from byockit.protocol.media.pattern import MAX_INDEX, indexed_frame

logger = logging.getLogger(__name__)

READ_AHEAD: Final = 4
"""Frames a reader thread decodes ahead of the consumer."""
MAX_LAG: Final = 0.5
"""Seconds a paced source may fall behind before it resumes from now instead of bursting."""
DEFAULT_PUSH_QUEUE: Final = 4
"""Frames :class:`PushSource` holds before ``push`` waits."""


class VideoSource(Closeable):
    """Base of the sources: an async iterator of frames that must be closed."""

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> av.VideoFrame:
        raise NotImplementedError

    async def close(self) -> None:
        """Release what the source holds; iteration ends. Idempotent."""


class _Pacer:
    """Sleeps until each frame's presentation time, measured from the first frame."""

    def __init__(self) -> None:
        self._origin: float | None = None

    async def wait(self, pts: int) -> None:
        now = time.monotonic()
        due = pts / CLOCK_HZ
        if self._origin is None or now - (self._origin + due) > MAX_LAG:
            self._origin = now - due
            return
        delay = self._origin + due - now
        if delay > 0:
            await asyncio.sleep(delay)


class TestPatternSource(VideoSource):
    """Frames of the indexed test pattern: frame ``n`` shows index ``n`` (mod 2**24).

    ``count`` frames (``None``: without end) at ``fps``; ``realtime`` paces
    them at that rate.
    """

    __test__ = False  # a source, not a pytest test class

    def __init__(
        self,
        fps: int = 30,
        width: int = 640,
        height: int = 360,
        count: int | None = None,
        *,
        realtime: bool = True,
    ) -> None:
        if not 1 <= fps <= 240:
            raise ValueError(f"fps must be 1-240, got {fps}")
        if count is not None and count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        indexed_frame(0, width, height)  # a clear error now for a size that cannot hold the code
        self.fps: Final = fps
        self.width: Final = width
        self.height: Final = height
        self.count: Final = count
        self._pacer = _Pacer() if realtime else None
        self._next = 0
        self._closed = False

    async def __anext__(self) -> av.VideoFrame:
        if self._closed or (self.count is not None and self._next >= self.count):
            raise StopAsyncIteration
        position = self._next
        self._next += 1
        pts = position * CLOCK_HZ // self.fps
        if self._pacer is not None:
            await self._pacer.wait(pts)
        image = indexed_frame(position % (MAX_INDEX + 1), self.width, self.height)
        return video_frame(image, pts)

    async def close(self) -> None:
        self._closed = True


class _Failure(NamedTuple):
    error: Exception


class _End:
    pass


_END: Final = _End()


class _ReaderThread:
    """Runs a blocking frame generator in a thread of its own, :data:`READ_AHEAD` frames ahead.

    Blocking reads (files, cameras) stay off the event loop without a
    thread hop per frame. :meth:`get` returns ``None`` at the end and raises
    the generator's error.
    """

    def __init__(
        self, name: str, produce: Callable[[], Generator[av.VideoFrame, None, None]]
    ) -> None:
        self._produce = produce
        self._loop = asyncio.get_running_loop()
        self._room = threading.Semaphore(READ_AHEAD)
        self._frames: asyncio.Queue[av.VideoFrame | _Failure | _End] = asyncio.Queue()
        self._stopping = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    async def get(self) -> av.VideoFrame | None:
        if self._done:
            return None
        item = await self._frames.get()
        if isinstance(item, _End):
            self._done = True
            return None
        if isinstance(item, _Failure):
            self._done = True
            raise item.error
        self._room.release()
        return item

    async def stop(self) -> None:
        self._stopping.set()
        self._room.release()  # wake the thread if it waits for room
        await asyncio.to_thread(self._thread.join)

    def _run(self) -> None:
        outcome: _Failure | _End = _END
        try:
            with contextlib.closing(self._produce()) as frames:
                for frame in frames:
                    self._room.acquire()
                    if self._stopping.is_set():
                        return
                    self._to_loop(frame)
        except Exception as exc:
            outcome = _Failure(exc)
        self._to_loop(outcome)

    def _to_loop(self, item: av.VideoFrame | _Failure | _End) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
            self._loop.call_soon_threadsafe(self._frames.put_nowait, item)


class _ThreadedSource(VideoSource):
    """A source whose frames come from a blocking generator run by a :class:`_ReaderThread`."""

    def __init__(self, name: str, *, realtime: bool) -> None:
        self._name = name
        self._pacer = _Pacer() if realtime else None
        self._reader: _ReaderThread | None = None
        self._closed = False

    def _frames(self) -> Generator[av.VideoFrame, None, None]:
        raise NotImplementedError

    async def __anext__(self) -> av.VideoFrame:
        if self._closed:
            raise StopAsyncIteration
        if self._reader is None:
            self._reader = _ReaderThread(self._name, self._frames)
        frame = await self._reader.get()
        if frame is None:
            raise StopAsyncIteration
        if self._pacer is not None and frame.pts is not None:
            await self._pacer.wait(frame.pts)
        return frame

    async def close(self) -> None:
        self._closed = True
        if self._reader is not None:
            await self._reader.stop()


class _Timeline:
    """Makes frames' timestamps 90 kHz, starting at 0 and strictly increasing."""

    def __init__(self, fallback_step: int) -> None:
        self._step = fallback_step
        self._offset: int | None = None
        self._last = -1

    def stamp(self, frame: av.VideoFrame) -> av.VideoFrame:
        if frame.pts is None or frame.time_base is None:
            pts = self._last + self._step
        else:
            ticks = round(frame.pts * frame.time_base * CLOCK_HZ)
            if self._offset is None:
                self._offset = -ticks
            pts = ticks + self._offset
            if pts <= self._last:  # a jump back (a looped file, a camera's clock): continue on
                self._offset += self._last + self._step - pts
                pts = self._last + self._step
        frame.pts = pts
        frame.time_base = TIME_BASE
        self._last = pts
        return frame


class FileSource(_ThreadedSource):
    """The video of a file (or any URL PyAV opens), decoded in a thread; audio is ignored.

    ``loop`` starts over at the end, the timestamps running on; ``realtime``
    paces the frames by their timestamps. A file that cannot be opened or
    has no video stream raises :class:`~byockit.protocol.errors.MediaError`
    from the first iteration.
    """

    def __init__(self, path: str, *, loop: bool = False, realtime: bool = True) -> None:
        super().__init__("byockit-file-source", realtime=realtime)
        self.path: Final = str(path)
        self.loop: Final = loop

    def _frames(self) -> Generator[av.VideoFrame, None, None]:
        last = -1
        offset = 0
        while True:
            produced = False
            with _open_input(self.path) as container:
                stream = _video_stream(container, self.path)
                step = _frame_step(stream)
                first: int | None = None
                for frame in container.decode(stream):
                    ticks = _ticks(frame, fallback=last + step - offset)
                    if first is None:
                        first = ticks
                        offset = last + step - first if last >= 0 else -first
                    pts = max(ticks + offset, last + 1)
                    last = pts
                    produced = True
                    frame.pts = pts
                    frame.time_base = TIME_BASE
                    yield frame
            if not self.loop:
                return
            if not produced:
                raise MediaError(f"{self.path} has no decodable video frame to loop over")


def _open_input(
    path: str, input_format: str | None = None, options: dict[str, str] | None = None
) -> av.container.InputContainer:
    try:
        return av.open(path, "r", format=input_format, options=options)
    except (av.error.FFmpegError, OSError) as exc:
        raise MediaError(f"cannot open {path}: {exc}") from exc


def _video_stream(container: av.container.InputContainer, path: str) -> av.VideoStream:
    if not container.streams.video:
        raise MediaError(f"{path} has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return stream


def _frame_step(stream: av.VideoStream) -> int:
    """One frame's duration in 90 kHz ticks (30 fps when the stream does not say)."""
    rate = stream.average_rate or stream.guessed_rate
    return round(CLOCK_HZ / rate) if rate else CLOCK_HZ // 30


def _ticks(frame: av.VideoFrame, *, fallback: int) -> int:
    if frame.pts is None or frame.time_base is None:
        return fallback
    return round(frame.pts * frame.time_base * CLOCK_HZ)


_CAMERA_FORMATS: Final = {"linux": "v4l2", "darwin": "avfoundation", "win32": "dshow"}


class WebcamSource(_ThreadedSource):
    """A camera: PyAV's capture input for this platform (v4l2 on Linux), else OpenCV.

    ``device`` is what the platform's input names a camera (``/dev/video0``
    on Linux, ``0`` with avfoundation, ``video=Name`` with dshow; a camera
    index for OpenCV). ``width``, ``height`` and ``fps`` ask the camera for
    that mode. OpenCV (``opencv-python``, an optional extra) is imported only
    when PyAV has no capture input here. A camera that cannot be opened
    raises :class:`~byockit.protocol.errors.MediaError` from the first iteration.
    """

    def __init__(
        self,
        device: str = "/dev/video0",
        *,
        width: int | None = None,
        height: int | None = None,
        fps: int | None = None,
    ) -> None:
        super().__init__("byockit-webcam-source", realtime=False)
        self.device: Final = device
        self._mode = {"width": width, "height": height, "fps": fps}

    def _frames(self) -> Generator[av.VideoFrame, None, None]:
        input_format = _CAMERA_FORMATS.get(sys.platform)
        if input_format is not None and _has_format(input_format):
            return self._pyav_frames(input_format)
        return self._opencv_frames()

    def _pyav_frames(self, input_format: str) -> Generator[av.VideoFrame, None, None]:
        options = {}
        width, height, fps = self._mode["width"], self._mode["height"], self._mode["fps"]
        if width is not None and height is not None:
            options["video_size"] = f"{width}x{height}"
        if fps is not None:
            options["framerate"] = str(fps)
        with _open_input(self.device, input_format, options) as container:
            stream = _video_stream(container, self.device)
            timeline = _Timeline(_frame_step(stream))
            for frame in container.decode(stream):
                yield timeline.stamp(frame)

    def _opencv_frames(self) -> Generator[av.VideoFrame, None, None]:
        try:
            cv2: Any = importlib.import_module("cv2")
        except ImportError as exc:
            raise MediaError(
                f"no camera input on {sys.platform}: PyAV has no capture device here "
                "and OpenCV is not installed (pip install opencv-python)"
            ) from exc
        source: int | str = int(self.device) if self.device.isdigit() else self.device
        capture = cv2.VideoCapture(source)
        try:
            if not capture.isOpened():
                raise MediaError(f"OpenCV cannot open the camera {self.device!r}")
            for prop, value in (
                (cv2.CAP_PROP_FRAME_WIDTH, self._mode["width"]),
                (cv2.CAP_PROP_FRAME_HEIGHT, self._mode["height"]),
                (cv2.CAP_PROP_FPS, self._mode["fps"]),
            ):
                if value is not None:
                    capture.set(prop, value)
            start = time.monotonic()
            last = -1
            while True:
                ok, bgr = capture.read()
                if not ok:
                    return
                pts = max(round((time.monotonic() - start) * CLOCK_HZ), last + 1)
                last = pts
                yield video_frame(np.ascontiguousarray(bgr[..., ::-1]), pts)
        finally:
            capture.release()


def _has_format(name: str) -> bool:
    return any(name in entry.split(",") for entry in av.formats_available)


class PushSource(VideoSource):
    """Frames the application pushes: ``await source.push(image)``, then ``await source.close()``.

    An image is an (H, W, 3) uint8 RGB numpy array or a torch tensor of that
    shape (on any device). Frames are stamped with the time they were
    pushed. Backpressure, not dropping: at most ``max_queued`` frames wait,
    and ``push`` waits for room, so a producer faster than the stream is
    held back (every pushed frame is sent). ``close`` ends the iteration
    once the queued frames are out; a push after it raises
    :class:`~byockit.protocol.errors.StreamClosedError`.
    """

    def __init__(self, *, max_queued: int = DEFAULT_PUSH_QUEUE) -> None:
        if max_queued < 1:
            raise ValueError(f"max_queued must be at least 1, got {max_queued}")
        self._queue: asyncio.Queue[av.VideoFrame | _End] = asyncio.Queue(max_queued + 1)
        self._room = asyncio.Semaphore(max_queued)
        self._origin: float | None = None
        self._last = -1
        self._closed = False
        self._ended = False

    async def push(self, image: Any) -> None:
        """Queue one image as the next frame; waits while ``max_queued`` frames wait."""
        self._check_open()
        rgb = _as_rgb_array(image)
        await self._room.acquire()
        try:
            self._check_open()
        except StreamClosedError:
            self._room.release()
            raise
        now = time.monotonic()
        if self._origin is None:
            self._origin = now
        pts = max(round((now - self._origin) * CLOCK_HZ), self._last + 1)
        try:
            frame = video_frame(rgb, pts)
        except MediaError:
            self._room.release()
            raise
        self._last = pts
        self._queue.put_nowait(frame)

    def _check_open(self) -> None:
        if self._closed:
            raise StreamClosedError("the push source is closed")

    async def __anext__(self) -> av.VideoFrame:
        if self._ended:
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, _End):
            self._ended = True
            raise StopAsyncIteration
        self._room.release()
        return item

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(_END)


def _as_rgb_array(image: Any) -> npt.NDArray[np.uint8]:
    """A numpy view of a numpy array or a torch tensor (moved to the CPU)."""
    array = image.detach().cpu().numpy() if hasattr(image, "detach") else image
    if not isinstance(array, np.ndarray):
        raise MediaError(f"expected a numpy array or a torch tensor, got {type(image).__name__}")
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise MediaError(f"expected an (H, W, 3) uint8 RGB image, got {array.dtype} {array.shape}")
    return array
