"""SegmentEncoder: low-latency MPEG-TS, one GOP per segment, timestamps and audio passed through."""

from __future__ import annotations

import functools
import io
import itertools
from collections.abc import Iterable

import av
import numpy as np
import pytest
from av.video.frame import PictureType

from byockit.protocol.errors import MediaError
from byockit.protocol.media import (
    AudioFormat,
    AudioPacket,
    EncodedChunk,
    MediaItem,
    SegmentEncoder,
    StreamDecoder,
    video_frame,
)
from byockit.protocol.media.demux import TsDemuxer, VideoLoss, VideoUnit
from byockit.protocol.media.h264 import NAL_IDR, NAL_PPS, NAL_SPS, leading_nal_types
from byockit.protocol.media.ts import PACKET_SIZE, TIME_BASE, parse_packet, parse_pes_header
from byockit.testkit.synthetic import indexed_frame, make_ts_clip, read_index, synthetic_frames

W, H = 160, 90


def encode(items: Iterable[MediaItem], encoder: SegmentEncoder | None = None) -> list[EncodedChunk]:
    encoder = encoder or SegmentEncoder()
    chunks = []
    for item in items:
        if isinstance(item, AudioPacket):
            chunks += encoder.add_audio(item)
        else:
            chunks += encoder.encode(item)
    return chunks + encoder.flush()


def segments(chunks: list[EncodedChunk]) -> list[bytes]:
    assert chunks[0].segment_start
    starts = [i for i, chunk in enumerate(chunks) if chunk.segment_start] + [len(chunks)]
    return [b"".join(c.data for c in chunks[a:b]) for a, b in itertools.pairwise(starts)]


def decode(data: bytes) -> list[MediaItem]:
    decoder = StreamDecoder()
    items = decoder.feed(data) + decoder.flush()
    assert decoder.errors == 0
    return items


def frames_of(items: list[MediaItem]) -> list[av.VideoFrame]:
    return [item for item in items if isinstance(item, av.VideoFrame)]


def indices(frames: list[av.VideoFrame]) -> list[int]:
    return [read_index(frame.to_ndarray(format="rgb24")) for frame in frames]


def units(data: bytes) -> list[VideoUnit | AudioPacket]:
    demuxer = TsDemuxer()
    found = [u for u in demuxer.feed(data) + demuxer.end_segment() if not isinstance(u, VideoLoss)]
    assert demuxer.errors == 0
    return found


@functools.cache
def gateway_clip(audio: str | None = None, bframes: bool = False) -> bytes:
    return make_ts_clip(2, width=W, height=H, audio=audio, bframes=bframes, gop_seconds=0.5)  # type: ignore[arg-type]


def test_round_trip_keeps_count_order_index_and_pts() -> None:
    frames = list(synthetic_frames(65, width=W, height=H))
    out = frames_of(decode(b"".join(c.data for c in encode(frames))))
    assert indices(out) == list(range(65))
    assert [f.pts for f in out] == [f.pts for f in frames]
    assert all(f.time_base == TIME_BASE and (f.width, f.height) == (W, H) for f in out)


def test_each_segment_is_one_gop_that_starts_with_an_idr_and_decodes_alone() -> None:
    chunks = encode(synthetic_frames(95, width=W, height=H))
    parts = segments(chunks)
    assert len(parts) == 4
    for number, part in enumerate(parts):
        pids = [
            parse_packet(part[at : at + PACKET_SIZE]).pid
            for at in range(0, 2 * PACKET_SIZE, PACKET_SIZE)
        ]
        assert pids == [0x0000, 0x1000]  # PAT, PMT: a reader can start here
        video = [u for u in units(part) if isinstance(u, VideoUnit)]
        assert len(video) == (30 if number < 3 else 5)
        first = leading_nal_types(video[0].data)
        assert {NAL_SPS, NAL_PPS, NAL_IDR} <= set(first)
        assert all(NAL_IDR not in leading_nal_types(u.data) for u in video[1:])
        assert all(u.pts == u.dts for u in video)  # no reordering: no B-frames
        alone = frames_of(decode(part))
        assert indices(alone) == list(range(30 * number, 30 * number + len(video)))


def test_output_has_pes_lengths_no_b_frames_and_reads_in_ffmpeg() -> None:
    data = b"".join(c.data for c in encode(synthetic_frames(40, width=W, height=H)))
    for at in range(0, len(data), PACKET_SIZE):
        packet = parse_packet(data[at : at + PACKET_SIZE])
        if packet.unit_start and packet.pid == 0x100:
            header = parse_pes_header(packet.payload)
            assert header is not None
            assert header.length > 0
    with av.open(io.BytesIO(data), "r") as container:
        frames = list(container.decode(video=0))
    assert indices(frames) == list(range(40))
    assert all(f.pict_type in (PictureType.I, PictureType.P) for f in frames)


def test_a_segment_starts_every_segment_seconds_of_pts() -> None:
    # 4 frames a second, 0.5 s segments: two frames a segment, whatever the fps setting
    frames = [video_frame(indexed_frame(i, W, H), i * 22_500) for i in range(9)]
    chunks = encode(frames, SegmentEncoder(fps=30, segment_seconds=0.5))
    assert [c.segment_start for c in chunks] == [True, False] * 4 + [True]


def test_frame_size_change_starts_a_segment_with_a_new_encoder() -> None:
    frames = [video_frame(indexed_frame(i, W, H), i * 3000) for i in range(10)]
    frames += [video_frame(indexed_frame(i, 2 * W, 2 * H), i * 3000) for i in range(10, 20)]
    chunks = encode(frames)
    assert [i for i, c in enumerate(chunks) if c.segment_start] == [0, 10]
    out = frames_of(decode(b"".join(c.data for c in chunks)))
    assert [(f.width, f.height) for f in out] == [(W, H)] * 10 + [(2 * W, 2 * H)] * 10
    assert indices(out) == list(range(20))


def test_timestamps_that_go_back_start_a_segment() -> None:
    pts = [0, 3000, 6000, 0, 3000, 3000]
    frames = [video_frame(indexed_frame(i, W, H), p) for i, p in enumerate(pts)]
    chunks = encode(frames)
    assert [c.segment_start for c in chunks] == [True, False, False, True, False, True]
    assert indices(frames_of(decode(b"".join(c.data for c in chunks)))) == list(range(6))


def test_decoded_frames_do_not_impose_their_picture_types() -> None:
    # the source has a keyframe every 15 frames and B-frames; the output keeps its own GOPs
    decoded = frames_of(decode(gateway_clip(bframes=True)))
    assert any(f.pict_type == PictureType.B for f in decoded)
    chunks = encode(decoded)
    assert sum(c.segment_start for c in chunks) == 2
    out = frames_of(decode(b"".join(c.data for c in chunks)))
    assert indices(out) == list(range(60))


def test_frames_keep_the_callers_timestamps_and_picture_type() -> None:
    frame = next(synthetic_frames(1, width=W, height=H)).reformat(format="yuv420p")
    frame.pts, frame.time_base = 7, TIME_BASE
    SegmentEncoder().encode(frame)
    assert (frame.pts, frame.time_base, frame.pict_type) == (7, TIME_BASE, PictureType.NONE)


def test_numpy_frames_and_bad_input() -> None:
    assert video_frame(indexed_frame(3, W, H), 9000).pts == 9000
    with pytest.raises(MediaError, match="uint8"):
        video_frame(np.zeros((H, W), np.uint8), 0)
    encoder = SegmentEncoder()
    with pytest.raises(MediaError, match="even"):
        encoder.encode(video_frame(np.zeros((H, W + 1, 3), np.uint8), 0))
    no_pts = av.VideoFrame.from_ndarray(np.zeros((H, W, 3), np.uint8), format="rgb24")
    with pytest.raises(MediaError, match="pts"):
        encoder.encode(no_pts)
    for bad in (
        {"fps": 0},
        {"segment_seconds": 0},
        {"crf": 60},
        {"max_bitrate": -1},
        {"preset": "x"},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SegmentEncoder(**bad)  # type: ignore[arg-type]


def test_max_bitrate_caps_the_rate() -> None:
    noisy = [
        video_frame(np.random.default_rng(i).integers(0, 256, (H, W, 3), np.uint8), i * 3000)
        for i in range(30)
    ]
    free = sum(len(c.data) for c in encode(noisy, SegmentEncoder(crf=10)))
    capped = sum(len(c.data) for c in encode(noisy, SegmentEncoder(crf=10, max_bitrate=200_000)))
    assert capped < free / 2


@pytest.mark.parametrize("codec", ["aac", "opus"])
def test_audio_passes_through_untouched(codec: str) -> None:
    source = decode(gateway_clip(audio=codec))
    audio_in = [i for i in source if isinstance(i, AudioPacket)]
    assert audio_in
    assert all(p.format.codec == codec for p in audio_in)
    output = b"".join(c.data for c in encode(source))
    audio_out = [u for u in units(output) if isinstance(u, AudioPacket)]
    assert [(p.data, p.pts, p.format) for p in audio_out] == [
        (p.data, p.pts, p.format) for p in audio_in
    ]
    # ffmpeg reads the same audio from the output as from the source
    assert _ffmpeg_audio(output) == _ffmpeg_audio(gateway_clip(audio=codec))


def _ffmpeg_audio(data: bytes) -> tuple[str, int, int]:
    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.audio[0]
        packets = sum(1 for p in container.demux(stream) if p.size)
    with av.open(io.BytesIO(data), "r") as container:
        samples = sum(f.samples for f in container.decode(audio=0))
    return stream.codec_context.name, packets, samples


AAC = AudioFormat("aac", 0x0F, b"")


def test_audio_before_the_first_frame_waits_for_the_first_segment() -> None:
    encoder = SegmentEncoder()
    early = AudioPacket(b"\xff\xf1" + bytes(20), 0, AAC)
    assert encoder.add_audio(early) == []
    chunks = encoder.encode(video_frame(indexed_frame(0, W, H), 0))
    found = units(b"".join(c.data for c in chunks))
    assert isinstance(found[0], VideoUnit)
    assert found[1] == early


def test_audio_of_a_new_format_starts_a_segment_at_the_next_frame() -> None:
    encoder = SegmentEncoder()
    chunks = encoder.encode(video_frame(indexed_frame(0, W, H), 0))
    late = AudioPacket(b"\xff\xf1" + bytes(20), 100, AAC)
    assert encoder.add_audio(late) == []  # the open segment's PMT has no audio
    chunks += encoder.encode(video_frame(indexed_frame(1, W, H), 3000))
    assert [c.segment_start for c in chunks] == [True, True]
    first, second = segments(chunks)
    assert not any(isinstance(u, AudioPacket) for u in units(first))
    assert [u for u in units(second) if isinstance(u, AudioPacket)] == [late]
    assert [c.segment_start for c in encoder.add_audio(late)] == [False]
    assert [c.segment_start for c in encoder.encode(video_frame(indexed_frame(2, W, H), 6000))] == [
        False
    ]


def test_a_flushed_encoder_starts_afresh() -> None:
    encoder = SegmentEncoder()
    first = encoder.encode(video_frame(indexed_frame(0, W, H), 0)) + encoder.flush()
    again = encoder.encode(video_frame(indexed_frame(1, W, H), 3000)) + encoder.flush()
    assert again[0].segment_start
    assert indices(frames_of(decode(b"".join(c.data for c in first + again)))) == [0, 1]
