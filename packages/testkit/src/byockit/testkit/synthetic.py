"""Synthetic video whose frames carry their own index, and MPEG-TS clips made from it.

The frames are :mod:`byockit.protocol.media.pattern`'s indexed test pattern
(re-exported here: :func:`indexed_frame`, :func:`read_index` and its
constants). :func:`make_ts_clip` encodes such frames the way gateways deliver video
(libx264 through PyAV and ffmpeg's default MPEG-TS muxing, which writes
video PES without a length), and :func:`split_segments` cuts a clip at
keyframes into trickle segments, as a gateway does.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Iterator
from typing import Final, Literal

import av
import numpy as np

from byockit.protocol.media.pattern import (
    COLUMNS,
    CRC_BITS,
    INDEX_BITS,
    MAX_INDEX,
    ROWS,
    RGBImage,
    indexed_frame,
    read_index,
)
from byockit.protocol.media.ts import (
    PACKET_SIZE,
    PAT_PID,
    STREAM_TYPE_H264,
    TIME_BASE,
    parse_packet,
    parse_pat,
    parse_pmt,
    parse_section,
)

__all__ = [
    "AUDIO_RATE",
    "COLUMNS",
    "CRC_BITS",
    "INDEX_BITS",
    "MAX_INDEX",
    "ROWS",
    "RGBImage",
    "indexed_frame",
    "make_ts_clip",
    "read_index",
    "split_segments",
    "synthetic_frames",
]

AUDIO_RATE: Final = 48_000


def synthetic_frames(
    count: int, *, fps: int = 30, width: int = 640, height: int = 360
) -> Iterator[av.VideoFrame]:
    """Frames 0..count-1 as RGB video frames, ``pts`` in 1/90000 at ``fps``."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    for index in range(count):
        frame = av.VideoFrame.from_ndarray(indexed_frame(index, width, height), format="rgb24")
        frame.pts = index * 90_000 // fps
        frame.time_base = TIME_BASE
        yield frame


def make_ts_clip(
    seconds: float,
    *,
    fps: int = 30,
    width: int = 640,
    height: int = 360,
    audio: Literal["aac", "opus"] | None = None,
    bframes: bool = False,
    gop_seconds: float = 2.0,
) -> bytes:
    """An MPEG-TS clip of indexed frames, encoded and muxed the way gateways send video.

    libx264 (preset ``veryfast``, a keyframe exactly every ``gop_seconds``,
    two B-frames when ``bframes``) and ffmpeg's MPEG-TS muxer with its
    defaults: video PES without a length, PAT/PMT before every keyframe.
    ``audio`` adds a 440 Hz stereo tone at 48 kHz.
    """
    frame_count = round(seconds * fps)
    out = io.BytesIO()
    with av.open(out, "w", format="mpegts") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width = width
        video.height = height
        video.pix_fmt = "yuv420p"
        video.codec_context.gop_size = max(1, round(gop_seconds * fps))
        video.codec_context.max_b_frames = 2 if bframes else 0
        video.codec_context.options = {"preset": "veryfast", "sc_threshold": "0"}
        sound = None
        if audio == "aac":
            sound = container.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
        elif audio == "opus":
            sound = container.add_stream("libopus", rate=AUDIO_RATE, layout="stereo")
        samples = 0
        frames = synthetic_frames(frame_count, fps=fps, width=width, height=height)
        for position, frame in enumerate(frames):
            container.mux(video.encode(frame))
            while sound is not None and samples * fps < (position + 1) * AUDIO_RATE:
                container.mux(sound.encode(_tone(sound.codec_context, samples)))
                samples += _AUDIO_FRAME_SIZES[sound.codec_context.name]
        container.mux(video.encode(None))
        if sound is not None:
            container.mux(sound.encode(None))
    return out.getvalue()


_AUDIO_FRAME_SIZES: Final = {"aac": 1024, "libopus": 960}


def _tone(codec: av.AudioCodecContext, start: int) -> av.AudioFrame:
    """One encoder frame of a 440 Hz stereo tone from sample ``start``, in the encoder's format."""
    t = (start + np.arange(_AUDIO_FRAME_SIZES[codec.name])) / AUDIO_RATE
    wave = 0.2 * np.sin(2 * math.pi * 440 * t)
    if codec.format.name == "fltp":  # AAC: planar float
        frame = av.AudioFrame.from_ndarray(
            np.stack([wave, wave]).astype(np.float32), format="fltp", layout="stereo"
        )
    else:  # Opus: interleaved 16-bit
        interleaved = (np.repeat(wave, 2) * 32767).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(interleaved, format="s16", layout="stereo")
    frame.sample_rate = AUDIO_RATE
    frame.pts = start
    return frame


def split_segments(clip: bytes, *, gops_per_segment: int = 1) -> list[bytes]:
    """Cut a clip of :func:`make_ts_clip` at keyframes, ``gops_per_segment`` GOPs a segment.

    Like a gateway's segmenter, each cut falls before the PAT and PMT that
    ffmpeg writes ahead of every keyframe, so each segment can be read alone.
    """
    if gops_per_segment < 1:
        raise ValueError(f"gops_per_segment must be at least 1, got {gops_per_segment}")
    packets = [clip[at : at + PACKET_SIZE] for at in range(0, len(clip), PACKET_SIZE)]
    pmt_pid, video_pid = _program_pids(packets)
    tables = {PAT_PID, _SDT_PID, pmt_pid}
    cuts = []
    keyframes = 0
    for position, raw in enumerate(packets):
        packet = parse_packet(raw)
        if packet.pid == video_pid and packet.unit_start and packet.random_access:
            if keyframes % gops_per_segment == 0:
                start = position
                while start > 0 and parse_packet(packets[start - 1]).pid in tables:
                    start -= 1
                cuts.append(start)
            keyframes += 1
    if not cuts:
        raise ValueError("the clip has no keyframe")
    bounds = [0, *cuts[1:], len(packets)]
    return [b"".join(packets[a:b]) for a, b in itertools.pairwise(bounds)]


_SDT_PID: Final = 0x11


def _program_pids(packets: list[bytes]) -> tuple[int, int]:
    """(PMT PID, video PID) of a clip whose tables fit one packet each, as ffmpeg's do."""
    pmt_pid: int | None = None
    for raw in packets:
        packet = parse_packet(raw)
        if not packet.unit_start or packet.pid not in (PAT_PID, pmt_pid):
            continue
        section = packet.payload[1 + packet.payload[0] :]
        body = parse_section(section[: 3 + ((section[1] & 0x0F) << 8 | section[2])]).body
        if packet.pid == PAT_PID:
            pmt_pid = parse_pat(body)
            continue
        for stream in parse_pmt(body):
            if stream.stream_type == STREAM_TYPE_H264:
                return packet.pid, stream.pid
    raise ValueError("the clip has no PAT and PMT with an H.264 stream")
