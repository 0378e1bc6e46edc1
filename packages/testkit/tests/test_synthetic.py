"""Indexed synthetic video survives encoding, colour effects and resizing; clips are a gateway's."""

from __future__ import annotations

import functools
import io
from fractions import Fraction

import av
import numpy as np
import pytest

from byockit.protocol.media.ts import PACKET_SIZE, parse_packet, parse_pes_header
from byockit.testkit.synthetic import (
    MAX_INDEX,
    indexed_frame,
    make_ts_clip,
    read_index,
    split_segments,
    synthetic_frames,
)

W, H = 160, 90


@functools.cache
def clip(audio: str | None = None, bframes: bool = False) -> bytes:
    return make_ts_clip(2, width=W, height=H, audio=audio, bframes=bframes, gop_seconds=0.5)  # type: ignore[arg-type]


def decoded_indices(data: bytes) -> list[int]:
    with av.open(io.BytesIO(data), "r") as container:
        return [read_index(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]


@pytest.mark.parametrize("size", [(160, 90), (640, 360), (320, 240), (1280, 720)])
@pytest.mark.parametrize("index", [0, 1, 4242, MAX_INDEX])
def test_index_round_trip(size: tuple[int, int], index: int) -> None:
    image = indexed_frame(index, *size)
    assert image.shape == (size[1], size[0], 3)
    assert image.dtype == np.uint8
    assert read_index(image) == index


def test_index_survives_h264() -> None:
    assert decoded_indices(clip()) == list(range(60))


def test_index_reads_from_the_luma_plane_alone() -> None:
    with av.open(io.BytesIO(clip()), "r") as container:
        planes = [f.to_ndarray(format="gray") for f in container.decode(video=0)]
    assert [read_index(plane) for plane in planes] == list(range(60))
    with pytest.raises(ValueError, match="no index code"):
        read_index(np.full((H, W), 128, np.uint8))


def _effects(image: np.ndarray) -> dict[str, np.ndarray]:
    f = image.astype(np.float32)
    return {
        "darker": f * 0.6,
        "flat": f * 0.4 + 80,
        "tint": f * np.array([1.0, 0.7, 0.4]),
        "inverted": 255 - f,
        "noisy": f + np.random.default_rng(0).normal(0, 20, f.shape),
    }


@pytest.mark.parametrize("effect", ["darker", "flat", "tint", "inverted", "noisy"])
def test_index_survives_colour_effects(effect: str) -> None:
    image = indexed_frame(777, 640, 360)
    changed = np.clip(_effects(image)[effect], 0, 255).astype(np.uint8)
    assert read_index(changed) == 777


@pytest.mark.parametrize("size", [(320, 180), (1280, 720), (480, 480), (96, 54)])
def test_index_survives_resizing(size: tuple[int, int]) -> None:
    frame = av.VideoFrame.from_ndarray(indexed_frame(31337, 640, 360), format="rgb24")
    resized = frame.reformat(width=size[0], height=size[1], interpolation="BILINEAR")
    assert read_index(resized.to_ndarray()) == 31337


def test_pictures_without_a_code_are_refused() -> None:
    rng = np.random.default_rng(5)
    no_code = [
        np.zeros((H, W, 3), np.uint8),
        np.full((H, W, 3), 128, np.uint8),
        *(rng.integers(0, 256, (H, W, 3), np.uint8) for _ in range(20)),
    ]
    for image in no_code:
        with pytest.raises(ValueError, match="no index code"):
            read_index(image)
    cell = slice(0, H // 9), slice(round(5 * W / 14), round(6 * W / 14))  # row 0, code cell 5
    gray_cell = indexed_frame(5, W, H)
    gray_cell[cell] = 128
    with pytest.raises(ValueError, match="neither black nor white"):
        read_index(gray_cell)
    flipped = indexed_frame(5, W, H)
    flipped[cell] = 255 - flipped[cell]
    with pytest.raises(ValueError, match="checksum"):
        read_index(flipped)
    with pytest.raises(ValueError, match="shape"):
        read_index(np.zeros((H, W, 4), np.uint8))
    with pytest.raises(ValueError, match="too small"):
        read_index(np.zeros((9, 9, 3), np.uint8))


def test_bad_indices_and_sizes_are_refused() -> None:
    for index in (-1, MAX_INDEX + 1):
        with pytest.raises(ValueError, match="index"):
            indexed_frame(index)
    with pytest.raises(ValueError, match="too small"):
        indexed_frame(0, 40, 30)


def test_the_picture_moves_below_the_code() -> None:
    first, second = indexed_frame(10, W, H), indexed_frame(11, W, H)
    assert (first[H // 3 :] != second[H // 3 :]).mean() > 0.5


def test_synthetic_frames_count_at_fps_in_90khz() -> None:
    frames = list(synthetic_frames(4, fps=24, width=W, height=H))
    assert [f.pts for f in frames] == [0, 3750, 7500, 11250]
    assert all(f.time_base == Fraction(1, 90_000) and f.format.name == "rgb24" for f in frames)
    assert [read_index(f.to_ndarray()) for f in frames] == [0, 1, 2, 3]


def _video_pes_lengths(data: bytes) -> list[int]:
    lengths = []
    for at in range(0, len(data), PACKET_SIZE):
        packet = parse_packet(data[at : at + PACKET_SIZE])
        if packet.unit_start and packet.payload[:4] == b"\x00\x00\x01\xe0":
            header = parse_pes_header(packet.payload)
            assert header is not None
            lengths.append(header.length)
    return lengths


@pytest.mark.parametrize(("audio", "bframes"), [(None, False), ("aac", True), ("opus", False)])
def test_clips_are_made_like_a_gateways(audio: str | None, bframes: bool) -> None:
    data = clip(audio, bframes)
    assert _video_pes_lengths(data) == [0] * 60  # ffmpeg's default: video PES without a length
    with av.open(io.BytesIO(data), "r") as container:
        assert [s.codec_context.name for s in container.streams] == ["h264"] + (
            [audio] if audio else []
        )
        video = [p for p in container.demux(video=0) if p.size]
    assert sum(p.is_keyframe for p in video) == 4  # a keyframe every 0.5 s
    assert any(p.pts != p.dts for p in video) == bframes
    assert decoded_indices(data) == list(range(60))


@pytest.mark.parametrize("gops_per_segment", [1, 3])
def test_segments_are_cut_at_keyframes_and_read_alone(gops_per_segment: int) -> None:
    data = clip("aac")
    segments = split_segments(data, gops_per_segment=gops_per_segment)
    assert b"".join(segments) == data
    assert len(segments) == -(-4 // gops_per_segment)
    start = 0
    for segment in segments:
        pids = [
            parse_packet(segment[at : at + PACKET_SIZE]).pid
            for at in range(0, len(segment), PACKET_SIZE)
        ]
        assert {0x0000, 0x1000} <= set(pids[: pids.index(0x100)])  # PAT and PMT first
        found = decoded_indices(segment)
        assert found == list(range(start, start + len(found)))
        assert len(found) == min(15 * gops_per_segment, 60 - start)
        start += len(found)
    with pytest.raises(ValueError, match="at least 1"):
        split_segments(data, gops_per_segment=0)
