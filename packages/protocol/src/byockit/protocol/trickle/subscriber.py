"""Trickle subscriber: reads a channel's segments in order, each as a live byte stream.

``async for segment in subscriber`` yields one :class:`Segment` per
``GET {channel}/{seq}``; its bytes can be read as they arrive. While a
segment is read, the GET for the next one is already open (a *preconnect*),
so the next segment's first byte arrives without a connection set-up.
Behaviour follows go-livepeer's subscriber (PROTOCOL.md 1.5), except where
that one loses or duplicates data:

- the next seq is the answer's ``Lp-Trickle-Seq`` + 1;
- 470 (the seq fell out of the server's window, or is too far ahead): wait
  ``retry_pause`` and jump to ``Lp-Trickle-Latest``;
- 404 or ``Lp-Trickle-Closed``: the stream has ended and iteration stops;
- any other failure is retried after ``retry_pause``; after ``max_failures``
  consecutive failures (a 470 counts) :class:`TooManyFailuresError` is raised:
  a failure never looks like a clean end;
- a GET that waited ``preconnect_timeout`` seconds for headers is re-issued
  (not a failure: the channel may simply be quiet);
- a segment that breaks mid-way raises from its reader, and the subscriber
  moves on to the next seq instead of re-reading it (no duplicated bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Final, Self

import aiohttp

from byockit.protocol.errors import (
    StreamClosedError,
    TooManyFailuresError,
    TrickleError,
    TrickleHTTPError,
    TrickleTimeoutError,
    TrickleTLSError,
)
from byockit.protocol.lifecycle import Closeable
from byockit.protocol.trickle.constants import (
    CLOSED_HEADER,
    LATEST_HEADER,
    SEQ_CURRENT,
    SEQ_HEADER,
    SEQ_NEXT,
    STATUS_SEGMENT_NOT_FOUND,
)
from byockit.protocol.trickle.http import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    channel_base,
    client_timeout,
    create_session,
    request_ssl,
    require_positive,
    tls_error,
)

logger = logging.getLogger(__name__)

DEFAULT_PRECONNECT_TIMEOUT: Final = 20.0
"""Seconds a GET waits for headers before it is re-issued."""
DEFAULT_MAX_FAILURES: Final = 7
"""Consecutive failures that end a subscriber (go-livepeer stops on the 7th)."""
DEFAULT_RETRY_PAUSE: Final = 0.3
"""Seconds to wait after a 470 or a failure before the next GET."""
DEFAULT_MAX_SEGMENT_BYTES: Final = 64 * 1024 * 1024
"""Largest segment :meth:`Segment.read` collects in memory."""
ERROR_BODY_LIMIT: Final = 4096


class Segment:
    """One segment being received; its bytes can be read once, as they arrive."""

    def __init__(self, seq: int, response: aiohttp.ClientResponse, url: str, idle: float) -> None:
        self.seq: Final = seq
        self.url: Final = url
        self._response = response
        self._idle = idle
        self._taken = False
        self._dropped = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.iter_chunks()

    async def iter_chunks(self) -> AsyncGenerator[bytes, None]:
        """The segment's bytes, chunk by chunk as the server relays them.

        Raises :class:`TrickleTimeoutError` when no byte came for the idle
        timeout, :class:`TrickleError` when the connection broke mid-way,
        :class:`StreamClosedError` when the subscriber moved on or closed.
        """
        if self._taken:
            raise TrickleError(f"segment {self.seq} has already been read", url=self.url)
        self._taken = True
        received = 0
        try:
            async for chunk in self._response.content.iter_any():
                received += len(chunk)
                yield chunk
        except aiohttp.SocketTimeoutError as exc:
            raise TrickleTimeoutError(
                f"segment {self.seq}: no data for {self._idle} s after {received} bytes",
                url=self.url,
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            if self._dropped:
                raise StreamClosedError(
                    f"segment {self.seq} was dropped by its subscriber", url=self.url
                ) from exc
            raise TrickleError(
                f"segment {self.seq} broke after {received} bytes: {exc!r}", url=self.url
            ) from exc
        finally:
            self._response.release()

    async def read(self, max_bytes: int = DEFAULT_MAX_SEGMENT_BYTES) -> bytes:
        """The whole segment (waits for its end); :class:`TrickleError` beyond ``max_bytes``."""
        data = bytearray()
        async with contextlib.aclosing(self.iter_chunks()) as chunks:
            async for chunk in chunks:
                data += chunk
                if len(data) > max_bytes:
                    self.drop()
                    raise TrickleError(
                        f"segment {self.seq} is larger than {max_bytes} bytes", url=self.url
                    )
        return bytes(data)

    def drop(self) -> None:
        """Stop receiving: close the connection (a no-op once the segment was read)."""
        self._dropped = True
        self._response.close()


class TrickleSubscriber(Closeable):
    """Reads one trickle channel; an async context manager and an async iterator of segments.

    ``start``: ``-2`` the segment being written now (fastest first frame),
    ``-1`` the next one to be written, ``n`` that seq. ``session`` and
    ``verify_tls`` as for :class:`~byockit.protocol.trickle.TricklePublisher`.
    Moving to the next segment drops the current one if it was not read.
    """

    def __init__(
        self,
        channel_url: str,
        *,
        start: int = SEQ_CURRENT,
        session: aiohttp.ClientSession | None = None,
        verify_tls: bool | ssl.SSLContext = True,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        preconnect_timeout: float = DEFAULT_PRECONNECT_TIMEOUT,
        max_failures: int = DEFAULT_MAX_FAILURES,
        retry_pause: float = DEFAULT_RETRY_PAUSE,
    ) -> None:
        if start < SEQ_CURRENT:
            raise ValueError(f"start must be -2, -1 or a seq >= 0, got {start}")
        require_positive(
            idle_timeout=idle_timeout,
            connect_timeout=connect_timeout,
            preconnect_timeout=preconnect_timeout,
            max_failures=max_failures,
            retry_pause=retry_pause,
        )
        self.url: Final = channel_base(channel_url)
        self.idle_timeout: Final = idle_timeout
        self.preconnect_timeout: Final = preconnect_timeout
        self.max_failures: Final = max_failures
        self.retry_pause: Final = retry_pause
        self._verify_tls = verify_tls
        self._connect_timeout = connect_timeout
        self._ssl = request_ssl(verify_tls)
        self._timeout = client_timeout(idle_timeout=idle_timeout, connect_timeout=connect_timeout)
        self._session = session
        self._owns_session = session is None
        self._seq = start
        self._pending: asyncio.Task[aiohttp.ClientResponse] | None = None
        self._current: Segment | None = None
        self._failures = 0
        self._failure: TrickleError | None = None
        self._ended = False
        self._closed = False

    def __aiter__(self) -> Self:
        return self

    @property
    def next_seq(self) -> int:
        """The seq the next GET asks for (``-1``/``-2`` until the server resolved one)."""
        return self._seq

    async def __anext__(self) -> Segment:
        segment = await self.next_segment()
        if segment is None:
            raise StopAsyncIteration
        return segment

    async def next_segment(self) -> Segment | None:
        """The next segment; ``None`` once the stream has ended or the subscriber was closed.

        The stream ends on 404 or ``Lp-Trickle-Closed``.
        Raises :class:`TooManyFailuresError` after ``max_failures`` consecutive
        failures and :class:`~byockit.protocol.errors.TrickleTLSError` at once
        for an untrusted certificate; once raised, every later call raises it again.
        """
        if self._failure is not None:
            raise self._failure
        if self._current is not None:
            self._current.drop()
            self._current = None
        while not self._ended:
            if self._pending is None:
                self._pending = self._open(self._seq)
            request = self._pending
            try:
                resp = await request
            except asyncio.CancelledError:
                if self._closed and not _cancelling():
                    return None  # close() cancelled the request this call waited for
                raise
            except TrickleTLSError as exc:
                self._failure = exc
                raise
            except (aiohttp.ClientError, OSError) as exc:
                await self._failed(exc)
                continue
            finally:
                if self._pending is request:
                    self._pending = None
            if self._closed:
                resp.close()
                return None
            segment = await self._handle(resp)
            if segment is not None:
                self._current = segment
                return segment
        return None

    async def close(self) -> None:
        """Drop the current segment, cancel the preconnect, release the session."""
        if self._closed:
            return
        self._closed = True
        self._ended = True
        if self._current is not None:
            self._current.drop()
            self._current = None
        if self._pending is not None:
            await _discard(self._pending)
            self._pending = None
        if self._owns_session and self._session is not None:
            await self._session.close()

    # -- internals ---------------------------------------------------------

    async def _handle(self, resp: aiohttp.ClientResponse) -> Segment | None:
        """Turn one answer into a segment, the end of the stream, or a counted failure."""
        requested = self._seq
        if resp.headers.get(CLOSED_HEADER) or resp.status == 404:
            resp.close()
            self._ended = True
            logger.debug("GET %s/%d: stream ended (%d)", self.url, requested, resp.status)
            return None
        if resp.status == STATUS_SEGMENT_NOT_FOUND:
            body = await _error_body(resp)
            latest = _int_header(resp, LATEST_HEADER)
            await self._failed(TrickleHTTPError(resp.status, body, url=str(resp.url)))
            self._seq = SEQ_NEXT if latest is None or latest < 0 else latest
            return None
        if resp.status != 200:
            body = await _error_body(resp)
            await self._failed(TrickleHTTPError(resp.status, body, url=str(resp.url)))
            return None
        seq = _int_header(resp, SEQ_HEADER)
        if seq is None or seq < 0:
            seq = requested
        if seq < 0:
            resp.close()
            await self._failed(
                TrickleError(f"answer to GET {requested} lacks {SEQ_HEADER}", url=str(resp.url))
            )
            return None
        self._failures = 0
        self._seq = seq + 1
        self._pending = self._open(self._seq)
        return Segment(seq, resp, f"{self.url}/{seq}", self.idle_timeout)

    async def _failed(self, exc: BaseException) -> None:
        """Count a failure: give up past the cap, else pause before the next attempt."""
        self._failures += 1
        if self._failures >= self.max_failures:
            self._failure = TooManyFailuresError(
                f"gave up after {self._failures} consecutive failures, the last: {exc}",
                url=self.url,
            )
            self._failure.__cause__ = exc
            raise self._failure
        logger.debug("GET %s/%d failed (%d): %r", self.url, self._seq, self._failures, exc)
        await asyncio.sleep(self.retry_pause)

    def _open(self, seq: int) -> asyncio.Task[aiohttp.ClientResponse]:
        if self._session is None:
            self._session = create_session(
                verify_tls=self._verify_tls,
                idle_timeout=self.idle_timeout,
                connect_timeout=self._connect_timeout,
            )
        return asyncio.create_task(self._request(self._session, seq), name=f"trickle GET {seq}")

    async def _request(self, session: aiohttp.ClientSession, seq: int) -> aiohttp.ClientResponse:
        """GET one seq, re-issued each time it waits ``preconnect_timeout`` for headers."""
        url = f"{self.url}/{seq}"
        while True:
            try:
                async with asyncio.timeout(self.preconnect_timeout):
                    return await session.get(url, ssl=self._ssl, timeout=self._timeout)
            except aiohttp.ClientConnectorCertificateError as exc:
                raise tls_error(exc, url) from exc
            except aiohttp.ConnectionTimeoutError:
                raise
            except TimeoutError:
                logger.debug("GET %s waited too long for headers, re-issuing", url)


def _cancelling() -> bool:
    """Whether the running task itself is being cancelled."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _discard(request: asyncio.Task[aiohttp.ClientResponse]) -> None:
    """Cancel a GET in flight, or close the answer it already got."""
    request.cancel()
    await asyncio.wait({request})
    if not request.cancelled() and request.exception() is None:
        request.result().close()


async def _error_body(resp: aiohttp.ClientResponse) -> str:
    try:
        return (await resp.content.read(ERROR_BODY_LIMIT)).decode(errors="replace")
    except (aiohttp.ClientError, OSError):
        return ""
    finally:
        resp.release()


def _int_header(resp: aiohttp.ClientResponse, name: str) -> int | None:
    try:
        return int(resp.headers.get(name, ""))
    except ValueError:
        return None
