"""Processors that hear audio, end to end: FakeOrchestrator -> WorkerServer -> output channel.

A clip muxed the way gateways send it (AAC or Opus beside indexed video)
goes into the input channel; the whole output is read back, its audio
decoded by ffmpeg (``av.open``) and compared with the input's: samples
changed as the processor said, timestamps kept within a frame. Assertions
are on counts, timestamps and sample levels, never on timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import av
import numpy as np
import numpy.typing as npt
import pytest

from byockit.protocol.errors import MediaError
from byockit.protocol.media import AudioFormat, AudioPacket, StreamDecoder
from byockit.protocol.models import CapabilityRegistration, ErrorEvent, JSONObject
from byockit.protocol.trickle import TrickleSubscriber
from byockit.testkit.orchestrator import FakeOrchestrator, FakeStream
from byockit.testkit.synthetic import make_ts_clip, read_index, split_segments
from byockit.worker.audio import AudioDecoder, HeardAudio, processed_audio
from byockit.worker.frames import AudioFrame, Frame
from byockit.worker.processor import Processor, ProcessorRuntime, StreamContext
from byockit.worker.server import WorkerServer
from byockit.worker.session import StreamSession

W, H = 128, 72
FPS = 30
CLIP_SECONDS = 1.5
TIMEOUT = 20.0
"""Only stops a hang."""
FRAME_TICKS = {"aac": 1024 * 90_000 // 48_000, "opus": 960 * 90_000 // 48_000}
"""One audio frame, in 90 kHz ticks, at the clip's 48 kHz."""

Codec = Literal["aac", "opus"]


class Halve(Processor[JSONObject]):
    """Video untouched; audio at half its amplitude, as a bare array."""

    def process(self, frame: Frame[Any]) -> object:
        return frame

    def process_audio(self, audio: AudioFrame) -> object:
        return audio.samples * 0.5


class AsyncSilence(Processor[JSONObject]):
    """Video untouched; silence, as an AudioFrame, from an async hook."""

    def process(self, frame: Frame[Any]) -> object:
        return frame

    async def process_audio(self, audio: AudioFrame) -> object:
        await asyncio.sleep(0)
        return audio.with_samples(np.zeros_like(audio.samples))


# --- reading what went in and what came out ----------------------------------------------------


def rms(samples: npt.NDArray[Any]) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def audio_of(ts: bytes) -> tuple[list[int], npt.NDArray[np.float32]]:
    """(PES timestamps of the audio packets, every decoded sample) of an MPEG-TS stream.

    The timestamps come from byockit's demuxer, the samples from ffmpeg's.
    """
    decoder = StreamDecoder()
    items = decoder.feed(ts) + decoder.flush()
    pts = [item.pts for item in items if isinstance(item, AudioPacket) and item.pts is not None]
    with av.open(io.BytesIO(ts), mode="r", format="mpegts") as container:
        frames = [frame.to_ndarray() for frame in container.decode(container.streams.audio[0])]
    return pts, np.concatenate(frames, axis=1)


class Output:
    """The output channel's segments, each kept once it is complete."""

    def __init__(self, url: str) -> None:
        self.segments: list[bytes] = []
        self.frames = 0
        """Video frames in the complete segments."""
        self._decoder = StreamDecoder()
        self._task = asyncio.create_task(self._read(url))

    async def _read(self, url: str) -> None:
        async with TrickleSubscriber(url, start=0) as subscriber:
            async for segment in subscriber:
                data = bytearray()
                async for chunk in segment.iter_chunks():
                    data += chunk
                items = self._decoder.feed(bytes(data)) + self._decoder.end_segment()
                self.frames += sum(isinstance(item, av.VideoFrame) for item in items)
                self.segments.append(bytes(data))

    async def all_of(self, frames: int) -> bytes:
        """The whole output, once it holds ``frames`` video frames."""
        await until(lambda: self.frames >= frames, f"{frames} output frames")
        return b"".join(self.segments)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def until(condition: Callable[[], object], what: str) -> None:
    try:
        async with asyncio.timeout(TIMEOUT):
            while not condition():  # noqa: ASYNC110 - state changed by other tasks and threads
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@contextlib.asynccontextmanager
async def serving(processor: object) -> AsyncIterator[tuple[FakeOrchestrator, WorkerServer]]:
    """A worker serving ``processor``, registered with a fake orchestrator."""
    async with FakeOrchestrator(keepalive_interval=0.5) as orchestrator:
        server = WorkerServer(processor, port=0)
        async with server:
            await asyncio.wait_for(server.wait_loaded(), TIMEOUT)
            await orchestrator.register(
                CapabilityRegistration(name="audio", url=server.url, capacity=1)
            )
            yield orchestrator, server


async def run_clip(
    orchestrator: FakeOrchestrator, server: WorkerServer, clip: bytes
) -> tuple[FakeStream, StreamSession, bytes]:
    """Send ``clip`` through a new stream, end its input; returns the stream's whole output."""
    stream = await orchestrator.start_stream("audio")
    session = server.sessions[stream.stream_id]
    assert isinstance(session, StreamSession)
    assert stream.output_url is not None
    output = Output(stream.output_url)
    try:
        for segment in split_segments(clip):
            await stream.publish_segments([segment])
            await asyncio.sleep(0.1)  # about twice real time: input keeps coming in pieces
        orchestrator.trickle.delete_channel(stream.stream_id)  # the input ends
        async with asyncio.timeout(TIMEOUT):
            await session.wait_ended()
        published = session.status().inference_status.frames  # type: ignore[union-attr]
        assert published
        return stream, session, await output.all_of(published)
    finally:
        await output.close()


def a_clip(codec: Codec) -> bytes:
    return make_ts_clip(CLIP_SECONDS, fps=FPS, width=W, height=H, audio=codec, gop_seconds=0.5)


def assert_timing_kept(sent: list[int], received: list[int], codec: Codec) -> None:
    """Every output packet lies within a frame of an input packet, and none is missing."""
    frame = FRAME_TICKS[codec]
    assert received == sorted(received)
    assert len(received) >= len(sent) - 1  # the encoder's priming may cost the first packet
    for pts in received:
        assert min(abs(pts - other) for other in sent) <= frame, pts
    assert received[0] <= sent[0] + frame
    assert received[-1] >= sent[-1] - frame


# --- tests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "processor", "level"),
    [("aac", Halve, 0.5), ("opus", AsyncSilence, 0.0)],
)
async def test_processed_audio_is_reencoded_with_its_timing(
    codec: Codec, processor: type[Processor[JSONObject]], level: float
) -> None:
    clip = a_clip(codec)
    sent_pts, sent_samples = audio_of(clip)
    async with serving(processor) as (orchestrator, server):
        stream, session, output = await run_clip(orchestrator, server, clip)
    pts, samples = audio_of(output)

    assert_timing_kept(sent_pts, pts, codec)
    # the whole clip's audio came back, at the processor's level (the edges hold codec priming)
    assert abs(samples.shape[1] - sent_samples.shape[1]) <= 2 * 1024
    middle = slice(4800, -4800)
    assert rms(sent_samples[:, middle]) > 0.1
    assert rms(samples[:, middle]) == pytest.approx(level * rms(sent_samples[:, middle]), abs=0.01)
    assert session.health != "error"
    assert not [m.event for m in stream.events if isinstance(m.event, ErrorEvent)]
    with av.open(io.BytesIO(output), format="mpegts") as container:
        assert container.streams.audio[0].codec_context.name == codec


class SlowVideoCountedAudio(Processor[JSONObject]):
    """Video three frame intervals a frame (frames must be dropped); every audio frame recorded."""

    def __init__(self) -> None:
        self.video: list[int] = []
        self.audio: list[int] = []
        self.threads: set[str] = set()

    def process(self, frame: Frame[Any]) -> object:
        self.video.append(read_index(frame.data))
        time.sleep(3 / FPS)
        return frame

    def process_audio(self, audio: AudioFrame) -> object:
        self.audio.append(audio.pts)
        self.threads.add(threading.current_thread().name)
        return audio


async def test_audio_is_never_dropped_for_a_slow_video_processor() -> None:
    clip = a_clip("aac")
    sent_pts, _ = audio_of(clip)
    processor = SlowVideoCountedAudio()
    async with serving(processor) as (orchestrator, server):
        _, session, output = await run_clip(orchestrator, server, clip)

    status = session.status().input_status
    assert status is not None
    assert status.dropped_frames  # the slot dropped video...
    assert len(processor.video) < round(CLIP_SECONDS * FPS)
    assert processor.audio == sent_pts  # ...but every audio frame was heard, in order, on time
    assert processor.threads == {"byockit-inference"}  # beside process(), never concurrently
    pts, _ = audio_of(output)
    assert_timing_kept(sent_pts, pts, "aac")


class FailsOnOddFrames(Processor[JSONObject]):
    def __init__(self) -> None:
        self.heard = 0

    def process(self, frame: Frame[Any]) -> object:
        return frame

    def process_audio(self, audio: AudioFrame) -> object:
        self.heard += 1
        if self.heard % 2 == 0:
            raise RuntimeError("no audio model today")
        return audio


async def test_a_failing_audio_hook_is_reported_and_the_stream_goes_on() -> None:
    clip = a_clip("opus")
    sent_pts, _ = audio_of(clip)
    async with serving(FailsOnOddFrames) as (orchestrator, server):
        stream, session, output = await run_clip(orchestrator, server, clip)

    errors = [m.event.message for m in stream.events if isinstance(m.event, ErrorEvent)]
    assert errors
    assert errors[0].startswith("process_audio() failed at ")
    assert "no audio model today" in errors[0]
    stats = session.stats
    assert stats.audio_failures == len(sent_pts) // 2
    assert stats.audio_processed == len(sent_pts) - stats.audio_failures
    assert session.health != "error"  # audio failures do not fail the video
    pts, _ = audio_of(output)
    assert 0 < len(pts) < len(sent_pts)  # the failed frames' audio is left out, the rest is there


# --- the pieces ----------------------------------------------------------------------------------


def test_only_a_processor_with_process_audio_hears_audio() -> None:
    assert ProcessorRuntime.wrap(Halve).processes_audio
    assert ProcessorRuntime.wrap(AsyncSilence).processes_audio
    assert not ProcessorRuntime.wrap(SlowVideoCountedAudio().process).processes_audio

    class VideoOnly(Processor[JSONObject]):
        def process(self, frame: Frame[Any]) -> object:
            return frame

    assert not ProcessorRuntime.wrap(VideoOnly).processes_audio


AAC = AudioFormat("aac", 0x0F, b"")
OPUS = AudioFormat("opus", 0x06, b"\x05\x04Opus\x7f\x02\x80\x02")


def test_damaged_audio_payloads_are_counted_not_raised() -> None:
    decoder = AudioDecoder()
    assert decoder.decode(AudioPacket(b"\x00\x01\x02 not adts", 0, AAC)) == []
    assert decoder.decode(AudioPacket(b"\x7f\xe0\x40 cut short", 0, OPUS)) == []
    assert decoder.decode(AudioPacket(b"\xff\xf1\x4c\x80\x01\x1f\xfc" + bytes(8), None, AAC)) == []
    assert decoder.errors >= 3


def test_opus_beyond_stereo_is_a_clear_error() -> None:
    surround = AudioFormat("opus", 0x06, b"\x05\x04Opus\x7f\x02\x80\x06")
    with pytest.raises(MediaError, match="Opus channel configuration 6"):
        AudioDecoder().decode(AudioPacket(b"\x7f\xe0\x01\x00", 0, surround))


def test_unusable_results_of_process_audio_are_named() -> None:
    context = StreamContext("s", {}, send_data=lambda _: None, send_event=lambda _: None)
    samples = np.zeros((2, 1024), np.float32)
    heard = HeardAudio(samples, 48_000, "stereo", 900, AAC)
    frame = AudioFrame(samples, 48_000, 900, context)
    assert processed_audio(None, heard, frame) is None
    moved = processed_audio(AudioFrame(samples[:, :10], 48_000, 1800, context), heard, frame)
    assert moved is not None
    assert (moved.pts, moved.samples.shape) == (1800, (2, 10))
    doubled = processed_audio(samples.astype(np.float64) * 2, heard, frame)
    assert doubled is not None
    assert doubled.pts == 900
    assert doubled.samples.dtype == np.dtype(np.float32)
    for result, message in [
        ("loud", "returned str; expected an AudioFrame, a numpy array or None"),
        (np.zeros((1, 1024), np.float32), r"shape \(1, 1024\); expected \(2, n\)"),
        (np.zeros(1024, np.float32), r"shape \(1024,\); expected \(2, n\)"),
        (np.zeros((2, 1024), np.int16), "int16 samples; expected floating point"),
        (AudioFrame(samples, 44_100, 900, context), "44100 Hz audio for 48000 Hz"),
    ]:
        with pytest.raises(MediaError, match=message):
            processed_audio(result, heard, frame)
