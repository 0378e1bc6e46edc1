"""A synthetic test clip: indexed frames, in each form a test publishes video.

Every frame of a :class:`SyntheticClip` shows its own index
(:mod:`byockit.testkit.synthetic`), so a test can match each output frame to
its input after encoding, transport and processing, and see exactly which
frames were lost.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Iterator

import av
import numpy as np

from byockit.testkit.synthetic import (
    RGBImage,
    indexed_frame,
    make_ts_clip,
    read_index,
    split_segments,
    synthetic_frames,
)


class SyntheticClip:
    """``seconds`` of the indexed test pattern at ``fps``, ``width`` x ``height``.

    Publish it as :meth:`frames` (``av.VideoFrame`` s, e.g. to
    ``FakeStream.publish``, which paces them in real time), :meth:`live`
    (the same paced in real time: a live source for ``WhipPublisher`` or
    ``TrickleDirect``) or :attr:`segments` (MPEG-TS as a gateway sends it,
    one GOP of ``gop_seconds`` a segment). :meth:`index_of` reads a frame's
    index back, :meth:`image` gives a frame's pixels as sent.
    """

    def __init__(
        self,
        seconds: float = 2.0,
        *,
        fps: int = 30,
        width: int = 160,
        height: int = 96,
        gop_seconds: float = 1.0,
    ) -> None:
        if not seconds > 0 or not gop_seconds > 0:
            raise ValueError("seconds and gop_seconds must be positive")
        if fps < 1:
            raise ValueError(f"fps must be at least 1, got {fps!r}")
        if width < 2 or height < 2 or width % 2 or height % 2:
            raise ValueError(f"width and height must be even (H.264 4:2:0), got {width}x{height}")
        indexed_frame(0, width, height)  # raises if the size cannot hold the index code
        self.seconds = seconds
        self.fps = fps
        self.width = width
        self.height = height
        self.gop_seconds = gop_seconds
        self.count = max(1, round(seconds * fps))
        """The number of frames; their indexes are 0 to ``count - 1``."""
        self.gop_frames = max(1, round(gop_seconds * fps))

    def __repr__(self) -> str:
        return f"<SyntheticClip {self.count} frames {self.width}x{self.height} at {self.fps} fps>"

    def frames(self) -> Iterator[av.VideoFrame]:
        """Frames 0 to ``count - 1`` (RGB, ``pts`` at ``fps`` in 1/90000), made afresh each call."""
        return synthetic_frames(self.count, fps=self.fps, width=self.width, height=self.height)

    async def live(self) -> AsyncIterator[av.VideoFrame]:
        """:meth:`frames`, each when its timestamp says, as a camera delivers them."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        for frame in self.frames():
            await asyncio.sleep(max(0.0, start + float(frame.time or 0) - loop.time()))
            yield frame

    def image(self, index: int) -> RGBImage:
        """The pixels of frame ``index`` as sent: (H, W, 3) uint8 RGB, to compare output with."""
        if not 0 <= index < self.count:
            raise IndexError(f"the clip has no frame {index}")
        return indexed_frame(index, self.width, self.height)

    @functools.cached_property
    def segments(self) -> tuple[bytes, ...]:
        """The clip as MPEG-TS trickle segments, one GOP each (encoded on first use)."""
        clip = make_ts_clip(
            self.count / self.fps,
            fps=self.fps,
            width=self.width,
            height=self.height,
            gop_seconds=self.gop_frames / self.fps,
        )
        return tuple(split_segments(clip))

    def segment_indexes(self, seq: int) -> range:
        """The indexes of the frames in :attr:`segments` ``[seq]``."""
        if not 0 <= seq * self.gop_frames < self.count:
            raise IndexError(f"the clip has no segment {seq}")
        return range(seq * self.gop_frames, min((seq + 1) * self.gop_frames, self.count))

    @staticmethod
    def index_of(frame: av.VideoFrame | np.ndarray) -> int | None:
        """The index a frame shows (an ``av.VideoFrame`` or RGB array); ``None`` if unreadable."""
        image = frame.to_ndarray(format="rgb24") if isinstance(frame, av.VideoFrame) else frame
        try:
            return read_index(image)
        except ValueError:
            return None
