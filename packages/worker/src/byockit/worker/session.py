"""One stream, from the orchestrator's start request to its end.

A session opens the stream's trickle channels (PROTOCOL.md 3) and runs the
:class:`~byockit.worker.pipeline.Pipeline` from input to output. Beside it:

- **control**: every message but a keepalive is a parameter update; a
  malformed or rejected one is reported as an error event and the stream
  goes on (so is a control channel that ends before its first message);
- **events**: a ``status`` event at once, after each parameter update and
  every ``status_interval`` seconds (the gateway drops a stream that is
  silent for 30 s), trace events
  for the first input and first output segment, ``params_update``,
  ``error`` (a failing processor: at most one a second) and finally
  ``stream_stopped``, plus the processor's own events;
- **data**: the processor's JSON lines, streamed in segments cut a few times
  a second.

:meth:`StreamSession.start` returns at once; the session connects in the
background. It ends on :meth:`StreamSession.stop`, when the input channel
ends, or when it fails (a channel missing or unreachable, the processor's
``on_stream_start`` raising): then it sends an error event if the events
channel works. Either way it sends a ``stream_stopped`` event and lets go of
everything within a bounded time.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Mapping
from typing import Any, Final, Literal, TypeAlias

import aiohttp

from byockit.protocol.errors import (
    ChannelNotFoundError,
    ParseError,
    StreamClosedError,
    TrickleError,
    TrickleTLSError,
)
from byockit.protocol.models import (
    ControlMessage,
    ErrorEvent,
    Event,
    EventMessage,
    InferenceStatus,
    InputStatus,
    JSONObject,
    JSONValue,
    ParamsUpdateEvent,
    StreamState,
    StreamStatus,
    StreamStoppedEvent,
    TraceEvent,
    TraceType,
    WorkerStartRequest,
)
from byockit.protocol.trickle import (
    JsonLinesWriter,
    JsonReader,
    JsonWriter,
    TricklePublisher,
    TrickleSubscriber,
    create_session,
)
from byockit.protocol.trickle.constants import MIME_JSON, MIME_JSONL, MIME_MPEGTS, SEQ_CURRENT
from byockit.worker.latest import LatestQueue
from byockit.worker.pipeline import DEFAULT_X264_PRESET, Pipeline, PipelineStats, unix_ms
from byockit.worker.processor import ParamsRejected, ProcessorRuntime, StreamContext

logger = logging.getLogger(__name__)

SessionHealth: TypeAlias = Literal["starting", "ok", "error"]

DEFAULT_STATUS_INTERVAL: Final = 10.0
DEFAULT_STALL_TIMEOUT: Final = 10.0
DEFAULT_ERROR_THRESHOLD: Final = 5
DEFAULT_DRAIN_TIMEOUT: Final = 5.0
EVENT_QUEUE: Final = 64
"""Events waiting to be sent; beyond it the oldest are dropped."""
DATA_QUEUE: Final = 256
"""Data lines waiting to be sent; beyond it the oldest are dropped."""
ERROR_EVENT_INTERVAL: Final = 1.0
"""Seconds between two error events about a failing processor."""
FLUSH_TIMEOUT: Final = 3.0
"""Seconds the last events and data lines get to go out when the session ends."""

_UNUSABLE_CHANNEL = (ChannelNotFoundError, StreamClosedError, TrickleTLSError)


class StreamSession:
    """One stream: its channels, its pipeline, its status and health.

    Raises :class:`ParamsRejected` at once when the start parameters do not
    parse. ``verify_tls``: ``False`` accepts the orchestrator's self-signed
    certificate (what go-livepeer does), ``True`` or an ``ssl.SSLContext``
    verifies. Health is ``"error"`` while the processor has failed
    ``error_threshold`` frames in a row, or while input arrives but no frame
    has come through for ``stall_timeout`` seconds; ``drain_timeout`` bounds
    how long a stop waits for frames in flight. ``x264_preset`` is the
    output encoder's preset.
    """

    def __init__(
        self,
        request: WorkerStartRequest,
        runtime: ProcessorRuntime,
        *,
        verify_tls: bool | ssl.SSLContext = False,
        status_interval: float = DEFAULT_STATUS_INTERVAL,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
        error_threshold: int = DEFAULT_ERROR_THRESHOLD,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        x264_preset: str = DEFAULT_X264_PRESET,
    ) -> None:
        for name, value in (
            ("status_interval", status_interval),
            ("stall_timeout", stall_timeout),
            ("error_threshold", error_threshold),
            ("drain_timeout", drain_timeout),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        self.request: Final = request
        self.stream_id: Final = request.stream_id
        self._runtime = runtime
        self._verify_tls = verify_tls
        self._status_interval = status_interval
        self._stall_timeout = stall_timeout
        self._error_threshold = error_threshold
        self._params = runtime.parse_params(
            None if request.params is None else request.params.to_json()
        )
        self._params_time: int | None = None
        self._events: LatestQueue[JSONObject] = LatestQueue(EVENT_QUEUE)
        self._data: LatestQueue[JSONValue] | None = (
            None if request.data_url is None else LatestQueue(DATA_QUEUE)
        )
        self.context: Final = StreamContext(
            self.stream_id,
            self._params.processor,
            send_data=self._send_data,
            send_event=self._send_event,
        )
        self._pipeline = Pipeline(
            runtime,
            self.context,
            self._params,
            report_error=self._processor_failed,
            on_first_input=lambda: self._emit(
                TraceEvent(TraceType.FIRST_INGEST_SEGMENT, unix_ms())
            ),
            on_first_output=lambda: self._emit(
                TraceEvent(TraceType.FIRST_PROCESSED_SEGMENT, unix_ms())
            ),
            drain_timeout=drain_timeout,
            x264_preset=x264_preset,
        )
        self._start_time: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop_requested = asyncio.Event()
        self._stop_reason = ""
        self._ended = asyncio.Event()
        self._failed = False
        self._over = False
        self._last_error: str | None = None
        self._last_error_time: int | None = None
        self._error_event_at: float | None = None
        self._unreported_errors = 0

    # -- what the server uses ------------------------------------------------------------------

    def start(self) -> None:
        """Start connecting and streaming in the background; returns at once."""
        if self._task is None and not self._stop_requested.is_set():
            self._start_time = unix_ms()
            self._task = asyncio.create_task(self._run(), name=f"stream {self.stream_id}")

    async def update_params(self, raw: Mapping[str, object]) -> None:
        """Merge ``raw`` into the stream's parameters; :class:`ParamsRejected` keeps the old ones.

        The pipeline's keys take effect at once, the processor's between its
        next two frames; a ``params_update`` event carries the whole new set,
        and a ``status`` event follows at once (gateways answer status
        queries with the last one, which would otherwise lag by up to
        ``status_interval``).
        """
        if not isinstance(raw, Mapping):
            raise ParamsRejected(f"parameters must be a JSON object, not {type(raw).__name__}")
        parsed = self._runtime.parse_params({**self._params.raw, **raw})
        self._params = parsed
        self._params_time = unix_ms()
        self._pipeline.update_params(parsed)
        self._emit(ParamsUpdateEvent(parsed.raw, self._params_time))
        self._emit(self.status())

    def status(self) -> StreamStatus:
        """The stream's status document (``GET /stream/status``, the ``status`` event)."""
        stats = self._pipeline.stats
        now = time.monotonic()
        latency = stats.latency_ms()
        return StreamStatus(
            state=self._state(),
            stream_id=self.stream_id,
            start_time=self._start_time,
            input_status=InputStatus(
                fps=round(stats.fps_in.rate(now), 2),
                last_input_time=stats.last_input_time,
                frames=stats.frames_in,
                dropped_frames=stats.frames_dropped,
            ),
            inference_status=InferenceStatus(
                fps=round(stats.fps_out.rate(now), 2),
                last_output_time=stats.last_output_time,
                frames=stats.frames_out,
                latency_ms=None if latency is None else round(latency, 2),
                last_params=self._params.raw,
                last_params_update_time=self._params_time,
                last_error=self._last_error,
                last_error_time=self._last_error_time,
            ),
            timestamp=unix_ms(),
        )

    @property
    def health(self) -> SessionHealth:
        """``"starting"`` until a first frame came through, then ``"ok"``, or ``"error"``."""
        stats = self._pipeline.stats
        if self._failed or stats.failures_in_a_row >= self._error_threshold:
            return "error"
        now = time.monotonic()
        if (
            stats.last_input_at is not None
            and stats.last_progress_at is not None
            and now - stats.last_input_at < self._stall_timeout
            and now - stats.last_progress_at > self._stall_timeout
        ):
            return "error"
        return "starting" if stats.frames_processed == 0 else "ok"

    @property
    def stats(self) -> PipelineStats:
        """The pipeline's live counters: frames in, dropped, processed, out; failures; audio."""
        return self._pipeline.stats

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    async def wait_ended(self) -> None:
        await self._ended.wait()

    async def stop(self, reason: str = "") -> None:
        """Stop the stream (idempotent) and wait until it has ended (bounded: drain timeout)."""
        if not self._stop_requested.is_set():
            self._stop_reason = reason
            self._stop_requested.set()
            self._pipeline.stop()
        if self._task is None:
            self._ended.set()
        await self._ended.wait()

    # -- the stream ----------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            async with create_session(verify_tls=self._verify_tls) as http:
                await self._serve(http)
        except Exception:
            logger.exception("stream %s: session failed", self.stream_id)
        finally:
            self._ended.set()

    async def _serve(self, http: aiohttp.ClientSession) -> None:
        """Run the stream with its events channel open from the first moment to the last."""
        events = self._publisher(self.request.events_url, MIME_JSON, http)
        sender = asyncio.create_task(self._send_events(JsonWriter(events)))
        try:
            self._emit(self.status())
            reason = await self._stream(http)
            self._over = True
            logger.info("stream %s stopped: %s", self.stream_id, reason)
            self._emit(self.status())
            self._emit(StreamStoppedEvent(reason or None, unix_ms()))
        finally:
            self._events.close()
            await _finish(sender, FLUSH_TIMEOUT)
            await events.close()

    async def _stream(self, http: aiohttp.ClientSession) -> str:
        """Run the pipeline and the side channels; returns why the stream stopped."""
        request = self.request
        control = self._subscriber(request.control_url, http)
        source = (
            None if request.subscribe_url is None else self._subscriber(request.subscribe_url, http)
        )
        output = None
        if request.publish_url is not None:
            output = self._publisher(request.publish_url, MIME_MPEGTS, http)
        data = (
            None
            if request.data_url is None
            else self._publisher(request.data_url, MIME_JSONL, http)
        )
        side_tasks = [
            asyncio.create_task(self._read_control(control)),
            asyncio.create_task(self._send_status_periodically()),
        ]
        data_sender = None if data is None else asyncio.create_task(self._send_data_lines(data))
        try:
            await self._runtime.load()
            await self._pipeline.run(source, output)
            if self._stop_requested.is_set():
                return self._stop_reason
            if source is not None and self._pipeline.stats.segments_in == 0:
                self._fail(f"the input channel {request.subscribe_url} ended before any input")
            return "input ended"
        except Exception as exc:
            self._fail(f"stream failed: {type(exc).__name__}: {exc}")
            return f"error: {exc}"
        finally:
            for task in side_tasks:
                task.cancel()
            await asyncio.gather(*side_tasks, return_exceptions=True)
            for client in (control, source, output):
                if client is not None:
                    await client.close()
            if data_sender is not None and data is not None and self._data is not None:
                self._data.close()
                await _finish(data_sender, FLUSH_TIMEOUT)
                await data.close()

    def _publisher(self, url: str, mime_type: str, http: aiohttp.ClientSession) -> TricklePublisher:
        return TricklePublisher(url, mime_type, session=http, verify_tls=self._verify_tls)

    def _subscriber(self, url: str, http: aiohttp.ClientSession) -> TrickleSubscriber:
        return TrickleSubscriber(url, start=SEQ_CURRENT, session=http, verify_tls=self._verify_tls)

    # -- control -------------------------------------------------------------------------------

    async def _read_control(self, subscriber: TrickleSubscriber) -> None:
        """Apply parameter updates; a control channel that ends before any message is reported.

        (Gateways write the start parameters first, so a working channel never
        ends empty: it was missing, and no update could ever arrive.)
        """
        received = 0

        def invalid(error: ParseError) -> None:
            nonlocal received
            received += 1
            self._report(f"malformed control message: {error}")

        try:
            async for document in JsonReader(subscriber, on_invalid=invalid):
                received += 1
                try:
                    message = ControlMessage.from_json(document)
                except ParseError as exc:
                    self._report(f"malformed control message: {exc}")
                    continue
                if message.params is None:
                    continue
                try:
                    await self.update_params(message.params.to_json())
                except ParamsRejected as exc:
                    self._report(f"control message rejected: {exc.message}")
        except TrickleError as exc:
            self._report(f"control channel failed: {exc}")
            return
        if not received:
            self._report(
                f"the control channel {self.request.control_url} ended before any message: "
                "parameter updates cannot arrive"
            )

    # -- events and data -----------------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        self._events.put(EventMessage(event).to_json())

    def _send_event(self, document: JSONObject) -> None:
        self._events.put(document)

    def _send_data(self, document: JSONValue) -> None:
        if self._data is not None:
            self._data.put(document)

    async def _send_status_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._status_interval)
            self._emit(self.status())

    async def _send_events(self, writer: JsonWriter) -> None:
        usable = True
        while (document := await self._events.get_async()) is not None:
            if not usable:
                continue
            try:
                await writer.send(document)
            except _UNUSABLE_CHANNEL as exc:
                logger.warning("stream %s: events channel unusable: %s", self.stream_id, exc)
                usable = False
            except TrickleError as exc:
                logger.warning("stream %s: an event was lost: %s", self.stream_id, exc)

    async def _send_data_lines(self, publisher: TricklePublisher) -> None:
        assert self._data is not None
        usable = True
        async with JsonLinesWriter(publisher) as writer:
            while (document := await self._data.get_async()) is not None:
                if not usable:
                    continue
                try:
                    await writer.send(document)
                except _UNUSABLE_CHANNEL as exc:
                    logger.warning("stream %s: data channel unusable: %s", self.stream_id, exc)
                    usable = False
                except TrickleError as exc:
                    logger.warning("stream %s: data lines were lost: %s", self.stream_id, exc)

    # -- errors and state ----------------------------------------------------------------------

    def _processor_failed(self, message: str) -> None:
        """A processor failure: recorded at once, reported at most every ERROR_EVENT_INTERVAL."""
        now = time.monotonic()
        if self._error_event_at is not None and now - self._error_event_at < ERROR_EVENT_INTERVAL:
            self._unreported_errors += 1
            self._record(message)
            return
        if self._unreported_errors:
            message += f" ({self._unreported_errors} earlier failures not reported)"
        self._unreported_errors = 0
        self._error_event_at = now
        self._report(message, log=False)  # the pipeline logs its own failures

    def _fail(self, message: str) -> None:
        self._failed = True
        self._report(message)

    def _report(self, message: str, *, log: bool = True) -> None:
        if log:
            logger.warning("stream %s: %s", self.stream_id, message)
        self._record(message)
        self._emit(ErrorEvent(message, self._last_error_time))

    def _record(self, message: str) -> None:
        self._last_error = message
        self._last_error_time = unix_ms()

    def _state(self) -> str:
        if self._over or self._ended.is_set():
            return StreamState.OFFLINE
        health = self.health
        if health == "error":
            return StreamState.ERROR
        return StreamState.LOADING if health == "starting" else StreamState.ONLINE


async def _finish(task: asyncio.Task[Any], seconds: float) -> None:
    """Let ``task`` end within ``seconds``, else cancel it."""
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        await asyncio.wait({task})
    elif not task.cancelled() and (error := task.exception()) is not None:
        logger.warning("a stream's sender failed: %r", error)
