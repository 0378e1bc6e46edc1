"""A torch processor with typed, live-tunable params, on the GPU when there is one.

``Tint`` asks for frames as float32 CHW tensors in [0, 1] on ``"auto"``
(CUDA when available, else the CPU: the worker uploads through pinned memory
and copies back without blocking). Its params are a dataclass: the worker
parses every update strictly (a wrong type or an unknown key gets a 400
naming it, and the stream keeps its params), ``validate_params`` refuses
values out of range, and the params in force are on ``frame.stream.params``,
changed between two frames.

The program streams indexed frames through the worker with the testkit's
fake orchestrator, switches the tint on through the control channel (as a
gateway relays an app's update), sends one bad update through REST, and
reports the first output frame that came back tinted.

Serve it for real with::

    byockit-worker serve torch_processor:Tint --port 8000 --capability tint
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from dataclasses import dataclass, field

import torch

from byockit.protocol.models import CapabilityRegistration
from byockit.testkit.orchestrator import FakeOrchestrator
from byockit.testkit.synthetic import read_index, synthetic_frames
from byockit.worker import Frame, FrameFormat, ParamsRejected, Processor, WorkerServer


@dataclass
class TintParams:
    strength: float = 0.0
    """0: the input unchanged; 1: every pixel the tint colour's shade."""
    color: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.0])
    """RGB in [0, 1]."""


class Tint(Processor[TintParams]):
    params_type = TintParams
    frame_format = FrameFormat.torch(dtype="float32", layout="CHW", device="auto")

    def validate_params(self, params: TintParams) -> None:
        if not 0 <= params.strength <= 1:
            raise ParamsRejected(f"strength must be in [0, 1], got {params.strength}")
        if len(params.color) != 3 or not all(0 <= c <= 1 for c in params.color):
            raise ParamsRejected(f"color must be three numbers in [0, 1], got {params.color}")

    def process(self, frame: Frame[torch.Tensor]) -> torch.Tensor:
        params = frame.stream.params
        assert isinstance(params, TintParams)
        if params.strength == 0:
            return frame.data
        image = frame.data  # (3, H, W) on the processor's device
        shade = image.mean(dim=0, keepdim=True)  # luminance-ish, (1, H, W)
        color = torch.tensor(params.color, device=image.device).view(3, 1, 1)
        return torch.lerp(image, shade * color, params.strength)


def is_tinted(pixels: torch.Tensor) -> bool:
    """Whether an RGB frame below the index code leans to the tint (red well above blue)."""
    below = pixels[pixels.shape[0] // 2 :].float()
    return bool(below[..., 0].mean() > 1.5 * below[..., 2].mean() + 10)


async def main(count: int) -> tuple[int, str]:
    """Streams ``count`` frames; returns the first tinted output index and the bad update's
    reply."""
    async with FakeOrchestrator() as orchestrator, WorkerServer(Tint, port=0) as worker:
        await worker.wait_loaded()
        await orchestrator.register(CapabilityRegistration(name="tint", url=worker.url, capacity=1))
        stream = await orchestrator.start_stream("tint", {"strength": 0.0})
        sending = asyncio.create_task(
            stream.publish(synthetic_frames(count, width=256, height=144))
        )
        refused = await stream.update_params({"strength": 2})  # refused: out of range
        first_tinted = -1
        async with asyncio.timeout(60), contextlib.aclosing(stream.output_frames()) as frames:
            async for frame in frames:
                pixels = torch.from_numpy(frame.to_ndarray(format="rgb24"))
                index = read_index(pixels.numpy())
                if index == count // 3:  # a third of the way in, switch the tint on
                    await stream.send_control({"strength": 0.8, "color": [1.0, 0.4, 0.1]})
                if first_tinted < 0 and is_tinted(pixels):
                    first_tinted = index
                if index == count - 1:
                    break
        await sending
        await stream.stop()
        return first_tinted, f"HTTP {refused.status}: {refused.body}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=90)
    frames = parser.parse_args().frames
    tinted, refused = asyncio.run(main(frames))
    print(f"the bad update got {refused}")
    print(f"switched on at frame {frames // 3}; the first tinted frame was {tinted}")
