"""Whatever bytes arrive, the decoder raises nothing but MediaError and keeps its bounds."""

from __future__ import annotations

import functools
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from byockit.protocol.errors import MediaError
from byockit.protocol.media import SegmentEncoder, StreamDecoder
from byockit.protocol.media.demux import MAX_PES_BYTES
from byockit.protocol.media.ts import PACKET_SIZE
from byockit.testkit.synthetic import make_ts_clip, synthetic_frames

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@functools.cache
def valid_streams() -> tuple[bytes, ...]:
    """Short real streams to mutate: ours (PES lengths), a gateway's (AAC, B-frames)."""
    encoder = SegmentEncoder(segment_seconds=0.1)
    ours = b"".join(
        c.data for f in synthetic_frames(6, width=64, height=36) for c in encoder.encode(f)
    )
    gateway = make_ts_clip(0.3, width=64, height=36, audio="aac", bframes=True, gop_seconds=0.1)
    return ours, gateway


def run(decoder: StreamDecoder, pieces: list[bytes], segment_ends: list[bool]) -> None:
    """Feed pieces (ending a segment after some); only MediaError may come out."""
    try:
        for piece, ends in zip(pieces, segment_ends, strict=False):
            decoder.feed(piece)
            if ends:
                decoder.end_segment(broken=len(piece) % 2 == 0)
        decoder.flush()
    except MediaError:
        pass
    # nothing is held beyond one cut-off packet, or one PES in progress per stream
    assert len(decoder._demuxer._buffer) < 2 * PACKET_SIZE
    assert all(
        s.pes is None or len(s.pes) <= MAX_PES_BYTES + PACKET_SIZE
        for s in decoder._demuxer._streams.values()
    )


@FUZZ
@given(
    pieces=st.lists(st.binary(max_size=600), max_size=12),
    segment_ends=st.lists(st.booleans(), max_size=12),
)
def test_random_bytes(pieces: list[bytes], segment_ends: list[bool]) -> None:
    run(StreamDecoder(), pieces, segment_ends)


@st.composite
def mutated(draw: st.DrawFn) -> list[bytes]:
    data = bytearray(draw(st.sampled_from(valid_streams())))
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "delete", "insert", "overwrite"]))
        if action == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "delete":
            del data[at : at + draw(st.integers(1, 400))]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=400))
        else:
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[at : at + len(chunk)] = chunk
        if not data:
            break
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=10)))
    bounds = [0, *cuts, len(data)]
    return [bytes(data[a:b]) for a, b in itertools.pairwise(bounds)]


@FUZZ
@given(pieces=mutated(), segment_ends=st.lists(st.booleans(), max_size=12))
def test_mutated_streams(pieces: list[bytes], segment_ends: list[bool]) -> None:
    run(StreamDecoder(), pieces, segment_ends)


@st.composite
def ts_shaped(draw: st.DrawFn) -> list[bytes]:
    """Packets with sync bytes and the PIDs a program uses, random otherwise."""
    data = bytearray()
    for _ in range(draw(st.integers(1, 20))):
        pid = draw(st.sampled_from([0x0000, 0x1000, 0x100, 0x101, 0x1FFF]))
        flags = draw(st.integers(0, 0xE0)) & 0xE0
        body = draw(st.binary(min_size=PACKET_SIZE - 3, max_size=PACKET_SIZE - 3))
        data += bytes((0x47, flags | pid >> 8, pid & 0xFF)) + body
    return [bytes(data)]


@FUZZ
@given(pieces=ts_shaped(), segment_ends=st.lists(st.booleans(), max_size=1))
def test_packet_shaped_random_bytes(pieces: list[bytes], segment_ends: list[bool]) -> None:
    decoder = StreamDecoder()
    decoder.feed(valid_streams()[0][: 2 * PACKET_SIZE])  # a real PAT and PMT first
    run(decoder, pieces, segment_ends)
