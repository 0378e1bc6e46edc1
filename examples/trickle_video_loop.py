"""Publish video over trickle and read it back: the smallest complete media loop.

Shows the protocol package's media path on a loopback ``TrickleServer``:
numpy RGB frames -> ``publish_stream`` (MPEG-TS, one GOP per segment) ->
server -> ``TrickleSubscriber`` -> ``decode_segments`` -> frames, each frame's
index read back from its pixels.

    python examples/trickle_video_loop.py --frames 60
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator

import av

from byockit.protocol.media import decode_segments, publish_stream, video_frame
from byockit.protocol.trickle import TricklePublisher, TrickleSubscriber
from byockit.testkit.synthetic import indexed_frame, read_index
from byockit.testkit.trickle_server import TrickleServer

FPS = 30


async def frames(count: int) -> AsyncIterator[av.VideoFrame]:
    for index in range(count):
        yield video_frame(indexed_frame(index, 320, 180), pts=index * 90_000 // FPS)


async def receive(url: str, count: int) -> list[int]:
    """Decode the channel from segment 0 until ``count`` frames came back."""
    received: list[int] = []
    async with (
        TrickleSubscriber(url, start=0) as subscriber,
        contextlib.aclosing(decode_segments(subscriber)) as items,
    ):
        async for item in items:
            if isinstance(item, av.VideoFrame):
                received.append(read_index(item.to_ndarray(format="rgb24")))
                if len(received) == count:
                    break
    return received


async def main(count: int) -> list[int]:
    """Returns the indexes of the frames that came back, in arrival order."""
    async with TrickleServer() as server:
        url = server.create_channel("video", "video/mp2t")
        reader = asyncio.create_task(receive(url, count))
        async with TricklePublisher(url) as publisher:
            await publish_stream(frames(count), publisher)
        return await asyncio.wait_for(reader, timeout=30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    indexes = asyncio.run(main(parser.parse_args().frames))
    print(f"received {len(indexes)} frames, in order: {indexes == sorted(indexes)}")
