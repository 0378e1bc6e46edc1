"""The reference effects and the model loader through the worker's frame path: frames/s, GPU time.

Cases: each effect of :mod:`byockit.worker.reference` with its default
parameters, the default ``effects`` chain, and :class:`ModelProcessor`
serving a tiny convolutional model exported to TorchScript at run time.
Each runs at each size on frames as a stream's inference thread handles
them: a decoded yuv420p frame goes through ``FrameConverter.to_processor``
(RGB, uploaded to the device), ``process``, ``FrameConverter.to_video``
(downloaded) and the conversion to yuv420p that the encoder thread does.

Printed per case and size: frames/s of that whole path, its time per frame,
and the time of ``process`` alone per frame: the GPU's own time between two
CUDA events on CUDA, wall time on the CPU. On CUDA each case's first frames
are also run on the CPU and the RGB outputs compared: a mean absolute
difference of :data:`TOLERANCE` (0-255) or more is a mismatch, and the run
exits 1.

Run: ``python -m benchmarks.gpu [--device cuda|cpu] [--frames N] [--sizes 640x360,1280x720]``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import av
import numpy as np
import numpy.typing as npt
import torch

from byockit.protocol.media.convert import TO_YUV420, Reformatter
from byockit.testkit.synthetic import synthetic_frames
from byockit.worker.frames import Frame, FrameConverter, FrameFormat
from byockit.worker.processor import Processor, ProcessorRuntime, StreamContext
from byockit.worker.reference import EFFECTS, Chain, ModelProcessor

SIZES: Final = "640x360,512x512,1280x720"
"""The demo's size, then the issue's two."""
WARMUP: Final = 3
"""Frames run before timing: the first ones allocate buffers and pick kernels."""
SOURCES: Final = 8
"""Distinct input frames, cycled."""
COMPARED: Final = 3
"""Frames compared with the CPU's output, on CUDA."""
TOLERANCE: Final = 2.0
"""Largest mean absolute difference (0-255) from the CPU's output that still matches."""

Size = tuple[int, int]
MakeProcessor = Callable[[str], Processor[Any]]
"""A processor on a device (``"cpu"``, ``"cuda"``)."""


class TinyConv(torch.nn.Module):
    """Two 3x3 convolutions (3 -> 8 -> 3 channels): a stand-in for a small image model."""

    def __init__(self) -> None:
        super().__init__()
        self.first = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.second = torch.nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.second(torch.relu(self.first(image))))


def export_model(directory: Path) -> Path:
    """:class:`TinyConv` with fixed weights, saved as TorchScript in ``directory``."""
    torch.manual_seed(0)
    path = directory / "tiny_conv.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated
        torch.jit.save(torch.jit.script(TinyConv().eval()), str(path))
    return path


@dataclass(frozen=True)
class Case:
    name: str
    make: MakeProcessor
    params: dict[str, Any]


def on_device(effect: type[Processor[Any]]) -> MakeProcessor:
    """Makes ``effect`` with its frames on the device given (it asks for ``"auto"``)."""

    def make(device: str) -> Processor[Any]:
        processor = effect()
        wanted = processor.frame_format
        processor.frame_format = FrameFormat.torch(
            dtype=wanted.dtype, layout=wanted.layout, device=device
        )
        return processor

    return make


def cases(model: Path) -> list[Case]:
    found = [Case(name, on_device(effect), {}) for name, effect in EFFECTS.items()]
    found.append(Case("chain (default: cartoon)", on_device(Chain), {}))

    def serve_model(device: str) -> Processor[Any]:
        return ModelProcessor(model, device=device)

    found.append(Case("model (TorchScript conv)", serve_model, {}))
    return found


@dataclass(frozen=True)
class Served:
    """A loaded processor, its parameters, and a converter for its frames."""

    processor: Processor[Any]
    stream: StreamContext
    converter: FrameConverter
    to_yuv420: Reformatter = field(default_factory=lambda: Reformatter("yuv420p", TO_YUV420))

    @classmethod
    def load(cls, case: Case, device: str) -> Served:
        runtime = ProcessorRuntime.wrap(case.make(device))
        asyncio.run(runtime.load())
        params = runtime.parse_params(case.params).processor
        stream = StreamContext(case.name, params, send_data=_ignore, send_event=_ignore)
        return cls(runtime.processor, stream, FrameConverter(runtime.frame_format))

    def process(self, source: av.VideoFrame, index: int) -> object:
        data = self.converter.to_processor(source, None)
        return self.processor.process(Frame(data, source.pts or 0, index, self.stream))

    def for_encoder(self, result: object, pts: int) -> av.VideoFrame:
        """``result`` as the worker's encoder thread takes it: yuv420p, in memory of its own."""
        return self.to_yuv420(self.converter.to_video(result, pts))

    def rgb(self, source: av.VideoFrame, index: int) -> npt.NDArray[np.uint8]:
        """The output for ``source`` as an (H, W, 3) RGB array of its own."""
        video = self.converter.to_video(self.process(source, index), source.pts or 0)
        return np.array(video.to_ndarray(format="rgb24"), dtype=np.uint8)


def _ignore(_: object) -> None:
    """Where the benchmark's streams send data and events: nowhere."""


@dataclass(frozen=True)
class Measurement:
    frames_per_second: float
    path_ms: float
    """The whole frame path, per frame (wall time)."""
    process_ms: float
    """``process`` alone, per frame: GPU time on CUDA, wall time on the CPU."""


class _GpuTimer:
    """Two CUDA events around ``process``: the GPU's time between them, whatever the host did."""

    def __init__(self) -> None:
        self.begin = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)


def measure(served: Served, sources: Sequence[av.VideoFrame], frames: int) -> Measurement:
    timer = _GpuTimer() if served.converter.format.device != "cpu" else None
    for index in range(WARMUP):
        source = sources[index % len(sources)]
        served.for_encoder(served.process(source, index), source.pts or 0)
    process_ms = 0.0
    started = time.perf_counter()
    for index in range(frames):
        source = sources[index % len(sources)]
        if timer is not None:
            timer.begin.record()
            result = served.process(source, index)
            timer.end.record()
        else:
            before = time.perf_counter()
            result = served.process(source, index)
            process_ms += (time.perf_counter() - before) * 1000
        served.for_encoder(result, source.pts or 0)  # waits for the GPU's result
        if timer is not None:
            timer.end.synchronize()
            process_ms += timer.begin.elapsed_time(timer.end)
    elapsed = time.perf_counter() - started
    return Measurement(frames / elapsed, elapsed * 1000 / frames, process_ms / frames)


def difference(case: Case, device: str, sources: Sequence[av.VideoFrame]) -> float:
    """The largest mean absolute difference (0-255) between ``device``'s outputs and the CPU's."""
    here, cpu = Served.load(case, device), Served.load(case, "cpu")
    worst = 0.0
    for index, source in enumerate(sources[:COMPARED]):
        ours, reference = here.rgb(source, index), cpu.rgb(source, index)
        worst = max(worst, float(np.abs(ours.astype(np.int16) - reference).mean()))
    return worst


def inputs(size: Size) -> list[av.VideoFrame]:
    """Indexed synthetic frames in yuv420p, as the decoder hands them over."""
    width, height = size
    decoded = []
    for frame in synthetic_frames(SOURCES, width=width, height=height):
        yuv = frame.reformat(format="yuv420p")
        yuv.pts = frame.pts
        decoded.append(yuv)
    return decoded


def parse_sizes(text: str) -> list[Size]:
    sizes = []
    for part in text.split(","):
        width, x, height = part.strip().partition("x")
        if not (x and width.isdigit() and height.isdigit()):
            raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {part!r}")
        size = int(width), int(height)
        if size[0] % 2 or size[1] % 2 or size[0] < 56 or size[1] < 36:
            raise argparse.ArgumentTypeError(f"{part}: sizes are even, at least 56x36")
        sizes.append(size)
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", choices=("cuda", "cpu"), default=default_device)
    parser.add_argument("--frames", type=int, default=30, help="timed frames per case and size")
    parser.add_argument("--sizes", type=parse_sizes, default=parse_sizes(SIZES), metavar="WxH,...")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    if args.frames < 1:
        parser.error("--frames must be at least 1")
    device: str = args.device
    cuda = device == "cuda"
    name = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; {args.frames} frames per case\n")
    timing = "GPU ms/frame (process)" if cuda else "wall ms/frame (process)"
    print(f"| case | size | frames/s | path ms/frame | {timing} | vs CPU |")
    print("|---|---|---:|---:|---:|---|")
    mismatches = 0
    with tempfile.TemporaryDirectory() as directory:
        served_cases = cases(export_model(Path(directory)))
        for size in args.sizes:
            sources = inputs(size)
            for case in served_cases:
                result = measure(Served.load(case, device), sources, args.frames)
                verdict = "-"
                if cuda:
                    worst = difference(case, device, sources)
                    verdict = f"{'pass' if worst < TOLERANCE else 'FAIL'} ({worst:.2f})"
                    mismatches += worst >= TOLERANCE
                print(
                    f"| {case.name} | {size[0]}x{size[1]} | {result.frames_per_second:.1f} "
                    f"| {result.path_ms:.2f} | {result.process_ms:.2f} | {verdict} |",
                    flush=True,
                )
    if mismatches:
        print(f"\n{mismatches} case(s) differ from the CPU by {TOLERANCE}/255 or more")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
