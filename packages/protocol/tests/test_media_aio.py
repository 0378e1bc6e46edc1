"""Async adapters: codecs in their own threads, bounded hand-offs, trickle on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import AsyncIterator, Iterable
from typing import TypeVar

import av
import numpy as np
import pytest

from byockit.protocol.errors import MediaError
from byockit.protocol.media import (
    AudioPacket,
    EncodedChunk,
    MediaItem,
    SegmentEncoder,
    StreamDecoder,
    decode_segments,
    decode_stream,
    encode_stream,
    publish_stream,
    video_frame,
)
from byockit.protocol.media.aio import QUEUE_DEPTH
from byockit.protocol.trickle.constants import MIME_MPEGTS
from byockit.protocol.trickle.publisher import TricklePublisher
from byockit.protocol.trickle.subscriber import Segment, TrickleSubscriber
from byockit.testkit.synthetic import make_ts_clip, read_index, split_segments, synthetic_frames
from byockit.testkit.trickle_server import TrickleServer

W, H = 160, 90
T = TypeVar("T")


async def aiter_of(items: Iterable[T]) -> AsyncIterator[T]:
    for item in items:
        yield item


@functools.cache
def our_chunks(count: int = 60) -> tuple[EncodedChunk, ...]:
    encoder = SegmentEncoder()
    return tuple(c for f in synthetic_frames(count, width=W, height=H) for c in encoder.encode(f))


def indices(items: list[MediaItem]) -> list[int]:
    return [read_index(i.to_ndarray(format="rgb24")) for i in items if isinstance(i, av.VideoFrame)]


def codec_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("byockit-")]


async def test_decode_stream_yields_every_frame_and_reports_to_its_decoder() -> None:
    decoder = StreamDecoder()
    items = [i async for i in decode_stream(aiter_of(c.data for c in our_chunks()), decoder)]
    assert indices(items) == list(range(60))
    assert decoder.errors == 0
    assert codec_threads() == []


async def test_encode_stream_passes_audio_through() -> None:
    clip = make_ts_clip(1, width=W, height=H, audio="aac")
    decoder = StreamDecoder()
    source = decoder.feed(clip) + decoder.flush()
    chunks = [c async for c in encode_stream(aiter_of(source), SegmentEncoder())]
    assert chunks[0].segment_start
    out = StreamDecoder().feed(b"".join(c.data for c in chunks))
    assert indices(out) == list(range(30))
    sound = [i for i in source if isinstance(i, AudioPacket)]
    assert [i for i in out if isinstance(i, AudioPacket)] == sound


async def test_errors_of_the_source_reach_the_consumer_after_what_came_before() -> None:
    async def failing() -> AsyncIterator[bytes]:
        for chunk in our_chunks()[:10]:
            yield chunk.data
        raise RuntimeError("source broke")

    items: list[MediaItem] = []

    async def consume() -> None:
        async for item in decode_stream(failing()):
            items.append(item)

    with pytest.raises(RuntimeError, match="source broke"):
        await consume()
    assert indices(items) == list(range(10))
    assert codec_threads() == []


async def test_errors_of_the_codec_reach_the_consumer() -> None:
    odd = video_frame(np.zeros((H, W + 1, 3), np.uint8), 0)
    with pytest.raises(MediaError, match="even"):
        async for _ in encode_stream(aiter_of([odd])):
            pass
    assert codec_threads() == []


async def test_leaving_early_stops_the_codec_thread() -> None:
    async with contextlib.aclosing(decode_stream(aiter_of(c.data for c in our_chunks()))) as items:
        async for _ in items:
            break
    assert codec_threads() == []


async def test_a_slow_consumer_holds_the_source_back() -> None:
    pulled = 0

    async def source() -> AsyncIterator[bytes]:
        nonlocal pulled
        for chunk in our_chunks():
            pulled += 1
            yield chunk.data

    async with contextlib.aclosing(decode_stream(source())) as items:
        await anext(items)
        await asyncio.sleep(0.3)  # every chance to run ahead; the bound holds however long
        # one frame per chunk: the consumer's, the output queue, the codec's, the input queue
        # and the feeder's are all that can be pulled
        assert pulled <= 1 + QUEUE_DEPTH + 1 + QUEUE_DEPTH + 1 < len(our_chunks())
        rest = [item async for item in items]  # the source, held back, is woken again
        assert 1 + len(rest) == len(our_chunks()) == pulled


async def test_publish_and_decode_over_trickle(
    no_leaks: None, trickle_server: TrickleServer
) -> None:
    url = trickle_server.create_channel("video", MIME_MPEGTS)
    seqs: list[int] = []

    async def recorded(subscriber: TrickleSubscriber) -> AsyncIterator[Segment]:
        async for segment in subscriber:
            seqs.append(segment.seq)
            yield segment

    frames = synthetic_frames(75, width=W, height=H)
    async with TrickleSubscriber(url, start=0) as subscriber, TricklePublisher(url) as publisher:
        publishing = asyncio.create_task(publish_stream(aiter_of(frames), publisher))
        items: list[MediaItem] = []
        async with contextlib.aclosing(decode_segments(recorded(subscriber))) as decoded:
            async for item in decoded:
                items.append(item)
                if len(items) == 75:
                    break
        await asyncio.wait_for(publishing, 10)
    assert indices(items) == list(range(75))
    assert seqs == [0, 1, 2]  # one segment per GOP of 30 frames
    assert codec_threads() == []


async def published_segments(server: TrickleServer, clip: bytes) -> AsyncIterator[Segment]:
    """The clip's GOPs, published as trickle segments and read back until the last one."""
    url = server.create_channel("av", MIME_MPEGTS)
    parts = split_segments(clip)
    async with TricklePublisher(url) as publisher:
        for data in parts:
            async with publisher.segment() as segment:
                await segment.write(data)
    async with TrickleSubscriber(url, start=0) as subscriber:
        async for segment in subscriber:
            yield segment
            if segment.seq == len(parts) - 1:
                return


async def test_a_frame_callback_takes_the_frames_in_the_decoder_thread(
    no_leaks: None, trickle_server: TrickleServer
) -> None:
    clip = make_ts_clip(2, width=W, height=H, audio="aac", gop_seconds=1)
    taken: list[tuple[int, str]] = []

    def on_frame(frame: av.VideoFrame) -> None:
        index = read_index(frame.to_ndarray(format="rgb24"))
        taken.append((index, threading.current_thread().name))

    segments = published_segments(trickle_server, clip)
    async with contextlib.aclosing(decode_segments(segments, on_frame=on_frame)) as decoded:
        rest = [item async for item in decoded]
    assert taken == [(index, "byockit-decoder") for index in range(60)]
    assert rest
    assert all(isinstance(item, AudioPacket) for item in rest)  # only audio is yielded
    assert codec_threads() == []


async def test_what_the_frame_callback_raises_ends_the_stream(
    no_leaks: None, trickle_server: TrickleServer
) -> None:
    taken: list[av.VideoFrame] = []

    def on_frame(frame: av.VideoFrame) -> None:
        taken.append(frame)
        if len(taken) == 10:
            raise ValueError("frame 10 is unwelcome")

    segments = published_segments(trickle_server, make_ts_clip(1, width=W, height=H))
    async with contextlib.aclosing(decode_segments(segments, on_frame=on_frame)) as decoded:
        with pytest.raises(ValueError, match="frame 10 is unwelcome"):
            [item async for item in decoded]
    assert len(taken) == 10  # none after the failure
    assert codec_threads() == []
