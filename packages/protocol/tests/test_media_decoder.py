"""StreamDecoder: what gateways send, every frame as soon as its bytes are in, damage survived."""

from __future__ import annotations

import functools
import io
import itertools
import random

import av
import pytest

from byockit.protocol.errors import MediaError
from byockit.protocol.media import (
    AudioPacket,
    EncodedChunk,
    MediaItem,
    SegmentEncoder,
    StreamDecoder,
    video_frame,
)
from byockit.protocol.media.demux import TsDemuxer, VideoUnit
from byockit.protocol.media.mux import TsMuxer
from byockit.protocol.media.ts import (
    PACKET_SIZE,
    TIMESTAMP_WRAP,
    PmtStream,
    build_packets,
    build_pes_header,
    build_pmt_body,
    build_section,
    parse_packet,
)
from byockit.testkit.synthetic import (
    indexed_frame,
    make_ts_clip,
    read_index,
    split_segments,
    synthetic_frames,
)

W, H = 160, 90
GOP = 15  # frames per GOP of the gateway clips (0.5 s at 30 fps)


@functools.cache
def gateway_clip(audio: str | None = None, bframes: bool = False) -> bytes:
    return make_ts_clip(3, width=W, height=H, audio=audio, bframes=bframes, gop_seconds=0.5)  # type: ignore[arg-type]


@functools.cache
def our_chunks(count: int = 60, segment_seconds: float = 1 / 3) -> tuple[EncodedChunk, ...]:
    """Our encoder's output, one chunk per frame; 10 frames a GOP by default."""
    encoder = SegmentEncoder(segment_seconds=segment_seconds)
    chunks = []
    for frame in synthetic_frames(count, width=W, height=H):
        chunks += encoder.encode(frame)
    assert len(chunks) == count
    return tuple(chunks)


def our_stream() -> bytes:
    return b"".join(c.data for c in our_chunks())


def packets(data: bytes) -> list[bytes]:
    return [data[at : at + PACKET_SIZE] for at in range(0, len(data), PACKET_SIZE)]


def frames_of(items: list[MediaItem]) -> list[av.VideoFrame]:
    return [item for item in items if isinstance(item, av.VideoFrame)]


def indices(items: list[MediaItem]) -> list[int]:
    return [read_index(frame.to_ndarray(format="rgb24")) for frame in frames_of(items)]


def decode_all(data: bytes, decoder: StreamDecoder | None = None) -> list[MediaItem]:
    decoder = decoder or StreamDecoder()
    return decoder.feed(data) + decoder.flush()


@pytest.mark.parametrize(
    ("gops_per_segment", "bframes", "audio"),
    [(1, False, None), (3, False, "aac"), (2, True, "opus"), (4, True, "aac")],
)
def test_gateway_segments_decode_as_one_stream(
    gops_per_segment: int, bframes: bool, audio: str | None
) -> None:
    clip = gateway_clip(audio, bframes)
    parts = split_segments(clip, gops_per_segment=gops_per_segment)
    assert len(parts) == -(-6 // gops_per_segment)
    decoder = StreamDecoder()
    items: list[MediaItem] = []
    for part in parts:
        items += decoder.feed(part) + decoder.end_segment()
    items += decoder.flush()
    assert (decoder.errors, decoder.skipped_frames) == (0, 0)
    assert indices(items) == list(range(90))
    with av.open(io.BytesIO(clip), "r") as container:
        source = [(p.pts, p.dts) for p in container.demux(video=0) if p.size]
    assert [f.pts for f in frames_of(items)] == sorted(pts for pts, _ in source if pts is not None)
    assert any(pts != dts for pts, dts in source) == bframes
    sound = [item for item in items if isinstance(item, AudioPacket)]
    if audio is None:
        assert not sound
    else:
        assert sound
        assert {p.format.codec for p in sound} == {audio}
        assert all(
            a.pts is not None and b.pts is not None and a.pts < b.pts
            for a, b in itertools.pairwise(sound)
        )


def test_each_frame_of_ours_comes_out_with_its_last_packet() -> None:
    decoder = StreamDecoder()
    for number, chunk in enumerate(our_chunks()):
        parts = packets(chunk.data)
        for part in parts[:-1]:
            assert decoder.feed(part) == []
        assert indices(decoder.feed(parts[-1])) == [number]


def test_each_frame_of_ours_comes_out_with_its_last_byte() -> None:
    decoder = StreamDecoder()
    for number, chunk in enumerate(our_chunks()[:3]):
        for byte in chunk.data[:-1]:
            assert decoder.feed(bytes((byte,))) == []
        assert indices(decoder.feed(chunk.data[-1:])) == [number]


def test_gateway_frames_without_pes_length_come_out_with_their_last_packet() -> None:
    """ffmpeg stuffs each PES's last packet: that ends the frame, not the next frame's start."""
    parts = packets(gateway_clip())
    parsed = [parse_packet(p) for p in parts]
    starts = [i for i, p in enumerate(parsed) if p.pid == 0x100 and p.unit_start]
    expected = []
    for number, start in enumerate(starts):
        following = starts[number + 1] if number + 1 < len(starts) else len(parts)
        last = max(i for i in range(start, following) if parsed[i].pid == 0x100)
        expected.append(last if parsed[last].stuffed else following)
    assert sum(e == s for e, s in zip(expected, starts[1:], strict=False)) < len(starts) / 10

    decoder = StreamDecoder()
    seen = []
    for position, part in enumerate(parts):
        seen += [position] * len(decoder.feed(part))
    seen += [len(parts)] * len(decoder.flush())
    assert seen == expected


def _zero_length_pes(unit: VideoUnit, *, pad_to_packets: bool) -> bytes:
    header = bytearray(build_pes_header(0xE0, len(unit.data), unit.pts, unit.dts))
    header[4:6] = b"\x00\x00"  # no length, as ffmpeg writes video
    data = unit.data
    if pad_to_packets:  # fill the last packet exactly: no stuffing to go by
        data += bytes(-(len(header) + len(data)) % 184)  # trailing_zero_8bits
    return bytes(header) + data


def _idr_units(count: int) -> list[VideoUnit]:
    chunks = our_chunks(count, segment_seconds=1 / 90_000)  # every frame a keyframe
    demuxer = TsDemuxer()
    found = demuxer.feed(b"".join(c.data for c in chunks))
    return [u for u in found if isinstance(u, VideoUnit)]


def test_end_of_segment_completes_a_frame_nothing_else_delimits() -> None:
    unit = _idr_units(1)[0]
    stream = TsMuxer().program(None)
    stream += build_packets(0x100, _zero_length_pes(unit, pad_to_packets=True), 0)[0]
    decoder = StreamDecoder()
    assert decoder.feed(stream) == []
    assert indices(decoder.end_segment()) == [0]
    decoder = StreamDecoder()
    assert decoder.feed(stream) == []
    assert decoder.end_segment(broken=True) == []
    assert decoder.errors == 1


def test_a_stream_that_stuffs_mid_pes_loses_one_frame_then_is_not_trusted() -> None:
    units = _idr_units(5)
    stream = TsMuxer().program(None)
    first = _zero_length_pes(units[0], pad_to_packets=False)
    head, continuity = build_packets(0x100, first[:100], 0)  # stuffed, yet the PES goes on
    rest, continuity = build_packets(0x100, first[100:], continuity)
    stream += head + bytes((rest[0], rest[1] & ~0x40)) + rest[2:]
    for unit in units[1:]:
        data, continuity = build_packets(
            0x100, _zero_length_pes(unit, pad_to_packets=False), continuity
        )
        stream += data
    decoder = StreamDecoder()
    items = decoder.feed(stream)
    assert decoder.errors >= 1
    assert indices(items)[-3:] == [1, 2, 3]  # frame 4 waits: its stuffing is no longer trusted
    assert indices(decoder.end_segment()) == [4]


def test_a_stream_joined_mid_packet_starts_at_the_next_idr() -> None:
    clip = gateway_clip()
    decoder = StreamDecoder()
    items = decode_all(clip[len(clip) // 3 + 5 :], decoder)
    found = indices(items)
    assert found[0] % GOP == 0
    assert found == list(range(found[0], 90))
    assert decoder.skipped_frames > 0
    assert decoder.errors >= 1


def test_a_stream_joined_at_a_later_segment_loses_nothing() -> None:
    decoder = StreamDecoder()
    items = decode_all(b"".join(split_segments(gateway_clip())[2:]), decoder)
    assert indices(items) == list(range(2 * GOP, 90))
    assert (decoder.errors, decoder.skipped_frames) == (0, 0)


def _frame_packets(number: int) -> tuple[int, int]:
    """Packet range of our stream's frame ``number``."""
    start = sum(len(c.data) for c in our_chunks()[:number]) // PACKET_SIZE
    return start, start + len(our_chunks()[number].data) // PACKET_SIZE


def test_lost_packets_cost_the_rest_of_their_gop() -> None:
    parts = packets(our_stream())
    _start, end = _frame_packets(15)
    decoder = StreamDecoder()
    items = decode_all(b"".join(parts[: end - 1] + parts[end:]), decoder)
    assert indices(items) == list(range(15)) + list(range(20, 60))
    assert decoder.errors >= 1
    assert decoder.skipped_frames == 4


def test_garbage_between_packets_is_skipped_without_losing_a_frame() -> None:
    parts = packets(our_stream())
    start, _ = _frame_packets(25)
    rng = random.Random(1)
    garbage = bytes(b for b in rng.randbytes(300) if b != 0x47)
    decoder = StreamDecoder()
    items = decode_all(
        b"".join(parts[: start + 1]) + garbage + b"".join(parts[start + 1 :]), decoder
    )
    assert indices(items) == list(range(60))
    assert decoder.errors == 1


def test_a_repeated_packet_is_ignored() -> None:
    parts = packets(our_stream())
    start, _ = _frame_packets(12)
    decoder = StreamDecoder()
    items = decode_all(b"".join(parts[: start + 1] + parts[start:]), decoder)
    assert indices(items) == list(range(60))
    assert decoder.errors == 0


def test_a_new_mux_mid_stream_loses_nothing() -> None:
    """Concatenated recordings: continuity counters and timestamps restart at an IDR picture."""
    one = make_ts_clip(1, width=W, height=H, audio="aac")
    decoder = StreamDecoder()
    items = decode_all(one + one + one, decoder)
    assert indices(items) == list(range(30)) * 3
    assert decoder.skipped_frames == 0


def test_a_new_mux_whose_first_counter_repeats_the_last_is_no_duplicate() -> None:
    first, second = _idr_units(2)
    a_pes = build_pes_header(0xE0, len(first.data), first.pts, first.dts) + first.data
    a_packets, continuity = build_packets(0x100, a_pes, 0)
    b_pes = build_pes_header(0xE0, len(second.data), second.pts, second.dts) + second.data
    b_packets, _ = build_packets(0x100, b_pes, (continuity - 1) % 16)
    program = TsMuxer().program(None)
    assert indices(decode_all(program + a_packets + program + b_packets)) == [0, 1]


@pytest.mark.parametrize("seed", [7, 11])
def test_overwritten_bytes_cost_at_most_the_rest_of_their_gop(seed: int) -> None:
    """Damage to headers is caught; damage inside slice data may pass as a concealed picture."""
    data = bytearray(our_stream())
    rng = random.Random(seed)
    start, end = _frame_packets(33)
    for _ in range(6):  # sync bytes, headers and slice data alike
        at = rng.randrange(start * PACKET_SIZE, end * PACKET_SIZE)
        data[at : at + 8] = rng.randbytes(8)
    found = [_index_or_none(frame) for frame in frames_of(decode_all(bytes(data)))]
    assert found[:33] == list(range(33))
    assert found[-20:] == list(range(40, 60))
    assert len(found) <= 60


def _index_or_none(frame: av.VideoFrame) -> int | None:
    try:
        return read_index(frame.to_ndarray(format="rgb24"))
    except ValueError:
        return None


def test_a_broken_segment_does_not_harm_the_next() -> None:
    chunks = our_chunks()
    first = b"".join(c.data for c in chunks[:10])
    second = b"".join(c.data for c in chunks[10:20])
    decoder = StreamDecoder()
    items = decoder.feed(first[:-1000]) + decoder.end_segment(broken=True)
    items += decoder.feed(second) + decoder.end_segment()
    found = indices(items)
    assert found[-10:] == list(range(10, 20))
    assert found[:-10] == list(range(len(found) - 10))
    assert decoder.errors >= 1


def test_a_program_without_h264_is_refused() -> None:
    pat = build_section(0x00, 1, 0, bytes((0, 1, 0xF0, 0x00)))
    pmt = build_section(0x02, 1, 0, build_pmt_body(0x100, [PmtStream(0x24, 0x100, b"")]))
    data = build_packets(0, b"\x00" + pat, 0)[0] + build_packets(0x1000, b"\x00" + pmt, 0)[0]
    with pytest.raises(MediaError, match=r"no H\.264 video stream.*0x24"):
        StreamDecoder().feed(data)


def test_timestamps_run_on_past_33_bits() -> None:
    first = TIMESTAMP_WRAP - 2 * 3000
    frames = [video_frame(indexed_frame(i, W, H), first + i * 3000) for i in range(5)]
    encoder = SegmentEncoder()
    data = b"".join(c.data for f in frames for c in encoder.encode(f))
    out = frames_of(decode_all(data))
    assert [f.pts for f in out] == [f.pts for f in frames]
