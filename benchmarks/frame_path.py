"""The worker's frame path in one process, without HTTP or threads: CPU per frame against the floor.

``python -m benchmarks.frame_path [--size 512x512 ...] [--frames 150] [--rounds 5]``

Per frame of the worker benchmark's clip (:mod:`benchmarks.worker_clip`), the
*path* does what the worker does for a numpy passthrough processor: decode
(:class:`StreamDecoder`), :meth:`FrameConverter.to_processor`,
:meth:`FrameConverter.to_video`, :meth:`SegmentEncoder.encode` (which
converts the RGB frame to yuv420p); the *floor*
decodes and encodes the same frames with the same two objects and nothing
between. Their difference is what the RGB hand-over costs, apart from the
HTTP, event loop and thread hand-offs that ``benchmarks.worker_bench`` also
counts. Rounds alternate floor and path so that a busy machine weighs on
both alike; medians of process CPU time (every thread: x264's too) are
reported. Nothing is written to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Final

import av

from benchmarks.worker_clip import Clip, encode_clip
from byockit.protocol.media import MediaItem, SegmentEncoder, StreamDecoder
from byockit.worker.frames import FrameConverter, FrameFormat

SIZES: Final = ("512x512", "1280x720")


def run(clip: Clip, count: int, convert: Callable[[av.VideoFrame], av.VideoFrame] | None) -> float:
    """CPU seconds per frame to decode, (``convert``,) and encode ``count`` frames."""
    decoder = StreamDecoder()
    encoder = SegmentEncoder()

    def items() -> Iterator[MediaItem]:
        for data in clip.frames[:count]:
            yield from decoder.feed(data)
        yield from decoder.flush()  # completes the last frame

    began = time.process_time()
    frames = 0
    for item in items():
        if isinstance(item, av.VideoFrame):
            encoder.encode(item if convert is None else convert(item))
            frames += 1
    encoder.flush()
    spent = time.process_time() - began
    if frames != count:
        raise RuntimeError(f"encoded {frames} of {count} frames")
    return spent / count


def passthrough(converter: FrameConverter) -> Callable[[av.VideoFrame], av.VideoFrame]:
    """The worker's inference step for a processor that returns what it is given."""

    def convert(frame: av.VideoFrame) -> av.VideoFrame:
        return converter.to_video(converter.to_processor(frame, None), frame.pts or 0)

    return convert


def measure(size: str, count: int, rounds: int) -> tuple[float, float]:
    """Median CPU ms per frame of the floor and of the path at ``size`` (``WxH``)."""
    width, height = (int(n) for n in size.split("x"))
    clip = encode_clip(width, height, count)
    convert = passthrough(FrameConverter(FrameFormat.numpy()))
    floors, paths = [], []
    for _ in range(rounds):
        floors.append(run(clip, count, None))
        paths.append(run(clip, count, convert))
    return statistics.median(floors) * 1000, statistics.median(paths) * 1000


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", nargs="*", default=list(SIZES), help="WxH (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=150, help="frames a round (default 150)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each (default 5)")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.rounds < 1:
        parser.error("--frames and --rounds must be at least 1")
    print("| size | floor ms/frame | path ms/frame | path / floor |")
    print("|---|---:|---:|---:|")
    for size in args.size:
        floor, path = measure(size, args.frames, args.rounds)
        print(f"| {size} | {floor:.2f} | {path:.2f} | {path / floor:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
