"""MPEG-TS framing with PyAV: a segment encoder and a streaming decoder.

- :class:`StreamDecoder`: MPEG-TS bytes in pieces of any size -> frames and
  passthrough :class:`AudioPacket` s, each as soon as its bytes are in.
- :class:`SegmentEncoder`: frames (and audio) -> low-latency MPEG-TS, one GOP
  per trickle segment, marked by :attr:`EncodedChunk.segment_start`.
- :func:`decode_stream`, :func:`decode_segments`, :func:`encode_stream`,
  :func:`publish_stream`: the same in one codec thread each, for asyncio and trickle.
"""

from byockit.protocol.media.aio import (
    CodecThread,
    decode_segments,
    decode_stream,
    encode_stream,
    publish_stream,
)
from byockit.protocol.media.audio import AudioFormat, AudioPacket
from byockit.protocol.media.decoder import MediaItem, StreamDecoder
from byockit.protocol.media.encoder import EncodedChunk, SegmentEncoder, video_frame
from byockit.protocol.media.ts import CLOCK_HZ, TIME_BASE

__all__ = [
    "CLOCK_HZ",
    "TIME_BASE",
    "AudioFormat",
    "AudioPacket",
    "CodecThread",
    "EncodedChunk",
    "MediaItem",
    "SegmentEncoder",
    "StreamDecoder",
    "decode_segments",
    "decode_stream",
    "encode_stream",
    "publish_stream",
    "video_frame",
]
