"""Change a running stream's params from code, and see each change in the video.

An app starts a stream on a gateway with ``GatewayClient.start``, sends
video over WHIP (``WhipPublisher``), plays the output over WHEP
(``WhepPlayer``) and turns the colour temperature of the reference effects'
``grade`` from cool to warm with ``stream.update``, every ``frames`` output
frames. The program measures how warm the output looks after each change
(red minus blue, compared with the input frame), sends a bad value, which the
worker refuses with a message naming it (the stream keeps its params), and
reads the stream's status, which echoes the params the worker runs with.

The gateway's status is the worker's last ``status`` event; a byockit
worker sends one after each accepted update (and every 10 s).

Everything runs on loopback in this process (``byockit.demo.network``:
trickle server, fake orchestrator, the reference effects worker, fake gateway).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from typing import NamedTuple

import av
import numpy as np

from byockit.client import GatewayClient, GatewayError, StreamSession
from byockit.client.sources import TestPatternSource
from byockit.client.webrtc import WhepPlayer, WhipPublisher
from byockit.demo.network import CAPABILITY, DemoNetwork
from byockit.protocol.media.pattern import indexed_frame, read_index
from byockit.protocol.models import JSONObject
from byockit.testkit.webrtc import loopback_ice

TEMPERATURES = (-1.0, 0.0, 1.0)  # cool (blue), neutral, warm (orange)


def grade(temperature: float) -> JSONObject:
    return {"stages": [{"effect": "grade", "temperature": temperature}]}


def warmth(frame: av.VideoFrame) -> float | None:
    """How much more red than blue an output frame has than its input frame (0..255 scale).

    The test pattern's frames show their index: that tells which input frame
    it was (``None`` when the index cannot be read).
    """
    pixels = frame.to_ndarray(format="rgb24")
    try:
        index = read_index(pixels)
    except ValueError:
        return None
    change = pixels.astype(np.float32) - indexed_frame(index, frame.width, frame.height)
    return float(change[..., 0].mean() - change[..., 2].mean())


async def refusal(stream: StreamSession, params: JSONObject) -> str:
    """The gateway's answer to params the worker refuses (``""`` if it took them)."""
    try:
        await stream.update(params)
    except GatewayError as error:
        return f"HTTP {error.status}: {error.body}"
    return ""


class Result(NamedTuple):
    warmth: list[float]
    """How warm the output looked with each of :data:`TEMPERATURES`."""
    refused: str
    """The gateway's answer to an out-of-range temperature."""
    echoed: object
    """The params in the stream's status (the worker's last report)."""


async def main(frames: int) -> Result:
    """Plays ``frames`` output frames per temperature; the last third of each is measured."""
    with loopback_ice():  # WebRTC on 127.0.0.1 only
        async with DemoNetwork() as network, GatewayClient(network.gateway_url) as client:
            stream = await client.start(CAPABILITY, grade(TEMPERATURES[0]))
            source = TestPatternSource(fps=30, width=320, height=180)
            async with (
                asyncio.timeout(60),
                WhipPublisher(stream.urls.whip_url, source, session=client.http),
                WhepPlayer(stream.urls.whep_url, session=client.http) as player,
            ):
                output = aiter(player)
                measured: list[float] = []
                for temperature in TEMPERATURES:
                    if temperature != TEMPERATURES[0]:
                        await stream.update(grade(temperature))
                    looks = [warmth(await anext(output)) for _ in range(frames)]
                    settled = [look for look in looks[2 * frames // 3 :] if look is not None]
                    measured.append(statistics.median(settled))
                refused = await refusal(stream, grade(5.0))
                status = await stream.status() or {}
                inference = status.get("inference_status")
                echoed = inference.get("last_params") if isinstance(inference, dict) else None
            await stream.stop()
            await source.close()
    return Result(measured, refused, echoed)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60, help="output frames per temperature")
    result = asyncio.run(main(parser.parse_args().frames))
    for temperature, red_minus_blue in zip(TEMPERATURES, result.warmth, strict=True):
        print(f"temperature {temperature:+.1f}: red - blue, output - input = {red_minus_blue:+.1f}")
    print(f"temperature 5.0 was refused: {result.refused}")
    print(f"the worker's last status report shows the params {result.echoed}")
