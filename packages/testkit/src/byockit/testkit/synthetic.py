"""Synthetic video whose frames carry their own index, and MPEG-TS clips made from it.

Every frame shows, in its top third, a code of large black and white cells:
its index (24 bits) and a 12-bit CRC of it, with a white and a black
reference cell at the ends of each row. Reading compares each cell with its
row's references, so the code survives lossy H.264 at usual quality,
brightness/contrast changes, colour tints, even inversion, and (since cells
are placed in fractions of the frame) a resize. Below the code a gradient
scrolls and a box moves, so the clip looks and encodes like video.

:func:`make_ts_clip` encodes such frames the way gateways deliver video
(libx264 through PyAV and ffmpeg's default MPEG-TS muxing, which writes
video PES without a length), and :func:`split_segments` cuts a clip at
keyframes into trickle segments, as a gateway does.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Iterator
from typing import Any, Final, Literal

import av
import numpy as np
import numpy.typing as npt

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

INDEX_BITS: Final = 24
MAX_INDEX: Final = (1 << INDEX_BITS) - 1
CRC_BITS: Final = 12
_CRC_POLY: Final = 0x80F
ROWS: Final = 3
COLUMNS: Final = 14
"""Cells per row: a white reference, 12 code cells, a black reference."""
_CELL_HEIGHT: Final = 1 / 9
"""Row height as a fraction of the frame height (square cells at 16:9)."""
_MIN_CONTRAST: Final = 40.0
"""Least luma difference between a row's references for a code to be read."""
_AMBIGUOUS: Final = (0.3, 0.7)
"""A code cell this far between its references (as a fraction) is unreadable."""
AUDIO_RATE: Final = 48_000

RGBImage = npt.NDArray[np.uint8]


def _crc(value: int) -> int:
    crc = 0
    for shift in range(INDEX_BITS - 1, -1, -1):
        feedback = ((crc >> (CRC_BITS - 1)) ^ (value >> shift)) & 1
        crc = (crc << 1) & ((1 << CRC_BITS) - 1)
        if feedback:
            crc ^= _CRC_POLY
    return crc


def _code_bits(index: int) -> list[int]:
    word = index << CRC_BITS | _crc(index)
    total = INDEX_BITS + CRC_BITS
    return [(word >> (total - 1 - i)) & 1 for i in range(total)]


def _cell_bounds(width: int, height: int, row: int, column: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a cell in a frame of this size."""
    return (
        round(row * _CELL_HEIGHT * height),
        round((row + 1) * _CELL_HEIGHT * height),
        round(column * width / COLUMNS),
        round((column + 1) * width / COLUMNS),
    )


def indexed_frame(index: int, width: int = 640, height: int = 360) -> RGBImage:
    """An (H, W, 3) uint8 RGB frame showing ``index`` (0 to 2**24 - 1) and a moving pattern."""
    if not 0 <= index <= MAX_INDEX:
        raise ValueError(f"index must be 0-{MAX_INDEX}, got {index}")
    if width < 4 * COLUMNS or height * _CELL_HEIGHT < 4:
        raise ValueError(f"frame {width}x{height} is too small for the index code")
    band = round(ROWS * _CELL_HEIGHT * height)
    x = np.arange(width, dtype=np.int64)[None, :]
    y = np.arange(height - band, dtype=np.int64)[:, None]
    image = np.empty((height, width, 3), np.uint8)
    below = image[band:]
    below[..., 0] = (x + 3 * index) % 256
    below[..., 1] = (2 * y + x // 2 + index) % 256
    below[..., 2] = (255 - (x + y) // 3 - 5 * index) % 256
    box = max(2, (height - band) // 4)
    box_left = (index * max(1, width // 60)) % (width - box)
    box_top = (height - band - box) // 2
    below[box_top : box_top + box, box_left : box_left + box] = 255
    bits = iter(_code_bits(index))
    for row in range(ROWS):
        for column in range(COLUMNS):
            if column == 0:
                value = 255
            elif column == COLUMNS - 1:
                value = 0
            else:
                value = 255 * next(bits)
            top, bottom, left, right = _cell_bounds(width, height, row, column)
            image[top:bottom, left:right] = value
    return image


def read_index(rgb: npt.NDArray[Any]) -> int:
    """The index a frame of :func:`indexed_frame` shows; :class:`ValueError` if none is readable."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    height, width = rgb.shape[:2]
    if width < 2 * COLUMNS or height * _CELL_HEIGHT < 2:
        raise ValueError(f"image {width}x{height} is too small to hold an index code")
    bits = []
    for row in range(ROWS):
        levels = []
        for column in range(COLUMNS):
            top, bottom, left, right = _cell_bounds(width, height, row, column)
            dy, dx = (bottom - top) // 4, (right - left) // 4
            cell = rgb[top + dy : bottom - dy, left + dx : right - dx]
            levels.append(float(cell.mean()))
        white, black = levels[0], levels[-1]
        contrast = white - black
        if abs(contrast) < _MIN_CONTRAST:
            raise ValueError(f"no index code: row {row} references differ by {abs(contrast):.0f}")
        for column, level in enumerate(levels[1:-1], start=1):
            share = (level - black) / contrast
            if _AMBIGUOUS[0] < share < _AMBIGUOUS[1]:
                raise ValueError(f"no index code: cell {row},{column} is neither black nor white")
            bits.append(int(share >= 0.5))
    word = 0
    for bit in bits:
        word = word << 1 | bit
    index, crc = word >> CRC_BITS, word & ((1 << CRC_BITS) - 1)
    if _crc(index) != crc:
        raise ValueError("no index code: checksum mismatch")
    return index


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
