"""Stream video through a capability in one call, and measure what came back.

::

    from byockit.client.run import run

    summary = await run("http://127.0.0.1:8088", "invert", source="test", seconds=10)
    print(summary.fps_out, summary.latency_p50)

:func:`run` starts the stream on the gateway (or the first of several that
takes it), watches it, publishes the source over WHIP and plays the output
over WHEP (the URLs the gateway returned), optionally records the output to
MP4, optionally shows input and output side by side on a local preview page
(:class:`~byockit.client.preview.PreviewServer`, whose params form updates
the stream), and stops everything when the time is up, the source ends,
``until`` is set, or something fails. Latency is measured per frame when the source
shows the indexed test pattern (``source="test"``); other sources get frame
rates only, as WebRTC does not keep timestamps end to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import attrs
import av

from byockit.client.errors import ClientError, GatewayError, InvalidGatewayAnswer
from byockit.client.gateway import GatewayClient, StartSettings
from byockit.client.session import DEFAULT_STARTUP_TIMEOUT, StreamSession
from byockit.client.sinks import FrameSink, ReceivedFrame, Recorder
from byockit.client.sources import FileSource, TestPatternSource, WebcamSource
from byockit.client.webrtc import WhepPlayer, WhipPublisher
from byockit.protocol.errors import ParseError
from byockit.protocol.models import JSONObject, JSONValue, StreamUrls

if TYPE_CHECKING:
    from byockit.client.preview import PreviewServer

logger = logging.getLogger(__name__)

TEST_SOURCE: Final = "test"
"""``source`` naming the indexed test pattern (:class:`TestPatternSource`, 640x360 at 30 fps)."""
WEBCAM_SOURCE: Final = "webcam"
"""``source`` naming the default camera (:class:`WebcamSource`)."""
PROGRESS_INTERVAL: Final = 1.0
"""Seconds between two ``on_progress`` calls."""
STATUS_INTERVAL: Final = 2.0
"""Seconds between two status requests for the progress reports and the summary."""
RATE_WINDOW: Final = 1.0
"""Live frame rates count the frames of the last this many seconds."""
DRAIN_IDLE: Final = 2.0
"""After a finite source ended, the run ends once no output came for this many seconds..."""
DRAIN_TIMEOUT: Final = 15.0
"""... or this many seconds after the source ended, whichever comes first."""
MAX_LATENCIES: Final = 10_000
"""Latency samples kept for the percentiles (the most recent ones)."""

SourceSpec = str | AsyncIterable[av.VideoFrame]
"""``"test"``, ``"webcam"``, a file path or URL, or any async iterable of frames."""


@attrs.frozen
class Progress:
    """How a run is going, reported every :data:`PROGRESS_INTERVAL` seconds."""

    elapsed: float
    stream_id: str
    gateway: str
    """The gateway that took the stream."""
    urls: StreamUrls
    settings: StartSettings
    """The gateway's answer and what the start sent: what it takes to update, query or
    stop the stream from elsewhere (see :class:`~byockit.client.session.StreamSession`)."""
    state: str
    """The worker's ``state`` from the last status (``"STARTING"`` before the first one)."""
    frames_in: int
    frames_out: int
    fps_in: float
    """Frames sent during the last :data:`RATE_WINDOW` seconds, per second."""
    fps_out: float
    latency: float | None
    """Median latency (seconds) of the output frames of the last window; ``None`` if unknown."""
    bitrate_in: float
    """Bits per second sent over WHIP since the previous report (all the network carried:
    RTP, RTCP, DTLS)."""
    bitrate_out: float
    """Bits per second received over WHEP since the previous report."""
    preview_url: str | None
    """The preview page, when the run has one."""
    dropped: int | None
    """Indexed frames missing from the output so far (``None`` if frames carry no index)."""


@attrs.frozen
class RunSummary:
    """What a run did. Latencies are ``None`` when no output frame could be matched."""

    stream_id: str
    gateway: str
    """The gateway that took the stream."""
    seconds: float
    """From the start answer to the end of the run."""
    frames_in: int
    frames_out: int
    fps_in: float
    """Average rates over :attr:`seconds`."""
    fps_out: float
    latency_p50: float | None
    latency_p95: float | None
    bytes_in: int
    """Bytes sent over WHIP (all the network carried: RTP, RTCP, DTLS)."""
    bytes_out: int
    """Bytes received over WHEP."""
    bitrate_in: float
    """Average bits per second over :attr:`seconds`, sent and received."""
    bitrate_out: float
    dropped: int | None
    """Test pattern frames missing from the output between its first and last frame
    (``None`` when the source carries no index)."""
    status: JSONObject | None
    """The last status document the gateway gave."""
    recorded: str | None
    """The MP4 file written, if any."""


async def run(
    gateway: str | Sequence[str],
    capability: str,
    *,
    source: SourceSpec = TEST_SOURCE,
    params: Mapping[str, JSONValue] | None = None,
    seconds: float | None = None,
    preview: bool = False,
    record: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    until: asyncio.Event | None = None,
    verify_tls: bool | ssl.SSLContext = True,
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
) -> RunSummary:
    """Stream ``source`` through ``capability`` with ``params``; return the summary.

    Runs for ``seconds`` (``None``: until the source ends, ``until`` is
    set, the gateway ends the output, as when the stream is stopped
    elsewhere, or the call is cancelled, which stops everything and
    returns nothing). ``preview`` serves the preview page on 127.0.0.1 (its URL is
    in each :class:`Progress` and logged); params submitted there update the
    stream. ``record`` writes the output to that MP4 path. A source given as
    an iterable is not closed; one named by a string is.
    ``on_progress`` is called each second. ``startup_timeout`` bounds the
    wait for the stream's first status.

    Raises what starting raises (:class:`~byockit.client.errors.GatewayError`,
    :class:`~byockit.client.errors.NoGatewayAvailable`...),
    :class:`~byockit.client.errors.StreamFailed` when the stream fails,
    :class:`~byockit.client.errors.InvalidGatewayAnswer` when the gateway
    gave no WHIP or WHEP URL, :class:`~byockit.protocol.errors.MediaError`
    when the source or the recording fails. The stream is stopped in every case.
    """
    if seconds is not None and not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds!r}")
    frames = open_source(source)
    async with contextlib.AsyncExitStack() as stack:
        if frames is not source:
            stack.push_async_callback(_close_source, frames)
        client = await stack.enter_async_context(GatewayClient(gateway, verify_tls=verify_tls))
        stream = await client.start(capability, params)
        started = time.monotonic()
        stack.push_async_callback(_stop_quietly, stream)
        whip_url, whep_url = _media_urls(stream)
        recorder = await stack.enter_async_context(Recorder(record)) if record else None
        page = await stack.enter_async_context(_preview(stream)) if preview else None
        player = await stack.enter_async_context(
            WhepPlayer(whep_url, session=client.http, verify_tls=verify_tls)
        )
        sink = FrameSink(player)
        stack.push_async_callback(sink.close)
        meter = Meter(started)
        publisher = await stack.enter_async_context(
            WhipPublisher(
                whip_url,
                sink.track(meter.count(frames, page)),
                session=client.http,
                verify_tls=verify_tls,
            )
        )
        job = _Run(stream, meter, sink, _Traffic(publisher, player), recorder, page, on_progress)
        await job.until_done(
            publisher=publisher.wait(),
            watch=stream.watch(startup_timeout=startup_timeout),
            seconds=seconds,
            until=until,
        )
        return meter.summary(
            stream, job.status, record if recorder else None, await job.traffic.total()
        )


def open_source(source: SourceSpec) -> AsyncIterable[av.VideoFrame]:
    """The frames ``source`` names (``"test"``, ``"webcam"``, a path), or ``source`` itself."""
    if not isinstance(source, str):
        return source
    if source == TEST_SOURCE:
        return TestPatternSource()
    if source == WEBCAM_SOURCE:
        return WebcamSource()
    if not source:
        raise ValueError('source must be "test", "webcam" or a file path, got ""')
    return FileSource(source)


def _media_urls(stream: StreamSession) -> tuple[str, str]:
    urls = stream.urls
    for name in ("whip_url", "whep_url"):
        if not getattr(urls, name):
            raise InvalidGatewayAnswer(
                f"the start answer gave no {name}: the gateway does not offer WebRTC for "
                f"stream {stream.stream_id}",
                url=stream.gateway_url,
            )
    return urls.whip_url, urls.whep_url


def _preview(stream: StreamSession) -> PreviewServer:
    """A preview page whose params form updates ``stream`` (imported here: it loads websockets)."""
    from byockit.client.preview import PreviewServer

    async def update(params: dict[str, Any]) -> tuple[int, str]:
        try:
            reply = await stream.update(params)
        except GatewayError as exc:
            return exc.status, exc.body
        except ParseError as exc:
            return 400, str(exc)
        except ClientError as exc:
            return 502, str(exc)
        page.set_params(params)
        return reply.status, reply.body

    page = PreviewServer(on_params=update)
    if stream.params is not None:
        page.set_params(stream.params)
    return page


async def _close_source(frames: AsyncIterable[av.VideoFrame]) -> None:
    close = getattr(frames, "close", None)
    if close is not None:
        await close()


async def _stop_quietly(stream: StreamSession) -> None:
    """Stop the stream on the way out; a failure to tell the gateway is logged, not raised."""
    try:
        await stream.stop()
    except ClientError as exc:
        logger.warning("could not stop stream %s: %s", stream.stream_id, exc)


class Meter:
    """Counts frames in and out and keeps latency samples, all bounded."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.frames_in = 0
        self.frames_out = 0
        self.last_output: float | None = None
        self.latencies: deque[float] = deque(maxlen=MAX_LATENCIES)
        self._sent: deque[float] = deque(maxlen=1024)
        self._received: deque[tuple[float, float | None]] = deque(maxlen=1024)
        self._first_index: int | None = None
        self._last_index: int | None = None
        self._distinct = 0
        self._last_traffic = (started, 0, 0)
        """When the bytes sent and received were last looked at, and how many there were."""

    async def count(
        self, frames: AsyncIterable[av.VideoFrame], page: PreviewServer | None
    ) -> AsyncGenerator[av.VideoFrame, None]:
        """Pass ``frames`` through, counting them as sent (and showing them on ``page``)."""
        async for frame in frames:
            self.frames_in += 1
            self._sent.append(time.monotonic())
            if page is not None:
                page.show_input(frame)
            yield frame

    def note_output(self, received: ReceivedFrame) -> None:
        self.frames_out += 1
        self.last_output = received.received_at
        self._received.append((received.received_at, received.latency))
        if received.latency is not None:
            self.latencies.append(received.latency)
        index = received.index
        if index is not None and (self._last_index is None or index > self._last_index):
            if self._first_index is None:
                self._first_index = index
            self._last_index = index
            self._distinct += 1

    def progress(
        self,
        stream: StreamSession,
        status: JSONObject | None,
        preview_url: str | None,
        traffic: tuple[int, int],
    ) -> Progress:
        """How the run is going; ``traffic``: bytes sent and received so far."""
        now = time.monotonic()
        at, sent, received = self._last_traffic
        self._last_traffic = (now, *traffic)
        span = max(now - at, 1e-3)
        since = now - RATE_WINDOW
        recent = [latency for at, latency in self._received if at >= since]
        latencies = [latency for latency in recent if latency is not None]
        state = status.get("state") if status else None
        return Progress(
            elapsed=now - self.started,
            stream_id=stream.stream_id,
            gateway=stream.gateway_url,
            urls=stream.urls,
            settings=stream.settings,
            state=state if isinstance(state, str) else "STARTING",
            frames_in=self.frames_in,
            frames_out=self.frames_out,
            fps_in=sum(1 for at in self._sent if at >= since) / RATE_WINDOW,
            fps_out=len(recent) / RATE_WINDOW,
            latency=percentile(latencies, 50),
            bitrate_in=(traffic[0] - sent) * 8 / span,
            bitrate_out=(traffic[1] - received) * 8 / span,
            preview_url=preview_url,
            dropped=self.dropped(),
        )

    def dropped(self) -> int | None:
        """Indexes between the first and the last output frame that never came out."""
        if self._first_index is None or self._last_index is None:
            return None
        return self._last_index - self._first_index + 1 - self._distinct

    def summary(
        self,
        stream: StreamSession,
        status: JSONObject | None,
        recorded: str | None,
        traffic: tuple[int, int],
    ) -> RunSummary:
        """The whole run; ``traffic``: bytes sent and received."""
        seconds = time.monotonic() - self.started
        samples = list(self.latencies)
        return RunSummary(
            stream_id=stream.stream_id,
            gateway=stream.gateway_url,
            seconds=seconds,
            frames_in=self.frames_in,
            frames_out=self.frames_out,
            fps_in=self.frames_in / seconds,
            fps_out=self.frames_out / seconds,
            latency_p50=percentile(samples, 50),
            latency_p95=percentile(samples, 95),
            bytes_in=traffic[0],
            bytes_out=traffic[1],
            bitrate_in=traffic[0] * 8 / seconds,
            bitrate_out=traffic[1] * 8 / seconds,
            dropped=self.dropped(),
            status=status,
            recorded=recorded,
        )


def percentile(samples: Sequence[float], rank: float) -> float | None:
    """The nearest-rank ``rank``-th percentile of ``samples`` (``None`` if there are none)."""
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(rank / 100 * len(ordered)) - 1)]


class _Traffic:
    """The bytes a run's WebRTC connections moved (for the bitrates)."""

    def __init__(self, publisher: WhipPublisher, player: WhepPlayer) -> None:
        self.publisher = publisher
        self.player = player

    async def total(self) -> tuple[int, int]:
        """Bytes sent over WHIP and received over WHEP so far."""
        return await self.publisher.bytes_sent(), await self.player.bytes_received()


class _Run:
    """The tasks of one run: output, watchdog, publisher, clock, status and progress."""

    def __init__(
        self,
        stream: StreamSession,
        meter: Meter,
        sink: FrameSink,
        traffic: _Traffic,
        recorder: Recorder | None,
        page: PreviewServer | None,
        on_progress: Callable[[Progress], None] | None,
    ) -> None:
        self.stream = stream
        self.meter = meter
        self.sink = sink
        self.traffic = traffic
        self.recorder = recorder
        self.page = page
        self.on_progress = on_progress
        self.status: JSONObject | None = None
        """The last status document seen."""

    async def until_done(
        self,
        *,
        publisher: Coroutine[Any, Any, None],
        watch: Coroutine[Any, Any, None],
        seconds: float | None,
        until: asyncio.Event | None,
    ) -> None:
        """Run until the clock, ``until``, the end of the output or a drained source says so.

        The first failure of any task is raised; every task is ended on the way out.
        """
        published = asyncio.ensure_future(publisher)
        ending: set[asyncio.Future[object]] = {
            asyncio.ensure_future(watch),
            asyncio.ensure_future(self._consume()),
        }
        if seconds is not None:
            ending.add(asyncio.ensure_future(asyncio.sleep(seconds)))
        if until is not None:
            ending.add(asyncio.ensure_future(until.wait()))
        helpers = {asyncio.ensure_future(self._poll_status())}
        if self.on_progress is not None or self.page is not None:
            helpers.add(asyncio.ensure_future(self._report()))
        pending = ending | {published}
        try:
            while True:
                done, pending = await asyncio.wait(
                    pending | helpers, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    task.result()  # raises the failure, if any
                pending -= helpers
                if done - {published} - helpers:
                    break
                if published in done:
                    pending.add(asyncio.ensure_future(self._drain()))
        finally:
            everything = pending | helpers | {published}
            for task in everything:
                task.cancel()
            await asyncio.gather(*everything, return_exceptions=True)
        await self._fetch_status()

    async def _consume(self) -> None:
        async for received in self.sink:
            self.meter.note_output(received)
            if self.page is not None:
                self.page.show_output(received.frame, received.latency)
            if self.recorder is not None:
                await self.recorder.write(received.frame)

    async def _drain(self) -> None:
        """Return once output stopped coming after the source ended (see :data:`DRAIN_IDLE`)."""
        ended = time.monotonic()
        while True:
            now = time.monotonic()
            last = max(self.meter.last_output or ended, ended)
            if now - last >= DRAIN_IDLE or now - ended >= DRAIN_TIMEOUT:
                return
            await asyncio.sleep(0.1)

    async def _poll_status(self) -> None:
        while True:
            await self._fetch_status()
            await asyncio.sleep(STATUS_INTERVAL)

    async def _fetch_status(self) -> None:
        try:
            status = await self.stream.status()
        except ClientError as exc:
            logger.info("status of %s unavailable: %s", self.stream.stream_id, exc)
            return
        if status is not None:
            self.status = status

    async def _report(self) -> None:
        preview_url = self.page.url if self.page is not None else None
        if preview_url is not None:
            logger.info("preview of stream %s: %s", self.stream.stream_id, preview_url)
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL)
            traffic = await self.traffic.total()
            progress = self.meter.progress(self.stream, self.status, preview_url, traffic)
            if self.page is not None:
                self.page.set_stats(
                    {
                        "stream": progress.stream_id,
                        "state": progress.state,
                        "frames in": progress.frames_in,
                        "frames out": progress.frames_out,
                        "kbit/s in": _kbits(progress.bitrate_in),
                        "kbit/s out": _kbits(progress.bitrate_out),
                    }
                )
            if self.on_progress is not None:
                self.on_progress(progress)


def _kbits(bitrate: float) -> str:
    return f"{bitrate / 1000:.0f}"
