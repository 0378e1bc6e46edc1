"""The worker benchmark's input video, encoded once before anything is measured.

Every frame shows its index (:func:`byockit.testkit.synthetic.indexed_frame`)
and is encoded with byockit's :class:`SegmentEncoder` as the fake
orchestrator's ``publish`` does (x264 ``ultrafast``, one GOP per 1 s
segment), so that publishing during a measurement only writes bytes: the
harness's own CPU stays off the workers' cores. Timestamps are 30 fps
apart whatever rate the clip is later published at, so that the
``max_framerate`` cap of either worker never drops a frame and an input
faster than real time is a genuine overload.

:func:`codec_floor` is the raw floor: PyAV decoding the clip and libx264
re-encoding it in one process, nothing else (back to back, or paced as a
live stream comes, optionally with the RGB round trip of a numpy processor).
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from typing import Final

import attrs
import av
import numpy as np

from byockit.protocol.media import TIME_BASE, SegmentEncoder, video_frame
from byockit.protocol.media.convert import TO_YUV420, Reformatter
from byockit.testkit.synthetic import indexed_frame
from byockit.worker.frames import FrameConverter, FrameFormat

CLIP_FPS: Final = 30
"""The clip's timestamps are this far apart, whatever rate it is published at."""
_TICKS_PER_FRAME: Final = 90_000 // CLIP_FPS


@attrs.frozen
class Clip:
    """Encoded frames 0..N-1: ``frames[i]`` holds frame i's MPEG-TS bytes; ``starts[i]``: a GOP."""

    width: int
    height: int
    frames: list[bytes] = attrs.field(repr=False)
    starts: list[bool] = attrs.field(repr=False)

    def __len__(self) -> int:
        return len(self.frames)

    def segments(self, count: int) -> Iterator[range]:
        """The indices of frames 0..count-1, one range per trickle segment (GOP)."""
        first = 0
        for index in range(1, count + 1):
            if index == count or self.starts[index]:
                yield range(first, index)
                first = index


def _frame(args: tuple[int, int, int]) -> np.ndarray:
    return indexed_frame(*args)


def encode_clip(width: int, height: int, count: int) -> Clip:
    """``count`` indexed frames; the pictures are drawn in two processes, encoded here."""
    encoder = SegmentEncoder(fps=CLIP_FPS, preset="ultrafast")
    frames: list[bytes] = []
    starts: list[bool] = []
    with ProcessPoolExecutor(2) as pool:
        pictures = pool.map(_frame, ((i, width, height) for i in range(count)), chunksize=16)
        for index, rgb in enumerate(pictures):
            chunks = encoder.encode(video_frame(rgb, index * _TICKS_PER_FRAME))
            if not chunks:
                raise RuntimeError(f"the encoder held frame {index} back")
            frames.append(b"".join(chunk.data for chunk in chunks))
            starts.append(chunks[0].segment_start)
    if encoder.flush():
        raise RuntimeError("the encoder held frames back until the end")
    return Clip(width, height, frames, starts)


def codec_floor(
    clip: Clip, count: int, preset: str, *, rate: float | None = None, rgb: bool = False
) -> float:
    """CPU seconds per frame to decode ``count`` frames with PyAV and re-encode them with x264.

    ``preset`` (with zero-latency tuning) is the worker's own, so each
    worker is compared with the floor of the encoder settings it uses.
    ``rate``: the frames come that many a second, the process sleeping in
    between as a live stream's worker waits for its next frame (idle threads
    and cold caches cost CPU that back-to-back frames do not pay); ``None``:
    back to back. ``rgb``: each frame also goes to RGB and back between the
    decoder and the encoder, the conversions a numpy processor's frames get
    in byockit's worker.
    """
    data = b"".join(clip.frames[:count])
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height = clip.width, clip.height
    encoder.pix_fmt = "yuv420p"
    encoder.time_base = TIME_BASE
    encoder.framerate = Fraction(CLIP_FPS)
    encoder.options = {"preset": preset, "tune": "zerolatency"}
    converter = FrameConverter(FrameFormat.numpy())
    to_yuv420 = Reformatter("yuv420p", TO_YUV420)
    decoded = 0
    began = time.process_time()
    due = time.perf_counter()
    with av.open(io.BytesIO(data), mode="r", format="mpegts") as container:
        for frame in container.decode(video=0):
            if rgb:
                pixels = converter.to_processor(frame, None)
                frame = to_yuv420(converter.to_video(pixels, frame.pts or 0))
            encoder.encode(frame)
            decoded += 1
            if rate is not None:
                due += 1 / rate
                time.sleep(max(0.0, due - time.perf_counter()))
    encoder.encode(None)
    spent = time.process_time() - began
    if decoded != count:
        raise RuntimeError(f"the floor decoded {decoded} of {count} frames")
    return spent / count
