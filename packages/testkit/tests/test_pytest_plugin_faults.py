"""Each fault of the pytest plugin, on the wire, and what byockit's clients make of it.

This module is a user's test file: it uses the plugin's fixtures, which the
installed plugin provides as it does in anyone's CI (no conftest here).
Raw trickle tests pin each fault's exact effect; worker tests show the real
worker living through it. Orders and lower bounds are asserted, never how
long something took.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator

import av
import pytest

from byockit.client import GatewayClient
from byockit.protocol.errors import TrickleError
from byockit.protocol.trickle import TricklePublisher, TrickleSubscriber
from byockit.testkit.clip import SyntheticClip
from byockit.testkit.orchestrator import FakeStream
from byockit.testkit.stack import RunningWorker, WorkerFactory
from byockit.testkit.trickle_server import TrickleFaults, TrickleServer
from byockit.testkit.trickle_server.faults import MAX_HITS_KEPT
from byockit.worker.frames import Frame

TIMEOUT = 30.0


def invert(frame: Frame) -> object:
    return 255 - frame.data


async def indexes_out(stream: FakeStream, clip: SyntheticClip) -> list[int]:
    """Indexes of the stream's output frames, until the clip's last one or a quiet second."""
    seen: list[int] = []
    async with contextlib.aclosing(stream.output_frames()) as frames:
        while True:
            try:
                async with asyncio.timeout(2.0 if seen else TIMEOUT):
                    frame = await anext(frames)
            except TimeoutError:
                return seen
            index = clip.index_of(frame)
            assert index is not None
            seen.append(index)
            if index == clip.count - 1:
                return seen


@contextlib.asynccontextmanager
async def reading(
    stream: FakeStream, clip: SyntheticClip
) -> AsyncIterator[asyncio.Task[list[int]]]:
    task = asyncio.create_task(indexes_out(stream, clip))
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def served(worker: WorkerFactory) -> RunningWorker:
    return await worker(invert)


# -- 470 --------------------------------------------------------------------------------------


async def test_a_470_makes_a_reader_jump_to_the_latest_segment(
    trickle_server: TrickleServer, faults: TrickleFaults
) -> None:
    url = trickle_server.create_channel("channel", "video/MP2T")
    async with TricklePublisher(url) as publisher:
        for seq in range(3):
            await publisher.write_segment(f"segment {seq}".encode())
        fault = faults.answer_470(url)
        async with TrickleSubscriber(url, start=0) as subscriber:
            next_segment = asyncio.create_task(subscriber.next_segment())
            await fault.wait()
            await publisher.write_segment(b"segment 3")
            segment = await asyncio.wait_for(next_segment, TIMEOUT)
            assert segment is not None
            assert (segment.seq, await segment.read()) == (3, b"segment 3")  # 0-2 skipped
    assert fault.hits == [0]
    assert not fault.active  # spent


async def test_a_fault_remembers_its_first_hits_and_counts_them_all(
    trickle_server: TrickleServer, faults: TrickleFaults
) -> None:
    fault = faults.delay(trickle_server.create_channel("channel", "video/MP2T"), 0.001)
    for seq in range(MAX_HITS_KEPT + 5):
        fault._strike(seq)  # what every delayed segment read does
    await fault.wait(MAX_HITS_KEPT + 5)
    assert fault.hits == list(range(MAX_HITS_KEPT))
    assert fault.strikes == MAX_HITS_KEPT + 5
    assert fault.active  # a delay lasts until removed


@pytest.mark.test_clip(seconds=3)
async def test_the_worker_reads_on_after_a_470(
    worker: WorkerFactory, faults: TrickleFaults, test_clip: SyntheticClip
) -> None:
    stream = await (await served(worker)).start_stream()
    frames = list(test_clip.frames())
    async with reading(stream, test_clip) as output:
        await stream.publish(frames[:30])  # one segment per call
        fault = faults.answer_470(stream.channels["subscribe_url"])
        await stream.publish(frames[30:60])
        await stream.publish(frames[60:])
        await fault.wait(timeout=TIMEOUT)
        seen = await asyncio.wait_for(output, TIMEOUT)
    assert seen[-1] == test_clip.count - 1  # the worker's input subscriber carried on
    assert seen == sorted(set(seen))


# -- drop -------------------------------------------------------------------------------------


@pytest.mark.test_clip(seconds=3)
async def test_a_dropped_segment_loses_exactly_its_frames(
    trickle_server: TrickleServer, faults: TrickleFaults, test_clip: SyntheticClip
) -> None:
    url = trickle_server.create_channel("channel", "video/MP2T")
    first, second, third = test_clip.segments
    async with TricklePublisher(url) as publisher:
        await publisher.write_segment(first)
        fault = faults.drop(url)
        await publisher.write_segment(second)
        await publisher.write_segment(third)
    async with TrickleSubscriber(url, start=0) as subscriber:
        received = []
        for _ in range(3):
            segment = await subscriber.next_segment()
            assert segment is not None
            received.append(await segment.read())
    assert received == [first, b"", third]
    assert fault.hits == [1]

    with av.open(io.BytesIO(b"".join(received))) as container:
        indexes = [test_clip.index_of(frame) for frame in container.decode(video=0)]
    lost = set(test_clip.segment_indexes(1))
    assert indexes == [i for i in range(test_clip.count) if i not in lost]


@pytest.mark.test_clip(seconds=3)
async def test_the_worker_loses_a_dropped_segment_and_goes_on(
    worker: WorkerFactory, faults: TrickleFaults, test_clip: SyntheticClip
) -> None:
    stream = await (await served(worker)).start_stream()
    frames = list(test_clip.frames())
    async with reading(stream, test_clip) as output:
        await stream.publish(frames[:30])  # input segment 0
        fault = faults.drop(stream.channels["subscribe_url"])
        await stream.publish(frames[30:60])  # segment 1, dropped
        await stream.publish(frames[60:])
        seen = await asyncio.wait_for(output, TIMEOUT)
    assert fault.hits == [1]
    assert not set(seen) & set(range(30, 60))
    assert min(seen) < 30
    assert seen[-1] == test_clip.count - 1


# -- delay ------------------------------------------------------------------------------------


async def test_a_delayed_channel_delivers_every_byte_in_order(
    trickle_server: TrickleServer, faults: TrickleFaults
) -> None:
    url = trickle_server.create_channel("channel")
    fault = faults.delay(url, 0.2)
    async with TricklePublisher(url) as publisher, TrickleSubscriber(url, start=0) as subscriber:
        async with publisher.segment() as segment:
            for part in range(5):
                await segment.write(f"part {part};".encode())
        received = await subscriber.next_segment()
        assert received is not None
        assert await received.read() == b"part 0;part 1;part 2;part 3;part 4;"
    assert fault.hits == [0]
    assert fault.active  # a delay stays until removed
    fault.remove()
    assert faults.active == ()


async def test_a_delay_on_the_output_adds_to_every_frames_latency(
    worker: WorkerFactory, faults: TrickleFaults, test_clip: SyntheticClip
) -> None:
    delay = 0.5
    stream = await (await served(worker)).start_stream()
    fault = faults.delay(stream.channels["publish_url"], delay)
    loop = asyncio.get_running_loop()
    sent_from = loop.time()
    publishing = asyncio.create_task(stream.publish(test_clip.frames()))
    latencies = []
    async with asyncio.timeout(TIMEOUT), contextlib.aclosing(stream.output_frames()) as frames:
        async for frame in frames:
            index = test_clip.index_of(frame)
            assert index is not None
            # Frame i leaves no sooner than sent_from + i / fps (publish paces them).
            latencies.append(loop.time() - (sent_from + index / test_clip.fps))
            if index == test_clip.count - 1:
                break
    await publishing
    assert fault.hits
    assert min(latencies) >= delay


# -- restart ----------------------------------------------------------------------------------


async def test_the_worker_serves_again_after_a_restart(
    worker: WorkerFactory,
    trickle_server: TrickleServer,
    faults: TrickleFaults,
    test_clip: SyntheticClip,
) -> None:
    running = await served(worker)
    stream = await running.start_stream()
    publishing = asyncio.create_task(stream.publish(test_clip.frames()))
    async with contextlib.aclosing(stream.output_frames()) as frames:
        await asyncio.wait_for(anext(frames), TIMEOUT)
    url = trickle_server.url

    await faults.restart(downtime=0.2)

    assert trickle_server.url == url  # the same port
    assert stream.stream_id not in trickle_server.channels
    with pytest.raises(TrickleError):  # the old stream's input broke, then was gone
        await asyncio.wait_for(publishing, TIMEOUT)
    await running.wait_idle(timeout=TIMEOUT)  # the worker let go of it
    indexes = [test_clip.index_of(f) for f in await running.process(test_clip)]
    assert indexes[-1] == test_clip.count - 1


async def test_the_client_starts_a_stream_again_after_a_restart(
    worker: WorkerFactory, client: GatewayClient, faults: TrickleFaults
) -> None:
    running = await served(worker)
    session = await client.start(running.capability)
    watching = asyncio.create_task(session.watch(restart=True, error_grace=0.2, poll_interval=0.1))
    try:
        async with asyncio.timeout(TIMEOUT):
            while await session.status() is None:  # noqa: ASYNC110 - the worker is running it
                await asyncio.sleep(0.05)
            first = session.stream_id
            await faults.restart()
            while session.restarts == 0 or await session.status() is None:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert session.stream_id != first
        assert session.failure is None
    finally:
        await session.stop()
        await asyncio.wait_for(watching, TIMEOUT)
