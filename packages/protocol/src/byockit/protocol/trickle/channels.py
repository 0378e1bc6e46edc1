"""JSON channels over trickle: one document per segment, or JSON lines (PROTOCOL.md 3).

Control and events channels carry one JSON document per segment; the data
channel carries JSON lines. Readers drop the ``{"keep":"alive"}`` keepalive,
and a malformed document or line never ends reading: it is reported as a
:class:`ParseError` to ``on_invalid`` (default: a logged warning) and reading
goes on. A segment that breaks in transit loses what it held (logged); the
subscriber underneath moves on, and raises once the channel is unreachable.

The JSON-lines writer streams each line as it is sent, inside a segment that
is cut a few times per second or once it is large, so lines cost no batching
delay. The gateway reads lines with a 64 KiB limit and misbehaves on longer
ones, so a line (with its newline) must stay under :data:`MAX_LINE_BYTES`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

from byockit.protocol.errors import ParseError, StreamClosedError, TrickleError
from byockit.protocol.lifecycle import Closeable
from byockit.protocol.trickle.constants import KEEPALIVE
from byockit.protocol.trickle.http import require_positive
from byockit.protocol.trickle.publisher import SegmentWriter, TricklePublisher
from byockit.protocol.trickle.subscriber import TrickleSubscriber

logger = logging.getLogger(__name__)

MAX_LINE_BYTES: Final = 64 * 1024
"""A JSON line, newline included, must be shorter than this (the gateway's line limit)."""
DEFAULT_MAX_DOCUMENT_BYTES: Final = 1024 * 1024
"""Largest one-document segment a :class:`JsonReader` accepts."""
DEFAULT_SEGMENT_SECONDS: Final = 0.25
"""How long a JSON-lines segment stays open."""
DEFAULT_MAX_LINES_SEGMENT_BYTES: Final = 256 * 1024
"""A JSON-lines segment is cut early once it holds this many bytes."""

InvalidHandler = Callable[[ParseError], None]
"""Called with each malformed document or line; reading continues."""


def _warn_invalid(error: ParseError) -> None:
    logger.warning("dropped invalid JSON from a trickle channel: %s", error)


def encode_document(document: object) -> bytes:
    """Compact UTF-8 JSON; :class:`ParseError` for what JSON cannot carry (NaN, objects)."""
    try:
        text = json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ParseError("", f"not representable as JSON: {exc}") from exc
    return text.encode()


def encode_line(document: object) -> bytes:
    """One JSON line with its newline; :class:`ParseError` if it is not under 64 KiB."""
    line = encode_document(document) + b"\n"
    if len(line) >= MAX_LINE_BYTES:
        raise ParseError("", f"JSON line is {len(line)} bytes; it must be under {MAX_LINE_BYTES}")
    return line


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_document(data: bytes, where: str) -> Any:
    """Parse one JSON document; :class:`ParseError` naming ``where`` when it is not valid."""
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except ValueError as exc:
        raise ParseError("", f"{where} is not valid JSON: {exc}") from exc


def _is_keepalive(document: Any) -> bool:
    return isinstance(document, dict) and document == KEEPALIVE


class JsonWriter:
    """Publishes one JSON document per segment (control, events)."""

    def __init__(self, publisher: TricklePublisher) -> None:
        self.publisher: Final = publisher

    async def send(self, document: object) -> int:
        """Publish ``document`` as one segment; returns its seq."""
        return await self.publisher.write_segment(encode_document(document))

    async def send_keepalive(self) -> int:
        """Publish ``{"keep":"alive"}``, which readers drop."""
        return await self.send(KEEPALIVE)


class JsonReader:
    """Iterates the documents of a one-document-per-segment channel, keepalives dropped.

    Empty segments (abandoned or closed before any byte) are skipped.
    """

    def __init__(
        self,
        subscriber: TrickleSubscriber,
        *,
        on_invalid: InvalidHandler | None = None,
        max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
    ) -> None:
        require_positive(max_document_bytes=max_document_bytes)
        self.subscriber: Final = subscriber
        self._on_invalid = on_invalid or _warn_invalid
        self._max_bytes = max_document_bytes

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._documents()

    async def _documents(self) -> AsyncIterator[Any]:
        async for segment in self.subscriber:
            data = bytearray()
            try:
                async with contextlib.aclosing(segment.iter_chunks()) as chunks:
                    async for chunk in chunks:
                        data += chunk
                        if len(data) > self._max_bytes:
                            break
            except TrickleError as exc:
                logger.warning("lost the document of segment %d: %s", segment.seq, exc)
                continue
            if len(data) > self._max_bytes:
                reason = f"segment {segment.seq} is larger than {self._max_bytes} bytes"
                self._on_invalid(ParseError("", reason))
                continue
            if not data.strip():
                continue
            try:
                document = decode_document(bytes(data), f"segment {segment.seq}")
            except ParseError as exc:
                self._on_invalid(exc)
                continue
            if not _is_keepalive(document):
                yield document


class JsonLinesWriter(Closeable):
    """Publishes JSON lines, streamed live within segments cut every ``segment_seconds``.

    A segment is also cut once it holds ``max_segment_bytes``. An async
    context manager: leaving it (or :meth:`close`) completes the open segment;
    the publisher stays open.
    """

    def __init__(
        self,
        publisher: TricklePublisher,
        *,
        segment_seconds: float = DEFAULT_SEGMENT_SECONDS,
        max_segment_bytes: int = DEFAULT_MAX_LINES_SEGMENT_BYTES,
    ) -> None:
        require_positive(segment_seconds=segment_seconds, max_segment_bytes=max_segment_bytes)
        self.publisher: Final = publisher
        self._segment_seconds = segment_seconds
        self._max_segment_bytes = max_segment_bytes
        self._lock = asyncio.Lock()
        self._stack: contextlib.AsyncExitStack | None = None
        self._segment: SegmentWriter | None = None
        self._size = 0
        self._cutter: asyncio.Task[None] | None = None
        self._closed = False

    async def send(self, document: object) -> None:
        """Write ``document`` as one line now; :class:`ParseError` if it is not under 64 KiB.

        Raises the publisher's :class:`TrickleError` if the segment fails
        (its lines are lost; the next send starts a new segment).
        """
        line = encode_line(document)
        async with self._lock:
            if self._closed:
                raise StreamClosedError("the JSON-lines writer is closed", url=self.publisher.url)
            segment = self._segment or await self._open()
            try:
                await segment.write(line)
            except BaseException as exc:
                await self._end(exc)
                raise
            self._size += len(line)
            if self._size >= self._max_segment_bytes:
                await self._end(None)

    async def send_keepalive(self) -> None:
        """Write ``{"keep":"alive"}``, which readers drop."""
        await self.send(KEEPALIVE)

    async def flush(self) -> None:
        """Complete the open segment now (waits for the server's answer)."""
        async with self._lock:
            await self._end(None)

    async def close(self) -> None:
        """Complete the open segment; later sends raise :class:`StreamClosedError`."""
        async with self._lock:
            self._closed = True
            await self._end(None)

    async def _open(self) -> SegmentWriter:
        stack = contextlib.AsyncExitStack()
        segment = await stack.enter_async_context(self.publisher.segment())
        self._stack, self._segment, self._size = stack, segment, 0
        self._cutter = asyncio.create_task(self._cut_later(segment))
        return segment

    async def _end(self, failure: BaseException | None) -> None:
        """Complete the open segment, or abandon it when ``failure`` is given. Holds the lock."""
        stack, self._stack, self._segment = self._stack, None, None
        cutter, self._cutter = self._cutter, None
        if cutter is not None:
            cutter.cancel()
            await asyncio.wait({cutter})
        if stack is None:
            return
        if failure is None:
            await stack.aclose()
        else:
            await stack.__aexit__(type(failure), failure, failure.__traceback__)

    async def _cut_later(self, segment: SegmentWriter) -> None:
        await asyncio.sleep(self._segment_seconds)
        async with self._lock:
            if self._segment is not segment:
                return
            self._cutter = None  # _end must not cancel the task running it
            try:
                await self._end(None)
            except TrickleError as exc:
                logger.warning(
                    "JSON-lines segment %d failed, its lines are lost: %s", segment.seq, exc
                )


class JsonLinesReader:
    """Iterates the documents of a JSON-lines channel, one per line, keepalives dropped.

    Lines are parsed as they arrive. A line of 64 KiB or more is reported to
    ``on_invalid`` and skipped; so is an unfinished last line of a segment
    that broke in transit (it would otherwise parse as a truncated value).
    """

    def __init__(
        self, subscriber: TrickleSubscriber, *, on_invalid: InvalidHandler | None = None
    ) -> None:
        self.subscriber: Final = subscriber
        self._on_invalid = on_invalid or _warn_invalid

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._documents()

    async def _documents(self) -> AsyncIterator[Any]:
        async for segment in self.subscriber:
            lines = _LineSplitter(segment.seq)
            try:
                async with contextlib.aclosing(segment.iter_chunks()) as chunks:
                    async for chunk in chunks:
                        for line in lines.feed(chunk):
                            for document in self._parse(line):
                                yield document
            except TrickleError as exc:
                logger.warning("segment %d broke mid-line: %s", segment.seq, exc)
                continue
            last = lines.finish()
            if last is not None:
                for document in self._parse(last):
                    yield document

    def _parse(self, line: _Line | ParseError) -> list[Any]:
        """The line's document as a list of zero or one (invalid lines go to ``on_invalid``)."""
        if isinstance(line, ParseError):
            self._on_invalid(line)
            return []
        if not line.text.strip():
            return []
        try:
            document = decode_document(line.text, line.where)
        except ParseError as exc:
            self._on_invalid(exc)
            return []
        return [] if _is_keepalive(document) else [document]


@dataclasses.dataclass(frozen=True, slots=True)
class _Line:
    text: bytes
    where: str
    """``segment N, line M``, for error messages."""


class _LineSplitter:
    """Splits a segment's chunks into lines, holding at most one line's worth of bytes."""

    def __init__(self, seq: int) -> None:
        self._seq = seq
        self._buffer = bytearray()
        self._skipping = False
        self._number = 0

    def feed(self, chunk: bytes) -> list[_Line | ParseError]:
        """Complete lines in order; a :class:`ParseError` stands for each overlong one."""
        out: list[_Line | ParseError] = []
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            piece, start = chunk[start:end], end + 1
            if self._skipping:
                self._skipping = False
                continue
            self._buffer += piece
            out.append(self._take())
        if not self._skipping:
            self._buffer += chunk[start:]
            if len(self._buffer) + 1 >= MAX_LINE_BYTES:
                out.append(self._take())
                self._skipping = True
        return out

    def finish(self) -> _Line | ParseError | None:
        """The last line when the segment did not end with a newline."""
        if self._skipping or not self._buffer:
            return None
        return self._take()

    def _take(self) -> _Line | ParseError:
        self._number += 1
        where = f"segment {self._seq}, line {self._number}"
        too_long = len(self._buffer) + 1 >= MAX_LINE_BYTES
        line = bytes(self._buffer)
        self._buffer.clear()
        if too_long:
            return ParseError("", f"{where} is {MAX_LINE_BYTES} bytes or longer")
        return _Line(line, where)
