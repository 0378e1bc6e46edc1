"""The processor API: wrapping what users write, loading it, typed parameters, stream outlets."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs
import numpy as np
import pytest

from byockit.protocol.errors import MediaError, ParseError
from byockit.protocol.models import JSONObject, JSONValue
from byockit.worker.frames import Frame, FrameFormat
from byockit.worker.processor import (
    ParamsRejected,
    Processor,
    ProcessorRuntime,
    StreamContext,
)

torch = pytest.importorskip("torch")


def invert(frame: Frame[Any]) -> object:
    return 255 - frame.data


class Style(enum.Enum):
    SOFT = "soft"
    HARD = "hard"


@dataclasses.dataclass(frozen=True)
class Region:
    x: int
    y: int = 0


@dataclasses.dataclass(frozen=True)
class Params:
    strength: float = 0.5
    prompt: str = ""
    steps: int = 4
    enabled: bool = True
    style: Style = Style.SOFT
    mode: Literal["fast", "best"] = "fast"
    seed: int | None = None
    tags: list[str] = dataclasses.field(default_factory=list)
    weights: tuple[float, ...] = ()
    extra: dict[str, int] = dataclasses.field(default_factory=dict)
    region: Region | None = None
    anything: Any = None


class Typed(Processor[Params]):
    params_type = Params

    def validate_params(self, params: Params) -> None:
        if params.steps > 50:
            raise ValueError("steps must be at most 50")
        if params.prompt == "forbidden":
            raise ParamsRejected("that prompt is not allowed")

    def process(self, frame: Frame[Any]) -> object:
        return frame


def typed() -> ProcessorRuntime:
    return ProcessorRuntime.wrap(Typed)


# --- wrapping -------------------------------------------------------------------------------


def test_a_function_is_served_as_a_processor_with_numpy_frames() -> None:
    runtime = ProcessorRuntime.wrap(invert)
    assert runtime.name == "invert"
    assert runtime.frame_format == FrameFormat.numpy()
    assert runtime.processor.process(Frame(np.zeros((2, 2, 3), np.uint8), 0, 0, None)).max() == 255  # type: ignore[arg-type, attr-defined]
    assert ProcessorRuntime.wrap(runtime) is runtime


def test_processor_classes_are_instantiated_and_instances_kept() -> None:
    runtime = ProcessorRuntime.wrap(Typed)
    assert isinstance(runtime.processor, Typed)
    instance = Typed()
    assert ProcessorRuntime.wrap(instance).processor is instance


class NoProcess(Processor[JSONObject]):
    pass


class NeedsArguments(Processor[JSONObject]):
    def __init__(self, model: str) -> None:
        self.model = model

    def process(self, frame: Frame[Any]) -> object:
        return frame


class BadFormat(Processor[JSONObject]):
    frame_format = "numpy"  # type: ignore[assignment]

    def process(self, frame: Frame[Any]) -> object:
        return frame


class NotAProcessor:
    def process(self, frame: Frame[Any]) -> object:
        return frame


@dataclasses.dataclass
class UnsupportedParams:
    data: bytes = b""


class Unsupported(Processor[UnsupportedParams]):
    params_type = UnsupportedParams

    def process(self, frame: Frame[Any]) -> object:
        return frame


class ParamsNotAClass(Processor[JSONObject]):
    params_type = dict  # type: ignore[assignment]

    def process(self, frame: Frame[Any]) -> object:
        return frame


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (NoProcess, "NoProcess does not define process()"),
        (NeedsArguments, r"cannot create NeedsArguments\(\) without arguments"),
        (BadFormat, "BadFormat.frame_format must be a FrameFormat"),
        (NotAProcessor, "NotAProcessor is a class but not a byockit.worker.Processor"),
        (42, "cannot serve a int: expected a function taking a frame"),
        (lambda frame, params: frame, "must take exactly one argument: the frame"),
        (lambda: None, "must take exactly one argument"),
        (Unsupported, r"Unsupported.params_type.data: parameters of type <class 'bytes'>"),
        (ParamsNotAClass, "params_type must be a dataclass or an attrs class"),
    ],
)
def test_what_cannot_be_served_is_refused_with_the_reason(target: object, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        ProcessorRuntime.wrap(target)


# --- loading --------------------------------------------------------------------------------


class Loading(Processor[JSONObject]):
    def __init__(self) -> None:
        self.loads: list[str] = []

    def load(self) -> None:
        self.loads.append(threading.current_thread().name)

    def process(self, frame: Frame[Any]) -> object:
        return frame


async def test_load_runs_once_in_a_thread() -> None:
    processor = Loading()
    runtime = ProcessorRuntime.wrap(processor)
    loaded_before = runtime.loaded
    assert not loaded_before
    await asyncio.gather(runtime.load(), runtime.load())
    await runtime.load()
    assert runtime.loaded
    assert len(processor.loads) == 1
    assert processor.loads[0] != threading.current_thread().name


class AsyncLoading(Processor[JSONObject]):
    loaded_on_loop = False

    async def load(self) -> None:
        await asyncio.sleep(0)
        self.loaded_on_loop = True

    def process(self, frame: Frame[Any]) -> object:
        return frame


async def test_an_async_load_is_awaited() -> None:
    runtime = ProcessorRuntime.wrap(AsyncLoading)
    await runtime.load()
    assert runtime.processor.loaded_on_loop  # type: ignore[attr-defined]


class WantsCuda(Processor[JSONObject]):
    frame_format = FrameFormat.torch(device="cuda")

    def process(self, frame: Frame[Any]) -> object:
        return frame


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
async def test_an_unusable_frame_format_fails_the_load() -> None:
    runtime = ProcessorRuntime.wrap(WantsCuda)
    with pytest.raises(MediaError, match="CUDA is not available"):
        await runtime.load()
    assert not runtime.loaded


# --- parameters -----------------------------------------------------------------------------


def test_untyped_processors_get_their_own_keys_as_a_dict() -> None:
    parsed = ProcessorRuntime.wrap(invert).parse_params(
        {"width": 512, "height": 256, "max_framerate": 24, "prompt": "cat", "n": [1, 2]}
    )
    assert (parsed.stream.width, parsed.stream.height, parsed.stream.max_framerate) == (
        512,
        256,
        24,
    )
    assert parsed.processor == {"prompt": "cat", "n": [1, 2]}
    assert parsed.raw == {
        "width": 512,
        "height": 256,
        "max_framerate": 24,
        "prompt": "cat",
        "n": [1, 2],
    }
    assert ProcessorRuntime.wrap(invert).parse_params(None).raw == {}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"width": 512}, "field 'height': missing: width and height come as a pair"),
        ({"max_framerate": 0}, "field 'max_framerate'"),
        ({"width": "512", "height": 512}, "field 'width': expected integer"),
        ([1, 2], "parameters must be a JSON object, not list"),
    ],
)
def test_pipeline_keys_are_checked(raw: Any, message: str) -> None:
    with pytest.raises(ParamsRejected, match=message) as caught:
        ProcessorRuntime.wrap(invert).parse_params(raw)
    assert caught.value.message == str(caught.value)


def test_typed_params_are_built_from_json() -> None:
    parsed = typed().parse_params(
        {
            "width": 64,
            "height": 64,
            "strength": 1,
            "prompt": "a cat",
            "steps": 8,
            "enabled": False,
            "style": "hard",
            "mode": "best",
            "seed": None,
            "tags": ["a", "b"],
            "weights": [1, 0.5],
            "extra": {"k": 3},
            "region": {"x": 5},
            "anything": {"nested": [1]},
        }
    )
    assert parsed.processor == Params(
        strength=1.0,
        prompt="a cat",
        steps=8,
        enabled=False,
        style=Style.HARD,
        mode="best",
        seed=None,
        tags=["a", "b"],
        weights=(1.0, 0.5),
        extra={"k": 3},
        region=Region(5),
        anything={"nested": [1]},
    )
    assert isinstance(parsed.processor.strength, float)
    assert parsed.stream.width == 64
    assert typed().parse_params({}).processor == Params()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"strength": "0.5"}, "parameter 'strength' must be a number, got \"0.5\""),
        ({"steps": 2.5}, "parameter 'steps' must be an integer, got 2.5"),
        ({"steps": True}, "parameter 'steps' must be an integer, got true"),
        ({"enabled": 1}, "parameter 'enabled' must be a boolean, got 1"),
        ({"style": "wild"}, 'parameter \'style\' must be one of "soft", "hard", got "wild"'),
        ({"mode": "slow"}, 'parameter \'mode\' must be one of "fast", "best", got "slow"'),
        ({"seed": "x"}, "parameter 'seed' must be an integer, got \"x\""),
        ({"tags": "a"}, "parameter 'tags' must be an array"),
        ({"tags": ["a", 1]}, r"parameter 'tags\[1\]' must be a string, got 1"),
        ({"extra": {"k": "v"}}, "parameter 'extra.k' must be an integer"),
        ({"region": {"y": 1}}, "parameter 'region.x' is missing"),
        ({"region": {"x": 1, "z": 2}}, r"unknown parameter 'region.z' \(parameters: x, y\)"),
        ({"strenght": 1}, "unknown parameter 'strenght' \\(parameters: anything, enabled, "),
        ({"steps": 99}, "steps must be at most 50"),
        ({"prompt": "forbidden"}, "that prompt is not allowed"),
    ],
)
def test_typed_params_are_refused_naming_the_problem(raw: JSONObject, message: str) -> None:
    with pytest.raises(ParamsRejected, match=message):
        typed().parse_params(raw)


@attrs.frozen
class Checked:
    level: int = attrs.field(validator=attrs.validators.in_(range(1, 4)))
    names: Sequence[str] = ()
    table: Mapping[str, float] = attrs.Factory(dict)
    _private: int = 0


class WithAttrs(Processor[Checked]):
    params_type = Checked

    def process(self, frame: Frame[Any]) -> object:
        return frame


def test_attrs_params_and_their_validators() -> None:
    runtime = ProcessorRuntime.wrap(WithAttrs)
    parsed = runtime.parse_params({"level": 2, "names": ["a"], "table": {"x": 1}, "private": 7})
    assert parsed.processor == Checked(2, ("a",), {"x": 1.0}, 7)
    with pytest.raises(ParamsRejected, match="parameter 'level' is missing"):
        runtime.parse_params({})
    with pytest.raises(ParamsRejected, match="invalid parameters: 'level' must be in range"):
        runtime.parse_params({"level": 9})


class AsyncValidation(Processor[JSONObject]):
    async def validate_params(self, params: JSONObject) -> None:  # type: ignore[override]
        pass

    def process(self, frame: Frame[Any]) -> object:
        return frame


def test_validation_must_be_sync() -> None:
    with pytest.raises(TypeError, match="validate_params must not be async"):
        ProcessorRuntime.wrap(AsyncValidation).parse_params({})


# --- the stream context ---------------------------------------------------------------------


def recording_context() -> tuple[StreamContext, list[JSONValue], list[JSONObject]]:
    data: list[JSONValue] = []
    events: list[JSONObject] = []
    return StreamContext("s1", {}, send_data=data.append, send_event=events.append), data, events


def test_data_is_sent_as_a_copy_and_checked() -> None:
    context, data, _ = recording_context()
    document: dict[str, Any] = {"boxes": [[1, 2, 3, 4]], "label": "cat"}
    context.emit_data(document)
    document["label"] = "dog"
    assert data == [{"boxes": [[1, 2, 3, 4]], "label": "cat"}]
    with pytest.raises(ParseError, match="not representable as JSON"):
        context.emit_data({"when": object()})
    with pytest.raises(ParseError, match="must be under 65536"):
        context.emit_data("x" * 70_000)
    assert len(data) == 1


def test_custom_events_are_wrapped_and_timestamped() -> None:
    context, _, events = recording_context()
    context.emit_event({"type": "detection", "count": 2})
    context.emit_event({"type": "note", "timestamp": 5})
    assert events[0]["queue_event_type"] == "ai_stream_events"
    event = events[0]["event"]
    assert isinstance(event, dict)
    assert event["type"] == "detection"
    assert event["count"] == 2
    assert isinstance(event["timestamp"], int)
    assert events[1]["event"] == {"type": "note", "timestamp": 5}
    with pytest.raises(ParseError, match="'status' is reserved"):
        context.emit_event({"type": "status"})
    with pytest.raises(ParseError, match="must be a JSON object, not list"):
        context.emit_event([1])  # type: ignore[arg-type]
    assert len(events) == 2
