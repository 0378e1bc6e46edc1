"""MPEG-TS bytes in, decoded frames (and passthrough audio) out, each as soon as its bytes are in.

The demuxer (:mod:`byockit.protocol.media.demux`) hands over each access unit
the moment it is complete; the decoder is fed those units by hand (no
probing, no parser waiting for the next frame's start code) with slice
threads only, since frame threads hold frames back. What remains is the
codec's own reordering when the source uses B-frames.

Accepts what gateways send: several GOPs per segment, B-frames, AAC or Opus
audio, streams joined mid-way (everything before the first IDR picture with
its parameter sets is skipped) and damaged bytes: damage the transport stream
or the codec notices is counted and decoding resumes at the next IDR picture.
(H.264 has no checksum: bytes changed inside slice data may only show as a
concealed, damaged picture until the next IDR.) Assumes one access unit per
video PES, which is what ffmpeg, go-livepeer and every common muxer write.
"""

from __future__ import annotations

from typing import TypeAlias

import av

from byockit.protocol.media.audio import AudioPacket
from byockit.protocol.media.demux import Demuxed, TsDemuxer, VideoLoss
from byockit.protocol.media.h264 import NAL_IDR, NAL_PPS, NAL_SPS, leading_nal_types
from byockit.protocol.media.ts import TIME_BASE

MediaItem: TypeAlias = av.VideoFrame | AudioPacket
"""What flows between decoder, processor and encoder: frames, and audio passed through."""


class StreamDecoder:
    """Decodes one continuous MPEG-TS H.264 stream fed in pieces of any size; not thread-safe.

    Frames come out with ``pts`` in ``time_base`` 1/90000 (timestamps are
    unwrapped past the 33-bit limit), in presentation order. Damage never
    raises; :attr:`errors` counts it. A program without H.264 video raises
    :class:`~byockit.protocol.errors.MediaError`.
    """

    def __init__(self) -> None:
        self._demuxer = TsDemuxer()
        self._codec = _new_codec()
        self._decode_errors = 0
        self._codec_has_sps = False
        self._codec_has_pps = False
        self._waiting_for_idr = True
        self.skipped_frames = 0
        """Access units dropped while waiting for an IDR picture (start or after damage)."""

    @property
    def errors(self) -> int:
        """Damage seen so far: broken transport stream, lost units, undecodable frames."""
        return self._demuxer.errors + self._decode_errors

    def feed(self, data: bytes) -> list[MediaItem]:
        """Take the next bytes; returns the frames and audio packets they completed."""
        return self._decode(self._demuxer.feed(data))

    def end_segment(self, *, broken: bool = False) -> list[MediaItem]:
        """The bytes so far end a trickle segment (``broken``: it was cut short).

        Completes the last unit at once rather than when the next segment
        starts, and expects the next segment to be a fresh mux.
        """
        return self._decode(self._demuxer.end_segment(broken=broken))

    def flush(self) -> list[MediaItem]:
        """End of stream: every unit and frame still held. The decoder starts afresh after."""
        items = self.end_segment()
        try:
            frames = self._codec.decode(None)
        except av.error.FFmpegError:
            self._decode_errors += 1
            frames = []
        items += self._accept(frames)
        self._codec = _new_codec()
        self._codec_has_sps = self._codec_has_pps = False
        self._waiting_for_idr = True
        return items

    def _decode(self, units: list[Demuxed]) -> list[MediaItem]:
        items: list[MediaItem] = []
        for unit in units:
            if isinstance(unit, AudioPacket):
                items.append(unit)
            elif isinstance(unit, VideoLoss):
                self._waiting_for_idr = True
            else:
                nal_types = leading_nal_types(unit.data)
                if self._waiting_for_idr:
                    # An IDR picture the codec has (or now gets) parameter sets for.
                    sps = self._codec_has_sps or NAL_SPS in nal_types
                    pps = self._codec_has_pps or NAL_PPS in nal_types
                    if NAL_IDR not in nal_types or not (sps and pps):
                        self.skipped_frames += 1
                        continue
                    self._waiting_for_idr = False
                self._codec_has_sps = self._codec_has_sps or NAL_SPS in nal_types
                self._codec_has_pps = self._codec_has_pps or NAL_PPS in nal_types
                packet = av.Packet(unit.data)
                packet.pts = unit.pts
                packet.dts = unit.dts
                packet.time_base = TIME_BASE
                try:
                    frames = self._codec.decode(packet)
                except av.error.FFmpegError:
                    self._decode_errors += 1
                    self._waiting_for_idr = True
                    continue
                items += self._accept(frames)
        return items

    def _accept(self, frames: list[av.VideoFrame]) -> list[MediaItem]:
        accepted: list[MediaItem] = []
        for frame in frames:
            if frame.is_corrupt:
                self._decode_errors += 1
                self._waiting_for_idr = True
                continue
            frame.time_base = TIME_BASE
            accepted.append(frame)
        return accepted


def _new_codec() -> av.VideoCodecContext:
    codec = av.CodecContext.create("h264", "r")
    codec.thread_type = "SLICE"
    return codec
