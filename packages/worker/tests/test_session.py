"""Stream sessions end to end: a real trickle server with the five channels an orchestrator makes.

Synthetic video whose frames carry their index goes into the input channel;
the output channel is decoded and every output frame is matched to its input
by the index in its pixels and checked for the processor's transformation.
Events and data are read from their channels. Assertions are on counts,
indexes and contents, never on timings (timeouts only stop a hang).
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Literal

import attrs
import av
import numpy as np
import pytest

from byockit.protocol.media import (
    AudioPacket,
    MediaItem,
    StreamDecoder,
    decode_segments,
    publish_stream,
    video_frame,
)
from byockit.protocol.models import (
    ErrorEvent,
    Event,
    EventMessage,
    JSONObject,
    ParamsUpdateEvent,
    StreamStatus,
    StreamStoppedEvent,
    TraceEvent,
    TraceType,
    UnknownEvent,
    WorkerStartRequest,
)
from byockit.protocol.trickle import (
    JsonLinesReader,
    JsonReader,
    JsonWriter,
    TricklePublisher,
    TrickleSubscriber,
)
from byockit.protocol.trickle.constants import MIME_JSON, MIME_JSONL, MIME_MPEGTS
from byockit.testkit.synthetic import indexed_frame, make_ts_clip, read_index
from byockit.testkit.trickle_server import TrickleServer
from byockit.worker import pipeline
from byockit.worker.frames import Frame, FrameFormat
from byockit.worker.processor import ParamsRejected, Processor, ProcessorRuntime, StreamContext
from byockit.worker.session import StreamSession

W, H = 128, 72
FPS = 30
TICKS = 90_000 // FPS
TIMEOUT = 20.0
"""Only stops a hang; nothing here waits this long when it works."""

CHANNELS = (
    ("", MIME_MPEGTS),
    ("-out", MIME_MPEGTS),
    ("-control", MIME_JSON),
    ("-events", MIME_JSON),
    ("-data", MIME_JSONL),
)


@attrs.frozen
class Output:
    index: int
    rgb: np.ndarray[Any, Any]


@attrs.define
class Stream:
    """One stream's channels on a trickle server, read from their first segment."""

    server: TrickleServer
    stream_id: str = "stream-1"
    events: list[Event] = attrs.field(factory=list)
    raw_events: list[JSONObject] = attrs.field(factory=list)
    data: list[Any] = attrs.field(factory=list)
    output: list[Output] = attrs.field(factory=list)
    audio: list[AudioPacket] = attrs.field(factory=list)
    sessions: list[StreamSession] = attrs.field(factory=list)
    _tasks: list[asyncio.Task[None]] = attrs.field(factory=list)
    _control: TricklePublisher | None = None

    def url(self, suffix: str = "") -> str:
        return self.server.channel_url(self.stream_id + suffix)

    def request(self, params: JSONObject | None = None, **urls: str | None) -> WorkerStartRequest:
        fields: dict[str, Any] = {
            "gateway_request_id": self.stream_id,
            "subscribe_url": self.url(),
            "publish_url": self.url("-out"),
            "control_url": self.url("-control"),
            "events_url": self.url("-events"),
            "data_url": self.url("-data"),
            "params": params,
        }
        fields.update(urls)
        return WorkerStartRequest.from_json(fields)

    def start_readers(self) -> None:
        self._tasks += [
            asyncio.create_task(self._read_events()),
            asyncio.create_task(self._read_data()),
            asyncio.create_task(self._read_output()),
        ]

    async def _read_events(self) -> None:
        async with TrickleSubscriber(self.url("-events"), start=0) as subscriber:
            async for document in JsonReader(subscriber):
                self.raw_events.append(document)
                self.events.append(EventMessage.from_json(document).event)

    async def _read_data(self) -> None:
        async with TrickleSubscriber(self.url("-data"), start=0) as subscriber:
            async for document in JsonLinesReader(subscriber):
                self.data.append(document)

    async def _read_output(self) -> None:
        async with TrickleSubscriber(self.url("-out"), start=0) as subscriber:
            async for item in decode_segments(subscriber):
                if isinstance(item, AudioPacket):
                    self.audio.append(item)
                else:
                    rgb = item.to_ndarray(format="rgb24")
                    try:
                        index = read_index(rgb)
                    except ValueError:
                        index = -1
                    self.output.append(Output(index, rgb))

    async def send_control(self, document: object) -> None:
        if self._control is None:
            self._control = TricklePublisher(self.url("-control"), MIME_JSON)
        await JsonWriter(self._control).send(document)

    async def publish(self, items: AsyncIterator[MediaItem]) -> None:
        async with TricklePublisher(self.url(), MIME_MPEGTS) as publisher:
            await publish_stream(items, publisher)

    def of(self, kind: type[Any]) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]

    async def close(self) -> None:
        for session in self.sessions:
            await session.stop("test over")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._control is not None:
            await self._control.close()


@pytest.fixture
async def stream() -> AsyncIterator[Stream]:
    async with TrickleServer() as server:
        channels = Stream(server)
        for suffix, mime in CHANNELS:
            server.create_channel(channels.stream_id + suffix, mime)
        channels.start_readers()
        try:
            yield channels
        finally:
            await channels.close()
    assert not worker_threads()


def worker_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in WORKER_THREADS]


WORKER_THREADS = ("byockit-inference", "byockit-output-encoder")


async def until(condition: Callable[[], object], what: str = "condition") -> None:
    """Wait for ``condition`` (polled); the timeout only stops a hang."""
    try:
        async with asyncio.timeout(TIMEOUT):
            while not condition():  # noqa: ASYNC110  (conditions change in other threads)
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def start(
    stream: Stream,
    processor: object,
    params: JSONObject | None = None,
    request: WorkerStartRequest | None = None,
    **options: Any,
) -> StreamSession:
    """A started session; returns once its first status event arrived."""
    runtime = ProcessorRuntime.wrap(processor)
    await runtime.load()
    options.setdefault("status_interval", 0.2)
    session = StreamSession(request or stream.request(params), runtime, **options)
    stream.sessions.append(session)
    session.start()
    await until(lambda: stream.of(StreamStatus), "the first status event")
    return session


async def frames(
    count: int,
    *,
    first: int = 0,
    rate: float = FPS,
    size: Callable[[int], tuple[int, int]] = lambda _: (W, H),
) -> AsyncIterator[MediaItem]:
    """Synthetic frames ``first``.. at 30 fps timestamps, sent ``rate`` per second."""
    for index in range(first, first + count):
        yield video_frame(indexed_frame(index, *size(index)), index * TICKS)
        await asyncio.sleep(1 / rate)


async def finish_input(stream: Stream, session: StreamSession, count: int) -> None:
    """Once ``count`` input frames were decoded, end the input (as an orchestrator does)."""
    await until(lambda: session.status().input_status.frames == count, f"{count} input frames")  # type: ignore[union-attr]
    stream.server.delete_channel(stream.stream_id)
    await ended(stream, session)


async def ended(stream: Stream, session: StreamSession) -> None:
    """Once the session has ended and its last event (stopped) has been read back."""
    async with asyncio.timeout(TIMEOUT):
        await session.wait_ended()
    await until(lambda: stream.of(StreamStoppedEvent), "the stopped event")


async def all_output(stream: Stream, session: StreamSession) -> list[Output]:
    """Every frame the session says it published, read back from the output channel."""
    published = session.status().inference_status.frames  # type: ignore[union-attr]
    await until(lambda: len(stream.output) >= published, f"{published} output frames")  # type: ignore[operator]
    assert len(stream.output) == published
    return stream.output


def assert_inverted(outputs: Iterable[Output], width: int = W, height: int = H) -> None:
    for output in outputs:
        expected = 255 - indexed_frame(output.index, width, height).astype(np.int16)
        assert np.abs(output.rgb.astype(np.int16) - expected).mean() < 8, output.index


def assert_plain(outputs: Iterable[Output]) -> None:
    for output in outputs:
        expected = indexed_frame(output.index, W, H).astype(np.int16)
        assert np.abs(output.rgb.astype(np.int16) - expected).mean() < 8, output.index


class Recorder:
    """A processor function recording what it was given, inverting it."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int, int]] = []
        """(frame.index, index in the pixels, pts)"""

    def __call__(self, frame: Frame[Any]) -> object:
        self.seen.append((frame.index, read_index(frame.data), frame.pts))
        return 255 - frame.data

    @property
    def indexes(self) -> list[int]:
        return [pixels for _, pixels, _ in self.seen]


# --- the basics -----------------------------------------------------------------------------


async def test_a_function_processor_transforms_every_frame_it_is_given(stream: Stream) -> None:
    recorder = Recorder()
    session = await start(stream, recorder)
    assert session.health == "starting"
    await stream.publish(frames(30))
    await finish_input(stream, session, 30)

    outputs = await all_output(stream, session)
    assert [o.index for o in outputs] == recorder.indexes  # each output is its input, in order
    assert_inverted(outputs)
    assert all(
        seen == (i, i, i * TICKS) for i, seen in zip(recorder.indexes, recorder.seen, strict=True)
    )
    status = session.status()
    assert status.input_status is not None
    assert status.inference_status is not None
    assert status.input_status.frames == 30
    assert len(recorder.seen) + status.input_status.dropped_frames == 30  # type: ignore[operator]
    assert status.inference_status.frames == len(outputs) > 0
    assert status.inference_status.latency_ms is not None
    assert status.state == "OFFLINE"

    traces = [event.type for event in stream.of(TraceEvent)]
    assert traces == [TraceType.FIRST_INGEST_SEGMENT, TraceType.FIRST_PROCESSED_SEGMENT]
    statuses = stream.of(StreamStatus)
    assert statuses[0].state == "LOADING"
    assert "ONLINE" in [s.state for s in statuses]
    assert statuses[-1].state == "OFFLINE"
    assert [e.reason for e in stream.of(StreamStoppedEvent)] == ["input ended"]
    assert stream.events[-1] == stream.of(StreamStoppedEvent)[0]
    assert not stream.of(ErrorEvent)


async def test_status_events_keep_coming_while_the_stream_runs(stream: Stream) -> None:
    session = await start(stream, Recorder(), status_interval=0.05)
    publishing = asyncio.create_task(stream.publish(frames(300)))
    await until(lambda: len(stream.of(StreamStatus)) >= 6, "six status events")
    publishing.cancel()
    statuses = stream.of(StreamStatus)
    assert all(s.stream_id == stream.stream_id for s in statuses)
    online = [s for s in statuses if s.state == "ONLINE"]
    assert online
    last = online[-1]
    assert last.input_status.frames > 0
    assert last.input_status.fps > 0
    assert last.inference_status.frames > 0
    assert last.inference_status.last_params == {}
    assert session.health == "ok"


class Invert(Processor[JSONObject]):
    def __init__(self, frame_format: FrameFormat) -> None:
        self.frame_format = frame_format
        self.seen: list[tuple[tuple[int, ...], str]] = []

    def process(self, frame: Frame[Any]) -> object:
        self.seen.append((tuple(frame.data.shape), str(frame.data.dtype)))
        full = 255 if "uint8" in str(frame.data.dtype) else 1.0
        return full - frame.data


@pytest.mark.parametrize(
    ("frame_format", "shape", "dtype"),
    [
        (FrameFormat.numpy(), (H, W, 3), "uint8"),
        (
            FrameFormat.torch(dtype="float32", layout="CHW", device="cpu"),
            (3, H, W),
            "torch.float32",
        ),
        (FrameFormat.torch(dtype="uint8", layout="HWC", device="cpu"), (H, W, 3), "torch.uint8"),
    ],
)
async def test_frames_arrive_in_the_format_the_processor_asks_for(
    stream: Stream, frame_format: FrameFormat, shape: tuple[int, ...], dtype: str
) -> None:
    if frame_format.kind == "torch":
        pytest.importorskip("torch")
    processor = Invert(frame_format)
    session = await start(stream, processor)
    await stream.publish(frames(12))
    await finish_input(stream, session, 12)
    assert processor.seen
    assert set(processor.seen) == {(shape, dtype)}
    outputs = await all_output(stream, session)
    assert len(outputs) == len(processor.seen)
    assert_inverted(outputs)


async def async_invert(frame: Frame[Any]) -> object:
    await asyncio.sleep(0)
    return 255 - frame.data


async def test_an_async_function_runs_on_the_loop(stream: Stream) -> None:
    session = await start(stream, async_invert)
    await stream.publish(frames(12))
    await finish_input(stream, session, 12)
    outputs = await all_output(stream, session)
    assert outputs
    assert_inverted(outputs)


# --- the processor's choices ----------------------------------------------------------------


async def test_a_processor_may_change_the_frame_size(stream: Stream) -> None:
    def shrink_early(frame: Frame[Any]) -> object:
        return frame.data[::2, ::2] if frame.index < 8 else frame.data

    session = await start(stream, shrink_early)
    await stream.publish(frames(16))
    await finish_input(stream, session, 16)
    outputs = await all_output(stream, session)
    assert {o.index >= 8 for o in outputs} == {False, True}
    for output in outputs:
        expected = (H, W, 3) if output.index >= 8 else (H // 2, W // 2, 3)
        assert output.rgb.shape == expected, output.index
    assert session.status().inference_status.frames == len(outputs)  # type: ignore[union-attr]


async def test_the_stream_size_param_scales_the_input_to_cover(stream: Stream) -> None:
    shapes: list[tuple[int, ...]] = []

    def record(frame: Frame[Any]) -> object:
        shapes.append(frame.data.shape)
        return frame.data

    session = await start(stream, record, {"width": 96, "height": 96})
    await stream.publish(frames(6))
    await finish_input(stream, session, 6)
    assert shapes
    assert set(shapes) == {(96, 96, 3)}
    outputs = await all_output(stream, session)
    assert {o.rgb.shape for o in outputs} == {(96, 96, 3)}


async def test_returning_none_drops_the_frame(stream: Stream) -> None:
    recorder = Recorder()

    def odd_dropped(frame: Frame[Any]) -> object:
        result = recorder(frame)
        return None if frame.index % 2 else result

    session = await start(stream, odd_dropped)
    await stream.publish(frames(20))
    await finish_input(stream, session, 20)
    outputs = await all_output(stream, session)
    assert [o.index for o in outputs] == [i for i in recorder.indexes if i % 2 == 0]
    assert_inverted(outputs)
    assert session.health == "ok"


async def test_emitted_data_reaches_the_data_channel_as_json_lines(stream: Stream) -> None:
    recorder = Recorder()

    def detect(frame: Frame[Any]) -> object:
        frame.stream.emit_data({"frame": frame.index, "boxes": [[1, 2, 3, 4]]})
        return recorder(frame)

    session = await start(stream, detect)
    await stream.publish(frames(15))
    await finish_input(stream, session, 15)
    expected = [{"frame": i, "boxes": [[1, 2, 3, 4]]} for i in recorder.indexes]
    await until(lambda: len(stream.data) >= len(expected), "the data lines")
    assert stream.data == expected


async def test_custom_events_reach_the_events_channel(stream: Stream) -> None:
    def announce(frame: Frame[Any]) -> object:
        if frame.index % 5 == 0:
            frame.stream.emit_event({"type": "scene_change", "frame": frame.index})
        return frame

    session = await start(stream, announce)
    await stream.publish(frames(15))
    await finish_input(stream, session, 15)
    custom = [e for e in stream.of(UnknownEvent) if e.type == "scene_change"]
    assert custom
    assert all(e.extras["frame"] % 5 == 0 for e in custom)
    wrapped = [d for d in stream.raw_events if d["event"].get("type") == "scene_change"]  # type: ignore[union-attr]
    assert {d["queue_event_type"] for d in wrapped} == {"ai_stream_events"}


async def test_a_frame_rate_cap_admits_frames_by_their_timestamps(stream: Stream) -> None:
    recorder = Recorder()
    session = await start(stream, recorder, {"max_framerate": 10})
    await stream.publish(frames(30))
    await finish_input(stream, session, 30)
    assert recorder.indexes
    assert all(i % 3 == 0 for i in recorder.indexes)
    status = session.status()
    assert status.input_status is not None
    # 30 fps input under a 10 fps cap: frames 0, 3, 6... pass, the others are capped
    assert len(recorder.seen) + status.input_status.dropped_frames == 10  # type: ignore[operator]
    outputs = await all_output(stream, session)
    assert [o.index for o in outputs] == recorder.indexes


async def test_audio_passes_through_untouched(stream: Stream) -> None:
    clip = make_ts_clip(1.0, fps=FPS, width=W, height=H, audio="aac")
    decoder = StreamDecoder()
    items = decoder.feed(clip) + decoder.flush()
    sent_audio = [item for item in items if isinstance(item, AudioPacket)]

    async def paced() -> AsyncIterator[MediaItem]:
        for item in items:
            yield item
            if isinstance(item, av.VideoFrame):
                await asyncio.sleep(1 / FPS)

    session = await start(stream, async_invert)
    await stream.publish(paced())
    await finish_input(stream, session, FPS)
    await all_output(stream, session)
    await until(lambda: len(stream.audio) >= len(sent_audio), "the audio")
    assert [(p.data, p.pts) for p in stream.audio] == [(p.data, p.pts) for p in sent_audio]
    assert {p.format.codec for p in stream.audio} == {"aac"}


# --- parameters -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Params:
    invert: bool = False
    label: str = ""
    mode: Literal["a", "b"] = "a"


class Lifecycle(Processor[Params]):
    """Records every hook; inverts frames while its params say so."""

    params_type = Params

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.switched_at: int | None = None
        self.params = Params()

    def load(self) -> None:
        self.calls.append("load")

    def on_stream_start(self, stream: StreamContext, params: Params) -> None:
        self.calls.append(("start", stream.stream_id, params))
        self.params = params

    def on_params(self, params: Params) -> None:
        self.calls.append(("params", params))
        self.params = params

    def process(self, frame: Frame[Any]) -> object:
        if self.params.invert and self.switched_at is None:
            self.switched_at = frame.index
        return 255 - frame.data if self.params.invert else frame

    def on_stream_stop(self) -> None:
        self.calls.append("stop")


async def test_a_class_processor_gets_every_hook_and_typed_params(stream: Stream) -> None:
    processor = Lifecycle()
    session = await start(stream, processor, {"label": "start", "max_framerate": 30})
    publishing = asyncio.create_task(stream.publish(frames(300)))
    await until(lambda: len(stream.output) >= 5, "plain output")

    await session.update_params({"invert": True})
    await until(lambda: processor.switched_at is not None, "the update at a frame")
    switched = processor.switched_at
    assert switched is not None
    await until(lambda: any(o.index > switched + 3 for o in stream.output), "inverted output")

    with pytest.raises(ParamsRejected, match="parameter 'invert' must be a boolean"):
        await session.update_params({"invert": "yes"})
    with pytest.raises(ParamsRejected, match="unknown parameter 'colour'"):
        await session.update_params({"colour": "red"})
    with pytest.raises(ParamsRejected, match="field 'max_framerate'"):
        await session.update_params({"max_framerate": 1000})
    await session.stop("done")
    publishing.cancel()
    await until(lambda: stream.of(StreamStoppedEvent), "the stopped event")

    start_params = Params(label="start")
    new_params = Params(invert=True, label="start")
    assert processor.calls == [
        "load",
        ("start", stream.stream_id, start_params),
        ("params", new_params),
        "stop",
    ]
    updates = stream.of(ParamsUpdateEvent)
    assert [u.params for u in updates] == [{"label": "start", "max_framerate": 30, "invert": True}]
    status = session.status()
    assert status.inference_status is not None
    assert (
        status.inference_status.last_params == updates[0].params
    )  # the rejected ones left no mark
    outputs = await all_output(stream, session)
    assert_plain(o for o in outputs if o.index < switched)
    assert_inverted(o for o in outputs if o.index >= switched)


class AsyncLifecycle(Processor[JSONObject]):
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.loop_thread: list[bool] = []

    async def on_stream_start(self, stream: StreamContext, params: JSONObject) -> None:
        await asyncio.sleep(0)
        self.calls.append(f"start {params}")

    async def on_params(self, params: JSONObject) -> None:
        self.calls.append(f"params {params}")

    async def process(self, frame: Frame[Any]) -> object:
        self.loop_thread.append(threading.current_thread() is threading.main_thread())
        return 255 - frame.data

    async def on_stream_stop(self) -> None:
        await asyncio.sleep(0)
        self.calls.append("stop")


async def test_async_hooks_are_awaited_on_the_loop(stream: Stream) -> None:
    processor = AsyncLifecycle()
    session = await start(stream, processor, {"k": 1})
    await session.update_params({"k": 2})
    await stream.publish(frames(8))
    await finish_input(stream, session, 8)
    assert processor.calls == ["start {'k': 1}", "params {'k': 2}", "stop"]
    assert processor.loop_thread
    assert all(processor.loop_thread)
    assert_inverted(await all_output(stream, session))


async def test_the_control_channel_updates_params_and_survives_bad_messages(
    stream: Stream,
) -> None:
    processor = Lifecycle()
    session = await start(stream, processor)
    publishing = asyncio.create_task(stream.publish(frames(300)))
    await until(lambda: len(stream.output) >= 3, "output")

    await stream.send_control({"keep": "alive"})
    await stream.send_control({"params": {"label": "wrapped"}})  # as a gateway re-sends
    await until(lambda: len(stream.of(ParamsUpdateEvent)) == 1, "the first update")
    await stream.send_control({"max_framerate": "fast"})
    await stream.send_control({"mode": "c"})
    await stream.send_control([1, 2])
    await stream.send_control({"invert": True})
    await until(lambda: len(stream.of(ParamsUpdateEvent)) == 2, "the second update")
    seen = len(stream.output)
    await until(lambda: len(stream.output) > seen + 3, "more output")
    publishing.cancel()

    assert [u.params for u in stream.of(ParamsUpdateEvent)] == [
        {"label": "wrapped"},
        {"label": "wrapped", "invert": True},
    ]
    errors = [e.message for e in stream.of(ErrorEvent)]
    assert len(errors) == 3
    assert "malformed control message: field 'max_framerate': expected integer" in errors[0]
    assert "control message rejected: parameter 'mode' must be one of" in errors[1]
    assert "malformed control message: document: expected a JSON object" in errors[2]
    assert [c[1].label for c in processor.calls if c[0] == "params"] == ["wrapped", "wrapped"]
    assert session.health == "ok"


async def test_malformed_json_on_the_control_channel_is_reported(stream: Stream) -> None:
    await start(stream, Recorder())
    publisher = TricklePublisher(stream.url("-control"), MIME_JSON)
    async with publisher:
        await publisher.write_segment(b'{"label": ')
    await until(lambda: stream.of(ErrorEvent), "an error event")
    assert "malformed control message" in stream.of(ErrorEvent)[0].message
    assert "not valid JSON" in stream.of(ErrorEvent)[0].message


# --- latency and failures -------------------------------------------------------------------


async def test_a_slow_processor_costs_dropped_frames_not_latency(stream: Stream) -> None:
    seen: list[tuple[int, int]] = []
    """(frame.index, frames decoded when processing began)"""
    session: StreamSession | None = None

    def slow(frame: Frame[Any]) -> object:
        assert session is not None
        decoded = session.status().input_status
        assert decoded is not None
        seen.append((frame.index, decoded.frames or 0))
        time.sleep(3 / FPS)  # three frame intervals
        return 255 - frame.data

    session = await start(stream, slow)
    await stream.publish(frames(45))
    await finish_input(stream, session, 45)

    status = session.status()
    assert status.input_status is not None
    dropped = status.input_status.dropped_frames
    assert dropped is not None
    assert dropped > 0
    assert len(seen) + dropped == 45
    # the processor always took the newest frame: no backlog built up behind it
    # (a frame or two may arrive between taking a frame and looking at the count)
    assert all(decoded - 1 - index <= 3 for index, decoded in seen), seen
    assert seen[-1][0] == 44  # the newest frame is never displaced: the drain processes it
    outputs = await all_output(stream, session)
    assert [o.index for o in outputs] == [index for index, _ in seen]
    assert_inverted(outputs)


class SlowReformatter(pipeline.Reformatter):
    """Converts as the pipeline's does, after waiting three frame intervals."""

    def __call__(
        self, frame: av.VideoFrame, width: int | None = None, height: int | None = None
    ) -> av.VideoFrame:
        time.sleep(3 / FPS)
        return super().__call__(frame, width, height)


class ReusingInverter:
    """Writes every output into the same array, as a processor avoiding allocations does."""

    def __init__(self) -> None:
        self.out: np.ndarray[Any, Any] | None = None
        self.indexes: list[int] = []

    def __call__(self, frame: Frame[Any]) -> object:
        if self.out is None:
            self.out = np.empty_like(frame.data)
        np.subtract(255, frame.data, out=self.out)
        self.indexes.append(read_index(frame.data))
        return self.out


async def test_a_processor_may_overwrite_its_last_output_at_once(
    stream: Stream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The encoder converts each output slowly (three frame intervals): were ``process``
    # called again before that conversion, it would overwrite the frame being converted,
    # and an output would show the next frame's picture.
    monkeypatch.setattr(pipeline, "Reformatter", SlowReformatter)
    processor = ReusingInverter()
    session = await start(stream, processor)
    await stream.publish(frames(30))
    await finish_input(stream, session, 30)

    outputs = await all_output(stream, session)
    assert [o.index for o in outputs] == processor.indexes
    assert len(set(processor.indexes)) == len(processor.indexes) < 30  # the slot dropped some
    assert_inverted(outputs)


async def test_a_failing_processor_is_reported_and_recovers(stream: Stream) -> None:
    failing = threading.Event()

    def fragile(frame: Frame[Any]) -> object:
        if failing.is_set():
            raise RuntimeError(f"bad frame {frame.index}")
        return 255 - frame.data

    session = await start(stream, fragile, error_threshold=3)
    publishing = asyncio.create_task(stream.publish(frames(600)))
    await until(lambda: session.health == "ok", "health ok")
    failing.set()
    await until(lambda: session.health == "error", "health error")
    await until(lambda: stream.of(ErrorEvent), "an error event")
    status = session.status()
    assert status.state == "ERROR"
    assert status.inference_status is not None
    assert "RuntimeError('bad frame" in (status.inference_status.last_error or "")
    failing.clear()
    await until(lambda: session.health == "ok", "recovery")
    seen = len(stream.output)
    await until(lambda: len(stream.output) > seen + 2, "output after recovery")
    publishing.cancel()
    assert not session.ended
    message = stream.of(ErrorEvent)[0].message
    assert message.startswith("process() failed on frame ")
    assert "bad frame" in message
    assert_inverted(stream.output)


async def test_a_processor_failing_on_some_frames_skips_just_those(stream: Stream) -> None:
    recorder = Recorder()

    def every_fourth_fails(frame: Frame[Any]) -> object:
        if frame.index % 4 == 3:
            raise ValueError("unlucky")
        return recorder(frame)

    session = await start(stream, every_fourth_fails)
    await stream.publish(frames(24))
    await finish_input(stream, session, 24)
    outputs = await all_output(stream, session)
    assert [o.index for o in outputs] == recorder.indexes
    assert all(o.index % 4 != 3 for o in outputs)
    assert stream.of(ErrorEvent)
    assert session.health != "error"


async def test_a_failing_stream_start_ends_the_session_with_an_error(stream: Stream) -> None:
    class Broken(Processor[JSONObject]):
        def on_stream_start(self, stream: StreamContext, params: JSONObject) -> None:
            raise RuntimeError("no model for you")

        def process(self, frame: Frame[Any]) -> object:
            return frame

    session = await start(stream, Broken)
    await ended(stream, session)
    assert "no model for you" in stream.of(ErrorEvent)[0].message
    assert stream.of(StreamStoppedEvent)
    assert not worker_threads()


# --- stopping and bad channels --------------------------------------------------------------


async def test_stop_while_frames_flow_drains_and_closes_the_output_cleanly(
    stream: Stream,
) -> None:
    session = await start(stream, Recorder())
    publishing = asyncio.create_task(stream.publish(frames(600)))
    await until(lambda: len(stream.output) >= 10, "output")
    async with asyncio.timeout(TIMEOUT):
        await session.stop("enough")
        await session.stop("twice is harmless")
    assert session.ended
    assert not worker_threads()
    publishing.cancel()
    await until(lambda: [e.reason for e in stream.of(StreamStoppedEvent)] == ["enough"], "stopped")
    # every frame the session published can be read back: the last segment was completed
    outputs = await all_output(stream, session)
    assert_inverted(outputs)
    assert session.status().state == "OFFLINE"


async def test_stop_before_start_ends_at_once() -> None:
    request = WorkerStartRequest(
        gateway_request_id="s",
        control_url="http://127.0.0.1:1/c",
        events_url="http://127.0.0.1:1/e",
    )
    session = StreamSession(request, ProcessorRuntime.wrap(Recorder()))
    await session.stop()
    assert session.ended
    session.start()  # too late: nothing happens
    assert session.ended


async def test_a_missing_input_channel_ends_the_session_with_an_error(stream: Stream) -> None:
    session = await start(
        stream, Recorder(), request=stream.request(subscribe_url=stream.url("-nope"))
    )
    await ended(stream, session)
    errors = [e.message for e in stream.of(ErrorEvent)]
    assert errors == [f"the input channel {stream.url('-nope')} ended before any input"]
    assert stream.of(StreamStoppedEvent)


async def test_an_unreachable_input_ends_the_session_with_an_error(stream: Stream) -> None:
    session = await start(
        stream, Recorder(), request=stream.request(subscribe_url="http://127.0.0.1:1/in")
    )
    await ended(stream, session)
    message = stream.of(ErrorEvent)[0].message
    assert message.startswith("stream failed: TooManyFailuresError")
    assert session.health == "error"


async def test_a_missing_output_channel_ends_the_session_with_an_error(stream: Stream) -> None:
    session = await start(
        stream, Recorder(), request=stream.request(publish_url=stream.url("-gone"))
    )
    publishing = asyncio.create_task(stream.publish(frames(300)))
    await ended(stream, session)
    publishing.cancel()
    assert stream.of(ErrorEvent)[0].message.startswith("stream failed: ChannelNotFoundError")


async def test_corrupted_input_is_skipped(stream: Stream) -> None:
    recorder = Recorder()
    session = await start(stream, recorder)
    async with TricklePublisher(stream.url(), MIME_MPEGTS) as publisher:
        await publisher.write_segment(bytes(range(256)) * 300)
        await publish_stream(frames(10), publisher)
    await finish_input(stream, session, 10)
    outputs = await all_output(stream, session)
    assert outputs
    assert [o.index for o in outputs] == recorder.indexes
    assert_inverted(outputs)


async def test_without_output_or_data_channels_frames_are_still_processed(stream: Stream) -> None:
    recorder = Recorder()

    def with_data(frame: Frame[Any]) -> object:
        frame.stream.emit_data({"i": frame.index})  # no data channel: dropped
        return recorder(frame)

    request = stream.request(publish_url=None, data_url=None)
    session = await start(stream, with_data, request=request)
    await stream.publish(frames(10))
    await finish_input(stream, session, 10)
    assert recorder.seen
    assert session.status().inference_status.frames == len(recorder.seen)  # type: ignore[union-attr]
    assert not stream.output
    assert not stream.data


async def test_a_stalled_processor_makes_health_error_until_frames_flow_again(
    stream: Stream,
) -> None:
    release = threading.Event()

    def stalls(frame: Frame[Any]) -> object:
        if frame.index >= 5:
            release.wait(TIMEOUT)
        return frame

    session = await start(stream, stalls, stall_timeout=0.3)
    publishing = asyncio.create_task(stream.publish(frames(600)))
    await until(lambda: session.health == "ok", "health ok")
    await until(lambda: session.health == "error", "the stall to show")
    assert session.status().state == "ERROR"
    release.set()
    await until(lambda: session.health == "ok", "recovery")
    publishing.cancel()


async def test_stop_gives_up_on_a_hung_processor_after_the_drain_timeout(
    stream: Stream,
) -> None:
    release = threading.Event()
    hung = threading.Event()

    def hangs(frame: Frame[Any]) -> object:
        if frame.index >= 3:
            hung.set()
            release.wait(TIMEOUT)
        return frame

    session = await start(stream, hangs, drain_timeout=0.2)
    publishing = asyncio.create_task(stream.publish(frames(600)))
    await until(hung.is_set, "the processor to hang")
    async with asyncio.timeout(TIMEOUT):
        await session.stop("hung")
    assert session.ended
    await until(lambda: stream.of(StreamStoppedEvent), "the stopped event")
    assert [e.reason for e in stream.of(StreamStoppedEvent)] == ["hung"]
    publishing.cancel()
    release.set()
    await until(lambda: not worker_threads(), "the processor's thread to end")
