"""Frames in, low-latency MPEG-TS out: one GOP per trickle segment (PROTOCOL.md 6).

libx264 with zero-latency tuning (no B-frames, no lookahead: each frame's
packet comes out of the call that took the frame), an IDR picture forced at
every segment start and no other keyframes, so each segment is exactly one
GOP that a reader can start with. Bytes come out per frame, ready to be
written into the current trickle segment as they are produced.
"""

from __future__ import annotations

from collections import deque
from fractions import Fraction
from typing import Any, Final

import attrs
import av
import numpy as np
import numpy.typing as npt
from av.video.frame import PictureType

from byockit.protocol.errors import MediaError
from byockit.protocol.media.audio import AudioFormat, AudioPacket
from byockit.protocol.media.convert import TO_YUV420, Reformatter
from byockit.protocol.media.mux import TsMuxer
from byockit.protocol.media.ts import CLOCK_HZ, TIME_BASE

X264_PRESETS: Final = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)
MAX_PENDING_AUDIO: Final = 64
"""Audio packets kept while no segment can take them (before the first frame,
or until the next frame starts a segment that announces their format); the
oldest go first."""


@attrs.frozen
class EncodedChunk:
    """Bytes of the output stream; ``segment_start``: they begin a new segment (an IDR)."""

    data: bytes = attrs.field(repr=lambda data: f"<{len(data)} bytes>")
    segment_start: bool


def video_frame(rgb: npt.NDArray[np.uint8], pts: int) -> av.VideoFrame:
    """Wrap an (H, W, 3) uint8 RGB array as a frame at ``pts`` (90 kHz ticks)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise MediaError(f"expected an (H, W, 3) uint8 RGB array, got {rgb.dtype} {rgb.shape}")
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    frame.pts = pts
    frame.time_base = TIME_BASE
    return frame


class SegmentEncoder:
    """Encodes frames (and passes audio through) into MPEG-TS segments; not thread-safe.

    A new segment starts at the first frame, every ``segment_seconds`` of
    presentation time, when the frame size changes (the encoder is rebuilt
    for the new size), when timestamps stop increasing (a restarted source)
    and at the first frame after audio of a new format arrived (each
    segment's PMT announces its audio stream). Output timestamps are the
    input frames' own.

    ``preset`` trades x264's speed for compression; ``crf`` sets the quality
    (x264's scale, lower is better); ``max_bitrate``
    (bits/s) caps the rate with a one-second buffer. ``audio`` announces an
    audio stream from the first segment on, before its first packet.
    """

    def __init__(
        self,
        *,
        fps: int = 30,
        segment_seconds: float = 1.0,
        crf: int = 23,
        preset: str = "veryfast",
        max_bitrate: int | None = None,
        audio: AudioFormat | None = None,
    ) -> None:
        if not 1 <= fps <= 240:
            raise ValueError(f"fps must be 1-240, got {fps}")
        if not segment_seconds > 0:
            raise ValueError(f"segment_seconds must be positive, got {segment_seconds}")
        if preset not in X264_PRESETS:
            raise ValueError(f"preset must be one of {', '.join(X264_PRESETS)}, got {preset!r}")
        if not 0 <= crf <= 51:
            raise ValueError(f"crf must be 0-51, got {crf}")
        if max_bitrate is not None and max_bitrate <= 0:
            raise ValueError(f"max_bitrate must be positive, got {max_bitrate}")
        self._fps = fps
        self._segment_ticks = round(segment_seconds * CLOCK_HZ)
        self._options = {
            "preset": preset,
            "tune": "zerolatency",
            "crf": str(crf),
            "forced-idr": "1",
            # keyframes only where forced; access unit delimiters as ffmpeg's muxer adds them
            "x264-params": "keyint=infinite:scenecut=0:aud=1",
        }
        if max_bitrate is not None:
            self._options |= {"maxrate": str(max_bitrate), "bufsize": str(max_bitrate)}
        self._muxer = TsMuxer()
        self._to_yuv420 = Reformatter("yuv420p", TO_YUV420)
        self._codec: av.VideoCodecContext | None = None
        self._size: tuple[int, int] | None = None
        self._segment_open = False
        self._segment_start = 0
        self._last_pts: int | None = None
        self._audio = audio
        """The audio format the next segment announces."""
        self._segment_audio: AudioFormat | None = None
        self._pending_audio: deque[AudioPacket] = deque(maxlen=MAX_PENDING_AUDIO)

    def encode(self, frame: av.VideoFrame) -> list[EncodedChunk]:
        """Encode one frame (any pixel format; ``pts`` and ``time_base`` set)."""
        pts = _pts_90khz(frame)
        size = (frame.width, frame.height)
        if size[0] % 2 or size[1] % 2 or not all(size):
            raise MediaError(f"frame size {size[0]}x{size[1]} must be even and non-zero for H.264")
        chunks = []
        if self._codec is None or size != self._size:
            chunks += self._drain()
            self._codec = self._open_codec(*size)
            self._size = size
            new_segment = True
        else:
            new_segment = (
                not self._segment_open
                or pts - self._segment_start >= self._segment_ticks
                or (self._last_pts is not None and pts <= self._last_pts)
                or self._audio != self._segment_audio
            )
        self._last_pts = pts
        packets = _encode(self._codec, self._to_yuv420(frame), pts, keyframe=new_segment)
        return chunks + self._write(packets)

    def add_audio(self, packet: AudioPacket) -> list[EncodedChunk]:
        """Pass one audio packet through into the current segment (or keep it for the next)."""
        self._audio = packet.format
        if self._segment_open and packet.format == self._segment_audio:
            return [EncodedChunk(self._muxer.audio(packet), segment_start=False)]
        self._pending_audio.append(packet)
        return []

    def flush(self) -> list[EncodedChunk]:
        """End the stream: everything the encoder still holds. A later frame starts afresh."""
        chunks = self._drain()
        self._codec = None
        self._size = None
        self._segment_open = False
        self._last_pts = None
        self._pending_audio.clear()
        return chunks

    def _open_codec(self, width: int, height: int) -> av.VideoCodecContext:
        codec = av.CodecContext.create("libx264", "w")
        codec.width = width
        codec.height = height
        codec.pix_fmt = "yuv420p"
        codec.time_base = TIME_BASE
        codec.framerate = Fraction(self._fps)
        codec.max_b_frames = 0
        codec.options = dict(self._options)
        try:
            codec.open()
        except av.error.FFmpegError as exc:
            raise MediaError(f"cannot open libx264 at {width}x{height}: {exc}") from exc
        return codec

    def _drain(self) -> list[EncodedChunk]:
        if self._codec is None:
            return []
        try:
            packets = self._codec.encode(None)
        except av.error.FFmpegError as exc:
            raise MediaError(f"libx264 failed to flush: {exc}") from exc
        return self._write(packets)

    def _write(self, packets: list[av.Packet[Any]]) -> list[EncodedChunk]:
        chunks = []
        data = bytearray()
        starts = False
        for packet in packets:
            pts = packet.pts
            if pts is None:
                raise MediaError("libx264 returned a packet without a timestamp")
            dts = pts if packet.dts is None else packet.dts
            if packet.is_keyframe:
                if data:
                    chunks.append(EncodedChunk(bytes(data), starts))
                    data = bytearray()
                starts = True
                self._segment_open = True
                self._segment_start = pts
                self._segment_audio = self._audio
                data += self._muxer.program(self._segment_audio)
                data += self._muxer.video(bytes(packet), pts, dts, keyframe=True)
                while self._pending_audio:
                    held = self._pending_audio.popleft()
                    if held.format == self._segment_audio:
                        data += self._muxer.audio(held)
            elif self._segment_open:
                data += self._muxer.video(bytes(packet), pts, dts, keyframe=False)
            else:
                raise MediaError("libx264 did not start with a keyframe")
        if data:
            chunks.append(EncodedChunk(bytes(data), starts))
        return chunks


def _pts_90khz(frame: av.VideoFrame) -> int:
    if frame.pts is None or frame.time_base is None:
        raise MediaError("a frame to encode needs pts and time_base")
    return round(frame.pts * frame.time_base * CLOCK_HZ)


def _encode(
    codec: av.VideoCodecContext, image: av.VideoFrame, pts: int, *, keyframe: bool
) -> list[av.Packet[Any]]:
    """Encode a yuv420p frame at ``pts``, forcing an IDR or forbidding one, without changing it.

    The picture type must always be set: a decoded frame still carries its
    source's type, and libx264 would obey it.
    """
    saved = (image.pts, image.time_base, image.pict_type)
    image.pts = pts
    image.time_base = TIME_BASE
    image.pict_type = PictureType.I if keyframe else PictureType.NONE
    try:
        return codec.encode(image)
    except av.error.FFmpegError as exc:
        raise MediaError(f"libx264 failed to encode a frame: {exc}") from exc
    finally:
        image.pts, image.time_base, image.pict_type = saved
