"""The byockit demo: a synthetic clip through a real trickle loop, with live progress.

Everything runs in this process, on loopback: a :class:`TrickleServer`, a
publisher that encodes synthetic frames (each carrying its index) into
MPEG-TS segments in real time, and a subscriber whose segments go through the
streaming decoder. Each decoded frame's index is read back from its pixels,
so the demo knows, per frame, whether it arrived, in order, intact, and how
long it took from the moment it was made. It ends with a summary and exits 1
if any frame was lost, reordered or unreadable.

Run it with ``nox -s demo`` or ``python -m byockit.testkit.demo --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import AsyncIterator

import attrs
import av
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from byockit.protocol.media.aio import decode_segments, publish_stream
from byockit.protocol.media.encoder import video_frame
from byockit.protocol.trickle.constants import MIME_MPEGTS
from byockit.protocol.trickle.publisher import TricklePublisher
from byockit.protocol.trickle.subscriber import TrickleSubscriber
from byockit.testkit.synthetic import indexed_frame, read_index
from byockit.testkit.trickle_server import TrickleServer

TICKS_PER_SECOND = 90_000
CHANNEL = "demo"


@attrs.define
class Progress:
    """What the demo has seen so far; the live view and the summary read it."""

    total: int
    sent_at: dict[int, float] = attrs.field(factory=dict)
    received: list[int] = attrs.field(factory=list)
    latencies: list[float] = attrs.field(factory=list)
    unreadable: int = 0
    segments: int = 0
    started: float = attrs.field(factory=time.perf_counter)

    @property
    def in_order(self) -> bool:
        return self.received == sorted(set(self.received))

    @property
    def complete(self) -> bool:
        return self.received == list(range(self.total)) and not self.unreadable


def percentile(values: list[float], pct: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


async def frames(
    progress: Progress, fps: int, width: int, height: int
) -> AsyncIterator[av.VideoFrame]:
    """Synthetic frames at ``fps`` in real time; records when each was made."""
    start = time.perf_counter()
    for index in range(progress.total):
        delay = start + index / fps - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = video_frame(indexed_frame(index, width, height), index * TICKS_PER_SECOND // fps)
        progress.sent_at[index] = time.perf_counter()
        yield frame


async def publish(url: str, progress: Progress, fps: int, width: int, height: int) -> None:
    async with TricklePublisher(url, MIME_MPEGTS) as publisher:
        await publish_stream(frames(progress, fps, width, height), publisher)


async def receive(url: str, progress: Progress) -> None:
    """Decode the channel from segment 0 until the last frame arrives."""
    async with TrickleSubscriber(url, start=0) as subscriber:

        async def counted() -> AsyncIterator[object]:
            async for segment in subscriber:
                progress.segments += 1
                yield segment

        async with contextlib.aclosing(decode_segments(counted())) as items:  # type: ignore[arg-type]
            async for item in items:
                if not isinstance(item, av.VideoFrame):
                    continue
                now = time.perf_counter()
                try:
                    index = read_index(item.to_ndarray(format="rgb24"))
                except ValueError:
                    progress.unreadable += 1
                    continue
                progress.received.append(index)
                progress.latencies.append(now - progress.sent_at[index])
                if index == progress.total - 1:
                    return


def view(progress: Progress, fps: int) -> Panel:
    elapsed = time.perf_counter() - progress.started
    recent = progress.latencies[-fps:]
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("frames sent", f"{len(progress.sent_at)} / {progress.total}")
    table.add_row("frames received", str(len(progress.received)))
    table.add_row(
        "fps in / out",
        f"{len(progress.sent_at) / elapsed:.1f} / {len(progress.received) / elapsed:.1f}",
    )
    table.add_row(
        "latency (last second) p50 / p95",
        f"{percentile(recent, 50) * 1e3:.1f} / {percentile(recent, 95) * 1e3:.1f} ms"
        if recent
        else "-",
    )
    table.add_row("segments", str(progress.segments))
    table.add_row("in order", "yes" if progress.in_order else "[red]NO[/]")
    return Panel(
        Group(table), title="byockit trickle loop: publisher -> server -> subscriber -> decoder"
    )


async def run_demo(seconds: float, fps: int, width: int, height: int, console: Console) -> Progress:
    """Run the loop once; returns what was seen."""
    progress = Progress(total=max(1, round(seconds * fps)))
    async with TrickleServer() as server:
        url = server.create_channel(CHANNEL, MIME_MPEGTS)
        console.print(f"trickle server at [bold]{server.url}[/], channel [bold]{url}[/]")
        with Live(view(progress, fps), console=console, refresh_per_second=4) as live:
            receiver = asyncio.create_task(receive(url, progress))
            publisher = asyncio.create_task(publish(url, progress, fps, width, height))
            while not receiver.done():
                live.update(view(progress, fps))
                await asyncio.wait(
                    {receiver, publisher}, timeout=0.25, return_when=asyncio.FIRST_EXCEPTION
                )
                if publisher.done() and publisher.exception():
                    receiver.cancel()
                    break
                if publisher.done() and not receiver.done():
                    # Everything is published: give the last frames a moment, then stop.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(receiver), timeout=10)
                    server.delete_channel(CHANNEL)
            live.update(view(progress, fps))
            await asyncio.gather(publisher, receiver, return_exceptions=True)
            for task in (publisher, receiver):
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
    return progress


def summary(progress: Progress) -> Table:
    table = Table(title="summary", show_header=False)
    table.add_row("frames sent / received", f"{len(progress.sent_at)} / {len(progress.received)}")
    table.add_row("missing", str(len(set(range(progress.total)) - set(progress.received))))
    table.add_row("unreadable", str(progress.unreadable))
    table.add_row("in order", "yes" if progress.in_order else "no")
    if progress.latencies:
        table.add_row(
            "latency p50 / p95 / max",
            f"{percentile(progress.latencies, 50) * 1e3:.1f} / "
            f"{percentile(progress.latencies, 95) * 1e3:.1f} / "
            f"{max(progress.latencies) * 1e3:.1f} ms",
        )
    table.add_row(
        "result",
        "[green]every frame arrived, in order, intact[/]"
        if progress.complete
        else "[red]frames were lost, reordered or damaged[/]",
    )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m byockit.testkit.demo",
        description="Publish a synthetic clip through a loopback trickle server and read it back.",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10)")
    parser.add_argument("--fps", type=int, default=30, help="frame rate (default 30)")
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT (default 640x360)")
    args = parser.parse_args(argv)
    try:
        width, height = (int(part) for part in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size must look like 640x360, got {args.size!r}")
    if args.seconds <= 0 or not 1 <= args.fps <= 120 or width < 16 or height < 16:
        parser.error("need --seconds > 0, --fps in 1..120 and a size of at least 16x16")
    console = Console()
    try:
        progress = asyncio.run(run_demo(args.seconds, args.fps, width, height, console))
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    console.print()
    console.print(summary(progress))
    return 0 if progress.complete else 1


if __name__ == "__main__":
    sys.exit(main())
