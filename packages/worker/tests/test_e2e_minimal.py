"""What a new user writes: a processor in a few lines, served, and driven from a test.

The processor is a module of its own (written to a temporary directory and
loaded the way ``byockit-worker serve MODULE:ATTRIBUTE`` loads it); the test
below it is what that user's test looks like: a fake orchestrator starts a
stream, indexed frames go in, and every frame that comes out is matched to
its input by the index in its pixels and checked for the inversion.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from byockit.protocol.models import CapabilityRegistration
from byockit.testkit.orchestrator import FakeOrchestrator
from byockit.testkit.synthetic import indexed_frame, read_index, synthetic_frames
from byockit.worker.cli import load_processor
from byockit.worker.server import WorkerServer

PROCESSOR = '''\
"""Inverts every frame."""


def invert(frame):
    return 255 - frame.data
'''


@pytest.fixture
def user_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The user's working directory, as ``serve`` runs in it; the import is undone after."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("negative", None)


async def test_a_processor_of_a_few_lines_serves_a_stream(user_directory: Path) -> None:
    assert len(PROCESSOR.splitlines()) < 10
    (user_directory / "negative.py").write_text(PROCESSOR)
    invert = load_processor("negative:invert")

    async with (
        FakeOrchestrator() as orchestrator,
        WorkerServer(invert, port=0) as worker,
    ):
        await worker.wait_loaded()
        await orchestrator.register(CapabilityRegistration("negative", url=worker.url, capacity=1))
        stream = await orchestrator.start_stream("negative")
        await stream.publish(synthetic_frames(30, width=160, height=90))

        indexes = []
        async with asyncio.timeout(20), contextlib.aclosing(stream.output_frames()) as frames:
            async for frame in frames:
                pixels = frame.to_ndarray(format="rgb24").astype(np.int16)
                index = read_index(pixels.astype(np.uint8))
                assert np.abs(pixels - (255 - indexed_frame(index, 160, 90))).mean() < 10
                indexes.append(index)
                if index == 29:
                    break
        assert indexes == sorted(set(indexes))  # in order, none twice
        assert set(indexes) <= set(range(30))  # none made up
        assert (await stream.stop()).status == 200
