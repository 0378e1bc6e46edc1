"""Sources: frames with 90 kHz timestamps from 0, from a pattern, a file, a camera, the app."""

from __future__ import annotations

import asyncio
import itertools
import threading
from pathlib import Path

import av
import numpy as np
import pytest

from byockit.client.sources import FileSource, PushSource, TestPatternSource, WebcamSource
from byockit.protocol.errors import MediaError, StreamClosedError
from byockit.protocol.media import TIME_BASE
from byockit.protocol.media.pattern import read_index
from byockit.testkit.synthetic import make_ts_clip

W, H = 160, 90


async def collect(
    source: TestPatternSource | FileSource | PushSource, limit: int = 1000
) -> list[av.VideoFrame]:
    frames = []
    async with asyncio.timeout(20), source:
        async for frame in source:
            frames.append(frame)
            if len(frames) == limit:
                break
    return frames


def indexes(frames: list[av.VideoFrame]) -> list[int]:
    return [read_index(frame.to_ndarray(format="rgb24")) for frame in frames]


def assert_timeline(frames: list[av.VideoFrame]) -> None:
    assert frames[0].pts == 0
    assert all(frame.time_base == TIME_BASE for frame in frames)
    pts = [frame.pts for frame in frames]
    assert all(b is not None and a is not None and b > a for a, b in itertools.pairwise(pts))


async def test_pattern_source_frames_show_their_index() -> None:
    frames = await collect(TestPatternSource(fps=25, width=W, height=H, count=10, realtime=False))
    assert indexes(frames) == list(range(10))
    assert [frame.pts for frame in frames] == [i * 3600 for i in range(10)]
    assert (frames[0].width, frames[0].height) == (W, H)


async def test_pattern_source_paced_in_real_time_keeps_its_timestamps() -> None:
    frames = await collect(TestPatternSource(fps=60, width=W, height=H, count=5))
    assert [frame.pts for frame in frames] == [i * 1500 for i in range(5)]


async def test_pattern_source_without_count_runs_until_closed() -> None:
    source = TestPatternSource(width=W, height=H, realtime=False)
    assert len(await collect(source, limit=40)) == 40
    assert [frame async for frame in source] == []


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"fps": 0}, "fps"),
        ({"count": -1}, "count"),
        ({"width": 20}, "too small"),
    ],
)
def test_pattern_source_rejects_bad_settings(kwargs: dict[str, int], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        TestPatternSource(**kwargs)


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clips") / "clip.ts"
    path.write_bytes(make_ts_clip(1, fps=30, width=W, height=H, audio="aac", gop_seconds=0.5))
    return path


async def test_file_source_decodes_every_frame_with_timestamps_from_zero(clip_path: Path) -> None:
    frames = await collect(FileSource(str(clip_path), realtime=False))
    assert indexes(frames) == list(range(30))
    assert_timeline(frames)
    assert frames[1].pts == 3000


async def test_file_source_loops_with_timestamps_running_on(clip_path: Path) -> None:
    frames = await collect(FileSource(str(clip_path), loop=True, realtime=False), limit=75)
    assert indexes(frames) == [*range(30), *range(30), *range(15)]
    assert_timeline(frames)
    assert frames[30].pts == 30 * 3000


async def test_file_source_close_mid_way_stops_its_thread(clip_path: Path) -> None:
    source = FileSource(str(clip_path), loop=True)
    assert len(await collect(source, limit=3)) == 3
    assert "byockit-file-source" not in {thread.name for thread in threading.enumerate()}


async def test_file_source_missing_file_is_a_media_error(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.mp4"
    with pytest.raises(MediaError, match=r"cannot open .*nothing\.mp4"):
        await collect(FileSource(str(missing)))


async def test_file_source_without_video_is_a_media_error(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 800), np.int16), format="s16", layout="mono"
        )
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(MediaError, match="no video stream"):
        await collect(FileSource(str(path)))


async def test_webcam_source_without_a_camera_is_a_media_error() -> None:
    with pytest.raises(MediaError, match="/dev/video-missing"):
        await collect(WebcamSource("/dev/video-missing"))


async def test_push_source_yields_pushed_images_then_ends_on_close() -> None:
    source = PushSource()
    images = [np.full((H, W, 3), value, np.uint8) for value in (10, 120, 240)]

    async def produce() -> None:
        for image in images:
            await source.push(image)
        await source.close()

    async with asyncio.timeout(20):
        producer = asyncio.create_task(produce())
        frames = [frame async for frame in source]
        await producer
    assert [int(frame.to_ndarray(format="rgb24").mean()) for frame in frames] == [10, 120, 240]
    assert_timeline(frames)


async def test_push_source_holds_the_producer_back_when_full() -> None:
    source = PushSource(max_queued=2)
    image = np.zeros((H, W, 3), np.uint8)
    await source.push(image)
    await source.push(image)
    third = asyncio.create_task(source.push(image))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not third.done()
    await anext(source)
    async with asyncio.timeout(20):
        await third
    await source.close()
    assert len([frame async for frame in source]) == 2


async def test_push_source_rejects_bad_images_and_pushes_after_close() -> None:
    source = PushSource()
    with pytest.raises(MediaError, match="uint8"):
        await source.push(np.zeros((H, W, 3), np.float32))
    with pytest.raises(MediaError, match=r"\(H, W, 3\)"):
        await source.push(np.zeros((H, W), np.uint8))
    with pytest.raises(MediaError, match="numpy array or a torch tensor"):
        await source.push([[1, 2, 3]])
    await source.close()
    with pytest.raises(StreamClosedError):
        await source.push(np.zeros((H, W, 3), np.uint8))
