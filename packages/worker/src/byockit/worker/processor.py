"""The processor API: what users write, and the runtime that serves it.

The smallest worker is a function from frame to frame::

    def process(frame):
        return 255 - frame.data

A class gets lifecycle hooks and typed parameters::

    @dataclass
    class Params:
        strength: float = 0.5

    class Blur(Processor[Params]):
        params_type = Params
        frame_format = FrameFormat.torch()

        def load(self): ...                        # once, at server start
        def on_stream_start(self, stream, params): ...
        def on_params(self, params): ...           # between frames
        def process(self, frame): ...              # returns a frame, None drops it
        def process_audio(self, audio): ...        # optional: the stream's audio
        def on_stream_stop(self): ...

Every hook (and ``process``) may be ``async def``: sync ones run in the
stream's inference thread, async ones on the event loop. One processor
instance serves every stream of a server; with a capacity above 1, keep
per-stream state keyed by ``frame.stream.stream_id``.

Audio passes through untouched unless the processor defines
``process_audio``: then each decoded audio frame (an :class:`AudioFrame` of
float32 samples) goes through it, in order and never dropped for video's
sake, in the same thread as ``process`` (between two frames), and what it
returns is encoded again with the input's codec.

Parameters arrive as JSON (start body, ``/stream/params``, control channel).
``width``, ``height`` and ``max_framerate`` belong to the pipeline
(:class:`~byockit.protocol.models.StreamParams`); every other key belongs to
the processor: parsed strictly into ``params_type`` (a dataclass or attrs
class) when one is declared, else handed over as a dict. A parameter set that
does not parse, or that ``validate_params`` refuses, raises
:class:`ParamsRejected`, and the stream keeps its previous parameters.
"""

from __future__ import annotations

import asyncio
import collections.abc
import dataclasses
import enum
import inspect
import json
import time
import types
import typing
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Generic, Literal, TypeVar, Union

import attrs

from byockit.protocol.errors import ByockitError, ParseError
from byockit.protocol.models import JSONObject, JSONValue, StreamParams
from byockit.protocol.models.events import QueueEventType
from byockit.protocol.trickle.channels import encode_document, encode_line
from byockit.worker.frames import AudioFrame, Frame, FrameFormat, load_torch

ParamsT = TypeVar("ParamsT")

RESERVED_EVENT_TYPES: Final = frozenset({"status"})
"""Event types a processor may not emit: a ``status`` event replaces the stream's status."""


class ParamsRejected(ByockitError):
    """Parameters that do not parse or validate; ``message`` says what is wrong with them."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class StreamContext:
    """One running stream, as its processor sees it: id, current parameters, outlets.

    ``emit_data`` and ``emit_event`` may be called from any thread and never
    block; when a channel cannot keep up, the oldest waiting items are dropped.
    """

    def __init__(
        self,
        stream_id: str,
        params: object,
        *,
        send_data: Callable[[JSONValue], None],
        send_event: Callable[[JSONObject], None],
    ) -> None:
        self.stream_id: Final = stream_id
        self.params: object = params
        """The processor parameters in force (updated between frames)."""
        self._send_data = send_data
        self._send_event = send_event

    def emit_data(self, document: object) -> None:
        """Send ``document`` as one JSON line on the data channel.

        :class:`ParseError` if it is not JSON or not under 64 KiB as a line.
        Dropped when the stream has no data channel.
        """
        self._send_data(json.loads(encode_line(document)))

    def emit_event(self, event: Mapping[str, object]) -> None:
        """Send a custom event (a JSON object, usually with a ``type``) on the events channel.

        It goes out as ``{"queue_event_type": "ai_stream_events", "event": {...}}``
        with a ``timestamp`` added when absent. :class:`ParseError` if it is not
        a JSON object or uses a reserved type (``status``).
        """
        if not isinstance(event, Mapping):
            raise ParseError("", f"an event must be a JSON object, not {type(event).__name__}")
        if event.get("type") in RESERVED_EVENT_TYPES:
            raise ParseError("type", f"{event['type']!r} is reserved for the worker's own events")
        copy = json.loads(encode_document(event))
        copy.setdefault("timestamp", time.time_ns() // 1_000_000)
        self._send_event({"queue_event_type": QueueEventType.STREAM_EVENTS.value, "event": copy})


class Processor(Generic[ParamsT]):
    """Base class of class-based processors; only :meth:`process` must be written.

    ``frame_format`` says what :meth:`process` receives. ``params_type``, a
    dataclass or attrs class, makes parameters typed: each JSON key must be
    one of its fields, of the field's type (bool, int, float, str, an Enum, a
    Literal, a list, a dict, an optional, or a nested dataclass).
    """

    frame_format: FrameFormat = FrameFormat.numpy()
    params_type: type[ParamsT] | None = None

    def load(self) -> Awaitable[None] | None:
        """Load models once, at server start (health is LOADING until it returns)."""
        return None

    def validate_params(self, params: ParamsT) -> None:
        """Refuse parameters beyond their types: raise :class:`ParamsRejected` or ``ValueError``.

        Called for every new parameter set before it is accepted; must be sync and quick.
        """

    def on_stream_start(self, stream: StreamContext, params: ParamsT) -> Awaitable[None] | None:
        """A stream starts, with its start parameters; raising fails the stream."""
        return None

    def on_params(self, params: ParamsT) -> Awaitable[None] | None:
        """New parameters, applied between two frames."""
        return None

    def process(self, frame: Frame[Any]) -> object:
        """One frame in; a :class:`Frame`, an array or a tensor out (any even size), or ``None``."""
        raise NotImplementedError

    def process_audio(self, audio: AudioFrame) -> object:
        """Optional. One audio frame in; an :class:`AudioFrame` or a float array out, or ``None``.

        Defining it makes the stream's audio (AAC or Opus) decoded for it and
        encoded again afterwards, with the same codec, sample rate and
        channels: return float samples of shape ``(channels, n)`` (any ``n``).
        An array is placed at the input's timestamp, an :class:`AudioFrame`
        at its own. ``None`` leaves the frame's audio out of the output.
        Raising loses that frame's audio and is reported like a failing
        ``process``; the stream goes on.
        """
        raise NotImplementedError

    def on_stream_stop(self) -> Awaitable[None] | None:
        """The stream has ended: its last frame has been processed."""
        return None


class _FunctionProcessor(Processor[JSONObject]):
    """A plain function (sync or async) serving as a processor."""

    def __init__(self, function: Callable[[Frame[Any]], object]) -> None:
        self._function = function

    def process(self, frame: Frame[Any]) -> object:
        return self._function(frame)


@attrs.frozen
class ParsedParams:
    """A stream's accepted parameters: the whole JSON, the pipeline's part, the processor's part."""

    raw: JSONObject
    stream: StreamParams
    processor: Any


class ProcessorRuntime:
    """A processor ready to be served: loads it once and parses parameters for it."""

    def __init__(self, processor: Processor[Any], name: str) -> None:
        if type(processor).process is Processor.process:
            raise TypeError(f"{name} does not define process()")
        if not isinstance(processor.frame_format, FrameFormat):
            raise TypeError(f"{name}.frame_format must be a FrameFormat")
        if processor.params_type is not None:
            _check_params_class(processor.params_type, f"{name}.params_type")
        self.processor: Final = processor
        self.name: Final = name
        self.processes_audio: Final = type(processor).process_audio is not Processor.process_audio
        """Whether the processor hears the audio (else it passes through untouched)."""
        self._loaded = False
        self._load_lock = asyncio.Lock()

    @classmethod
    def wrap(cls, target: object) -> ProcessorRuntime:
        """Serve a function of one frame, a :class:`Processor` instance or subclass.

        A subclass is instantiated without arguments. Raises ``TypeError``
        saying what is wrong with anything else.
        """
        if isinstance(target, ProcessorRuntime):
            return target
        name = getattr(target, "__qualname__", type(target).__qualname__)
        if isinstance(target, type):
            if not issubclass(target, Processor):
                raise TypeError(
                    f"{name} is a class but not a byockit.worker.Processor: subclass Processor, "
                    "or pass a function that takes a frame"
                )
            try:
                instance = target()
            except TypeError as exc:
                raise TypeError(f"cannot create {name}() without arguments ({exc})") from exc
            return cls(instance, name)
        if isinstance(target, Processor):
            return cls(target, name)
        if callable(target):
            _check_takes_one_argument(target, name)
            return cls(_FunctionProcessor(target), name)
        raise TypeError(
            f"cannot serve a {type(target).__name__}: expected a function taking a frame, "
            "a Processor subclass or a Processor instance"
        )

    @property
    def frame_format(self) -> FrameFormat:
        return self.processor.frame_format

    @property
    def loaded(self) -> bool:
        return self._loaded

    async def load(self) -> None:
        """Run the processor's ``load`` once (in a thread when it is sync); later calls return."""
        async with self._load_lock:
            if self._loaded:
                return
            result = await asyncio.to_thread(self._load_in_thread)
            if inspect.isawaitable(result):
                await result
            self._loaded = True

    def parse_params(self, raw: Mapping[str, object] | None) -> ParsedParams:
        """Parse and validate a whole parameter set; :class:`ParamsRejected` says why not."""
        if raw is not None and not isinstance(raw, Mapping):
            raise ParamsRejected(f"parameters must be a JSON object, not {type(raw).__name__}")
        try:
            stream = StreamParams.from_json(raw or {})
        except ParseError as exc:
            raise ParamsRejected(str(exc)) from None
        own: JSONObject = dict(stream.extras)
        params_type = self.processor.params_type
        value: object = own if params_type is None else _build(params_type, own, "")
        validate: Callable[[Any], object] = self.processor.validate_params
        try:
            result = validate(value)
        except ParamsRejected:
            raise
        except ValueError as exc:
            raise ParamsRejected(_reason(exc)) from None
        if inspect.iscoroutine(result):
            result.close()
            raise TypeError(f"{self.name}.validate_params must not be async")
        return ParsedParams(stream.to_json(), stream, value)

    def _load_in_thread(self) -> object:
        load_torch(self.frame_format)
        return self.processor.load()


def build_params(
    params_type: type[ParamsT], raw: Mapping[str, JSONValue], where: str = ""
) -> ParamsT:
    """``raw`` parsed strictly into ``params_type``, as a processor's parameters are.

    For processors that nest other processors' parameters (a chain of
    effects): errors name the field under ``where`` (``"stages[2]"``).
    :class:`ParamsRejected` says what is wrong; ``TypeError`` if
    ``params_type`` cannot be read from JSON at all.
    """
    _check_params_class(params_type, params_type.__qualname__)
    if not isinstance(raw, Mapping):
        raise ParamsRejected(f"{where or 'parameters'} must be a JSON object, got {_show(raw)}")
    built: ParamsT = _build(params_type, raw, where)  # type: ignore[assignment]
    return built


def _check_takes_one_argument(function: Callable[..., object], name: str) -> None:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return  # some builtins have no signature: trust them
    try:
        signature.bind(None)
    except TypeError:
        raise TypeError(f"{name}{signature} must take exactly one argument: the frame") from None


# --- typed parameters -----------------------------------------------------------------------

_SCALARS: Final[Mapping[object, str]] = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
}


@attrs.frozen
class _Field:
    name: str
    hint: Any
    required: bool


def _is_params_class(hint: object) -> bool:
    return isinstance(hint, type) and (dataclasses.is_dataclass(hint) or attrs.has(hint))


def _fields(cls: type) -> tuple[_Field, ...]:
    """The constructor fields of a dataclass or attrs class, with resolved type hints."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception as exc:
        raise TypeError(f"cannot resolve the field types of {cls.__qualname__}: {exc}") from exc
    if dataclasses.is_dataclass(cls):
        return tuple(
            _Field(
                field.name,
                hints[field.name],
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING,
            )
            for field in dataclasses.fields(cls)
            if field.init
        )
    return tuple(
        _Field(field.alias or field.name, hints[field.name], field.default is attrs.NOTHING)
        for field in attrs.fields(cls)
        if field.init
    )


def _check_params_class(cls: object, where: str) -> None:
    if not _is_params_class(cls):
        raise TypeError(f"{where} must be a dataclass or an attrs class, not {cls!r}")
    assert isinstance(cls, type)
    for field in _fields(cls):
        _check_hint(field.hint, f"{where}.{field.name}")


def _check_hint(hint: Any, where: str) -> None:
    """Raise ``TypeError`` unless parameters of this type can be read from JSON."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in (Any, object) or hint in _SCALARS or origin is Literal:
        return
    if origin in (Union, types.UnionType):
        for arg in args:
            if arg is not type(None):
                _check_hint(arg, where)
        return
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return
    if origin in (list, collections.abc.Sequence) or (
        origin is tuple and len(args) == 2 and args[1] is Ellipsis
    ):
        _check_hint(args[0] if args else Any, where)
        return
    if origin in (dict, collections.abc.Mapping) and (not args or args[0] is str):
        _check_hint(args[1] if args else Any, where)
        return
    if _is_params_class(hint):
        _check_params_class(hint, where)
        return
    raise TypeError(
        f"{where}: parameters of type {hint!r} are not supported; use bool, int, float, str, "
        "an Enum, a Literal, list[...], tuple[..., ...], dict[str, ...], an optional, "
        "or a dataclass"
    )


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _build(cls: type, raw: Mapping[str, JSONValue], path: str) -> object:
    """An instance of a params class from a JSON object, strictly."""
    fields = _fields(cls)
    names = sorted(field.name for field in fields)
    for key in raw:
        if key not in names:
            takes = ", ".join(names) or "none"
            raise ParamsRejected(f"unknown parameter {_join(path, key)!r} (parameters: {takes})")
    values: dict[str, object] = {}
    for field in fields:
        where = _join(path, field.name)
        if field.name in raw:
            values[field.name] = _convert(field.hint, raw[field.name], where)
        elif field.required:
            raise ParamsRejected(f"parameter {where!r} is missing")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        where = f" {path!r}" if path else ""
        raise ParamsRejected(f"invalid parameters{where}: {_reason(exc)}") from None


def _convert(hint: Any, value: JSONValue, where: str) -> object:
    """``value`` as ``hint`` (see :func:`_check_hint`), or :class:`ParamsRejected`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in (Any, object):
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        alternatives = [arg for arg in args if arg is not type(None)]
        for arg in alternatives:
            try:
                return _convert(arg, value, where)
            except ParamsRejected:
                if len(alternatives) == 1:
                    raise  # its own message is the most precise
        raise _wrong(hint, value, where)
    if hint in _SCALARS:
        return _scalar(hint, value, where)
    if origin is Literal:
        if any(type(value) is type(arg) and value == arg for arg in args):
            return value
        raise _wrong(hint, value, where)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            raise _wrong(hint, value, where) from None
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, list):
            raise _wrong(hint, value, where)
        item = args[0] if args else Any
        items = [_convert(item, element, f"{where}[{i}]") for i, element in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            raise _wrong(hint, value, where)
        item = args[1] if args else Any
        return {key: _convert(item, element, _join(where, key)) for key, element in value.items()}
    if not isinstance(value, dict):
        raise _wrong(hint, value, where)
    return _build(hint, value, where)


def _scalar(hint: Any, value: JSONValue, where: str) -> object:
    if hint is bool and isinstance(value, bool):
        return value
    if hint is str and isinstance(value, str):
        return value
    if not isinstance(value, bool):
        if hint is int and isinstance(value, int):
            return value
        if hint is float and isinstance(value, int | float):
            return float(value)
    raise _wrong(hint, value, where)


def _reason(exc: Exception) -> str:
    """An exception's message (attrs validators put it first among their arguments)."""
    first = exc.args[0] if exc.args else None
    return first if isinstance(first, str) and len(exc.args) > 1 else str(exc)


def _wrong(hint: Any, value: JSONValue, where: str) -> ParamsRejected:
    return ParamsRejected(f"parameter {where!r} must be {_describe(hint)}, got {_show(value)}")


def _describe(hint: Any) -> str:
    """What a JSON value of this type looks like, for error messages."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in _SCALARS:
        return _SCALARS[hint]
    if origin in (Union, types.UnionType):
        return " or ".join("null" if arg is type(None) else _describe(arg) for arg in args)
    if origin is Literal:
        return "one of " + ", ".join(_show(arg) for arg in args)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(_show(member.value) for member in hint)
    if origin in (list, tuple, collections.abc.Sequence):
        return "an array"
    if origin in (dict, collections.abc.Mapping) or _is_params_class(hint):
        return "an object"
    return "any JSON value"
