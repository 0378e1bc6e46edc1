"""JSON and JSON-lines channels over the testkit's trickle server."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest

from byockit.protocol.errors import ParseError, StreamClosedError
from byockit.protocol.trickle import (
    JsonLinesReader,
    JsonLinesWriter,
    JsonReader,
    JsonWriter,
    TricklePublisher,
    TrickleSubscriber,
)
from byockit.protocol.trickle.channels import MAX_LINE_BYTES, encode_line
from byockit.protocol.trickle.constants import MIME_JSON, MIME_JSONL
from byockit.testkit.trickle_server import TrickleServer

pytestmark = pytest.mark.usefixtures("no_leaks")

TIMEOUT = 15.0


async def take(documents: AsyncIterator[Any], count: int) -> list[Any]:
    async with asyncio.timeout(TIMEOUT):
        return [await anext(documents) for _ in range(count)]


async def test_json_documents_round_trip_without_keepalives(
    trickle_server: TrickleServer,
) -> None:
    url = trickle_server.create_channel("events", MIME_JSON)
    invalid: list[ParseError] = []
    async with (
        TricklePublisher(url, MIME_JSON) as pub,
        TrickleSubscriber(url, start=0) as sub,
    ):
        writer = JsonWriter(pub)
        assert await writer.send({"type": "status", "fps": 30}) == 0
        await writer.send_keepalive()
        await pub.write_segment(b'{"broken": ')
        await pub.write_segment(b"")
        await writer.send({"queue_event_type": "x", "event": {"n": 1}})
        documents = aiter(JsonReader(sub, on_invalid=invalid.append))
        assert await take(documents, 2) == [
            {"type": "status", "fps": 30},
            {"queue_event_type": "x", "event": {"n": 1}},
        ]
    assert [error.reason for error in invalid] == [
        "segment 2 is not valid JSON: Expecting value: line 1 column 12 (char 11)"
    ]


async def test_json_segment_over_the_limit_is_reported(trickle_server: TrickleServer) -> None:
    url = trickle_server.create_channel("control", MIME_JSON)
    invalid: list[ParseError] = []
    async with (
        TricklePublisher(url, MIME_JSON) as pub,
        TrickleSubscriber(url, start=0) as sub,
    ):
        writer = JsonWriter(pub)
        await writer.send({"big": "x" * 100})
        await writer.send({"small": 1})
        documents = aiter(JsonReader(sub, on_invalid=invalid.append, max_document_bytes=50))
        assert await take(documents, 1) == [{"small": 1}]
    assert [error.reason for error in invalid] == ["segment 0 is larger than 50 bytes"]


async def test_unrepresentable_documents_are_refused(trickle_server: TrickleServer) -> None:
    url = trickle_server.create_channel("refuse", MIME_JSON)
    async with TricklePublisher(url, MIME_JSON) as pub:
        writer = JsonWriter(pub)
        with pytest.raises(ParseError, match="not representable as JSON"):
            await writer.send({"fps": math.nan})
        with pytest.raises(ParseError, match="not representable as JSON"):
            await writer.send({"when": object()})
        assert pub.next_seq == 0, "nothing was published"


async def test_json_lines_round_trip_live_without_keepalives(
    trickle_server: TrickleServer,
) -> None:
    url = trickle_server.create_channel("data", MIME_JSONL)
    async with (
        TricklePublisher(url, MIME_JSONL) as pub,
        TrickleSubscriber(url, start=0) as sub,
        JsonLinesWriter(pub, segment_seconds=3600) as writer,
    ):
        documents = aiter(JsonLinesReader(sub))
        await writer.send({"n": 1})
        # The segment stays open for an hour: the line must arrive on its own.
        assert await take(documents, 1) == [{"n": 1}]
        await writer.send_keepalive()
        await writer.send([2, "two"])
        assert await take(documents, 1) == [[2, "two"]]
        await writer.flush()
        await writer.send("three")
        assert await take(documents, 1) == ["three"]
    assert pub.next_seq is None or pub.next_seq >= 2


async def test_json_lines_segments_are_cut_by_time_and_size(
    trickle_server: TrickleServer,
) -> None:
    url = trickle_server.create_channel("cuts", MIME_JSONL)
    async with TricklePublisher(url, MIME_JSONL) as pub, TrickleSubscriber(url, start=0) as sub:
        async with JsonLinesWriter(pub, segment_seconds=0.05, max_segment_bytes=100) as writer:
            await writer.send({"first": "x" * 200})  # over the size: cut at once
            await writer.send({"second": 2})  # cut by time
        async with asyncio.timeout(TIMEOUT):
            segment = await sub.next_segment()
            assert segment is not None
            assert await segment.read() == encode_line({"first": "x" * 200})
            segment = await sub.next_segment()
            assert segment is not None
            assert await segment.read() == b'{"second":2}\n'


async def test_json_lines_malformed_and_overlong_lines_are_reported(
    trickle_server: TrickleServer,
) -> None:
    url = trickle_server.create_channel("bad-lines", MIME_JSONL)
    invalid: list[ParseError] = []
    overlong = json.dumps({"pad": "y" * MAX_LINE_BYTES}).encode()
    async with (
        TricklePublisher(url, MIME_JSONL) as pub,
        TrickleSubscriber(url, start=0) as sub,
    ):
        async with pub.segment() as seg:
            await seg.write(b'{"a": 1}\nnot json\n\n{"b"')
            await seg.write(b": 2}\n" + overlong[:40000])
            await seg.write(overlong[40000:] + b'\n{"keep":"alive"}\n[NaN]\n{"c": 3}')
        await pub.write_segment(b'{"d": 4}\n')
        documents = aiter(JsonLinesReader(sub, on_invalid=invalid.append))
        assert await take(documents, 4) == [{"a": 1}, {"b": 2}, {"c": 3}, {"d": 4}]
    assert [error.reason.split(":")[0] for error in invalid] == [
        "segment 0, line 2 is not valid JSON",
        f"segment 0, line 5 is {MAX_LINE_BYTES} bytes or longer",
        "segment 0, line 7 is not valid JSON",
    ]


async def test_json_lines_over_64_kib_are_refused(trickle_server: TrickleServer) -> None:
    url = trickle_server.create_channel("long", MIME_JSONL)
    async with TricklePublisher(url, MIME_JSONL) as pub, JsonLinesWriter(pub) as writer:
        with pytest.raises(ParseError, match="must be under 65536"):
            await writer.send({"pad": "z" * MAX_LINE_BYTES})
        fits = "z" * (MAX_LINE_BYTES - len('{"pad":""}\n') - 1)
        await writer.send({"pad": fits})


async def test_json_lines_writer_refuses_sends_after_close(trickle_server: TrickleServer) -> None:
    url = trickle_server.create_channel("after-close", MIME_JSONL)
    async with TricklePublisher(url, MIME_JSONL) as pub:
        writer = JsonLinesWriter(pub)
        await writer.send({"n": 1})
        await writer.close()
        with pytest.raises(StreamClosedError):
            await writer.send({"n": 2})
