"""Testing your own processor and your own app in CI, with byockit's pytest plugin.

``pip install 'byockit-testkit[worker,client]'`` registers the plugin: the
fixtures below (``worker``, ``client``, ``test_clip``...) need no import and
no set-up. Each test gets its own trickle server, fake orchestrator and fake
gateway on loopback, and everything is stopped afterwards. The frames of
``test_clip`` show their own index, so every output frame can be matched to
the frame that went in.

Run with ``asyncio_mode = "auto"`` (as here); in pytest-asyncio's strict
mode, mark the tests ``@pytest.mark.asyncio``.
"""

from __future__ import annotations

import asyncio

import av
import numpy as np
import pytest

from byockit.client import GatewayClient
from byockit.client.webrtc import WhepPlayer, WhipPublisher


def invert(frame):
    """The processor under test: the negative of every frame."""
    return 255 - frame.data


async def negative_video(client: GatewayClient, capability: str, source, count: int):
    """The app under test: streams ``source`` through ``capability``, returns ``count`` frames."""
    stream = await client.start(capability)
    try:
        async with (
            WhipPublisher(stream.urls.whip_url, source),
            WhepPlayer(stream.urls.whep_url) as player,
        ):
            frames = []
            async for frame in player:
                frames.append(frame)
                if len(frames) == count:
                    return frames
            return frames
    finally:
        await stream.stop()


def is_negative(frame: av.VideoFrame, original: np.ndarray) -> bool:
    pixels = frame.to_ndarray(format="rgb24").astype(int)
    return bool(np.abs(pixels - (255 - original)).mean() < np.abs(pixels - original).mean())


async def test_the_processor_inverts_every_frame(worker, test_clip) -> None:
    served = await worker(invert)
    frames = await served.process(test_clip)

    indexes = [test_clip.index_of(frame) for frame in frames]
    assert indexes == sorted(set(indexes))  # in order, none twice
    assert indexes[-1] == test_clip.count - 1
    assert all(is_negative(f, test_clip.image(i)) for f, i in zip(frames, indexes, strict=True))


@pytest.mark.test_clip(seconds=4)
async def test_the_app_gets_negative_video_back(worker, client, test_clip) -> None:
    served = await worker(invert)
    async with asyncio.timeout(30):
        frames = await negative_video(client, served.capability, test_clip.live(), count=20)

    readable = [(f, i) for f in frames if (i := test_clip.index_of(f)) is not None]
    assert readable, "no frame came back intact"  # WebRTC may damage a few
    assert all(is_negative(frame, test_clip.image(index)) for frame, index in readable)
