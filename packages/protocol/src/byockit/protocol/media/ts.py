"""MPEG-TS building blocks (ISO/IEC 13818-1) shared by the muxer and the demuxer.

Only what trickle video needs: 188-byte transport packets, PES headers and
the two PSI tables (PAT, PMT) that say which PID carries which stream.
Parsers raise :class:`ValueError` on malformed input; the demuxer counts and
skips it.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Final, NamedTuple

PACKET_SIZE: Final = 188
SYNC_BYTE: Final = 0x47
PAYLOAD_SIZE: Final = PACKET_SIZE - 4
"""Payload bytes of a packet without an adaptation field."""

PAT_PID: Final = 0x0000
NULL_PID: Final = 0x1FFF

CLOCK_HZ: Final = 90_000
"""PTS/DTS ticks per second."""
TIME_BASE: Final = Fraction(1, CLOCK_HZ)
TIMESTAMP_WRAP: Final = 1 << 33
"""PTS/DTS are 33-bit counters."""

STREAM_TYPE_H264: Final = 0x1B
STREAM_TYPE_AAC_ADTS: Final = 0x0F
STREAM_TYPE_PRIVATE_PES: Final = 0x06
"""PES private data; Opus uses it with an ``Opus`` registration descriptor."""

TABLE_PAT: Final = 0x00
TABLE_PMT: Final = 0x02
MAX_SECTION_LENGTH: Final = 1021
"""Largest ``section_length`` of a PAT or PMT."""

_STREAM_IDS_WITHOUT_HEADER: Final = frozenset({0xBC, 0xBE, 0xBF, 0xF0, 0xF1, 0xF2, 0xF8, 0xFF})
"""PES stream ids that carry no optional header (no timestamps)."""


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return tuple(table)


_CRC_TABLE: Final = _crc_table()


def crc32_mpeg2(data: bytes | memoryview) -> int:
    """The CRC that ends every PSI section (CRC-32/MPEG-2)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[(crc >> 24) ^ byte]
    return crc


class TsPacket(NamedTuple):
    """One parsed transport packet."""

    pid: int
    unit_start: bool
    """``payload_unit_start_indicator``: a PES or PSI section starts in this packet."""
    continuity: int
    has_payload: bool
    discontinuity: bool
    """The adaptation field announces a continuity-counter discontinuity."""
    random_access: bool
    """The adaptation field marks a random-access point (a keyframe starts here)."""
    stuffed: bool
    """The adaptation field carries stuffing: the muxer had no more bytes of the
    current PES for this packet, so (with every muxer we know) the PES ends here."""
    transport_error: bool
    payload: bytes


def parse_packet(packet: bytes) -> TsPacket:
    """Parse a 188-byte packet that starts with the sync byte."""
    b1, b2, b3 = packet[1], packet[2], packet[3]
    control = (b3 >> 4) & 0x3
    if control == 0:
        raise ValueError("reserved adaptation_field_control 0")
    offset = 4
    discontinuity = random_access = stuffed = False
    if control & 0x2:
        af_length = packet[4]
        fits = af_length <= 182 if control == 0x3 else af_length == 183
        if not fits:
            raise ValueError(f"adaptation field length {af_length} does not fit the packet")
        offset = 5 + af_length
        if af_length == 0:
            stuffed = True  # a one-byte adaptation field exists only to stuff
        else:
            flags = packet[5]
            discontinuity = bool(flags & 0x80)
            random_access = bool(flags & 0x40)
            used = 1 + 6 * bool(flags & 0x10) + 6 * bool(flags & 0x08) + bool(flags & 0x04)
            if flags & 0x02 and 5 + used < offset:
                used += 1 + packet[5 + used]
            if flags & 0x01 and 5 + used < offset:
                used += 1 + packet[5 + used]
            stuffed = used < af_length and control == 0x3
    return TsPacket(
        pid=((b1 & 0x1F) << 8) | b2,
        unit_start=bool(b1 & 0x40),
        continuity=b3 & 0xF,
        has_payload=bool(control & 0x1),
        discontinuity=discontinuity,
        random_access=random_access,
        stuffed=stuffed,
        transport_error=bool(b1 & 0x80),
        payload=packet[offset:] if control & 0x1 else b"",
    )


def build_packets(
    pid: int,
    payload: bytes,
    continuity: int,
    *,
    pcr: int | None = None,
    random_access: bool = False,
) -> tuple[bytes, int]:
    """Split one PES or PSI unit into packets; returns them and the next continuity counter.

    The first packet has ``payload_unit_start`` set and carries ``pcr`` (in
    90 kHz ticks) and the random-access flag when asked; the last one is
    padded with adaptation-field stuffing so the unit ends with its packet.
    """
    out = bytearray()
    position, total = 0, len(payload)
    first = True
    while first or position < total:
        header_flags = 0x40 if first else 0x00
        field = bytearray()
        if first and (pcr is not None or random_access):
            field.append((0x40 if random_access else 0) | (0x10 if pcr is not None else 0))
            if pcr is not None:
                base = pcr % TIMESTAMP_WRAP
                field += (base >> 1).to_bytes(4, "big")
                field += bytes((((base & 1) << 7) | 0x7E, 0))
        room = PAYLOAD_SIZE - (1 + len(field) if field else 0)
        take = min(room, total - position)
        if take < room:  # stuff: grow (or add) the adaptation field to fill the packet
            missing = room - take
            if not field:
                missing -= 1  # the length byte itself
                if missing > 0:
                    field.append(0x00)
                    missing -= 1
            field += b"\xff" * missing
        has_field = bool(field) or take < PAYLOAD_SIZE
        control = (0x30 if has_field else 0x10) | continuity
        out += bytes((SYNC_BYTE, header_flags | (pid >> 8), pid & 0xFF, control))
        if has_field:
            out.append(len(field))
            out += field
        out += payload[position : position + take]
        position += take
        continuity = (continuity + 1) & 0xF
        first = False
    return bytes(out), continuity


class PesHeader(NamedTuple):
    stream_id: int
    length: int
    """``PES_packet_length``: bytes after the length field; 0 means unbounded."""
    size: int
    """Bytes of header before the payload."""
    pts: int | None
    dts: int | None


def _timestamp(data: bytes | bytearray, at: int) -> int:
    b = data[at : at + 5]
    if not (b[0] & 1 and b[2] & 1 and b[4] & 1):
        raise ValueError("timestamp marker bits missing")
    return ((b[0] >> 1) & 0x7) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1


def parse_pes_header(data: bytes | bytearray) -> PesHeader | None:
    """Parse the header at the start of a PES; ``None`` if more bytes are needed."""
    if len(data) < 6:
        return None
    if data[0] != 0 or data[1] != 0 or data[2] != 1:
        raise ValueError("PES start code missing")
    stream_id = data[3]
    length = data[4] << 8 | data[5]
    if stream_id in _STREAM_IDS_WITHOUT_HEADER:
        return PesHeader(stream_id, length, 6, None, None)
    if len(data) < 9:
        return None
    if data[6] & 0xC0 != 0x80:
        raise ValueError("PES optional header marker missing")
    size = 9 + data[8]
    if length and length < size - 6:
        raise ValueError(f"PES length {length} is shorter than its header")
    if len(data) < size:
        return None
    flags = data[7] >> 6
    pts = dts = None
    if flags == 0x1:
        raise ValueError("PES announces a DTS without a PTS")
    if flags & 0x2:
        if size < 14:
            raise ValueError("PES header too short for its PTS")
        pts = _timestamp(data, 9)
        dts = pts
    if flags == 0x3:
        if size < 19:
            raise ValueError("PES header too short for its DTS")
        dts = _timestamp(data, 14)
    return PesHeader(stream_id, length, size, pts, dts)


def _encode_timestamp(prefix: int, ts: int) -> bytes:
    ts %= TIMESTAMP_WRAP
    return bytes(
        (
            prefix << 4 | (ts >> 29) & 0x0E | 1,
            (ts >> 22) & 0xFF,
            (ts >> 14) & 0xFE | 1,
            (ts >> 7) & 0xFF,
            (ts << 1) & 0xFE | 1,
        )
    )


def build_pes_header(stream_id: int, payload_size: int, pts: int | None, dts: int | None) -> bytes:
    """A PES header marked data-aligned, with its length (0 when it would not fit 16 bits)."""
    if pts is None:
        fields, flags = b"", 0x00
    elif dts is None or dts == pts:
        fields, flags = _encode_timestamp(0x2, pts), 0x80
    else:
        fields, flags = _encode_timestamp(0x3, pts) + _encode_timestamp(0x1, dts), 0xC0
    length = 3 + len(fields) + payload_size
    if length > 0xFFFF:
        length = 0
    return (
        b"\x00\x00\x01"
        + bytes((stream_id, length >> 8, length & 0xFF, 0x84, flags, len(fields)))
        + fields
    )


def build_section(table_id: int, table_id_extension: int, version: int, body: bytes) -> bytes:
    """A long-form PSI section (current, single section) with its CRC."""
    length = 5 + len(body) + 4
    head = bytes(
        (
            table_id,
            0xB0 | (length >> 8),
            length & 0xFF,
            table_id_extension >> 8,
            table_id_extension & 0xFF,
            0xC1 | (version & 0x1F) << 1,
            0,
            0,
        )
    )
    section = head + body
    return section + crc32_mpeg2(section).to_bytes(4, "big")


class Section(NamedTuple):
    table_id: int
    table_id_extension: int
    version: int
    body: bytes


def parse_section(section: bytes) -> Section:
    """Check a complete long-form PSI section and its CRC."""
    if len(section) < 12 or not section[1] & 0x80:
        raise ValueError("PSI section without section syntax")
    if crc32_mpeg2(section) != 0:
        raise ValueError("PSI section CRC mismatch")
    return Section(
        table_id=section[0],
        table_id_extension=section[3] << 8 | section[4],
        version=(section[5] >> 1) & 0x1F,
        body=section[8:-4],
    )


def parse_pat(body: bytes) -> int | None:
    """The PMT PID of the first program in a PAT body (``None`` if it lists none)."""
    for at in range(0, len(body) - 3, 4):
        program = body[at] << 8 | body[at + 1]
        if program != 0:  # program 0 points at the network information table
            return (body[at + 2] & 0x1F) << 8 | body[at + 3]
    return None


class PmtStream(NamedTuple):
    stream_type: int
    pid: int
    descriptors: bytes


def parse_pmt(body: bytes) -> list[PmtStream]:
    """The elementary streams listed in a PMT body."""
    if len(body) < 4:
        raise ValueError("PMT too short")
    at = 4 + ((body[2] & 0x0F) << 8 | body[3])
    streams = []
    while at + 5 <= len(body):
        info_length = (body[at + 3] & 0x0F) << 8 | body[at + 4]
        end = at + 5 + info_length
        if end > len(body):
            raise ValueError("PMT stream descriptors overrun the section")
        pid = (body[at + 1] & 0x1F) << 8 | body[at + 2]
        streams.append(PmtStream(body[at], pid, bytes(body[at + 5 : end])))
        at = end
    return streams


def build_pmt_body(pcr_pid: int, streams: list[PmtStream]) -> bytes:
    body = bytearray((0xE0 | pcr_pid >> 8, pcr_pid & 0xFF, 0xF0, 0x00))
    for stream in streams:
        n = len(stream.descriptors)
        body += bytes((stream.stream_type, 0xE0 | stream.pid >> 8, stream.pid & 0xFF))
        body += bytes((0xF0 | n >> 8, n & 0xFF)) + stream.descriptors
    return bytes(body)


def descriptors(data: bytes) -> dict[int, bytes]:
    """Descriptor tag -> contents (the first of each tag); malformed tails are ignored."""
    found: dict[int, bytes] = {}
    at = 0
    while at + 2 <= len(data):
        tag, length = data[at], data[at + 1]
        if at + 2 + length > len(data):
            break
        found.setdefault(tag, data[at + 2 : at + 2 + length])
        at += 2 + length
    return found
