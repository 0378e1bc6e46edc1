"""Stream a video file through a capability on a gateway, and record what comes back to MP4.

``byockit.client.run.run`` does it all in one call: it starts the stream on
the gateway, sends the file over WHIP (paced in real time), plays the
output over WHEP, writes it to an MP4 and stops the stream when the file
has been sent and the output has drained.

With ``--gateway URL`` the program uses that gateway (the capability must
be the reference effects, ``byockit-worker serve
byockit.worker.reference:effects``); without, it brings up a whole network
on loopback in this process (``byockit.demo.network.DemoNetwork``: trickle
server, fake orchestrator, the reference effects worker, fake gateway). The
input is a short clip the program writes first; use your own file instead.

This is live video: nothing waits for the connections to be set up, so the
first half second or so of the file does not come back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np

from byockit.client.run import run
from byockit.client.sinks import Recorder
from byockit.demo.network import CAPABILITY, DemoNetwork
from byockit.protocol.models import JSONObject
from byockit.testkit.synthetic import synthetic_frames
from byockit.testkit.webrtc import loopback_ice

NOIR: JSONObject = {"stages": [{"effect": "grade", "lut": "noir", "contrast": 1.3}]}


class Result(NamedTuple):
    received: int
    """Frames the client got back."""
    recorded: int
    """Frames the MP4 holds."""
    colour_in: float
    """Mean colourfulness of the input and the output frames: the spread of a pixel's
    R, G and B (0..255; 0 is pure grey)."""
    colour_out: float


async def write_clip(path: str, count: int) -> None:
    """A test clip of ``count`` frames at 30 fps (the indexed test pattern, in colour)."""
    async with Recorder(path) as recorder:
        for frame in synthetic_frames(count, width=320, height=180):
            await recorder.write(frame)


def colourfulness(path: str) -> tuple[int, float]:
    """The frames of a video file and their mean colourfulness."""
    with av.open(path) as container:
        spreads = [
            np.ptp(f.to_ndarray(format="rgb24"), axis=2).mean() for f in container.decode(video=0)
        ]
    return len(spreads), float(np.mean(spreads))


async def main(count: int, output: str, gateway: str | None = None) -> Result:
    """Streams a ``count``-frame clip through the noir look into ``output``."""
    with tempfile.TemporaryDirectory() as folder:
        clip = str(Path(folder) / "clip.mp4")
        await write_clip(clip, count)
        async with contextlib.AsyncExitStack() as stack:
            if gateway is None:
                stack.enter_context(loopback_ice())  # WebRTC on 127.0.0.1 only
                network = await stack.enter_async_context(DemoNetwork())
                gateway = network.gateway_url
            summary = await run(gateway, CAPABILITY, source=clip, params=NOIR, record=output)
        _, colour_in = colourfulness(clip)
    recorded, colour_out = colourfulness(output)
    return Result(summary.frames_out, recorded, colour_in, colour_out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=90, help="length of the test clip")
    parser.add_argument("--output", default="noir.mp4", help="the MP4 to write")
    parser.add_argument("--gateway", help="a gateway URL (default: a network on loopback)")
    args = parser.parse_args()
    result = asyncio.run(main(args.frames, args.output, args.gateway))
    print(f"sent {args.frames} frames, got {result.received} back")
    print(f"{args.output} holds {result.recorded} frames")
    print(f"mean colourfulness: {result.colour_in:.1f} in, {result.colour_out:.1f} out (0: grey)")
