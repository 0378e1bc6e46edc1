"""One running stream on a gateway: update its params, read its status and data, stop it.

A :class:`StreamSession` is what :meth:`GatewayClient.start
<byockit.client.gateway.GatewayClient.start>` returns. It only uses the URLs
the gateway answered with. Because a gateway accepts a start before it has
found an orchestrator, and swaps or drops orchestrators later, a stream can
fail at any time without any call failing: :meth:`StreamSession.watch` polls
the status and turns a stream that never comes up, goes silent, reports an
error or disappears into a :class:`~byockit.client.errors.StreamFailed`
(or starts it again, with ``restart=True``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, Mapping
from typing import TYPE_CHECKING, Final

import aiohttp
import attrs

from byockit.client.errors import (
    ClientError,
    GatewayError,
    GatewayUnavailable,
    InvalidGatewayAnswer,
    StreamFailed,
)
from byockit.protocol.models import JSONObject, JSONValue, StreamState, StreamUrls
from byockit.protocol.trickle.http import request_ssl, require_positive

if TYPE_CHECKING:
    from byockit.client.gateway import GatewayClient, GatewayReply, StartSettings

logger = logging.getLogger(__name__)

STOP_TIMEOUT: Final = 15.0
"""A stop may take longer than other calls: the gateway gives the orchestrator 10 s."""
UPDATE_MARGIN: Final = 10.0
"""An update may take the job's ``timeout_seconds``, plus the gateway's own 5 s, plus slack."""
MAX_EVENT_BYTES: Final = 1024 * 1024
"""Largest Server-Sent Event accepted (the gateway relays lines under 64 KiB)."""
DEFAULT_STARTUP_TIMEOUT: Final = 60.0
DEFAULT_SILENCE_TIMEOUT: Final = 45.0
DEFAULT_ERROR_GRACE: Final = 15.0
"""An error status may be a gateway swapping orchestrators; the next worker's status replaces it."""
DEFAULT_POLL_INTERVAL: Final = 2.0
DEFAULT_MAX_RESTARTS: Final = 3


class StreamSession:
    """A stream the gateway accepted; made by :meth:`GatewayClient.start`.

    ``urls`` is the gateway's answer and ``gateway_url`` the gateway that gave
    it (the one chosen among several); both change when :meth:`watch`
    restarts the stream. ``params`` are the params last accepted (start,
    then each successful :meth:`update`). The session lives as long as its
    client's HTTP session.
    """

    def __init__(
        self,
        client: GatewayClient,
        settings: StartSettings,
        gateway_url: str,
        urls: StreamUrls,
    ) -> None:
        self.settings = settings
        self.gateway_url = gateway_url
        self.urls = urls
        self.restarts = 0
        """How many times :meth:`watch` started the stream again."""
        self.failure: StreamFailed | None = None
        """Why :meth:`watch` gave the stream up (``None`` while it has not)."""
        self._client = client
        self._stopped = asyncio.Event()
        self._stop_lock = asyncio.Lock()
        self._stop_sent = False
        self._event_streams: set[aiohttp.ClientResponse] = set()

    @property
    def stream_id(self) -> str:
        return self.urls.stream_id

    @property
    def params(self) -> Mapping[str, JSONValue] | None:
        return self.settings.params

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stopped.is_set()

    def _url(self, name: str) -> str:
        url: str = getattr(self.urls, name)
        if not url:
            raise InvalidGatewayAnswer(
                f"the start answer gave no {name} for stream {self.stream_id}",
                url=self.gateway_url,
            )
        return url

    def _headers(self) -> dict[str, str]:
        return {"Livepeer": self.settings.header(self.stream_id)}

    async def update(self, params: Mapping[str, JSONValue]) -> GatewayReply:
        """Send new params; returns the worker's answer as the gateway relays it.

        Not retried (a late retry could overtake a newer update). Raises
        :class:`~byockit.protocol.errors.ParseError` for params that are not a
        JSON object (nothing is sent), :class:`GatewayError` with the relayed
        status and body when the worker (or the gateway) refuses them.
        """
        settings = attrs.evolve(self.settings, params=params)  # checks them as the contract does
        body = json.dumps(dict(params), separators=(",", ":"), allow_nan=False).encode()
        reply = await self._client.request(
            "POST",
            self._url("update_url"),
            idempotent=False,
            headers=self._headers() | {"Content-Type": "application/json"},
            body=body,
            timeout=self.settings.timeout_seconds + UPDATE_MARGIN,
        )
        reply.raise_for_status()
        self.settings = settings
        return reply

    async def status(self) -> JSONObject | None:
        """The gateway's status document, or ``None`` while it has none (404).

        It is the last ``status`` event of the worker (see
        :class:`~byockit.protocol.models.StreamStatus`) plus keys the gateway
        adds (``stream_id``, ``request_id``, ``pipeline_id``,
        ``orchestrator_info``...), kept as the gateway sent it. Retried on
        transient failures.
        """
        reply = await self._client.request("GET", self._url("status_url"), idempotent=True)
        if reply.status == 404:
            return None
        reply.raise_for_status()
        try:
            document = json.loads(reply.body)
        except ValueError as exc:
            raise InvalidGatewayAnswer(f"status is not JSON: {exc}", url=reply.url) from None
        if not isinstance(document, dict):
            raise InvalidGatewayAnswer("status is not a JSON object", url=reply.url)
        return document

    async def stop(self, body: bytes = b"") -> None:
        """Stop the stream (``body`` is forwarded to the worker); calling it again is harmless.

        Ends :meth:`data` iterators and :meth:`watch` at once, then asks the
        gateway (retried on transient failures; a 404 means it is gone
        already). If the gateway cannot be told, the error is raised and a
        later call tries again.
        """
        self._stopped.set()
        self._close_event_streams()
        async with self._stop_lock:
            if self._stop_sent:
                return
            reply = await self._client.request(
                "POST",
                self._url("stop_url"),
                idempotent=True,
                headers=self._headers(),
                body=body,
                timeout=max(self._client.timeout, STOP_TIMEOUT),
            )
            if reply.status != 404:
                reply.raise_for_status()
            self._stop_sent = True

    async def data(self) -> AsyncGenerator[JSONValue, None]:
        """The stream's data output, one parsed JSON value per Server-Sent Event.

        Reconnects after transient failures (and when the gateway ends the
        event stream while the stream runs), giving up with the last error
        after the client's ``retries`` failures in a row. Ends when
        :meth:`stop` is called, or when the gateway sends its ``end`` event
        for a stream whose status reports no error (else raises
        :class:`StreamFailed`); raises the :class:`StreamFailed` once
        :meth:`watch` gave the stream up. Events that are not JSON are logged
        and skipped. Requires ``data_output=True`` at start.
        """
        failures = 0
        while True:
            if self._stopped.is_set():
                return
            if self.failure is not None:
                raise self.failure
            url = self._url("data_url")
            try:
                async for event in self._read_events(url):
                    failures = 0
                    if event.name == END_EVENT:
                        await self._check_ended()
                        return
                    try:
                        value = json.loads(event.data)
                    except ValueError as exc:
                        logger.warning("skipped a data event that is not JSON: %s", exc)
                        continue
                    yield value
                error: ClientError = GatewayUnavailable(
                    "the gateway ended the event stream", url=url
                )
            except GatewayError as exc:
                if not self._client.retry.retries_status(exc.status) and not self.stopped:
                    raise
                error = exc
            except (GatewayUnavailable, aiohttp.ClientError, OSError, TimeoutError) as exc:
                error = exc if isinstance(exc, ClientError) else _unavailable(exc, url)
            if self._stopped.is_set():
                return
            if self.failure is not None:
                raise self.failure
            if failures >= self._client.retry.retries:
                raise error
            logger.info("data stream of %s interrupted (%s); reconnecting", self.stream_id, error)
            await self._pause(self._client.retry.delay(failures))
            failures += 1

    async def _check_ended(self) -> None:
        """The gateway ended the data stream: fine after a stop, a failure if status says so."""
        if self._stopped.is_set():
            return
        try:
            status = await self.status()
        except ClientError as exc:
            logger.info("status of ended stream %s unavailable: %s", self.stream_id, exc)
            return
        error = reported_error(status) if status is not None else None
        if error is not None:
            raise StreamFailed(self.stream_id, f"the gateway ended it: {error}", status=status)

    async def _read_events(self, url: str) -> AsyncGenerator[ServerSentEvent, None]:
        client = self._client
        try:
            async with asyncio.timeout(client.timeout):
                response = await client.http.get(
                    url,
                    headers={"Accept": "text/event-stream"},
                    ssl=request_ssl(client.verify_tls),
                    timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
                )
        except TimeoutError as exc:
            raise GatewayUnavailable(f"no answer within {client.timeout} s", url=url) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise _unavailable(exc, url) from exc
        async with response:
            if response.status != 200:
                text = (await response.content.read(4096)).decode(errors="replace")
                raise GatewayError(response.status, text, url=url)
            self._event_streams.add(response)
            try:
                parser = EventStreamParser(url)
                async for chunk in response.content.iter_any():
                    for event in parser.feed(chunk):
                        yield event
            finally:
                self._event_streams.discard(response)

    def _close_event_streams(self) -> None:
        for response in list(self._event_streams):
            response.close()

    async def _pause(self, seconds: float) -> None:
        """Sleep, or less if the session is stopped meanwhile."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopped.wait()

    async def watch(
        self,
        *,
        restart: bool = False,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        silence_timeout: float = DEFAULT_SILENCE_TIMEOUT,
        error_grace: float = DEFAULT_ERROR_GRACE,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_restarts: int = DEFAULT_MAX_RESTARTS,
    ) -> None:
        """Watch the stream until :meth:`stop`; raise :class:`StreamFailed` if it fails.

        Failed means: no status within ``startup_timeout`` seconds of the
        start, a status that did not change for ``silence_timeout`` seconds
        (workers send one at least every 10 s), a status reporting an error
        (``state`` ``ERROR``, or an ``error`` the gateway added) for
        ``error_grace`` seconds, or a status that vanished
        (the gateway dropped the stream). With ``restart``, a failed stream is
        stopped and started again with the same settings and the latest
        params, up to ``max_restarts`` times; :attr:`urls` then change. Status
        requests that fail count as no news. Run it as a task beside your
        work; :meth:`data` raises the failure too.
        """
        require_positive(
            startup_timeout=startup_timeout,
            silence_timeout=silence_timeout,
            error_grace=error_grace,
            poll_interval=poll_interval,
        )
        limits = _Limits(startup_timeout, silence_timeout, error_grace)
        watch = _Watch(limits, time.monotonic())
        while not self._stopped.is_set():
            try:
                reason = watch.judge(await self.status(), time.monotonic())
            except ClientError as exc:
                logger.info("status of %s unavailable: %s", self.stream_id, exc)
                reason = watch.judge_silence(time.monotonic())
            if reason is not None and not self._stopped.is_set():
                failure = StreamFailed(self.stream_id, reason, status=watch.last)
                if not restart or self.restarts >= max_restarts:
                    self._fail(failure)
                    raise failure
                await self._restart(failure)
                watch = _Watch(limits, time.monotonic())
            await self._pause(poll_interval)

    def _fail(self, failure: StreamFailed) -> None:
        self.failure = failure
        self._close_event_streams()

    async def _restart(self, failure: StreamFailed) -> None:
        logger.warning("%s; starting it again", failure)
        with contextlib.suppress(ClientError):
            await self._client.request(
                "POST",
                self._url("stop_url"),
                idempotent=True,
                headers=self._headers(),
                body=f"restarting: {failure.reason}".encode(),
                timeout=max(self._client.timeout, STOP_TIMEOUT),
            )
        try:
            self.gateway_url, self.urls = await self._client.start_urls(self.settings)
        except ClientError as exc:
            given_up = StreamFailed(
                self.stream_id, f"{failure.reason}; restart failed: {exc}", status=failure.status
            )
            self._fail(given_up)
            raise given_up from exc
        self.restarts += 1
        self._close_event_streams()  # data() reconnects to the new stream's URL


@attrs.frozen
class _Limits:
    startup_timeout: float
    silence_timeout: float
    error_grace: float


@attrs.define
class _Watch:
    """What :meth:`StreamSession.watch` has seen of one stream so far."""

    limits: _Limits
    started: float
    last: JSONObject | None = None
    changed: float | None = None
    erring_since: float | None = None

    def judge(self, status: JSONObject | None, now: float) -> str | None:
        """The reason the stream failed, given its latest status, or ``None``."""
        if status is None:
            if self.last is not None:
                return "the gateway no longer has a status for it (the stream was dropped)"
            return self.judge_silence(now)
        if status != self.last:
            self.last, self.changed = status, now
        error = reported_error(status)
        if error is None:
            self.erring_since = None
        else:
            self.erring_since = self.erring_since or now
            if now - self.erring_since >= self.limits.error_grace:
                return f"the stream reported an error: {error}"
        return self.judge_silence(now)

    def judge_silence(self, now: float) -> str | None:
        if self.changed is None:
            if now - self.started > self.limits.startup_timeout:
                return f"no status within {self.limits.startup_timeout} s of the start"
            return None
        if now - self.changed > self.limits.silence_timeout:
            return f"status unchanged for {self.limits.silence_timeout} s"
        return None


def reported_error(status: Mapping[str, object]) -> str | None:
    """The error a status document reports, if any.

    An ``error`` the gateway added (go-livepeer's ``{"error_message": ...}``,
    or any other non-empty value), or the worker's ``state`` ``ERROR`` with
    its ``inference_status.last_error``.
    """
    error = status.get("error")
    if isinstance(error, Mapping) and error.get("error_message"):
        return str(error["error_message"])
    if error:
        return str(error)
    if status.get("state") == StreamState.ERROR:
        inference = status.get("inference_status")
        last_error = inference.get("last_error") if isinstance(inference, Mapping) else None
        return str(last_error or "state ERROR")
    return None


def _unavailable(exc: BaseException, url: str) -> GatewayUnavailable:
    error = GatewayUnavailable(f"connection to the gateway failed: {exc!r}", url=url)
    error.__cause__ = exc
    return error


END_EVENT: Final = "end"
"""The event a gateway sends when it ends a data stream."""


@attrs.frozen
class ServerSentEvent:
    name: str
    """The ``event`` field; ``"message"`` when absent."""
    data: str


class EventStreamParser:
    """Splits a ``text/event-stream`` body into events.

    Data lines of one event are joined with newlines; comments and fields
    other than ``event`` and ``data`` are ignored; an event without data is
    not dispatched. An event over :data:`MAX_EVENT_BYTES` raises
    :class:`InvalidGatewayAnswer` instead of growing without bound.
    """

    def __init__(self, url: str) -> None:
        self._url = url
        self._buffer = bytearray()
        self._name = ""
        self._data: list[str] = []
        self._size = 0

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """The events completed by ``chunk``."""
        self._buffer += chunk
        events: list[ServerSentEvent] = []
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:end]).rstrip(b"\r").decode(errors="replace")
            del self._buffer[: end + 1]
            if not line:
                if self._data:
                    events.append(ServerSentEvent(self._name or "message", "\n".join(self._data)))
                self._name, self._data, self._size = "", [], 0
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "data":
                self._data.append(value)
                self._size += len(value)
            elif field == "event":
                self._name = value
            self._check(self._size)
        self._check(self._size + len(self._buffer))
        return events

    def _check(self, size: int) -> None:
        if size > MAX_EVENT_BYTES:
            raise InvalidGatewayAnswer(
                f"a data event is longer than {MAX_EVENT_BYTES} bytes", url=self._url
            )
