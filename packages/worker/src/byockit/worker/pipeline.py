"""One stream's frames: input segments -> decode -> process -> encode -> output segments.

Each stage runs where it costs the least latency (PROTOCOL.md 6, 6.1):

- **decode**: the protocol's decoder thread; each frame is decoded the moment
  its bytes are in and, still in that thread, passes the **frame-rate cap**
  (integer pts arithmetic) into the **latest-wins slot**: at most one frame
  waits for inference, and a newer frame replaces it (the older is dropped
  and counted). Frames never wait for the event loop, and do not wake it;
- **inference**: one thread per stream converts the frame into the
  processor's format, runs ``process`` (an async ``process`` runs on the
  loop, one frame at a time) and checks what it returned; parameter updates
  are applied there, between frames. A processor that defines
  ``process_audio`` hears the stream's audio in the same thread, between
  frames: the audio waits in a queue of its own (never in the frame slot),
  is decoded, processed in order and encoded again
  (:mod:`byockit.worker.audio`);
- **encode**: one thread per stream; it holds at most one processed frame
  waiting, converts it to yuv420p straight from the processor's memory
  (where x264 reads it while it is still in the cache) and muxes the audio:
  processed, or else passed through untouched. The inference thread calls
  ``process`` again only once that conversion is done, as the processor
  may reuse its arrays (so frames are dropped at the slot rather than
  queued);
- **publish**: on the loop, one trickle segment per GOP, each chunk written
  as soon as it is made.

No hand-off holds more than a frame or two, so a slow processor, encoder or
network costs dropped frames, never a growing delay.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any, Final, TypeVar

import attrs
import av

from byockit.protocol.errors import (
    ChannelNotFoundError,
    MediaError,
    StreamClosedError,
    TrickleError,
    TrickleTLSError,
)
from byockit.protocol.media import AudioPacket, EncodedChunk, SegmentEncoder, decode_segments
from byockit.protocol.media.convert import TO_YUV420, Reformatter
from byockit.protocol.media.decoder import StreamDecoder
from byockit.protocol.media.encoder import X264_PRESETS
from byockit.protocol.media.ts import CLOCK_HZ
from byockit.protocol.trickle import Segment, SegmentWriter, TricklePublisher
from byockit.worker.audio import AudioDecoder, AudioEncoder, HeardAudio, processed_audio
from byockit.worker.frames import AudioFrame, Frame, FrameConverter
from byockit.worker.latest import LatestQueue
from byockit.worker.processor import ParsedParams, ProcessorRuntime, StreamContext

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_X264_PRESET: Final = "superfast"
"""The output encoder's x264 preset unless the worker is told otherwise.

pytrickle's choice for live output too: against ``veryfast`` it costs about
40% less CPU a frame, for about 14% more bits at a PSNR about 1 dB lower on
the test pattern (docs/performance.md)."""
MAX_OUTPUT_CHUNKS: Final = 4
"""Encoded chunks waiting for the publisher before the encoder waits."""
MAX_PENDING_AUDIO: Final = 64
"""Audio packets waiting for the encoder thread; the oldest go first."""
MAX_UNHEARD_AUDIO: Final = 256
"""Audio packets (some 5 s) waiting for ``process_audio``; beyond it the oldest are dropped."""
MAX_SEGMENT_FAILURES: Final = 3
"""Output segments in a row that may fail (and be skipped) before the stream fails."""
RATE_WINDOW: Final = 2.0
"""Seconds over which frame rates are measured."""
LATENCY_SAMPLES: Final = 30
"""Recent frames whose latency the reported latency averages."""
FAILURE_LOG_INTERVAL: Final = 5.0
"""Seconds between two logged tracebacks of a failing processor."""
THREAD_JOIN_TIMEOUT: Final = 1.0
"""Seconds to wait for a stage's thread once the pipeline has ended."""


def check_x264_preset(preset: str) -> None:
    """``ValueError`` naming the choices unless ``preset`` is one of x264's."""
    if preset not in X264_PRESETS:
        raise ValueError(f"x264_preset must be one of {', '.join(X264_PRESETS)}, got {preset!r}")


def unix_ms() -> int:
    return time.time_ns() // 1_000_000


class FrameRateCap:
    """Admits frames at no more than ``max_fps``, from their timestamps, in integer arithmetic.

    Slot ``k`` starts ``k / max_fps`` seconds after the first admitted frame;
    a frame is admitted when it reaches the next free slot (less a quarter
    of an interval, so that timestamp jitter never drops a frame when the
    input rate equals the cap), and the slots it skipped stay skipped, so
    the rate never drifts above the cap. Timestamps going back restart it.
    """

    _TOLERANCE: Final = CLOCK_HZ // 4
    """A quarter of an interval, in the scaled units of :meth:`admit` (ticks x fps)."""

    def __init__(self, max_fps: int | None = None) -> None:
        self._fps: int | None = None
        self._anchor = 0
        self._last: int | None = None
        self._next_slot = 0
        self.max_fps = max_fps

    @property
    def max_fps(self) -> int | None:
        return self._fps

    @max_fps.setter
    def max_fps(self, fps: int | None) -> None:
        if fps is not None and fps < 1:
            raise ValueError(f"max_fps must be at least 1, got {fps}")
        if fps != self._fps:
            self._fps = fps
            self._last = None

    def admit(self, pts: int) -> bool:
        """Whether the frame at ``pts`` (90 kHz ticks) passes the cap."""
        if self._fps is None:
            return True
        if self._last is None or pts <= self._last:
            self._anchor, self._last, self._next_slot = pts, pts, 1
            return True
        scaled = (pts - self._anchor) * self._fps
        if scaled < self._next_slot * CLOCK_HZ - self._TOLERANCE:
            return False
        self._next_slot = (scaled + self._TOLERANCE) // CLOCK_HZ + 1
        self._last = pts
        return True


class RateMeter:
    """Events per second over the last :data:`RATE_WINDOW` seconds; thread-safe."""

    def __init__(self) -> None:
        self._times: deque[float] = deque(maxlen=int(RATE_WINDOW * 240))
        self._lock = threading.Lock()

    def tick(self, now: float) -> None:
        with self._lock:
            self._times.append(now)

    def rate(self, now: float) -> float:
        with self._lock:
            return sum(1 for t in self._times if now - t <= RATE_WINDOW) / RATE_WINDOW


@attrs.define
class PipelineStats:
    """Counters of one stream, written by its stages and read for status and health.

    ``frames_in`` = ``frames_capped`` + ``frames_dropped`` + frames taken by
    inference; of those, ``frames_processed`` returned (a frame or ``None``)
    and ``failures`` raised. The ``audio_`` counters are about the decoded
    audio frames of a processor that hears audio. Times ending in ``_at``
    are ``time.monotonic()``, those ending in ``_time`` Unix milliseconds.
    """

    frames_in: int = 0
    frames_capped: int = 0
    """Skipped by the ``max_framerate`` cap."""
    frames_dropped: int = 0
    """Replaced in the slot by a newer frame while the processor was busy."""
    frames_processed: int = 0
    frames_out: int = 0
    """Output frames published (or, without an output channel, produced)."""
    failures: int = 0
    failures_in_a_row: int = 0
    audio_processed: int = 0
    """Audio frames ``process_audio`` returned for (samples or ``None``)."""
    audio_failures: int = 0
    """Audio lost: frames ``process_audio`` raised on or returned unusable, packets the codecs
    could not handle."""
    audio_dropped: int = 0
    """Audio packets dropped because ``process_audio`` fell behind by :data:`MAX_UNHEARD_AUDIO`."""
    segments_in: int = 0
    segments_out: int = 0
    last_input_at: float | None = None
    last_progress_at: float | None = None
    """When a frame last came through inference (starts with the first input frame)."""
    last_input_time: int | None = None
    last_output_time: int | None = None
    fps_in: RateMeter = attrs.field(factory=RateMeter)
    fps_out: RateMeter = attrs.field(factory=RateMeter)
    latencies: deque[float] = attrs.field(factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    """Seconds from a frame's decoding to its output, for recent frames."""

    def latency_ms(self) -> float | None:
        samples = list(self.latencies)
        return sum(samples) * 1000 / len(samples) if samples else None


@attrs.frozen
class _Job:
    frame: av.VideoFrame
    index: int
    arrived: float


@attrs.frozen
class _Chunk:
    data: bytes
    segment_start: bool
    arrived: float | None
    """For a chunk that completes a video frame: when that frame was decoded."""


@attrs.frozen
class _Failure:
    error: Exception


class _EncoderThread:
    """The stream's encoder, in a thread of its own: one processed frame at a time, plus audio."""

    def __init__(self, loop: asyncio.AbstractEventLoop, encoder: SegmentEncoder) -> None:
        self._loop = loop
        self._encoder = encoder
        self._to_yuv420 = Reformatter("yuv420p", TO_YUV420)
        self._cond = threading.Condition()
        self._video: tuple[av.VideoFrame, float] | None = None
        self._converting = False
        self._audio: deque[AudioPacket] = deque(maxlen=MAX_PENDING_AUDIO)
        self._input_ended = False
        self._stopping = False
        self._free = threading.Semaphore(MAX_OUTPUT_CHUNKS)
        self._out: asyncio.Queue[_Chunk | _Failure | None] = asyncio.Queue()
        self._finished = False
        self._thread = threading.Thread(
            target=self._run, name="byockit-output-encoder", daemon=True
        )
        self._thread.start()

    def put_video(self, frame: av.VideoFrame, arrived: float) -> None:
        """Hand over a processed frame, which may share the processor's memory.

        Call :meth:`wait_converted` first: the frame before must be converted.
        """
        with self._cond:
            if not self._stopping:
                self._video = (frame, arrived)
                self._cond.notify_all()

    def wait_converted(self) -> None:
        """Wait until the frame handed over last has been converted: its memory is free again."""
        with self._cond:
            while (self._video is not None or self._converting) and not self._stopping:
                self._cond.wait()

    def put_audio(self, packet: AudioPacket) -> None:
        """Hand over an audio packet to pass through; never waits."""
        with self._cond:
            if not self._input_ended and not self._stopping:
                self._audio.append(packet)
                self._cond.notify_all()

    def end_input(self) -> None:
        """No more input: the encoder flushes after what it holds, then its output ends."""
        with self._cond:
            self._input_ended = True
            self._cond.notify_all()

    async def get(self) -> _Chunk | None:
        """The next chunk; ``None`` once the output has ended. Raises the encoder's failure."""
        if self._finished:
            return None
        item = await self._out.get()
        if item is None:
            self._finished = True
            return None
        if isinstance(item, _Failure):
            self._finished = True
            raise item.error
        self._free.release()
        return item

    def stop(self) -> None:
        """Stop at once, dropping what waits; a waiting ``wait_converted`` returns."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._free.release()

    async def join(self) -> None:
        await asyncio.to_thread(self._thread.join, THREAD_JOIN_TIMEOUT)

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not (self._video or self._audio or self._input_ended or self._stopping):
                        self._cond.wait()
                    if self._stopping:
                        return
                    audio = list(self._audio)
                    self._audio.clear()
                    video, self._video = self._video, None
                    self._converting = video is not None
                    ended = self._input_ended and video is None and not audio
                converted = None if video is None else (self._converted(video[0]), video[1])
                for packet in audio:
                    self._emit(self._encoder.add_audio(packet), None)
                if converted is not None:
                    self._emit(self._encoder.encode(converted[0]), converted[1])
                if ended:
                    self._emit(self._encoder.flush(), None)
                    self._to_loop(None)
                    return
        except Exception as exc:
            self._to_loop(_Failure(exc))

    def _converted(self, frame: av.VideoFrame) -> av.VideoFrame:
        """The frame as yuv420p, in memory of its own; then the processor may run again."""
        try:
            return self._to_yuv420(frame)
        finally:
            with self._cond:
                self._converting = False
                self._cond.notify_all()

    def _emit(self, chunks: list[EncodedChunk], arrived: float | None) -> None:
        for position, chunk in enumerate(chunks):
            self._free.acquire()
            if self._stopping:
                return
            last = position == len(chunks) - 1
            self._to_loop(_Chunk(chunk.data, chunk.segment_start, arrived if last else None))

    def _to_loop(self, item: _Chunk | _Failure | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
            self._loop.call_soon_threadsafe(self._out.put_nowait, item)


class Pipeline:
    """Runs one stream's frames through its processor; see the module docstring.

    ``report_error`` (called on the event loop) hears of each processor
    failure; ``on_first_input`` and ``on_first_output`` of the first input
    segment and the first output segment. ``x264_preset`` is the output
    encoder's preset.
    """

    def __init__(
        self,
        runtime: ProcessorRuntime,
        context: StreamContext,
        params: ParsedParams,
        *,
        report_error: Callable[[str], None],
        on_first_input: Callable[[], None],
        on_first_output: Callable[[], None],
        drain_timeout: float,
        x264_preset: str = DEFAULT_X264_PRESET,
    ) -> None:
        check_x264_preset(x264_preset)
        self.stats: Final = PipelineStats()
        self._x264_preset = x264_preset
        self._runtime = runtime
        self._context = context
        self._params = params
        self._pending_params: ParsedParams | None = None
        self._params_lock = threading.Lock()
        self._cap = FrameRateCap(params.stream.max_framerate)
        self._cap_lock = threading.Lock()
        """The cap is used in the decoder's thread and changed on the loop."""
        self._slot: LatestQueue[_Job] = LatestQueue(1)
        self._unheard: LatestQueue[AudioPacket] | None = (
            LatestQueue(MAX_UNHEARD_AUDIO) if runtime.processes_audio else None
        )
        self._audio_decoder = AudioDecoder()
        self._audio_encoder = AudioEncoder()
        self._report_error = report_error
        self._on_first_input = on_first_input
        self._on_first_output = on_first_output
        self._drain_timeout = drain_timeout
        self._stop = asyncio.Event()
        self._abort = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._encoder: _EncoderThread | None = None
        self._pending_call: concurrent.futures.Future[Any] | None = None
        self._failure_logged_at: float | None = None

    def update_params(self, params: ParsedParams) -> None:
        """New parameters: the cap changes now, the processor's between the next two frames."""
        with self._cap_lock:
            self._cap.max_fps = params.stream.max_framerate
        with self._params_lock:
            self._pending_params = params
        self._slot.wake()

    def stop(self) -> None:
        """Stop reading input; :meth:`run` then drains what is in flight and returns."""
        self._stop.set()

    async def run(
        self, segments: AsyncIterable[Segment] | None, publisher: TricklePublisher | None
    ) -> None:
        """Run until the input ends or :meth:`stop`, then drain (bounded) and return.

        Raises what ended the stream early: a broken input or output channel,
        or ``on_stream_start`` failing.
        """
        loop = self._loop = asyncio.get_running_loop()
        if publisher is not None:
            self._encoder = _EncoderThread(loop, SegmentEncoder(preset=self._x264_preset))
        inference: asyncio.Future[BaseException | None] = loop.create_future()
        thread = threading.Thread(
            target=self._inference_main, args=(inference,), name="byockit-inference", daemon=True
        )
        thread.start()
        reader = None if segments is None else asyncio.create_task(self._read(segments))
        writer = None
        if publisher is not None and self._encoder is not None:
            writer = asyncio.create_task(self._write(publisher, self._encoder))
        stopper = asyncio.create_task(self._stop.wait())
        try:
            watched = {f for f in (reader, writer, stopper, inference) if f is not None}
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            _raise_failure(inference, writer, reader)
            if reader is not None and not reader.done():
                reader.cancel()
                await asyncio.wait({reader})
            self._slot.close()
            draining = {f for f in (inference, writer) if f is not None}
            _, late = await asyncio.wait(
                draining, timeout=self._drain_timeout, return_when=asyncio.FIRST_EXCEPTION
            )
            _raise_failure(inference, writer, None)
            if late:
                logger.warning(
                    "stream %s did not drain within %s s: abandoning what is in flight",
                    self._context.stream_id,
                    self._drain_timeout,
                )
        finally:
            await self._shut_down(thread, reader, writer, stopper)

    # -- input (event loop; frames in the decoder thread) ------------------------------------

    async def _read(self, segments: AsyncIterable[Segment]) -> None:
        decoder = StreamDecoder()
        audio = decode_segments(self._counted(segments), decoder, on_frame=self._accept)
        async with contextlib.aclosing(audio) as packets:
            async for packet in packets:
                if isinstance(packet, AudioPacket):
                    self._accept_audio(packet)
        if decoder.errors:
            logger.info(
                "stream %s: %d input errors skipped", self._context.stream_id, decoder.errors
            )

    async def _counted(self, segments: AsyncIterable[Segment]) -> AsyncIterator[Segment]:
        async for segment in segments:
            self.stats.segments_in += 1
            if self.stats.segments_in == 1:
                self._on_first_input()
            yield segment

    def _accept(self, frame: av.VideoFrame) -> None:
        """A decoded frame, in the decoder's thread: through the cap into the slot."""
        stats = self.stats
        now = time.monotonic()
        index = stats.frames_in
        stats.frames_in += 1
        stats.fps_in.tick(now)
        stats.last_input_at = now
        stats.last_input_time = unix_ms()
        if stats.last_progress_at is None:
            stats.last_progress_at = now
        if frame.pts is not None:
            with self._cap_lock:
                admitted = self._cap.admit(frame.pts)
            if not admitted:
                stats.frames_capped += 1
                return
        if self._slot.put(_Job(frame, index, now)) is not None:
            stats.frames_dropped += 1

    def _accept_audio(self, packet: AudioPacket) -> None:
        """An audio packet: to the inference thread when the processor hears audio, else through."""
        if self._unheard is None:
            if self._encoder is not None:
                self._encoder.put_audio(packet)
            return
        if self._unheard.put(packet) is not None:
            self.stats.audio_dropped += 1
        self._slot.wake()

    # -- inference (its own thread) ----------------------------------------------------------

    def _inference_main(self, done: asyncio.Future[BaseException | None]) -> None:
        error: BaseException | None = None
        try:
            self._inference_loop()
        except BaseException as exc:
            error = exc
        finally:
            if self._encoder is not None:
                self._encoder.end_input()
            self._to_loop(_settle, done, error)

    def _inference_loop(self) -> None:
        converter = FrameConverter(self._runtime.frame_format)
        processor = self._runtime.processor
        self._call(processor.on_stream_start, self._context, self._params.processor)
        try:
            while not self._abort.is_set():
                self._apply_new_params()
                self._hear_waiting_audio()
                job = self._slot.get()
                if job is None:
                    if self._slot.closed:
                        self._hear_waiting_audio(last=True)
                        return
                    continue
                self._apply_new_params()
                self._process(converter, job)
        finally:
            if self._audio_decoder.errors:
                logger.info(
                    "stream %s: %d audio input errors skipped",
                    self._context.stream_id,
                    self._audio_decoder.errors,
                )
            try:
                self._call(processor.on_stream_stop)
            except Exception as exc:
                if not self._abort.is_set():
                    self._failed(f"on_stream_stop() failed: {exc!r}", exc)

    def _process(self, converter: FrameConverter, job: _Job) -> None:
        stream = self._params.stream
        size = (
            None if stream.width is None or stream.height is None else (stream.width, stream.height)
        )
        pts = job.frame.pts or 0
        try:
            data = converter.to_processor(job.frame, size)
            if self._encoder is not None:
                self._encoder.wait_converted()  # the processor may overwrite its last output
            result = self._call(
                self._runtime.processor.process, Frame(data, pts, job.index, self._context)
            )
            output = None if result is None else converter.to_video(result, pts)
        except Exception as exc:
            if not self._abort.is_set():
                self.stats.failures += 1
                self.stats.failures_in_a_row += 1
                self._failed(f"process() failed on frame {job.index}: {exc!r}", exc)
            return
        self.stats.failures_in_a_row = 0
        self.stats.frames_processed += 1
        if output is not None:
            if self._encoder is not None:
                self._encoder.put_video(output, job.arrived)
            else:
                self._count_output(job.arrived)
        self.stats.last_progress_at = time.monotonic()

    def _hear_waiting_audio(self, *, last: bool = False) -> None:
        """Run the audio that has arrived through ``process_audio``, in order; ``last``: flush."""
        if self._unheard is None:
            return
        for packet in self._unheard.clear():
            if self._abort.is_set():
                return
            try:
                heard = self._audio_decoder.decode(packet)
            except MediaError as exc:
                self._audio_failed(f"cannot decode the audio: {exc}", exc)
                continue
            for audio in heard:
                self._hear(audio)
        if last and not self._abort.is_set():
            try:
                self._send_audio(self._audio_encoder.flush())
            except MediaError as exc:
                self._audio_failed(f"the end of the audio was lost: {exc}", exc)

    def _hear(self, heard: HeardAudio) -> None:
        frame = AudioFrame(heard.samples, heard.sample_rate, heard.pts, self._context)
        try:
            result = self._call(self._runtime.processor.process_audio, frame)
        except Exception as exc:
            self._audio_failed(f"process_audio() failed at {frame.time:.3f} s: {exc!r}", exc)
            return
        try:
            processed = processed_audio(result, heard, frame)
            packets = [] if processed is None else self._audio_encoder.encode(processed)
        except MediaError as exc:
            self._audio_failed(f"audio at {frame.time:.3f} s was lost: {exc}", exc)
            return
        self.stats.audio_processed += 1
        self._send_audio(packets)

    def _send_audio(self, packets: list[AudioPacket]) -> None:
        if self._encoder is not None:
            for packet in packets:
                self._encoder.put_audio(packet)

    def _audio_failed(self, message: str, exc: Exception) -> None:
        if not self._abort.is_set():
            self.stats.audio_failures += 1
            self._failed(message, exc)

    def _apply_new_params(self) -> None:
        with self._params_lock:
            params, self._pending_params = self._pending_params, None
        if params is None:
            return
        self._params = params
        self._context.params = params.processor
        try:
            self._call(self._runtime.processor.on_params, params.processor)
        except Exception as exc:
            if not self._abort.is_set():
                self._failed(f"on_params() failed: {exc!r}", exc)

    def _call(self, function: Callable[..., object], *args: object) -> object:
        """Call a processor hook here; an awaitable it returns runs on the loop, waited for."""
        result = function(*args)
        if not inspect.isawaitable(result):
            return result
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(_awaited(result), self._loop)
        self._pending_call = future
        try:
            if self._abort.is_set():
                future.cancel()
            return future.result()
        finally:
            self._pending_call = None

    def _failed(self, message: str, exc: Exception) -> None:
        """Report a processor failure (its traceback is logged at most every few seconds)."""
        now = time.monotonic()
        if self._failure_logged_at is None or now - self._failure_logged_at >= FAILURE_LOG_INTERVAL:
            self._failure_logged_at = now
            logger.warning("stream %s: %s", self._context.stream_id, message, exc_info=exc)
        self._to_loop(self._report_error, message)

    def _to_loop(self, callback: Callable[..., object], *args: object) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self._loop.call_soon_threadsafe(callback, *args)

    # -- output (event loop) -----------------------------------------------------------------

    async def _write(self, publisher: TricklePublisher, encoder: _EncoderThread) -> None:
        """Publish the encoder's chunks, one segment per GOP; a failed segment is skipped."""
        failures = 0
        chunk = await encoder.get()
        while chunk is not None:
            first, chunk = chunk, None
            try:
                async with publisher.segment() as segment:
                    self.stats.segments_out += 1
                    if self.stats.segments_out == 1:
                        self._on_first_output()
                    await self._write_chunk(segment, first)
                    while (item := await encoder.get()) is not None:
                        if item.segment_start:
                            chunk = item  # it opens the next segment
                            break
                        await self._write_chunk(segment, item)
                failures = 0
            except (ChannelNotFoundError, StreamClosedError, TrickleTLSError):
                raise
            except TrickleError as exc:
                failures += 1
                if failures >= MAX_SEGMENT_FAILURES:
                    raise
                logger.warning("stream %s: output segment lost: %s", self._context.stream_id, exc)
                while chunk is None and (item := await encoder.get()) is not None:
                    if item.segment_start:
                        chunk = item

    async def _write_chunk(self, segment: SegmentWriter, chunk: _Chunk) -> None:
        await segment.write(chunk.data)
        if chunk.arrived is not None:
            self._count_output(chunk.arrived)

    def _count_output(self, arrived: float) -> None:
        now = time.monotonic()
        self.stats.frames_out += 1
        self.stats.fps_out.tick(now)
        self.stats.latencies.append(now - arrived)
        self.stats.last_output_time = unix_ms()

    # -- end ---------------------------------------------------------------------------------

    async def _shut_down(
        self,
        thread: threading.Thread,
        *tasks: asyncio.Task[Any] | None,
    ) -> None:
        """Stop every stage now (what is left is abandoned) and wait for their threads, bounded."""
        self._abort.set()
        self._slot.close()
        pending_call = self._pending_call
        if pending_call is not None:
            pending_call.cancel()
        if self._encoder is not None:
            self._encoder.stop()
        running = [task for task in tasks if task is not None and not task.done()]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        if self._encoder is not None:
            await self._encoder.join()
        await asyncio.to_thread(thread.join, THREAD_JOIN_TIMEOUT)
        if thread.is_alive():
            logger.warning(
                "stream %s: the processor has not returned; its thread is left behind",
                self._context.stream_id,
            )


def _raise_failure(
    inference: asyncio.Future[BaseException | None],
    writer: asyncio.Task[None] | None,
    reader: asyncio.Task[None] | None,
) -> None:
    """Raise what made a stage end early: the inference thread, the output, or the input."""
    if inference.done() and (error := inference.result()) is not None:
        raise error
    for task in (writer, reader):
        if task is not None and task.done() and not task.cancelled():
            task.result()


def _settle(future: asyncio.Future[BaseException | None], error: BaseException | None) -> None:
    if not future.done():
        future.set_result(error)


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable
