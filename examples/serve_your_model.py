"""Serve your own torch model as a BYOC worker, with no processor code at all.

The model here is a stand-in for a trained one: a 1x1 convolution with
fixed weights that tones the image sepia. It is exported with
``torch.export`` (any frame size: height and width are dynamic) and served
by the reference model loader, ``ModelProcessor``, which is told the image
the model takes: ``(1, 3, H, W)`` float32 in [0, 1]. The worker converts
each frame to that and the model's output back to video.

The program streams indexed frames through the served model with the
testkit's fake orchestrator and compares each output frame with what the
saved model, run here, makes of the input frame.

Serve a model file for real with::

    BYOCKIT_MODEL_PATH=sepia.pt2 byockit-worker serve byockit.worker.reference:Model \\
        --port 8000 --capability sepia
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from byockit.protocol.models import CapabilityRegistration
from byockit.testkit.orchestrator import FakeOrchestrator
from byockit.testkit.synthetic import indexed_frame, read_index, synthetic_frames
from byockit.worker import WorkerServer
from byockit.worker.reference.model import ModelProcessor

SEPIA = [[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]]
WIDTH, HEIGHT = 256, 144


class Sepia(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mix = torch.nn.Conv2d(3, 3, kernel_size=1, bias=False)
        self.mix.weight = torch.nn.Parameter(torch.tensor(SEPIA).view(3, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # (1, 3, H, W) in [0, 1]
        mixed: torch.Tensor = self.mix(image)
        return mixed.clamp(0, 1)


def export(path: Path) -> None:
    """Save the model as a ``torch.export`` program that takes frames of any size."""
    size = {2: torch.export.Dim("height", min=16), 3: torch.export.Dim("width", min=16)}
    example = (torch.rand(1, 3, HEIGHT, WIDTH),)
    program = torch.export.export(Sepia().eval(), example, dynamic_shapes={"image": size})
    torch.export.save(program, path)


def expected(model: torch.nn.Module, index: int) -> npt.NDArray[np.float32]:
    """What ``model`` makes of input frame ``index``: (H, W, 3) RGB in 0..255."""
    image = torch.from_numpy(indexed_frame(index, WIDTH, HEIGHT)).permute(2, 0, 1)[None] / 255
    with torch.inference_mode():
        output: torch.Tensor = model(image)
    return output[0].permute(1, 2, 0).mul(255).numpy()


async def main(count: int) -> tuple[list[int], float, float]:
    """Streams ``count`` frames through the served model.

    Returns the indexes that came back and the mean pixel difference (0..255)
    of the output frames from the model's own output, and from the input.
    """
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sepia.pt2"
        export(path)
        reference = torch.export.load(path).module()  # to compare with, run here
        model = ModelProcessor(path, layout="NCHW", dtype="float32", value_range=(0, 1))
        async with FakeOrchestrator() as orchestrator, WorkerServer(model, port=0) as worker:
            await worker.wait_loaded()
            await orchestrator.register(
                CapabilityRegistration(name="sepia", url=worker.url, capacity=1)
            )
            stream = await orchestrator.start_stream("sepia")
            frames = synthetic_frames(count, width=WIDTH, height=HEIGHT)
            sending = asyncio.create_task(stream.publish(frames))
            indexes: list[int] = []
            from_model: list[float] = []
            from_input: list[float] = []
            async with asyncio.timeout(60), contextlib.aclosing(stream.output_frames()) as out:
                async for frame in out:
                    image = frame.to_ndarray(format="rgb24")
                    indexes.append(index := read_index(image))
                    pixels = image.astype(np.float32)
                    from_model.append(np.abs(pixels - expected(reference, index)).mean())
                    from_input.append(np.abs(pixels - indexed_frame(index, WIDTH, HEIGHT)).mean())
                    if index == count - 1:
                        break
            await sending
            await stream.stop()
    return indexes, float(max(from_model)), float(min(from_input))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=90)
    indexes, from_model, from_input = asyncio.run(main(parser.parse_args().frames))
    print(f"{len(indexes)} frames came back through the served model")
    print(f"mean difference from the model's own output: at most {from_model:.1f} / 255")
    print(f"mean difference from the input frame: at least {from_input:.1f} / 255")
