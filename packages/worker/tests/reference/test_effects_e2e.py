"""The effects chain served to a fake orchestrator, as ``byockit-worker serve`` serves it.

Indexed frames go in; each output frame is matched to its input by the
index in its pixels and compared with the chain applied here, to the same
input, under each parameter set: it must be the one in force. The update
is sent between two batches, once every frame of the first is out, so the
frame where it takes effect is known. A bad update gets a 400 naming the
field and changes nothing.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import torch

from byockit.protocol.models import Event, ParamsUpdateEvent
from byockit.testkit.orchestrator import FakeOrchestrator, FakeStream
from byockit.testkit.stack import WorkerFactory
from byockit.testkit.synthetic import indexed_frame, read_index, synthetic_frames
from byockit.testkit.watch import OutputWatcher
from byockit.worker.frames import Frame
from byockit.worker.processor import ProcessorRuntime, StreamContext
from byockit.worker.reference import effects
from byockit.worker.server import WorkerServer
from byockit.worker.session import StreamSession

W, H = 160, 90
BATCH = 15
TIMEOUT = 30.0
"""Only stops a hang."""
CODING_LOSS = 8.0
"""Most mean absolute difference (0-255) an output may have from the chain's result here."""

LOOKS: dict[str, dict[str, Any]] = {
    "grey": {"stages": [{"effect": "grade", "saturation": 0.0}]},
    "warm blocks": {
        "stages": [{"effect": "grade", "temperature": 1.0}, {"effect": "pixelate", "block_size": 2}]
    },
}
BAD = {"stages": [{"effect": "grade"}, {"effect": "cartoon", "levels": 99}]}


@functools.cache
def expected(look: str, index: int) -> npt.NDArray[np.int16]:
    """Input frame ``index`` through the chain with ``look``'s parameters, run here."""
    chain = effects()
    params = ProcessorRuntime.wrap(chain).parse_params(LOOKS[look]).processor
    data = torch.from_numpy(indexed_frame(index, W, H)).permute(2, 0, 1).float() / 255
    stream = StreamContext("here", params, send_data=lambda _: None, send_event=lambda _: None)
    out = chain.process(Frame(data, 0, index, stream))
    assert isinstance(out, torch.Tensor)
    rgb = (out.permute(1, 2, 0) * 255 + 0.5).clamp(0, 255).to(torch.uint8)
    return rgb.numpy().astype(np.int16)


def looks(frame: av.VideoFrame) -> tuple[int, str]:
    """An output frame's index, and the look it has."""
    pixels = frame.to_ndarray(format="rgb24").astype(np.int16)
    index = read_index(pixels)
    differences = {look: float(np.abs(pixels - expected(look, index)).mean()) for look in LOOKS}
    original = float(np.abs(pixels - indexed_frame(index, W, H).astype(np.int16)).mean())
    look = min(differences, key=differences.__getitem__)
    assert differences[look] < CODING_LOSS < original, (index, differences, original)
    return index, look


@contextlib.asynccontextmanager
async def streaming() -> AsyncIterator[tuple[FakeStream, OutputWatcher[str], WorkerServer]]:
    """A worker serving ``effects`` and one stream on it, started with the grey look."""
    sessions = functools.partial(StreamSession, status_interval=0.5)
    async with (
        FakeOrchestrator(keepalive_interval=0.5) as orchestrator,
        WorkerFactory(orchestrator) as workers,
    ):
        served = await workers(effects, session_factory=sessions)
        stream = await served.start_stream(LOOKS["grey"])
        async with OutputWatcher(stream, looks) as watcher:
            yield stream, watcher, served.server


async def batch(stream: FakeStream, number: int) -> None:
    first = number * BATCH
    frames = synthetic_frames(first + BATCH, width=W, height=H)
    await stream.publish(itertools.islice(frames, first, None))


def update_event(params: dict[str, Any]) -> Callable[[Event], bool]:
    return lambda event: isinstance(event, ParamsUpdateEvent) and event.params == params


async def test_the_chain_transforms_frames_and_follows_updates() -> None:
    async with streaming() as (stream, watcher, server):
        await batch(stream, 0)
        await watcher.reaches(BATCH - 1, timeout=TIMEOUT)

        reply = await stream.update_params(LOOKS["warm blocks"])
        assert reply.status == 200, reply.body
        await stream.wait_event(update_event(LOOKS["warm blocks"]), timeout=TIMEOUT)

        refused = await stream.update_params(BAD)
        assert refused.status == 400
        assert "'stages[1].levels' must be between 2 and 32, got 99" in refused.body

        await batch(stream, 1)
        await watcher.reaches(2 * BATCH - 1, timeout=TIMEOUT)
        assert server.sessions[stream.stream_id].health == "ok"

    indexes = [index for index, _ in watcher.seen]
    assert indexes == sorted(indexes)
    assert {index for index in indexes if index < BATCH}  # both batches came out
    assert {index for index in indexes if index >= BATCH}
    for index, look in watcher.seen:
        assert look == ("grey" if index < BATCH else "warm blocks"), index
