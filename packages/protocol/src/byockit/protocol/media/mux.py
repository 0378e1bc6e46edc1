"""An MPEG-TS muxer for one H.264 stream and passed-through audio, written for latency.

Why not ffmpeg's muxer through PyAV: PyAV only offers
``av_interleaved_write_frame``, which holds each video packet back until
every other stream (the audio) has a packet with a later timestamp, so with
audio present a frame can wait a frame interval or more (10 s when the audio
stops). Writing the few tables and PES headers here puts every byte out the
moment its frame is encoded, with the PES lengths a receiver needs to
delimit a frame at once (PROTOCOL.md 6.1).

The layout follows ffmpeg's defaults (program 1, PMT on PID 0x1000, video on
0x100, audio on 0x101), so tools that know ffmpeg's output see nothing new.
"""

from __future__ import annotations

from typing import Final

from byockit.protocol.media.audio import AudioFormat, AudioPacket
from byockit.protocol.media.ts import (
    PAT_PID,
    STREAM_TYPE_H264,
    TABLE_PAT,
    TABLE_PMT,
    PmtStream,
    build_packets,
    build_pes_header,
    build_pmt_body,
    build_section,
)

PROGRAM_NUMBER: Final = 1
PMT_PID: Final = 0x1000
VIDEO_PID: Final = 0x100
AUDIO_PID: Final = 0x101
VIDEO_STREAM_ID: Final = 0xE0
AUDIO_STREAM_IDS: Final = {"aac": 0xC0, "opus": 0xBD}
"""PES stream ids: MPEG audio stream 0 for AAC, private stream 1 for Opus (as ffmpeg)."""
PCR_LEAD: Final = 9000
"""The program clock runs 100 ms ahead of decode times, so a receiver that
paces itself by the PCR has every frame before its decode time."""


class TsMuxer:
    """Turns access units and audio payloads into transport packets.

    Continuity counters run on across segments; each segment starts with its
    own PAT and PMT (:meth:`program`), so a reader can start at any segment.
    """

    def __init__(self) -> None:
        self._continuity: dict[int, int] = {}
        self._pmt_version = 0
        self._pmt_streams: list[PmtStream] | None = None

    def program(self, audio: AudioFormat | None) -> bytes:
        """PAT and PMT announcing the video stream and, if given, the audio stream."""
        streams = [PmtStream(STREAM_TYPE_H264, VIDEO_PID, b"")]
        if audio is not None:
            streams.append(PmtStream(audio.stream_type, AUDIO_PID, audio.descriptors))
        if self._pmt_streams is not None and streams != self._pmt_streams:
            self._pmt_version = (self._pmt_version + 1) % 32  # readers skip a PMT they know
        self._pmt_streams = streams
        pat_body = PROGRAM_NUMBER.to_bytes(2, "big") + (0xE000 | PMT_PID).to_bytes(2, "big")
        pat = build_section(TABLE_PAT, 1, 0, pat_body)
        pmt = build_section(
            TABLE_PMT, PROGRAM_NUMBER, self._pmt_version, build_pmt_body(VIDEO_PID, streams)
        )
        return self._packets(PAT_PID, b"\x00" + pat) + self._packets(PMT_PID, b"\x00" + pmt)

    def video(self, access_unit: bytes, pts: int, dts: int, *, keyframe: bool) -> bytes:
        """One access unit as one PES with the PCR (and the random-access flag on keyframes)."""
        header = build_pes_header(VIDEO_STREAM_ID, len(access_unit), pts, dts)
        return self._packets(
            VIDEO_PID,
            header + access_unit,
            pcr=max(dts - PCR_LEAD, 0),
            random_access=keyframe,
        )

    def audio(self, packet: AudioPacket) -> bytes:
        """One audio payload as one PES, exactly as it arrived."""
        stream_id = AUDIO_STREAM_IDS[packet.format.codec]
        header = build_pes_header(stream_id, len(packet.data), packet.pts, None)
        return self._packets(AUDIO_PID, header + packet.data)

    def _packets(
        self, pid: int, unit: bytes, *, pcr: int | None = None, random_access: bool = False
    ) -> bytes:
        data, self._continuity[pid] = build_packets(
            pid, unit, self._continuity.get(pid, 0), pcr=pcr, random_access=random_access
        )
        return data
