"""What :class:`~byockit.worker.reference.model.ModelProcessor` needs to know about a model.

A model file says nothing reliable about the images it expects, so the user
declares it: the tensor layout, dtype and value range of its input (and of
its output), and the resolution it works at. :class:`ModelSettings` checks
each declaration when it is made; :meth:`ModelSettings.from_env` reads them
from the ``BYOCKIT_MODEL_*`` environment variables (:data:`ENVIRONMENT`), with
errors naming the variable and showing a value that works.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final, Literal, Self, TypeAlias

import attrs

from byockit.protocol.errors import ParseError

Layout: TypeAlias = Literal["NCHW", "NHWC"]
DType: TypeAlias = Literal["float32", "uint8"]

LAYOUTS: Final = ("NCHW", "NHWC")
DTYPES: Final = ("float32", "uint8")
UINT8_RANGE: Final = (0.0, 255.0)
FLOAT_RANGE: Final = (0.0, 1.0)

ENVIRONMENT: Final[Mapping[str, str]] = {
    "path": "BYOCKIT_MODEL_PATH",
    "layout": "BYOCKIT_MODEL_LAYOUT",
    "dtype": "BYOCKIT_MODEL_DTYPE",
    "value_range": "BYOCKIT_MODEL_RANGE",
    "resolution": "BYOCKIT_MODEL_RESOLUTION",
    "half": "BYOCKIT_MODEL_HALF",
    "compile": "BYOCKIT_MODEL_COMPILE",
    "device": "BYOCKIT_MODEL_DEVICE",
}
"""The environment variable behind each setting."""

EXAMPLES: Final[Mapping[str, str]] = {
    "path": "/models/model.pt",
    "layout": "NCHW",
    "dtype": "float32",
    "value_range": "0,1",
    "resolution": "512x512",
    "half": "1",
    "compile": "1",
    "device": "cuda",
}
"""A value that works, for each variable, shown in error messages."""

_DEVICE: Final = re.compile(r"(auto|cpu|cuda(:\d+)?)\Z")
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def _one_of(choices: tuple[str, ...]) -> Callable[[object, attrs.Attribute[str], str], None]:
    def check(_: object, attribute: attrs.Attribute[str], value: str) -> None:
        if value not in choices:
            raise ValueError(f"{attribute.name} must be one of {', '.join(choices)}, got {value!r}")

    return check


def _check_range(_: object, __: attrs.Attribute[tuple[float, float]], value: object) -> None:
    if (
        not isinstance(value, tuple)
        or len(value) != 2
        or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in value
        )
        or not value[0] < value[1]
    ):
        raise ValueError(f"value_range must be two numbers (low, high), low < high, got {value!r}")


def _check_resolution(
    _: object, __: attrs.Attribute[tuple[int, int] | None], value: object
) -> None:
    if value is None:
        return
    if (
        not isinstance(value, tuple)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ValueError(
            f"resolution must be (width, height), two positive integers; got {value!r}"
        )


def _check_device(_: object, __: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not _DEVICE.match(value):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {value!r}")


@attrs.frozen
class ModelSettings:
    """A model file and the images it takes and returns; every value checked (``ValueError``).

    - ``layout``: ``"NCHW"`` (input ``(1, 3, H, W)``) or ``"NHWC"`` (``(1, H, W, 3)``);
      the output has the same layout.
    - ``dtype``: the input's dtype, ``"float32"`` or ``"uint8"``.
    - ``value_range``: ``(low, high)`` of the input's and the output's pixel
      values; by default ``(0, 1)`` for float32 and ``(0, 255)`` for uint8 (the
      only range uint8 can have).
    - ``resolution``: ``(width, height)`` the model works at: frames are
      resized to it and its output back to the frame's size. ``None``: the
      model takes frames at their own size, and the output's size is the
      model's to choose.
    - ``half``: run in float16 (CUDA only: ignored with a warning on the CPU);
      a uint8 input stays uint8, so such a model must cast it to its weights' dtype.
    - ``compile``: ``torch.compile`` the model (``torch.export`` programs;
      skipped with a warning where it is unavailable).
    - ``device``: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    """

    path: Path = attrs.field(converter=Path)
    layout: Layout = attrs.field(default="NCHW", validator=_one_of(LAYOUTS))
    dtype: DType = attrs.field(default="float32", validator=_one_of(DTYPES))
    value_range: tuple[float, float] = attrs.field(validator=_check_range)
    resolution: tuple[int, int] | None = attrs.field(default=None, validator=_check_resolution)
    half: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    compile: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    device: str = attrs.field(default="auto", validator=_check_device)

    @value_range.default
    def _default_range(self) -> tuple[float, float]:
        return UINT8_RANGE if self.dtype == "uint8" else FLOAT_RANGE

    def __attrs_post_init__(self) -> None:
        if self.dtype == "uint8" and self.value_range != UINT8_RANGE:
            raise ValueError(
                f"a uint8 input ranges over (0, 255), not {self.value_range}: "
                "leave value_range unset or use dtype float32"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Self:
        """Settings from :data:`ENVIRONMENT`; an empty variable counts as unset.

        :class:`ParseError` naming the variable (and an example value) when
        ``BYOCKIT_MODEL_PATH`` is missing or a value does not parse.
        """
        path = environ.get(ENVIRONMENT["path"], "").strip()
        if not path:
            raise _error("path", "not set: the model file to serve (TorchScript or torch.export)")
        values: dict[str, object] = {"path": path}
        for field, parse in _PARSERS.items():
            text = environ.get(ENVIRONMENT[field], "").strip()
            if text:
                try:
                    values[field] = parse(text)
                except ValueError as exc:
                    raise _error(field, f"{exc}, got {text!r}") from None
        if values.get("dtype") == "uint8" and values.get("value_range", UINT8_RANGE) != UINT8_RANGE:
            raise ParseError(
                ENVIRONMENT["value_range"],
                f"{ENVIRONMENT['dtype']}=uint8 takes values 0..255: leave it unset or set 0,255; "
                f"got {environ[ENVIRONMENT['value_range']].strip()!r}",
            )
        return cls(**values)  # type: ignore[arg-type]


def _error(field: str, reason: str) -> ParseError:
    variable = ENVIRONMENT[field]
    return ParseError(variable, f"{reason} (e.g. {variable}={EXAMPLES[field]})")


def _parse_choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"expected {' or '.join(choices)}")
        return text

    return parse


def _parse_range(text: str) -> tuple[float, float]:
    parts = text.split(",")
    try:
        low, high = (float(part) for part in parts)
    except ValueError:
        raise ValueError("expected two numbers 'low,high' such as 0,1 or -1,1 or 0,255") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError("expected two finite numbers 'low,high' with low < high")
    return low, high


def _parse_resolution(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)x(\d+)", text.lower())
    if match is None or not int(match[1]) or not int(match[2]):
        raise ValueError("expected WIDTHxHEIGHT in pixels")
    return int(match[1]), int(match[2])


def _parse_bool(text: str) -> bool:
    word = text.lower()
    if word in _TRUE | _FALSE:
        return word in _TRUE
    raise ValueError("expected 1/0, true/false, yes/no or on/off")


def _parse_device(text: str) -> str:
    if not _DEVICE.match(text):
        raise ValueError("expected auto, cpu, cuda or cuda:N")
    return text


_PARSERS: Final[Mapping[str, Callable[[str], object]]] = {
    "layout": _parse_choice(LAYOUTS),
    "dtype": _parse_choice(DTYPES),
    "value_range": _parse_range,
    "resolution": _parse_resolution,
    "half": _parse_bool,
    "compile": _parse_bool,
    "device": _parse_device,
}
