"""OutputWatcher: a stream's output classified frame by frame while the test goes on."""

from __future__ import annotations

import av
import pytest

from byockit.testkit.clip import SyntheticClip
from byockit.testkit.stack import WorkerFactory
from byockit.testkit.watch import OutputWatcher
from byockit.worker.frames import Frame

TIMEOUT = 20.0
"""Only stops a hang."""


def passthrough(frame: Frame) -> object:
    return frame.data


@pytest.mark.test_clip(seconds=1)
async def test_every_output_frame_is_seen_in_order(
    worker: WorkerFactory, test_clip: SyntheticClip
) -> None:
    stream = await (await worker(passthrough)).start_stream()

    def classify(frame: av.VideoFrame) -> tuple[int, int]:
        index = test_clip.index_of(frame)
        assert index is not None
        return index, frame.width

    async with OutputWatcher(stream, classify) as watcher:
        await stream.publish(test_clip.frames())
        await watcher.reaches(test_clip.count - 1, timeout=TIMEOUT)
    indexes = [index for index, _ in watcher.seen]
    assert indexes == sorted(set(indexes))
    assert indexes[-1] == test_clip.count - 1
    assert {width for _, width in watcher.seen} == {test_clip.width}


@pytest.mark.test_clip(seconds=1)
async def test_a_failed_check_is_raised_not_lost(
    worker: WorkerFactory, test_clip: SyntheticClip
) -> None:
    stream = await (await worker(passthrough)).start_stream()

    def classify(frame: av.VideoFrame) -> tuple[int, None]:
        raise AssertionError("not the look expected")

    watcher = OutputWatcher(stream, classify)
    await stream.publish(test_clip.frames())
    with pytest.raises(AssertionError, match="not the look expected"):
        await watcher.reaches(0, timeout=TIMEOUT)
    with pytest.raises(AssertionError, match="not the look expected"):
        await watcher.close()
