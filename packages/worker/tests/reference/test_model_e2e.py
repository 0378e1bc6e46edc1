"""A model exported here, served by the worker to a fake orchestrator, as a user would serve it.

``Model`` is configured by its environment variables and served as
``byockit-worker serve byockit.worker.reference:Model`` serves it (the class,
instantiated by the server). Each output frame is matched to its input by
the index in its pixels and checked for the model's effect (a negative).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import torch

from byockit.protocol.models import CapabilityRegistration
from byockit.testkit.orchestrator import FakeOrchestrator, WorkerRequestError
from byockit.testkit.synthetic import indexed_frame, read_index, synthetic_frames
from byockit.worker.reference.model import Model, ModelProcessor
from byockit.worker.server import WorkerServer

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")

W, H = 160, 90
FRAMES = 30
TIMEOUT = 30.0
"""Only stops a hang."""


class Negative(torch.nn.Module):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return 1 - image


class Grey(torch.nn.Module):
    """One channel out: not an image the worker can send."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image.mean(dim=1, keepdim=True)


def export_for_any_size(module: torch.nn.Module, path: Path) -> Path:
    size = {2: torch.export.Dim("height"), 3: torch.export.Dim("width")}
    program = torch.export.export(
        module, (torch.rand(1, 3, 64, 64),), dynamic_shapes={"image": size}
    )
    torch.export.save(program, str(path))
    return path


async def test_an_exported_model_serves_a_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "BYOCKIT_MODEL_PATH", str(export_for_any_size(Negative(), tmp_path / "n.pt2"))
    )
    monkeypatch.setenv("BYOCKIT_MODEL_DEVICE", "cpu")
    async with (
        FakeOrchestrator() as orchestrator,
        WorkerServer(Model, port=0) as worker,
    ):
        await asyncio.wait_for(worker.wait_loaded(), TIMEOUT)
        assert worker.load_error is None
        await orchestrator.register(CapabilityRegistration("negative", url=worker.url, capacity=1))
        stream = await orchestrator.start_stream("negative")
        await stream.publish(synthetic_frames(FRAMES, width=W, height=H))

        indexes = []
        async with (
            asyncio.timeout(TIMEOUT),
            contextlib.aclosing(stream.output_frames()) as frames,
        ):
            async for frame in frames:
                pixels = frame.to_ndarray(format="rgb24")
                index = read_index(pixels)
                expected = 255 - indexed_frame(index, W, H).astype(np.int16)
                assert np.abs(pixels.astype(np.int16) - expected).mean() < 10
                indexes.append(index)
                if index == FRAMES - 1:
                    break
        assert indexes == sorted(set(indexes))
        assert set(indexes) <= set(range(FRAMES))
        assert (await stream.stop()).status == 200


async def test_a_model_that_fails_to_load_says_why_in_health_and_to_streams(
    tmp_path: Path,
) -> None:
    processor = ModelProcessor(export_for_any_size(Grey(), tmp_path / "grey.pt2"), device="cpu")
    why = "expected (1, 3, H, W)"
    async with (
        FakeOrchestrator() as orchestrator,
        WorkerServer(processor, port=0) as worker,
    ):
        await asyncio.wait_for(worker.wait_loaded(), TIMEOUT)
        assert worker.load_error is not None
        assert worker.load_error.startswith("ModelError: the model returned a tensor of shape")
        async with aiohttp.ClientSession() as session, session.get(worker.url + "health") as reply:
            health = await reply.json()
        assert health["status"] == "ERROR"
        assert why in health["error"]

        await orchestrator.register(CapabilityRegistration("grey", url=worker.url, capacity=1))
        with pytest.raises(WorkerRequestError) as refused:
            await orchestrator.start_stream("grey")
        assert refused.value.status == 503
        assert why in refused.value.body
