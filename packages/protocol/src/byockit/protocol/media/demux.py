"""An incremental MPEG-TS demuxer: bytes in, whole video access units and audio PES out.

PyAV has no incremental demuxer, and ``av.open`` on a pipe probes about 25
frames before its first packet (PROTOCOL.md 6.1), so byockit reassembles PES
itself and hands each unit on the moment its last byte is in:

- a PES with a length (byockit's encoder writes them) is complete at its last byte;
- a PES without one (ffmpeg's default for video, what gateways send) is
  complete when its last transport packet carries adaptation-field stuffing,
  which muxers only add when the PES has run out of bytes. Should a stream
  ever stuff mid-PES, the demuxer notices the continuation, counts one error
  and stops trusting stuffing on that PID;
- otherwise when the next PES of that PID starts (one frame interval late,
  about 1 time in 184), or when the trickle segment ends (:meth:`end_segment`).

Damage never raises: bytes out of sync, broken tables, continuity jumps and
malformed PES are counted in :attr:`TsDemuxer.errors` and skipped; lost
video is reported with a :class:`VideoLoss` so the decoder can wait for the
next IDR picture.
"""

from __future__ import annotations

import logging
from typing import Final, Literal, NamedTuple

from byockit.protocol.errors import MediaError
from byockit.protocol.media.audio import AudioFormat, AudioPacket
from byockit.protocol.media.ts import (
    MAX_SECTION_LENGTH,
    PACKET_SIZE,
    PAT_PID,
    STREAM_TYPE_AAC_ADTS,
    STREAM_TYPE_H264,
    STREAM_TYPE_PRIVATE_PES,
    SYNC_BYTE,
    TABLE_PAT,
    TABLE_PMT,
    TIMESTAMP_WRAP,
    PesHeader,
    PmtStream,
    TsPacket,
    descriptors,
    parse_packet,
    parse_pat,
    parse_pes_header,
    parse_pmt,
    parse_section,
)

logger = logging.getLogger(__name__)

MAX_PES_BYTES: Final = 16 * 1024 * 1024
"""Largest PES the demuxer assembles; bigger ones are dropped as damage."""

_REGISTRATION_DESCRIPTOR: Final = 0x05


class VideoUnit(NamedTuple):
    """One H.264 access unit (the payload of one PES) with its timestamps (90 kHz)."""

    data: bytes
    pts: int | None
    dts: int | None


class VideoLoss(NamedTuple):
    """Video bytes were lost here; what follows may reference pictures that never came."""

    reason: str


Demuxed = VideoUnit | AudioPacket | VideoLoss


def audio_format(stream: PmtStream) -> AudioFormat | None:
    """The passthrough format of a PMT stream, or ``None`` if it is not AAC or Opus audio."""
    if stream.stream_type == STREAM_TYPE_AAC_ADTS:
        return AudioFormat("aac", stream.stream_type, stream.descriptors)
    if (
        stream.stream_type == STREAM_TYPE_PRIVATE_PES
        and descriptors(stream.descriptors).get(_REGISTRATION_DESCRIPTOR) == b"Opus"
    ):
        return AudioFormat("opus", stream.stream_type, stream.descriptors)
    return None


class _Stream:
    """Reassembly state of one elementary stream."""

    def __init__(self, kind: Literal["video", "audio"], audio: AudioFormat | None) -> None:
        self.kind: Final = kind
        self.audio: Final = audio
        self.continuity: int | None = None
        self.last_payload = b""
        self.pes: bytearray | None = None
        self.header: PesHeader | None = None
        self.ended_by_stuffing = False
        self.trust_stuffing = True


class TsDemuxer:
    """Feed bytes in any pieces; get each unit as soon as it is complete."""

    def __init__(self) -> None:
        self.errors = 0
        """Damage seen so far (each loss of sync, bad table, lost or malformed PES)."""
        self._buffer = bytearray()
        self._synced = True
        self._pmt_pid: int | None = None
        self._pmt_section: bytes | None = None
        self._sections: dict[int, bytearray] = {}
        self._streams: dict[int, _Stream] = {}
        self._last_timestamp: int | None = None

    def feed(self, data: bytes) -> list[Demuxed]:
        """Take the next bytes of the stream; returns the units they completed."""
        self._buffer += data
        out: list[Demuxed] = []
        self._read_packets(out, final=False)
        return out

    def end_segment(self, *, broken: bool = False) -> list[Demuxed]:
        """The bytes fed so far end a trickle segment.

        Segments are cut between PES, so units still open are complete now
        (``broken``: the segment was cut short instead, so they are dropped).
        The next segment is a fresh mux: its continuity counters restart and
        its first byte is a packet boundary.
        """
        out: list[Demuxed] = []
        self._read_packets(out, final=True)
        if self._buffer:
            self._damage(out, f"{len(self._buffer)} bytes of a cut-off packet")
            self._buffer.clear()
        for stream in self._streams.values():
            if broken and stream.pes is not None:
                self._drop(stream, out, "segment broke off")
            self._finish(stream, out)
            stream.continuity = None
            stream.ended_by_stuffing = False
        self._sections.clear()
        self._synced = True
        return out

    def _read_packets(self, out: list[Demuxed], *, final: bool) -> None:
        buf = self._buffer
        at = 0
        while len(buf) - at >= PACKET_SIZE:
            if self._synced and buf[at] == SYNC_BYTE:
                self._packet(bytes(buf[at : at + PACKET_SIZE]), out)
                at += PACKET_SIZE
                continue
            if self._synced:
                self._synced = False
                self._damage(out, "lost packet sync")
            # Resync on a sync byte followed by another one a packet later;
            # at the end of the data (``final``) a lone candidate will do.
            found = buf.find(SYNC_BYTE, at)
            if found < 0:
                at = len(buf)
                break
            at = found
            follower = at + PACKET_SIZE
            if follower < len(buf):
                if buf[follower] == SYNC_BYTE:
                    self._synced = True
                else:
                    at += 1
            elif final:
                self._synced = True
            else:
                break
        del buf[:at]

    def _packet(self, raw: bytes, out: list[Demuxed]) -> None:
        try:
            packet = parse_packet(raw)
        except ValueError as exc:
            self._damage(out, str(exc))
            return
        stream = self._streams.get(packet.pid)
        if packet.transport_error:
            self._drop(stream, out, "transport error indicator")
        elif stream is not None:
            self._elementary(stream, packet, out)
        elif packet.pid == PAT_PID or packet.pid == self._pmt_pid:
            self._psi(packet, out)

    # --- program tables -------------------------------------------------------------

    def _psi(self, packet: TsPacket, out: list[Demuxed]) -> None:
        data = packet.payload
        pid = packet.pid
        if not packet.unit_start:
            partial = self._sections.get(pid)
            if partial is not None:
                partial += data
                self._sections_from(pid, partial, out)
            return
        if not data or 1 + data[0] > len(data):
            self._damage(out, "PSI pointer field beyond the packet")
            return
        pointer = data[0]
        partial = self._sections.pop(pid, None)
        if partial is not None:
            partial += data[1 : 1 + pointer]
            self._sections_from(pid, partial, out)
            if partial:
                self._damage(out, "PSI section cut short")
        partial = bytearray(data[1 + pointer :])
        self._sections_from(pid, partial, out)
        if partial:
            self._sections[pid] = partial

    def _sections_from(self, pid: int, partial: bytearray, out: list[Demuxed]) -> None:
        """Handle the complete sections at the front of ``partial``, removing them."""
        while partial:
            if partial[0] == 0xFF:  # stuffing: no more sections in this unit
                partial.clear()
                return
            if len(partial) < 3:
                return
            length = (partial[1] & 0x0F) << 8 | partial[2]
            if length > MAX_SECTION_LENGTH:
                self._damage(out, f"PSI section length {length}")
                partial.clear()
                return
            if len(partial) < 3 + length:
                return
            section = bytes(partial[: 3 + length])
            del partial[: 3 + length]
            self._section(pid, section, out)

    def _section(self, pid: int, raw: bytes, out: list[Demuxed]) -> None:
        try:
            section = parse_section(raw)
            if pid == PAT_PID and section.table_id == TABLE_PAT:
                pmt_pid = parse_pat(section.body)
                if pmt_pid != self._pmt_pid:
                    self._pmt_pid = pmt_pid
                    self._pmt_section = None
            elif (
                pid == self._pmt_pid and section.table_id == TABLE_PMT and raw != self._pmt_section
            ):
                self._program(parse_pmt(section.body))
                self._pmt_section = raw
        except ValueError as exc:
            self._damage(out, str(exc))

    def _program(self, streams: list[PmtStream]) -> None:
        video = next((s for s in streams if s.stream_type == STREAM_TYPE_H264), None)
        if video is None:
            types = ", ".join(f"0x{s.stream_type:02x}" for s in streams) or "none"
            raise MediaError(
                f"the MPEG-TS program has no H.264 video stream (stream types: {types})"
            )
        known = self._streams
        kept = known.get(video.pid)
        if kept is None or kept.kind != "video":
            kept = _Stream("video", None)
        self._streams = {video.pid: kept}
        for candidate in streams:
            fmt = audio_format(candidate)
            if fmt is not None and candidate.pid != video.pid:
                kept = known.get(candidate.pid)
                if kept is None or kept.audio != fmt:
                    kept = _Stream("audio", fmt)
                self._streams[candidate.pid] = kept
                break

    # --- elementary streams ----------------------------------------------------------

    def _elementary(self, stream: _Stream, packet: TsPacket, out: list[Demuxed]) -> None:
        if not packet.has_payload:
            return
        last = stream.continuity
        if packet.continuity == last and packet.payload == stream.last_payload:
            return  # a repeated packet (allowed once by the standard)
        lost = (
            last is not None and packet.continuity != (last + 1) & 0xF and not packet.discontinuity
        )
        stream.continuity = packet.continuity
        stream.last_payload = packet.payload
        if packet.unit_start:
            # Packets went missing before this one: the unit before may be
            # short (the decoder will tell), and whole units may be gone.
            self._finish(stream, out)
            if lost:
                self._damage(out, "continuity counter jumped", stream)
            pes = stream.pes = bytearray(packet.payload)
            stream.header = None
            stream.ended_by_stuffing = False
        elif lost:
            self._drop(stream, out, "continuity counter jumped")
            return
        elif stream.pes is None:
            if stream.ended_by_stuffing:
                # The unit handed on early was not complete: stop guessing on this PID.
                stream.trust_stuffing = False
                stream.ended_by_stuffing = False
                self._damage(out, "PES continued after stuffing", stream)
            return
        else:
            pes = stream.pes
            pes += packet.payload
        self._advance(stream, pes, packet.stuffed, out)

    def _advance(self, stream: _Stream, pes: bytearray, stuffed: bool, out: list[Demuxed]) -> None:
        """Hand the unit on if this packet completed it."""
        header = stream.header
        if header is None:
            try:
                header = parse_pes_header(pes)
            except ValueError as exc:
                self._drop(stream, out, str(exc))
                return
            if header is None:
                return
            stream.header = header
        if header.length:
            end = 6 + header.length
            if len(pes) >= end:
                if len(pes) > end:
                    self.errors += 1  # bytes beyond the declared length
                self._emit(stream, header, bytes(pes[header.size : end]), out)
        elif stuffed and stream.trust_stuffing:
            self._emit(stream, header, bytes(pes[header.size :]), out)
            stream.ended_by_stuffing = True
        elif len(pes) > MAX_PES_BYTES:
            self._drop(stream, out, f"PES larger than {MAX_PES_BYTES} bytes")

    def _finish(self, stream: _Stream, out: list[Demuxed]) -> None:
        """The unit in progress ends here (a new one starts, or the segment ended)."""
        pes = stream.pes
        if pes is None:
            return
        header = stream.header
        if header is None:
            try:
                header = parse_pes_header(pes)
            except ValueError as exc:
                self._drop(stream, out, str(exc))
                return
            if header is None:
                self._drop(stream, out, "PES header cut short")
                return
        if header.length:
            self._drop(stream, out, "PES shorter than its declared length")
        else:
            self._emit(stream, header, bytes(pes[header.size :]), out)

    def _emit(self, stream: _Stream, header: PesHeader, payload: bytes, out: list[Demuxed]) -> None:
        stream.pes = None
        stream.header = None
        if not payload:
            return
        pts = None if header.pts is None else self._unwrap(header.pts)
        dts = None if header.dts is None else self._unwrap(header.dts)
        if stream.audio is not None:
            out.append(AudioPacket(payload, pts, stream.audio))
        else:
            out.append(VideoUnit(payload, pts, dts))

    def _drop(self, stream: _Stream | None, out: list[Demuxed], reason: str) -> None:
        """Throw away the unit in progress (the bytes of it that were lost are damage)."""
        if stream is not None:
            stream.pes = None
            stream.header = None
        self._damage(out, reason, stream)

    def _damage(self, out: list[Demuxed], reason: str, stream: _Stream | None = None) -> None:
        """Count damage; when it hit the video stream, report the loss to the decoder.

        Damage elsewhere (sync, tables, packets of unknown PID) shows up again
        as a continuity jump on the stream it hit.
        """
        self.errors += 1
        logger.debug("MPEG-TS damage: %s", reason)
        if stream is not None and stream.kind == "video":
            out.append(VideoLoss(reason))

    def _unwrap(self, timestamp: int) -> int:
        """Extend a 33-bit timestamp to a steadily counting one (streams outlive 26.5 h)."""
        last = self._last_timestamp
        if last is None:
            self._last_timestamp = timestamp
            return timestamp
        value = last - last % TIMESTAMP_WRAP + timestamp
        if value - last > TIMESTAMP_WRAP // 2:
            value -= TIMESTAMP_WRAP
        elif last - value > TIMESTAMP_WRAP // 2:
            value += TIMESTAMP_WRAP
        self._last_timestamp = value
        return value
