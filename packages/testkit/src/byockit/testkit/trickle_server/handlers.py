"""HTTP face of the trickle server: turns requests into calls on the channel state.

Status codes, header names and error bodies follow go-livepeer's trickle
server (PROTOCOL.md 1.1-1.4) so clients written against either behave the
same. Where go-livepeer crashes (negative seqs) or has no limit (segment
size), this answers 400 and 413 instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from byockit.protocol.trickle.constants import (
    CLOSED_HEADER,
    CLOSED_VALUE,
    ENTRY_NOT_FOUND_BODY,
    EXPECT_CONTENT_HEADER,
    LATEST_HEADER,
    NEXT_PATH,
    RESET_HEADER,
    SEQ_CURRENT,
    SEQ_HEADER,
    SEQ_NEXT,
    STATUS_SEGMENT_NOT_FOUND,
)
from byockit.testkit.trickle_server.channel import Channel, ChannelRegistry, Segment
from byockit.testkit.trickle_server.faults import TrickleFaults, relayed

CONTINUE_INTERVAL = 10.0
"""Seconds between interim ``100 Continue`` answers to a POST still waiting for its body."""

_SEQ_RE = re.compile(r"[+-]?[0-9]+")
_INT64_MAX = 2**63 - 1
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

_READ_SEQS = frozenset({SEQ_NEXT, SEQ_CURRENT})
_WRITE_SEQS = frozenset({SEQ_NEXT})
_NO_SEQS: frozenset[int] = frozenset()


class _BrokenUpload(Exception):
    """The request body ended abnormally (bad framing, connection lost)."""


class TrickleHandlers:
    """Request handlers of one server, sharing its channel registry, settings and faults."""

    def __init__(
        self,
        registry: ChannelRegistry,
        *,
        auto_create: bool,
        max_segment_bytes: int,
        continue_interval: float,
        clock: Callable[[], float],
        faults: TrickleFaults,
    ) -> None:
        self._registry = registry
        self._faults = faults
        self._auto_create = auto_create
        self._max_segment_bytes = max_segment_bytes
        self._continue_interval = continue_interval
        self._clock = clock

    def add_routes(self, app: web.Application, base_path: str) -> None:
        channel_path = base_path + "{name}"
        segment_path = channel_path + "/{seq}"
        app.router.add_post(channel_path, self.create_channel)
        app.router.add_delete(channel_path, self.delete_channel)
        app.router.add_get(segment_path, self.get_segment)
        app.router.add_post(segment_path, self.post_segment)
        app.router.add_delete(segment_path, self.delete_segment)

    async def create_channel(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self._registry and not self._auto_create:
            return _error(404, "Stream not found")
        mime_type = request.headers.get(EXPECT_CONTENT_HEADER, "")
        self._registry.get_or_create(name, mime_type, self._clock())
        return web.Response()

    async def delete_channel(self, request: web.Request) -> web.Response:
        if not self._registry.remove(request.match_info["name"]):
            return _error(400, "Invalid stream")
        return web.Response()

    async def delete_segment(self, request: web.Request) -> web.Response:
        channel = self._registry.get(request.match_info["name"])
        if channel is None:
            return _error(404, "Stream not found")
        seq = _parse_seq(request.match_info["seq"], _NO_SEQS)
        if seq is None:
            return _error(400, "Invalid idx")
        segment = channel.find(seq)
        if segment is None:
            return _error(400, "Nonexistent segment")
        segment.close()
        return web.Response()

    async def get_segment(self, request: web.Request) -> web.StreamResponse:
        channel = self._registry.get(request.match_info["name"])
        if channel is None:
            return _error(404, "Stream not found")
        raw_seq = request.match_info["seq"]
        if raw_seq == NEXT_PATH:
            return _next_write(channel)
        requested = _parse_seq(raw_seq, _READ_SEQS)
        if requested is None:
            return _error(400, "Invalid idx")
        latest = channel.next_write
        seq = channel.resolve_read(requested)
        if not channel.closed and self._faults.take_470(channel.name, seq):
            return _missing_segment(channel, seq, latest)
        segment = channel.segment_for_read(seq)
        if segment is None:
            return _missing_segment(channel, seq, latest)
        reader = segment.reader()
        chunk = await reader.read()
        if chunk is None:
            return _empty_segment(channel, seq)

        response = web.StreamResponse()
        response.headers[SEQ_HEADER] = str(seq)
        if seq != latest:
            response.headers[LATEST_HEADER] = str(latest)
        response.headers["Content-Type"] = channel.mime_type
        delay = self._faults.delay_for(channel.name, seq)
        try:
            async with contextlib.aclosing(relayed(reader, chunk, delay)) as chunks:
                async for data in chunks:
                    if not response.prepared:  # a delayed answer starts with its first chunk
                        await response.prepare(request)
                    await response.write(data)
            await response.write_eof()
        except ConnectionResetError:
            pass  # the reader went away; nothing is owed to anyone
        return response

    async def post_segment(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        channel = self._registry.get(name)
        if channel is None and not self._auto_create:
            return _error(404, "Stream not found", close=True)
        requested = _parse_seq(request.match_info["seq"], _WRITE_SEQS)
        if requested is None:
            return _error(400, "Invalid idx")
        if request.content_length is not None and request.content_length > self._max_segment_bytes:
            return self._too_large()
        if channel is None:
            content_type = request.headers.get("Content-Type", "")
            channel = self._registry.get_or_create(name, content_type, self._clock())
        seq = channel.resolve_write(requested)
        if request.headers.get(RESET_HEADER):
            channel.reset_below(seq)
        segment = channel.segment_for_write(seq)
        if segment.closed:
            # Already complete: answer at once and drop the body unread.
            response = _posted(channel, seq)
            if not request.content.at_eof():
                response.force_close()
            return response
        try:
            return await self._receive(request, channel, segment)
        except _BrokenUpload:
            # The segment stays open: its publisher is expected to DELETE it.
            return _error(500, "Server error", close=True)

    async def _receive(
        self, request: web.Request, channel: Channel, segment: Segment
    ) -> web.Response:
        seq = segment.seq
        first = await self._first_chunk(request, segment)
        channel.mark_started(seq, self._clock())
        if first is None:
            # Released while waiting (segment or channel closed under it).
            response = _posted(channel, seq)
            response.force_close()
            return response
        if first and self._faults.take_drop(channel.name, seq):
            while await _read_chunk(request):
                pass  # taken, and thrown away
            segment.close()
            return _posted(channel, seq)
        chunk = first
        while chunk:
            if segment.size + len(chunk) > self._max_segment_bytes:
                segment.close()
                return self._too_large()
            segment.write(chunk)
            chunk = await _read_chunk(request)
        segment.close()
        return _posted(channel, seq)

    async def _first_chunk(self, request: web.Request, segment: Segment) -> bytes | None:
        """The body's first chunk (``b""`` if empty), or ``None`` if the segment closed first.

        Sends an interim ``100 Continue`` every ``continue_interval`` while waiting,
        so proxies and clients see a live connection.
        """
        read = asyncio.ensure_future(_read_chunk(request))
        closed = asyncio.ensure_future(segment.wait_closed())
        try:
            while True:
                done, _ = await asyncio.wait(
                    {read, closed},
                    timeout=self._continue_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if read in done:
                    return read.result()
                if closed in done:
                    return None
                _send_continue(request)
        finally:
            read.cancel()
            closed.cancel()

    def _too_large(self) -> web.Response:
        return _error(413, f"Segment larger than {self._max_segment_bytes} bytes", close=True)


async def _read_chunk(request: web.Request) -> bytes:
    try:
        return await request.content.readany()
    except (web.RequestPayloadError, HttpProcessingError, ConnectionError) as exc:
        raise _BrokenUpload from exc


def _send_continue(request: web.Request) -> None:
    transport = request.transport
    if request.version >= (1, 1) and transport is not None and not transport.is_closing():
        transport.write(_CONTINUE)


def _parse_seq(text: str, allowed_negative: frozenset[int]) -> int | None:
    """A decimal segment index as go's ``strconv.Atoi`` reads it, or ``None``.

    Negative values other than the special ones are refused (go-livepeer panics).
    """
    if not _SEQ_RE.fullmatch(text):
        return None
    seq = int(text)
    if seq > _INT64_MAX or (seq < 0 and seq not in allowed_negative):
        return None
    return seq


def _error(status: int, message: str, *, close: bool = False) -> web.Response:
    response = web.Response(status=status, text=message + "\n")
    if close:
        response.force_close()
    return response


def _closed_marker(channel: Channel, headers: dict[str, str]) -> dict[str, str]:
    if channel.closed:
        headers[CLOSED_HEADER] = CLOSED_VALUE
    return headers


def _posted(channel: Channel, seq: int) -> web.Response:
    return web.Response(headers=_closed_marker(channel, {SEQ_HEADER: str(seq)}))


def _next_write(channel: Channel) -> web.Response:
    latest = str(channel.next_write)
    return web.Response(text=latest, headers=_closed_marker(channel, {LATEST_HEADER: latest}))


def _missing_segment(channel: Channel, seq: int, latest: int) -> web.Response:
    headers = {LATEST_HEADER: str(latest), SEQ_HEADER: str(seq)}
    status = 200 if channel.closed else STATUS_SEGMENT_NOT_FOUND
    return web.Response(
        status=status, text=ENTRY_NOT_FOUND_BODY, headers=_closed_marker(channel, headers)
    )


def _empty_segment(channel: Channel, seq: int) -> web.Response:
    headers = {SEQ_HEADER: str(seq), LATEST_HEADER: str(channel.next_write)}
    return web.Response(headers=_closed_marker(channel, headers))
