"""Async trickle client (aiohttp): publisher, subscriber and JSON channel codecs."""

from byockit.protocol.trickle.channels import (
    JsonLinesReader,
    JsonLinesWriter,
    JsonReader,
    JsonWriter,
)
from byockit.protocol.trickle.http import create_session
from byockit.protocol.trickle.publisher import SegmentWriter, TricklePublisher
from byockit.protocol.trickle.subscriber import Segment, TrickleSubscriber

__all__ = [
    "JsonLinesReader",
    "JsonLinesWriter",
    "JsonReader",
    "JsonWriter",
    "Segment",
    "SegmentWriter",
    "TricklePublisher",
    "TrickleSubscriber",
    "create_session",
]
