"""MPEG-TS building blocks: what the muxer writes, the parsers read back, and damage is refused."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from byockit.protocol.media.ts import (
    PACKET_SIZE,
    SYNC_BYTE,
    TIMESTAMP_WRAP,
    PmtStream,
    TsPacket,
    build_packets,
    build_pes_header,
    build_pmt_body,
    build_section,
    crc32_mpeg2,
    parse_packet,
    parse_pes_header,
    parse_pmt,
    parse_section,
)


def test_crc_is_crc32_mpeg2() -> None:
    # CRC-32/MPEG-2 check value from the CRC catalogue
    assert crc32_mpeg2(b"123456789") == 0x0376E6E7
    assert crc32_mpeg2(b"123456789") != zlib.crc32(b"123456789")


@settings(max_examples=60, deadline=None)
@given(
    payload=st.binary(min_size=1, max_size=1000),
    continuity=st.integers(0, 15),
    pcr=st.none() | st.integers(0, TIMESTAMP_WRAP - 1),
    random_access=st.booleans(),
)
def test_packets_carry_the_unit_and_end_with_it(
    payload: bytes, continuity: int, pcr: int | None, random_access: bool
) -> None:
    data, following = build_packets(
        0x100, payload, continuity, pcr=pcr, random_access=random_access
    )
    assert len(data) % PACKET_SIZE == 0
    packets = [parse_packet(data[at : at + PACKET_SIZE]) for at in range(0, len(data), PACKET_SIZE)]
    assert all(data[at] == SYNC_BYTE for at in range(0, len(data), PACKET_SIZE))
    assert b"".join(p.payload for p in packets) == payload
    assert [p.unit_start for p in packets] == [True] + [False] * (len(packets) - 1)
    assert [p.continuity for p in packets] == [(continuity + i) % 16 for i in range(len(packets))]
    assert following == (continuity + len(packets)) % 16
    assert packets[0].random_access == random_access
    # stuffing only where the unit ran out of bytes: in the last packet, if at all
    assert not any(p.stuffed for p in packets[:-1])
    assert packets[-1].stuffed == (len(packets[-1].payload) < _room(pcr, random_access, packets))


def _room(pcr: int | None, random_access: bool, packets: list[TsPacket]) -> int:
    """Payload room of the last packet without stuffing."""
    if len(packets) == 1 and (pcr is not None or random_access):
        return 184 - 2 - (6 if pcr is not None else 0)
    return 184


@settings(max_examples=60, deadline=None)
@given(
    pts=st.integers(0, TIMESTAMP_WRAP - 1),
    delay=st.none() | st.integers(0, 90_000),
    size=st.integers(0, 70_000),
)
def test_pes_header_round_trip(pts: int, delay: int | None, size: int) -> None:
    dts = None if delay is None else (pts - delay) % TIMESTAMP_WRAP
    header = build_pes_header(0xE0, size, pts, dts)
    parsed = parse_pes_header(header)
    assert parsed is not None
    assert (parsed.stream_id, parsed.size, parsed.pts) == (0xE0, len(header), pts)
    assert parsed.dts == (pts if dts is None else dts)
    # lengths that do not fit 16 bits are written as 0: "unbounded"
    expected_length = len(header) - 6 + size
    assert parsed.length == (expected_length if expected_length <= 0xFFFF else 0)


def test_pes_header_needs_all_its_bytes_and_its_markers() -> None:
    header = build_pes_header(0xC0, 10, 1234, None)
    assert all(parse_pes_header(header[:n]) is None for n in range(len(header)))
    with pytest.raises(ValueError, match="start code"):
        parse_pes_header(b"\x00\x00\x02" + header[3:])
    broken_marker = bytearray(header)
    broken_marker[13] &= 0xFE
    with pytest.raises(ValueError, match="marker"):
        parse_pes_header(bytes(broken_marker))


def test_pmt_section_round_trip_and_crc() -> None:
    streams = [
        PmtStream(0x1B, 0x100, b""),
        PmtStream(0x06, 0x101, b"\x05\x04Opus\x7f\x02\x80\x02"),
    ]
    section = build_section(0x02, 1, 7, build_pmt_body(0x100, streams))
    parsed = parse_section(section)
    assert (parsed.table_id, parsed.table_id_extension, parsed.version) == (0x02, 1, 7)
    assert parse_pmt(parsed.body) == streams
    damaged = bytearray(section)
    damaged[10] ^= 0x01
    with pytest.raises(ValueError, match="CRC"):
        parse_section(bytes(damaged))


def test_malformed_packets_are_refused() -> None:
    packet = bytearray(build_packets(0x100, b"x" * 200, 0)[0][:PACKET_SIZE])
    packet[3] &= 0xCF  # adaptation_field_control 0 is reserved
    with pytest.raises(ValueError, match="reserved"):
        parse_packet(bytes(packet))
    packet[3] |= 0x30
    packet[4] = 190  # adaptation field longer than the packet
    with pytest.raises(ValueError, match="adaptation field"):
        parse_packet(bytes(packet))
