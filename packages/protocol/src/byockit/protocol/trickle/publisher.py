"""Trickle publisher: writes a channel's segments 0, 1, 2... as live HTTP uploads.

Each segment is one ``POST {channel}/{seq}`` whose chunked body is streamed
while it is produced, fed through a bounded queue. The POST for the next
segment is opened as soon as a segment starts (a *preconnect*), so starting a
segment costs no connection set-up. Failure handling follows go-livepeer's
publisher (PROTOCOL.md 1.5):

- a request that fails before its first byte was handed over is retried every
  ``retry_interval`` seconds, for as long as its segment is being written;
- a segment that fails after its first byte is abandoned and
  ``DELETE {channel}/{seq}`` is sent, so its readers are released;
- 404 (the channel is gone), ``Lp-Trickle-Closed`` and an untrusted TLS
  certificate end the publisher: every later call raises that error.

Timeouts are idle timeouts: a write (or the wait for the server's answer)
fails with :class:`TrickleTimeoutError` when the upload has made no progress
for ``idle_timeout`` seconds, never because a segment lasted long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Final, Self

import aiohttp

from byockit.protocol.errors import (
    ChannelNotFoundError,
    StreamClosedError,
    TrickleError,
    TrickleHTTPError,
    TrickleTimeoutError,
)
from byockit.protocol.trickle.constants import (
    CLOSED_HEADER,
    LATEST_HEADER,
    MIME_MPEGTS,
    NEXT_PATH,
    RESET_HEADER,
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

DEFAULT_RETRY_INTERVAL: Final = 0.25
"""Seconds between attempts of a segment POST that failed before its first byte."""
DEFAULT_MAX_QUEUED_CHUNKS: Final = 16
"""Written chunks a segment buffers while its upload catches up."""
ERROR_BODY_LIMIT: Final = 4096
"""Bytes of an error answer's body kept for the error message."""


class TricklePublisher:
    """Publishes segments to one trickle channel; an async context manager.

    ``session``: a shared ``aiohttp.ClientSession`` (left open on close);
    without one the publisher creates its own and closes it.
    ``verify_tls``: ``True`` verifies the server's certificate, ``False``
    accepts any (e.g. an orchestrator's self-signed one), an
    ``ssl.SSLContext`` verifies with that context.
    ``resume``: continue from the server's next write index
    (``GET {channel}/next``) and send ``Lp-Trickle-Reset`` on the first POST,
    releasing readers stuck on a previous publisher's segments.
    """

    def __init__(
        self,
        channel_url: str,
        mime_type: str = MIME_MPEGTS,
        *,
        session: aiohttp.ClientSession | None = None,
        verify_tls: bool | ssl.SSLContext = True,
        resume: bool = False,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        max_queued_chunks: int = DEFAULT_MAX_QUEUED_CHUNKS,
    ) -> None:
        require_positive(
            idle_timeout=idle_timeout,
            connect_timeout=connect_timeout,
            retry_interval=retry_interval,
            max_queued_chunks=max_queued_chunks,
        )
        self.url: Final = channel_base(channel_url)
        self.mime_type: Final = mime_type
        self.idle_timeout: Final = idle_timeout
        self.retry_interval: Final = retry_interval
        self.max_queued_chunks: Final = max_queued_chunks
        self._verify_tls = verify_tls
        self._connect_timeout = connect_timeout
        self._ssl = request_ssl(verify_tls)
        # Short requests (/next, DELETE) idle out; segment POSTs are watched by _Upload.
        self._request_timeout = client_timeout(
            idle_timeout=idle_timeout, connect_timeout=connect_timeout
        )
        self._upload_timeout = client_timeout(idle_timeout=None, connect_timeout=connect_timeout)
        self._session = session
        self._owns_session = session is None
        self._resume = resume
        self._send_reset = resume
        self._pending: _Upload | None = None
        """The preconnected POST of the next segment."""
        self._active: SegmentWriter | None = None
        self._busy = False
        self._failure: TrickleError | None = None
        self._closed = False

    async def __aenter__(self) -> Self:
        await self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def next_seq(self) -> int | None:
        """The seq the next segment will get (``None`` until the publisher has started)."""
        return None if self._pending is None else self._pending.seq

    @contextlib.asynccontextmanager
    async def segment(self) -> AsyncIterator[SegmentWriter]:
        """Write one segment: ``async with pub.segment() as seg: await seg.write(data)``.

        A clean exit completes the segment (it waits for the server's 200 and
        raises if the segment failed); an exception inside abandons it
        (``DELETE {channel}/{seq}``). Segments are written one at a time.
        """
        writer = await self._begin()
        try:
            try:
                yield writer
            except BaseException:
                await writer._upload.abandon()
                raise
            try:
                await writer._upload.finish()
            except BaseException:
                await writer._upload.abandon()
                raise
        finally:
            writer._ended = True
            self._active = None

    async def write_segment(self, data: bytes) -> int:
        """Publish ``data`` as one whole segment; returns its seq."""
        async with self.segment() as seg:
            await seg.write(data)
        return seg.seq

    async def close(self) -> None:
        """Abandon a segment still being written, cancel the preconnect, release the session.

        The preconnected POST is cancelled without a DELETE: a publisher that
        resumes the channel will write that seq.
        """
        if self._closed:
            return
        self._closed = True
        if self._active is not None:
            await self._active._upload.abandon()
        if self._pending is not None:
            await self._pending.abandon(delete=False)
        if self._owns_session and self._session is not None:
            await self._session.close()

    # -- internals ---------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise StreamClosedError("the publisher is closed", url=self.url)
        if self._failure is not None:
            raise self._failure

    def _terminate(self, failure: TrickleError) -> TrickleError:
        """Record a failure that ends the publisher (the first one wins)."""
        if self._failure is None:
            self._failure = failure
        return failure

    async def _start(self) -> None:
        self._check_usable()
        if self._pending is not None:
            return
        if self._session is None:
            self._session = create_session(
                verify_tls=self._verify_tls,
                idle_timeout=self.idle_timeout,
                connect_timeout=self._connect_timeout,
            )
        seq = await self._fetch_next_seq() if self._resume else 0
        self._check_usable()
        self._pending = self._open_upload(seq)

    def _open_upload(self, seq: int) -> _Upload:
        headers = {"Content-Type": self.mime_type}
        if self._send_reset:
            headers[RESET_HEADER] = "1"
            self._send_reset = False
        return _Upload(self, seq, headers)

    async def _begin(self) -> SegmentWriter:
        self._check_usable()
        if self._busy or self._active is not None:
            raise RuntimeError("a segment is already being written: end it before the next")
        self._busy = True
        try:
            await self._start()
        finally:
            self._busy = False
        upload = self._pending
        assert upload is not None
        self._pending = self._open_upload(upload.seq + 1)
        upload.activate()
        self._active = SegmentWriter(upload)
        return self._active

    async def _fetch_next_seq(self) -> int:
        """Ask the server for the channel's next write index (``GET {channel}/next``)."""
        url = f"{self.url}/{NEXT_PATH}"
        session = self._started_session()
        try:
            async with session.get(url, ssl=self._ssl, timeout=self._request_timeout) as resp:
                body = (await resp.content.read(ERROR_BODY_LIMIT)).decode(errors="replace")
                if resp.headers.get(CLOSED_HEADER):
                    raise self._terminate(StreamClosedError("the channel has ended", url=url))
                if resp.status == 404:
                    raise self._terminate(ChannelNotFoundError("no such channel", url=url))
                if resp.status != 200:
                    raise TrickleHTTPError(resp.status, body, url=url)
                text = body.strip() or resp.headers.get(LATEST_HEADER, "")
        except aiohttp.ClientConnectorCertificateError as exc:
            raise self._terminate(tls_error(exc, url)) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise TrickleError(f"could not read the next write index: {exc!r}", url=url) from exc
        try:
            seq = int(text)
        except ValueError:
            seq = -1
        if seq < 0:
            raise TrickleError(f"the next write index is not a seq: {text!r}", url=url)
        return seq

    def _started_session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "the publisher has not started"
        return self._session


class SegmentWriter:
    """Writes one segment's bytes as they are produced; see :meth:`TricklePublisher.segment`."""

    def __init__(self, upload: _Upload) -> None:
        self._upload = upload
        self._ended = False
        self.seq: Final = upload.seq

    async def write(self, data: bytes) -> None:
        """Queue ``data`` for the upload; waits while the queue is full.

        Raises the segment's failure (a :class:`TrickleError`) once it has
        failed, and :class:`TrickleTimeoutError` when the upload made no
        progress for ``idle_timeout`` seconds.
        """
        if self._ended:
            raise StreamClosedError(f"segment {self.seq} has ended", url=self._upload.url)
        if data:
            await self._upload.put(data)


class _Body:
    """The chunked body of one POST attempt, drained from its upload's queue."""

    def __init__(self, upload: _Upload) -> None:
        self._upload = upload

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        upload = self._upload
        if upload.end_taken:
            raise StopAsyncIteration
        upload.touch()
        item = await upload.queue.get()
        upload.touch()
        if item is None:
            upload.end_taken = True
            raise StopAsyncIteration
        upload.first_byte_taken = True
        return item


class _Upload:
    """One segment's ``POST {channel}/{seq}``: opened early, fed later.

    Retried until its first byte is handed over; its result is the segment's failure.
    """

    def __init__(self, publisher: TricklePublisher, seq: int, headers: dict[str, str]) -> None:
        self._pub = publisher
        self.seq = seq
        self.url = f"{publisher.url}/{seq}"
        self._headers = headers
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(publisher.max_queued_chunks)
        self.first_byte_taken = False
        self.end_taken = False
        self._loop = asyncio.get_running_loop()
        self._progress_at = self._loop.time()
        self._last_error: BaseException | None = None
        self._deleted = False
        self.task: asyncio.Task[TrickleError | None] = asyncio.create_task(
            self._run(), name=f"trickle POST {self.url}"
        )

    def touch(self) -> None:
        """Note progress: the idle timeout counts from the latest one."""
        self._progress_at = self._loop.time()

    def activate(self) -> None:
        """The segment starts now: a preconnect's waiting time is not a stall."""
        self.touch()

    async def put(self, item: bytes | None) -> None:
        """Queue a chunk (``None``: the end of the body)."""
        self._raise_if_done()
        if not self.queue.full():
            self.queue.put_nowait(item)
            return
        putter = asyncio.ensure_future(self.queue.put(item))
        try:
            await self._wait(putter)
        finally:
            putter.cancel()

    async def finish(self) -> None:
        """End the body and wait for the server's answer; raise the segment's failure."""
        await self.put(None)
        await self._wait(self.task)
        failure = self._outcome()
        if failure is not None:
            raise failure

    async def abandon(self, *, delete: bool = True) -> None:
        """Stop the upload; unless the channel is gone, DELETE the seq to release its readers."""
        if not self.task.done():
            self.task.cancel()
            await asyncio.wait({self.task})
        if delete and self._pub._failure is None:
            await self._delete()

    def _outcome(self) -> TrickleError | None:
        if self.task.cancelled():
            return StreamClosedError(f"segment {self.seq} was abandoned", url=self.url)
        return self.task.result()

    def _raise_if_done(self) -> None:
        if self.task.done():
            raise self._outcome() or StreamClosedError(
                f"segment {self.seq} has ended", url=self.url
            )

    async def _wait(self, waiter: asyncio.Future[Any]) -> None:
        """Wait for ``waiter`` while the upload progresses; raise if it fails or stalls."""
        while not waiter.done():
            remaining = self._pub.idle_timeout - (self._loop.time() - self._progress_at)
            if remaining <= 0:
                raise TrickleTimeoutError(
                    f"segment {self.seq} made no progress for {self._pub.idle_timeout} s",
                    url=self.url,
                ) from self._last_error
            await asyncio.wait(
                {waiter, self.task}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            if not waiter.done() and self.task.done():
                self._raise_if_done()

    async def _run(self) -> TrickleError | None:
        """Attempt the POST until it gets an answer; the result is the segment's failure."""
        pub = self._pub
        while True:
            try:
                async with pub._started_session().post(
                    self.url,
                    data=_Body(self),
                    headers=self._headers,
                    ssl=pub._ssl,
                    timeout=pub._upload_timeout,
                ) as resp:
                    return await self._answer(resp)
            except aiohttp.ClientConnectorCertificateError as exc:
                return pub._terminate(tls_error(exc, self.url))
            except (aiohttp.ClientError, OSError) as exc:
                if self.first_byte_taken:
                    failure = TrickleError(
                        f"segment {self.seq} failed after its first byte: {exc!r}", url=self.url
                    )
                    failure.__cause__ = exc
                    await self._delete()
                    return failure
                self._last_error = exc
                logger.debug("POST %s failed before its first byte, retrying: %r", self.url, exc)
                await asyncio.sleep(pub.retry_interval)

    async def _answer(self, resp: aiohttp.ClientResponse) -> TrickleError | None:
        pub = self._pub
        if resp.headers.get(CLOSED_HEADER):
            return pub._terminate(StreamClosedError("the channel has ended", url=self.url))
        if resp.status == 404:
            return pub._terminate(ChannelNotFoundError("no such channel", url=self.url))
        if resp.status != 200:
            body = (await resp.content.read(ERROR_BODY_LIMIT)).decode(errors="replace")
            if self.first_byte_taken:
                await self._delete()
            return TrickleHTTPError(resp.status, body, url=self.url)
        if not self.end_taken:
            return TrickleError(
                f"segment {self.seq} was closed by the server before it was complete",
                url=self.url,
            )
        return None

    async def _delete(self) -> None:
        """``DELETE {channel}/{seq}`` once, releasing the readers of a segment that failed."""
        if self._deleted:
            return
        pub = self._pub
        try:
            async with pub._started_session().delete(
                self.url, ssl=pub._ssl, timeout=pub._request_timeout
            ) as resp:
                if resp.status != 200:
                    logger.debug("DELETE %s answered %d", self.url, resp.status)
        except (aiohttp.ClientError, OSError) as exc:
            logger.warning("could not DELETE abandoned segment %s: %r", self.url, exc)
        self._deleted = True
