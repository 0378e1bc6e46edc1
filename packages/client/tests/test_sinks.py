"""Sinks: latency matched by index or pts, and MP4 recordings that play back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterable, Callable
from pathlib import Path

import av
import numpy as np
import pytest

from byockit.client.sinks import MAX_TRACKED, FrameSink, ReceivedFrame, Recorder
from byockit.client.sources import PushSource, TestPatternSource
from byockit.protocol.errors import MediaError
from byockit.protocol.media import SegmentEncoder, decode_stream, encode_stream, video_frame
from byockit.protocol.media.pattern import read_index

W, H = 160, 90


async def through_codec(
    frames: AsyncIterable[av.VideoFrame],
) -> AsyncGenerator[av.VideoFrame, None]:
    """Encode and decode again: lossy frames with the input's timestamps, as a worker returns."""

    async def chunks() -> AsyncGenerator[bytes, None]:
        async for chunk in encode_stream(frames, SegmentEncoder(preset="ultrafast")):
            yield chunk.data

    async for item in decode_stream(chunks()):
        if isinstance(item, av.VideoFrame):
            yield item


async def receive_all(sink: FrameSink) -> list[ReceivedFrame]:
    async with asyncio.timeout(20):
        received = [item async for item in sink]
    await sink.close()
    return received


async def test_frame_sink_matches_indexed_frames_by_index() -> None:
    source = TestPatternSource(width=W, height=H, count=12, realtime=False)

    async def shifted() -> AsyncGenerator[av.VideoFrame, None]:
        # a worker that changes timestamps: only the index can match
        async for frame in through_codec(sink.track(source)):
            assert frame.pts is not None
            frame.pts += 90_000
            yield frame

    sink = FrameSink(shifted())
    received = await receive_all(sink)
    assert [item.index for item in received] == list(range(12))
    assert all(item.latency is not None and item.latency >= 0 for item in received)
    assert sink.matched == 12


async def test_frame_sink_matches_plain_frames_by_pts() -> None:
    source = PushSource()
    sink = FrameSink(through_codec(_later(lambda: sink.track(source))))

    async def produce() -> None:
        for value in (30, 90, 150):
            await source.push(np.full((H, W, 3), value, np.uint8))
        await source.close()

    producer = asyncio.create_task(produce())
    received = await receive_all(sink)
    await producer
    assert [item.pts for item in received] == sorted(sink._by_pts)
    assert all(item.index is None and item.latency is not None for item in received)
    assert sink.matched == 3


async def _later(
    make: Callable[[], AsyncIterable[av.VideoFrame]],
) -> AsyncGenerator[av.VideoFrame, None]:
    async for frame in make():
        yield frame


async def test_frame_sink_leaves_unknown_frames_unmatched() -> None:
    async def outputs() -> AsyncGenerator[av.VideoFrame, None]:
        yield video_frame(np.zeros((H, W, 3), np.uint8), 12345)

    sink = FrameSink(outputs())
    [item] = await receive_all(sink)
    assert (item.pts, item.index, item.latency) == (12345, None, None)
    assert sink.matched == 0


def test_frame_sink_remembers_a_bounded_number_of_inputs() -> None:
    sink = FrameSink(_nothing())
    for pts in range(MAX_TRACKED + 10):
        sink.note_sent(video_frame(np.zeros((16, 64, 3), np.uint8), pts))
    assert len(sink._by_pts) == MAX_TRACKED
    assert min(sink._by_pts) == 10


async def _nothing() -> AsyncGenerator[av.VideoFrame, None]:
    return
    yield


async def test_recorder_writes_a_playable_mp4(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    async with Recorder(str(path)) as recorder:
        await recorder.record(
            TestPatternSource(fps=30, width=W, height=H, count=20, realtime=False)
        )
    assert recorder.frames_written == 20
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = list(container.decode(stream))
    assert [read_index(frame.to_ndarray(format="rgb24")) for frame in frames] == list(range(20))
    assert frames[1].time == pytest.approx(1 / 30, abs=1e-3)


async def test_recorder_scales_other_sizes_and_drops_repeated_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "mixed.mp4"
    recorder = Recorder(str(path))
    await recorder.write(video_frame(np.zeros((H, W, 3), np.uint8), 0))
    await recorder.write(video_frame(np.zeros((2 * H, 2 * W, 3), np.uint8), 3000))
    await recorder.write(video_frame(np.zeros((H, W, 3), np.uint8), 3000))
    await recorder.close()
    await recorder.close()
    assert (recorder.frames_written, recorder.frames_dropped) == (2, 1)
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    assert [(frame.width, frame.height) for frame in frames] == [(W, H), (W, H)]


async def test_recorder_errors_are_media_errors(tmp_path: Path) -> None:
    recorder = Recorder(str(tmp_path / "no-such-dir" / "out.mp4"))
    with pytest.raises(MediaError, match="cannot create"):
        await recorder.write(video_frame(np.zeros((H, W, 3), np.uint8), 0))
    await recorder.close()
    with pytest.raises(MediaError, match="closed"):
        await recorder.write(video_frame(np.zeros((H, W, 3), np.uint8), 0))
    odd = Recorder(str(tmp_path / "odd.mp4"))
    with pytest.raises(MediaError, match="even"):
        await odd.write(video_frame(np.zeros((H + 1, W, 3), np.uint8), 0))
    await odd.close()


async def test_recorder_closed_before_any_frame_writes_no_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    await Recorder(str(path)).close()
    assert not path.exists()
