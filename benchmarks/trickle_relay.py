"""Trickle relay benchmark: throughput and latency of the testkit TrickleServer.

One publisher streams 1 MB segments in 32 KiB chunks to a server running in its
own process (``byockit-testkit trickle-server``); 1, 10 and 50 subscribers read
every segment with byockit's ``TrickleSubscriber``. Two measurements per
subscriber count:

- **throughput**: the publisher writes as fast as the server takes the bytes;
  relay throughput is the bytes delivered to all subscribers per second.
- **latency**: the publisher paces one chunk every 10 ms (3.2 MB/s per reader);
  *first byte* is the time from the start of a segment's POST to a
  subscriber's first byte of it, *per chunk* the time from writing a chunk to
  a subscriber holding all of it.

Every chunk starts with the time it was written (``perf_counter``; publisher and
subscribers share this process) and its index, so latency is measured per chunk.
Results go to ``benchmarks/results/`` with the date and machine.

Run with ``nox -s bench`` (or ``python -m benchmarks.trickle_relay --help``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import struct
import sys
import time

import aiohttp
from rich.console import Console
from rich.table import Table

from benchmarks.machine import machine_description, results_path
from benchmarks.server_process import trickle_server_process
from byockit.protocol.trickle.publisher import TricklePublisher
from byockit.protocol.trickle.subscriber import TrickleSubscriber

SEGMENT_BYTES = 1024 * 1024
CHUNK_BYTES = 32 * 1024
CHUNKS_PER_SEGMENT = SEGMENT_BYTES // CHUNK_BYTES
STAMP = struct.Struct("!dI")  # write time, chunk index within the segment
PACED_INTERVAL = 0.010

console = Console()


def make_chunk(index: int) -> bytes:
    return STAMP.pack(time.perf_counter(), index) + bytes(CHUNK_BYTES - STAMP.size)


class Reader:
    """One subscriber: records first-byte and whole-chunk latencies."""

    def __init__(self) -> None:
        self.bytes = 0
        self.first_byte: list[float] = []
        self.per_chunk: list[float] = []

    async def run(
        self, url: str, segments: int, starts: dict[int, float], session: aiohttp.ClientSession
    ) -> None:
        async with TrickleSubscriber(url, start=0, session=session) as subscriber:
            async for segment in subscriber:
                buffer = bytearray()
                next_chunk = 0
                async for data in segment.iter_chunks():
                    now = time.perf_counter()
                    if not buffer and segment.seq in starts:
                        self.first_byte.append(now - starts[segment.seq])
                    buffer += data
                    while len(buffer) >= (next_chunk + 1) * CHUNK_BYTES:
                        offset = next_chunk * CHUNK_BYTES
                        written, _ = STAMP.unpack_from(buffer, offset)
                        self.per_chunk.append(now - written)
                        next_chunk += 1
                self.bytes += len(buffer)
                if segment.seq + 1 >= segments:
                    return


async def publish(
    url: str, segments: int, paced: bool, starts: dict[int, float], session: aiohttp.ClientSession
) -> None:
    async with TricklePublisher(url, "application/octet-stream", session=session) as publisher:
        for _ in range(segments):
            async with publisher.segment() as segment:
                starts[segment.seq] = time.perf_counter()
                for index in range(CHUNKS_PER_SEGMENT):
                    await segment.write(make_chunk(index))
                    if paced:
                        await asyncio.sleep(PACED_INTERVAL)


async def run_case(base_url: str, subscribers: int, segments: int, paced: bool) -> dict[str, float]:
    url = f"{base_url}bench-{subscribers}-{'paced' if paced else 'full'}"
    starts: dict[int, float] = {}
    readers = [Reader() for _ in range(subscribers)]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        # Create the channel, then let every subscriber wait on segment 0 before publishing.
        async with session.post(url, headers={"Expect-Content": "application/octet-stream"}):
            pass
        tasks = [asyncio.create_task(r.run(url, segments, starts, session)) for r in readers]
        await asyncio.sleep(0.5)
        began = time.perf_counter()
        await publish(url, segments, paced, starts, session)
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
        elapsed = time.perf_counter() - began
    delivered = sum(r.bytes for r in readers)
    if delivered != subscribers * segments * SEGMENT_BYTES:
        raise RuntimeError(f"lost data: {delivered} bytes delivered")
    first = sorted(x for r in readers for x in r.first_byte)
    chunk = sorted(x for r in readers for x in r.per_chunk)
    return {
        "mb_per_s": delivered / elapsed / 1e6,
        "first_p50": percentile(first, 50),
        "first_p95": percentile(first, 95),
        "chunk_p50": percentile(chunk, 50),
        "chunk_p95": percentile(chunk, 95),
        "chunk_p99": percentile(chunk, 99),
    }


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1]


async def main_async(args: argparse.Namespace) -> int:
    rows: list[tuple[int, dict[str, float], dict[str, float]]] = []
    async with trickle_server_process() as base_url:
        for subscribers in args.subscribers:
            console.print(f"[bold]{subscribers} subscriber(s)[/]: throughput run...")
            full = await run_case(base_url, subscribers, args.segments, paced=False)
            console.print(f"[bold]{subscribers} subscriber(s)[/]: paced latency run...")
            paced = await run_case(base_url, subscribers, args.paced_segments, paced=True)
            rows.append((subscribers, full, paced))

    table = Table(title="Trickle relay: 1 publisher, 1 MB segments in 32 KiB chunks")
    for column in (
        "subscribers",
        "relay MB/s",
        "first byte p50/p95 ms",
        "per chunk p50/p95/p99 ms (paced)",
    ):
        table.add_column(column, justify="right")
    lines = [
        "| subscribers | relay MB/s (unpaced) | first byte p50 / p95 ms (paced) "
        "| per chunk p50 / p95 / p99 ms (paced) |",
        "|---:|---:|---:|---:|",
    ]
    for subscribers, full, paced in rows:
        first = f"{paced['first_p50'] * 1e3:.2f} / {paced['first_p95'] * 1e3:.2f}"
        chunk = " / ".join(f"{paced[k] * 1e3:.2f}" for k in ("chunk_p50", "chunk_p95", "chunk_p99"))
        table.add_row(str(subscribers), f"{full['mb_per_s']:.0f}", first, chunk)
        lines.append(f"| {subscribers} | {full['mb_per_s']:.0f} | {first} | {chunk} |")
    console.print(table)

    path = results_path("trickle_relay")
    path.write_text(
        "# Trickle relay benchmark\n\n"
        f"{machine_description()}\n\n"
        f"Command: `nox -s bench` ({args.segments} segments unpaced, {args.paced_segments} "
        f"paced at one 32 KiB chunk per {PACED_INTERVAL * 1e3:.0f} ms). Server in its own "
        "process; publisher and subscribers share one process, so on a small machine "
        "the clients compete with the server for the cores.\n\n" + "\n".join(lines) + "\n"
    )
    console.print(f"written to {path}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--segments", type=int, default=20, help="segments per throughput run")
    parser.add_argument(
        "--paced-segments", type=int, default=3, help="segments per paced latency run"
    )
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
