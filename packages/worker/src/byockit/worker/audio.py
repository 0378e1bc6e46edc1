"""Audio for processors that hear it: AAC and Opus decoded to samples and encoded back.

A stream's audio passes through byte for byte unless its processor defines
``process_audio``. Then each :class:`~byockit.protocol.media.AudioPacket` (one
PES payload, as the demuxer hands it on) is split into codec packets - ADTS
frames for AAC, packets behind their MPEG-TS control headers for Opus; a PES
may hold several - and decoded to float32 samples. What the processor returns
is encoded again with the same codec, sample rate and channels, each packet
framed the way passthrough audio arrives (an ADTS header, or an Opus control
header) and labelled with the stream's own :class:`AudioFormat`, so the
output's program table stays what it was.

Timestamps: a decoded frame starts at its PES timestamp plus the samples
before it in that PES; Opus start and end trims are applied. The encoders
keep the timestamps they are given, less their priming delay (1024 samples
for AAC, 312 for Opus), so that the encoded audio plays at the input's
times. Where that would start a packet before 0 (audio starting at 0), Opus
trims the priming away; AAC, which cannot signal a trim in MPEG-TS, leaves
the packet out.
"""

from __future__ import annotations

import abc
from fractions import Fraction
from typing import Final, NamedTuple

import av
import numpy as np

from byockit.protocol.errors import MediaError
from byockit.protocol.media.audio import AudioFormat, AudioPacket
from byockit.protocol.media.ts import CLOCK_HZ, descriptors
from byockit.worker.frames import AudioFrame, AudioSamples

OPUS_RATE: Final = 48_000
"""Opus in MPEG-TS is always decoded at 48 kHz."""
ADTS_HEADER_BYTES: Final = 7
ADTS_RATES: Final = (
    96000,
    88200,
    64000,
    48000,
    44100,
    32000,
    24000,
    22050,
    16000,
    12000,
    11025,
    8000,
    7350,
)
"""Sampling frequencies by their ADTS index."""
_OPUS_LAYOUTS: Final = {1: "mono", 2: "stereo"}
_EXTENSION_DESCRIPTOR: Final = 0x7F
_OPUS_CHANNELS_TAG: Final = 0x80
_MAX_TRIM: Final = 0x1FFF


class HeardAudio(NamedTuple):
    """Decoded samples with what it takes to encode them back."""

    samples: AudioSamples
    """float32 ``(channels, n)``"""
    sample_rate: int
    layout: str
    pts: int
    """90 kHz ticks of the first sample."""
    format: AudioFormat


class _Unit(NamedTuple):
    data: bytes
    start_trim: int = 0
    end_trim: int = 0


class AudioDecoder:
    """Decodes one stream's audio packets into :class:`HeardAudio`; not thread-safe.

    Damage (a broken ADTS or control header, an undecodable packet) is counted
    in :attr:`errors` and skipped. Raises :class:`MediaError` only for audio it
    cannot decode at all (Opus with more than two channels).
    """

    def __init__(self) -> None:
        self.errors = 0
        self._format: AudioFormat | None = None
        self._codec: av.AudioCodecContext | None = None
        self._next_pts: int | None = None

    def decode(self, packet: AudioPacket) -> list[HeardAudio]:
        """The frames of one PES payload, in order."""
        if packet.format != self._format or self._codec is None:
            self._codec = _open_decoder(packet.format)
            self._format = packet.format
        units, damaged = _split(packet)
        self.errors += int(damaged)
        base = packet.pts if packet.pts is not None else self._next_pts
        if base is None:
            self.errors += 1  # no timestamp to place it at
            return []
        heard = []
        offset = 0
        """Samples decoded from this PES so far (trimmed ones included)."""
        rate = 0
        for unit in units:
            try:
                frames = self._codec.decode(av.Packet(unit.data))
            except av.error.FFmpegError:
                self.errors += 1
                continue
            if not frames:
                continue
            rate, layout = frames[0].sample_rate, frames[0].layout.name
            samples = np.concatenate([_planar_float(frame) for frame in frames], axis=1)
            count = samples.shape[1]
            start = min(unit.start_trim, count)
            end = count - min(unit.end_trim, count - start)
            if end > start:
                pts = base + round((offset + start) * CLOCK_HZ / rate)
                heard.append(HeardAudio(samples[:, start:end], rate, layout, pts, packet.format))
            offset += count
        self._next_pts = base + round(offset * CLOCK_HZ / rate) if rate else base
        return heard


class AudioEncoder:
    """Encodes :class:`HeardAudio` back into audio packets of its format; not thread-safe.

    A new codec starts (after the old one is flushed) when the format,
    sample rate or layout changes. Raises :class:`MediaError`.
    """

    def __init__(self) -> None:
        self._output: _Output | None = None
        self._key: tuple[AudioFormat, int, str] | None = None

    def encode(self, audio: HeardAudio) -> list[AudioPacket]:
        packets: list[AudioPacket] = []
        key = (audio.format, audio.sample_rate, audio.layout)
        if key != self._key or self._output is None:
            packets += self.flush()
            output_type = _AacOutput if audio.format.codec == "aac" else _OpusOutput
            self._output = output_type(*key)
            self._key = key
        if not audio.samples.shape[1]:
            return packets
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(audio.samples, dtype=np.float32),
            format="fltp",
            layout=audio.layout,
        )
        frame.sample_rate = audio.sample_rate
        frame.time_base = Fraction(1, audio.sample_rate)
        frame.pts = round(audio.pts * audio.sample_rate / CLOCK_HZ)
        return packets + self._output.encode(frame)

    def flush(self) -> list[AudioPacket]:
        """Everything the codec still holds; the next :meth:`encode` starts a new one."""
        output, self._output, self._key = self._output, None, None
        return [] if output is None else output.encode(None)


def processed_audio(result: object, heard: HeardAudio, frame: AudioFrame) -> HeardAudio | None:
    """What ``process_audio`` returned, ready to encode; :class:`MediaError` if unusable.

    An :class:`AudioFrame` keeps its own timestamp, an array takes the input's.
    """
    if result is None:
        return None
    pts = frame.pts
    if isinstance(result, AudioFrame):
        if result.sample_rate != frame.sample_rate:
            raise MediaError(
                f"process_audio() returned {result.sample_rate} Hz audio for "
                f"{frame.sample_rate} Hz: keep the sample rate"
            )
        samples, pts = result.samples, result.pts
    elif isinstance(result, np.ndarray):
        samples = result
    else:
        raise MediaError(
            f"process_audio() returned {type(result).__name__}; expected an AudioFrame, "
            "a numpy array or None"
        )
    if samples.ndim != 2 or samples.shape[0] != frame.channels:
        raise MediaError(
            f"process_audio() returned samples of shape {samples.shape}; "
            f"expected ({frame.channels}, n)"
        )
    if not np.issubdtype(samples.dtype, np.floating):
        raise MediaError(
            f"process_audio() returned {samples.dtype} samples; expected floating point in [-1, 1]"
        )
    return heard._replace(samples=samples.astype(np.float32, copy=False), pts=pts)


# --- codecs -----------------------------------------------------------------------------------


def _open_decoder(fmt: AudioFormat) -> av.AudioCodecContext:
    if fmt.codec == "aac":
        return av.CodecContext.create("aac", "r")  # ADTS headers say the rest
    codec = av.CodecContext.create("opus", "r")
    codec.sample_rate = OPUS_RATE
    codec.layout = _OPUS_LAYOUTS[_opus_channels(fmt)]
    return codec


def _opus_channels(fmt: AudioFormat) -> int:
    """Channels of an Opus stream, from its PMT channel configuration (stereo when absent)."""
    extension = descriptors(fmt.descriptors).get(_EXTENSION_DESCRIPTOR, b"")
    if len(extension) < 2 or extension[0] != _OPUS_CHANNELS_TAG:
        return 2
    channels = extension[1]
    if channels not in _OPUS_LAYOUTS:
        raise MediaError(
            f"Opus channel configuration {channels}: only mono and stereo Opus can be processed"
        )
    return channels


def _planar_float(frame: av.AudioFrame) -> AudioSamples:
    if frame.format.name != "fltp":
        raise MediaError(f"the audio decoder gave {frame.format.name} samples, expected fltp")
    return np.asarray(frame.to_ndarray(), dtype=np.float32)


# --- framing in MPEG-TS -----------------------------------------------------------------------


def _split(packet: AudioPacket) -> tuple[list[_Unit], bool]:
    """The codec packets in a PES payload, and whether some of it was damaged (and dropped)."""
    return _adts_frames(packet.data) if packet.format.codec == "aac" else _opus_packets(packet.data)


def _adts_frames(data: bytes) -> tuple[list[_Unit], bool]:
    units: list[_Unit] = []
    at = 0
    while at < len(data):
        header = data[at : at + ADTS_HEADER_BYTES]
        if len(header) < ADTS_HEADER_BYTES or header[0] != 0xFF or header[1] & 0xF0 != 0xF0:
            return units, True
        length = (header[3] & 0x03) << 11 | header[4] << 3 | header[5] >> 5
        if length < ADTS_HEADER_BYTES or at + length > len(data):
            return units, True
        units.append(_Unit(data[at : at + length]))
        at += length
    return units, False


def _opus_packets(data: bytes) -> tuple[list[_Unit], bool]:
    """Opus packets behind their MPEG-TS control headers.

    Each header: ``0x7FE`` (11 bits), start trim, end trim and extension
    flags, the packet size as a run of bytes (255 means "and more"), then the
    trims (13 bits in 16) and the extension, if flagged.
    """
    units: list[_Unit] = []
    at = 0
    while at < len(data):
        if at + 2 > len(data) or data[at] != 0x7F or data[at + 1] & 0xE0 != 0xE0:
            return units, True
        flags = data[at + 1]
        at += 2
        size = 0
        while at < len(data):
            size += data[at]
            at += 1
            if data[at - 1] != 0xFF:
                break
        start_trim = end_trim = 0
        if flags & 0x10:
            start_trim = int.from_bytes(data[at : at + 2], "big") & _MAX_TRIM
            at += 2
        if flags & 0x08:
            end_trim = int.from_bytes(data[at : at + 2], "big") & _MAX_TRIM
            at += 2
        if flags & 0x04 and at < len(data):
            at += 1 + data[at]
        if size == 0 or at + size > len(data):
            return units, True
        units.append(_Unit(data[at : at + size], start_trim, end_trim))
        at += size
    return units, False


class _Output(abc.ABC):
    """An encoder for one format, rate and layout, framing its packets as passthrough audio."""

    def __init__(self, codec: av.AudioCodecContext, fmt: AudioFormat, rate: int, layout: str):
        codec.sample_rate = rate
        codec.layout = layout
        codec.time_base = Fraction(1, rate)
        try:
            codec.open()
        except av.error.FFmpegError as exc:
            raise MediaError(
                f"cannot open the {fmt.codec} encoder ({rate} Hz, {layout}): {exc}"
            ) from exc
        self._codec = codec
        self._format = fmt
        self._rate = rate

    def encode(self, frame: av.AudioFrame | None) -> list[AudioPacket]:
        """Encode ``frame`` (``None``: flush) into framed packets."""
        try:
            encoded = self._codec.encode(frame)
        except av.error.FFmpegError as exc:
            raise MediaError(f"the {self._format.codec} encoder failed: {exc}") from exc
        packets = []
        for packet in encoded:
            if packet.pts is None:
                raise MediaError(f"the {self._format.codec} encoder gave a packet without pts")
            packed = self._pack(bytes(packet), packet.pts, packet.duration or 0)
            if packed is not None:
                packets.append(packed)
        return packets

    @abc.abstractmethod
    def _pack(self, payload: bytes, pts: int, duration: int) -> AudioPacket | None:
        """The packet at ``pts`` (in samples), or ``None`` when it cannot be placed."""

    def _packet(self, data: bytes, pts: int) -> AudioPacket:
        return AudioPacket(data, round(pts * CLOCK_HZ / self._rate), self._format)


class _AacOutput(_Output):
    def __init__(self, fmt: AudioFormat, rate: int, layout: str) -> None:
        channels = av.AudioLayout(layout).nb_channels
        if rate not in ADTS_RATES:
            raise MediaError(f"AAC at {rate} Hz has no ADTS sampling index")
        if not 1 <= channels <= 6:
            raise MediaError(f"AAC with {channels} channels is not supported (1 to 6)")
        codec = av.CodecContext.create("aac", "w")
        codec.format = "fltp"
        super().__init__(codec, fmt, rate, layout)
        self._fixed = (
            0xFF,
            0xF1,  # sync, MPEG-4, layer 0, no CRC
            1 << 6 | ADTS_RATES.index(rate) << 2 | channels >> 2,  # AAC LC
            (channels & 0x03) << 6,
        )

    def _pack(self, payload: bytes, pts: int, duration: int) -> AudioPacket | None:
        if pts < 0:
            return None  # priming, before the stream's first sample
        length = ADTS_HEADER_BYTES + len(payload)
        b0, b1, b2, b3 = self._fixed
        header = bytes(
            (b0, b1, b2, b3 | length >> 11, (length >> 3) & 0xFF, (length & 0x07) << 5 | 0x1F, 0xFC)
        )
        return self._packet(header + payload, pts)


class _OpusOutput(_Output):
    def __init__(self, fmt: AudioFormat, rate: int, layout: str) -> None:
        if rate != OPUS_RATE:
            raise MediaError(f"Opus audio must stay at {OPUS_RATE} Hz, got {rate} Hz")
        codec = av.CodecContext.create("libopus", "w")
        codec.format = "flt"
        super().__init__(codec, fmt, rate, layout)

    def _pack(self, payload: bytes, pts: int, duration: int) -> AudioPacket | None:
        trim = 0
        if pts < 0:  # priming before the stream's first sample: trimmed by its reader
            trim = -pts
            if trim >= duration or trim > _MAX_TRIM:
                return None
            pts = 0
        size = len(payload)
        header = bytearray((0x7F, 0xE0 | (0x10 if trim else 0)))
        header += b"\xff" * (size // 255) + bytes((size % 255,))
        if trim:
            header += trim.to_bytes(2, "big")
        return self._packet(bytes(header) + payload, pts)
