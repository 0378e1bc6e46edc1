"""One measured run: a stream through a worker (or through no worker: the floor), every frame timed.

The harness publishes the clip's frames into the input channel at a fixed
rate, each frame's bytes as one write (the time of that write is the frame's
publish time), and reads the output channel with byockit's subscriber and
decoder, reading each frame's index from its pixels (the time the decoded
frame reaches the harness is its receive time). With a worker, the fake
orchestrator creates the channels and starts the stream exactly as for the
worker's integration tests; the floor instead subscribes to its own input
channel on the same trickle server, so it is what the harness, the server
and one decode cost without a worker in between.

Timestamps are ``time.perf_counter()`` in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterable, Callable
from typing import Any, Final

import aiohttp
import attrs
import av
import numpy as np
import numpy.typing as npt

from benchmarks.worker_clip import Clip
from benchmarks.worker_processes import cpu_seconds, rss_bytes
from byockit.protocol.media import decode_segments
from byockit.protocol.models import CapabilityRegistration
from byockit.protocol.trickle.publisher import TricklePublisher
from byockit.protocol.trickle.subscriber import TrickleSubscriber
from byockit.testkit.orchestrator import MIME_VIDEO, FakeOrchestrator
from byockit.testkit.synthetic import read_index

SETTLE: Final = 1.0
"""Seconds from the stream's start to its first input frame: time for the worker to subscribe."""
DRAIN: Final = 3.0
"""Seconds after the last input frame that output is still waited for."""
QUIET: Final = 1.0
"""The wait ends earlier once no output arrived for this long."""
WARMUP: Final = 2.0
"""Frames published in the first seconds are left out of the latency figures."""
RSS_INTERVAL: Final = 5.0
"""Seconds between two samples of the worker's memory in a soak."""
UNREADABLE: Final = -1
PLANAR_YUV: Final = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuv444p"})
"""Pixel formats whose first plane is the 8-bit luma, read in place."""


@attrs.define
class Trace:
    """What happened to each frame: publish times by index, receive times in arrival order."""

    sent: list[float]
    received: list[tuple[int, float]] = attrs.field(factory=list)
    """(index read from the pixels, or :data:`UNREADABLE`; receive time)."""
    publish_end: float = 0.0
    cpu_seconds: float | None = None
    """The worker's CPU time from the first input frame to the end of the run."""
    rss: list[tuple[float, int]] = attrs.field(factory=list)
    """(seconds since the first input frame, worker RSS bytes), in a soak."""


@attrs.frozen
class Measured:
    """A run's figures; times in seconds, ``None`` where the run gives none."""

    published: int
    delivered: int
    unreadable: int
    fps_out: float
    """Output frames received per second once warmed up, until the last input frame."""
    latency_p50: float
    latency_p95: float
    early_p50: float
    """Median latency of the first third of the measured frames..."""
    late_p50: float
    """...and of the last third: a backlog shows as late >> early."""
    first_output: float | None
    cpu_per_frame: float | None

    @property
    def dropped(self) -> int:
        return self.published - self.delivered


def measure(trace: Trace) -> Measured:
    """The figures of a run (see :class:`Measured` and the module docstring)."""
    start = trace.sent[0]
    first_seen: dict[int, float] = {}
    for index, at in trace.received:
        if index != UNREADABLE:
            first_seen.setdefault(index, at)
    measured = sorted(
        (trace.sent[index], at - trace.sent[index])
        for index, at in first_seen.items()
        if 0 <= index < len(trace.sent) and trace.sent[index] >= start + WARMUP
    )
    latencies = sorted(latency for _, latency in measured)
    third = max(1, len(measured) // 3)
    arrivals = [at for _, at in trace.received]
    first = min(arrivals) if arrivals else None
    steady = start + WARMUP
    in_window = sum(1 for at in arrivals if steady <= at <= trace.publish_end)
    span = trace.publish_end - steady
    outputs = len(trace.received)
    return Measured(
        published=len(trace.sent),
        delivered=sum(1 for index in first_seen if 0 <= index < len(trace.sent)),
        unreadable=sum(1 for index, _ in trace.received if index == UNREADABLE),
        fps_out=in_window / span if span > 0 else float("nan"),
        latency_p50=percentile(latencies, 50),
        latency_p95=percentile(latencies, 95),
        early_p50=percentile(sorted(x for _, x in measured[:third]), 50),
        late_p50=percentile(sorted(x for _, x in measured[-third:]), 50),
        first_output=None if first is None else first - start,
        cpu_per_frame=(
            trace.cpu_seconds / outputs if trace.cpu_seconds is not None and outputs else None
        ),
    )


def percentile(values: list[float], pct: float) -> float:
    """The ``pct`` percentile of sorted ``values`` (nan when empty)."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1]


def frame_index(frame: av.VideoFrame) -> int:
    """The index a frame shows, or :data:`UNREADABLE`.

    Read from a view of the frame's luma plane, without a conversion or a
    copy: a worker that outputs more frames makes the harness decode more,
    and on a shared machine what the harness spends per frame is taken from
    the worker.
    """
    luma: npt.NDArray[Any]
    if frame.format.name in PLANAR_YUV:
        plane = frame.planes[0]
        rows = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)
        luma = rows[:, : plane.width]
    else:
        luma = frame.to_ndarray(format="gray")
    try:
        return read_index(luma)
    except ValueError:
        return UNREADABLE


async def publish(
    publisher: TricklePublisher, clip: Clip, count: int, rate: float, trace: Trace
) -> None:
    """Write frames 0..count-1 at ``rate`` per second, one segment per GOP."""
    began = time.perf_counter()
    for segment_frames in clip.segments(count):
        async with publisher.segment() as segment:
            for index in segment_frames:
                delay = began + index / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                trace.sent[index] = time.perf_counter()
                await segment.write(clip.frames[index])
    trace.publish_end = time.perf_counter()


async def receive(frames: AsyncIterable[av.VideoFrame], trace: Trace) -> None:
    async for frame in frames:
        at = time.perf_counter()
        trace.received.append((frame_index(frame), at))


async def video_frames(url: str, session: aiohttp.ClientSession) -> AsyncIterable[av.VideoFrame]:
    """Decode a channel from its first segment, as the fake orchestrator reads a worker's output."""
    async with (
        TrickleSubscriber(url, start=0, session=session, verify_tls=False) as subscriber,
        contextlib.aclosing(decode_segments(subscriber)) as items,
    ):
        async for item in items:
            if isinstance(item, av.VideoFrame):
                yield item


async def drain(trace: Trace, last_index: int) -> None:
    """Wait for the last frame, or until output went quiet, at most :data:`DRAIN` seconds."""
    while (now := time.perf_counter()) - trace.publish_end < DRAIN:
        if trace.received and trace.received[-1][0] == last_index:
            return
        last = trace.received[-1][1] if trace.received else trace.publish_end
        if now - max(last, trace.publish_end) > QUIET:
            return
        await asyncio.sleep(0.05)


async def run_floor(
    orchestrator: FakeOrchestrator,
    session: aiohttp.ClientSession,
    name: str,
    clip: Clip,
    count: int,
    rate: float,
) -> Trace:
    """No worker: the harness reads its own input channel back."""
    url = orchestrator.trickle.create_channel(name, MIME_VIDEO)
    trace = Trace(sent=[0.0] * count)
    reader = asyncio.create_task(receive(video_frames(url, session), trace))
    try:
        async with TricklePublisher(url, MIME_VIDEO, session=session) as publisher:
            await publish(publisher, clip, count, rate, trace)
            await drain(trace, count - 1)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        orchestrator.trickle.delete_channel(name)
    return trace


async def run_worker(
    orchestrator: FakeOrchestrator,
    session: aiohttp.ClientSession,
    worker: tuple[int, str],
    name: str,
    clip: Clip,
    count: int,
    rate: float,
    *,
    sample_rss: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Trace:
    """One stream through the worker (``pid``, ``url``): started by the fake orchestrator."""
    pid, url = worker
    await orchestrator.register(CapabilityRegistration(name=name, url=url, capacity=1))
    params = {"width": clip.width, "height": clip.height, "max_framerate": 60}
    stream = await orchestrator.start_stream(name, params)
    assert stream.input_url is not None  # video ingress is on by default
    trace = Trace(sent=[0.0] * count)
    tasks = [asyncio.create_task(receive(stream.output_frames(), trace))]
    try:
        await asyncio.sleep(SETTLE)
        async with TricklePublisher(stream.input_url, MIME_VIDEO, session=session) as pub:
            cpu_before = cpu_seconds(pid)
            if sample_rss:
                tasks.append(asyncio.create_task(_sample_rss(pid, trace, progress)))
            await publish(pub, clip, count, rate, trace)
            await drain(trace, count - 1)
            trace.cpu_seconds = cpu_seconds(pid) - cpu_before
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await stream.stop()
        orchestrator.forget(name)
    if stream.failure is not None:
        raise RuntimeError(f"the fake orchestrator failed the stream: {stream.failure}")
    return trace


async def _sample_rss(pid: int, trace: Trace, progress: Callable[[str], None] | None) -> None:
    began = time.perf_counter()
    while True:
        elapsed = time.perf_counter() - began
        trace.rss.append((elapsed, rss_bytes(pid)))
        if progress is not None:
            progress(f"{elapsed:5.0f} s: worker RSS {trace.rss[-1][1] / 2**20:.1f} MiB")
        await asyncio.sleep(RSS_INTERVAL)
