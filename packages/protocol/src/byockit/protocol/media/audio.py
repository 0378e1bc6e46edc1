"""Audio as the decoder hands it on and the encoder writes it back: untouched PES payloads.

A worker that does not touch audio passes it through (PROTOCOL.md 6). Keeping
each PES payload as it arrived (ADTS frames for AAC; Opus packets with their
MPEG-TS control headers) and copying the stream's PMT entry makes the
passthrough exact: no parsing, no re-framing, no timestamp arithmetic.
"""

from __future__ import annotations

from typing import Literal

import attrs


@attrs.frozen
class AudioFormat:
    """How an audio stream was declared in its MPEG-TS program."""

    codec: Literal["aac", "opus"]
    stream_type: int
    """PMT ``stream_type`` (0x0F for AAC in ADTS, 0x06 for Opus)."""
    descriptors: bytes
    """The stream's PMT descriptors, copied verbatim (Opus needs its registration
    and channel-configuration descriptors)."""


@attrs.frozen
class AudioPacket:
    """One audio PES payload with its presentation time (90 kHz ticks, or ``None``)."""

    data: bytes = attrs.field(repr=lambda data: f"<{len(data)} bytes>")
    pts: int | None
    format: AudioFormat
