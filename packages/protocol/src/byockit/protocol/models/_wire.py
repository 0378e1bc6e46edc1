"""The strict JSON <-> attrs machinery behind every model.

Every message model is a frozen attrs class deriving from :class:`WireModel`.
Its field *types* say how each value travels, so models stay declarative:

- ``str``, ``int``, ``float``, ``bool``: that JSON type exactly (no coercion:
  ``"512"`` is not an integer, ``true`` is not a number);
- ``X | None``: the field may be absent or ``null``; ``None`` is never written;
- ``Mapping[str, JSONValue]``: any JSON object, kept as is;
- ``tuple[str, ...]``: a JSON array of strings;
- another :class:`WireModel`: a nested object.

A field carrying ``metadata=JSON_TEXT`` travels as a JSON *string* holding
the JSON of its value (the ``Livepeer`` header's ``request``/``parameters``,
``StartRequest.params``); ``JSON_TEXT_ACCEPTED`` takes either form and writes
the plain one. Value rules (ranges, pairs, allowed words) are attrs
validators raising :class:`ParseError`, so a model built in Python is checked
exactly like one parsed from the wire.

Keys a model does not know are kept in ``extras`` and written back, because
the real network passes them through.
"""

from __future__ import annotations

import json
import math
import sys
import types
import typing
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Self, TypeAlias, Union

import attrs

from byockit.protocol.errors import ParseError

JSONValue: TypeAlias = Union[  # noqa: UP007  (a recursive alias needs the string forward refs)
    bool, int, float, str, Sequence["JSONValue"], Mapping[str, "JSONValue"], None
]
"""Any JSON value (arrays may be given as tuples; objects as any mapping)."""

JSONObject: TypeAlias = dict[str, JSONValue]

INT64_MAX = 2**63 - 1
MAX_DEPTH = 100
"""Deepest nesting accepted; deeper documents are refused rather than risk recursion limits."""

JSON_TEXT: Mapping[str, str] = {"wire": "json_text"}
JSON_TEXT_ACCEPTED: Mapping[str, str] = {"wire": "json_text_accepted"}

_NUMBER_LIMIT = sys.float_info.max
"""Numbers beyond a float64 cannot be decoded by Go, nor written back by Python's json."""


def join_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def describe(value: object) -> str:
    """Name a JSON value in an error message: its type, and the value when short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"integer {value}" if abs(value) < 10**20 else "a huge integer"
    if isinstance(value, float):
        return f"number {value!r}"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return f"string {text!r}"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def check_json(value: object, path: str, depth: int = 0) -> JSONValue:
    """Return a fresh plain-JSON copy of ``value``, or raise ParseError naming what is not JSON."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if abs(value) > _NUMBER_LIMIT:
            raise ParseError(path, "number out of range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ParseError(path, f"expected a finite number, found {value!r}")
        return value
    if depth >= MAX_DEPTH:
        raise ParseError(path, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, Mapping):
        copy: JSONObject = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ParseError(path, f"object key {key!r} is not a string")
            copy[key] = check_json(item, join_path(path, key), depth + 1)
        return copy
    if isinstance(value, list | tuple):
        return [check_json(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    raise ParseError(path, f"not a JSON value: {type(value).__name__}")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"number {text} is out of range")
    return number


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def loads(text: str, path: str) -> JSONValue:
    """Parse JSON text strictly (no NaN/Infinity, finite numbers, bounded depth)."""
    try:
        value = json.loads(text, parse_float=_finite_float, parse_constant=_reject_constant)
    except RecursionError:
        raise ParseError(path, f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, over-long integers, non-finite numbers
        raise ParseError(path, f"not valid JSON: {exc}") from None
    return check_json(value, path)


def dumps(value: JSONValue) -> str:
    """Compact JSON text; ASCII-only so that any string survives any transport."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def load_object(data: object) -> JSONObject:
    """Turn bytes, text or an already decoded mapping into a checked JSON object."""
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ParseError("", f"not UTF-8 text (byte {exc.start}: {exc.reason})") from None
        value = loads(text, "")
    elif isinstance(data, str):
        value = loads(data, "")
    else:
        value = check_json(data, "")
    if not isinstance(value, dict):
        raise ParseError("", f"expected a JSON object, found {describe(value)}")
    return value


def _expected(kind: str, value: object, path: str) -> ParseError:
    return ParseError(path, f"expected {kind}, found {describe(value)}")


# --- codecs: how one field's value is read from and written to JSON -------------------------


@attrs.frozen
class _Codec:
    decode: Callable[[JSONValue, str], Any]
    encode: Callable[[Any], JSONValue]


def _same(value: Any) -> JSONValue:
    return typing.cast(JSONValue, value)


def _decode_str(value: JSONValue, path: str) -> str:
    if isinstance(value, str):
        return value
    raise _expected("string", value, path)


def _decode_bool(value: JSONValue, path: str) -> bool:
    if isinstance(value, bool):
        return value
    raise _expected("boolean", value, path)


def _decode_int(value: JSONValue, path: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if not -INT64_MAX - 1 <= value <= INT64_MAX:
            raise ParseError(path, f"{describe(value)} does not fit in 64 bits")
        return value
    raise _expected("integer", value, path)


def _decode_number(value: JSONValue, path: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    raise _expected("number", value, path)


def _decode_object(value: JSONValue, path: str) -> JSONObject:
    if isinstance(value, dict):
        return value
    raise _expected("object", value, path)


def _decode_str_tuple(value: JSONValue, path: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _expected("array of strings", value, path)
    return tuple(_decode_str(item, f"{path}[{i}]") for i, item in enumerate(value))


def _encode_object(value: Mapping[str, JSONValue]) -> JSONValue:
    return check_json(value, "")


def _encode_str(value: str) -> JSONValue:
    return str(value)  # a StrEnum constant becomes its plain value


def _encode_str_tuple(value: tuple[str, ...]) -> JSONValue:
    return [str(item) for item in value]


_SCALARS: Mapping[object, _Codec] = {
    str: _Codec(_decode_str, _encode_str),
    bool: _Codec(_decode_bool, _same),
    int: _Codec(_decode_int, _same),
    float: _Codec(_decode_number, _same),
}


def _model_codec(cls: type[WireModel]) -> _Codec:
    def decode(value: JSONValue, path: str) -> WireModel:
        return cls._from_object(_decode_object(value, path), path)

    def encode(value: WireModel) -> JSONValue:
        return value.to_json()

    return _Codec(decode, encode)


def _optional(codec: _Codec) -> _Codec:
    def decode(value: JSONValue, path: str) -> Any:
        return None if value is None else codec.decode(value, path)

    return _Codec(decode, codec.encode)


def _json_text(codec: _Codec, optional: bool) -> _Codec:
    """A value written as a JSON string holding its JSON, as Go's ``string`` fields carry it.

    Go accepts ``"null"`` (and an empty string where the field is optional) as "no value".
    """

    def decode(value: JSONValue, path: str) -> Any:
        if not isinstance(value, str):
            raise _expected("a string holding JSON", value, path)
        if optional and value == "":
            return None
        inner = loads(value, path)
        if inner is None:
            return None if optional else codec.decode({}, path)
        return codec.decode(inner, path)

    def encode(value: Any) -> JSONValue:
        return dumps(codec.encode(value))

    return _Codec(decode, encode)


def _json_text_accepted(codec: _Codec, optional: bool) -> _Codec:
    text = _json_text(codec, optional)
    plain = _optional(codec) if optional else codec

    def decode(value: JSONValue, path: str) -> Any:
        return text.decode(value, path) if isinstance(value, str) else plain.decode(value, path)

    return _Codec(decode, codec.encode)


def _split_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [arg for arg in typing.get_args(tp) if arg is not type(None)]
        if len(args) == 1:
            return args[0], len(args) < len(typing.get_args(tp))
    return tp, False


def _codec_for(tp: Any, wire: str | None) -> _Codec:
    base_type, optional = _split_optional(tp)
    origin = typing.get_origin(base_type)
    if base_type in _SCALARS:
        base = _SCALARS[base_type]
    elif isinstance(base_type, type) and issubclass(base_type, WireModel):
        base = _model_codec(base_type)
    elif origin in (Mapping, dict):
        base = _Codec(_decode_object, _encode_object)
    elif origin is tuple and typing.get_args(base_type) == (str, ...):
        base = _Codec(_decode_str_tuple, _encode_str_tuple)
    else:
        raise TypeError(f"no JSON codec for field type {tp!r}")
    if wire == JSON_TEXT["wire"]:
        return _json_text(base, optional)
    if wire == JSON_TEXT_ACCEPTED["wire"]:
        return _json_text_accepted(base, optional)
    return _optional(base) if optional else base


@attrs.frozen
class _FieldSpec:
    name: str
    codec: _Codec
    required: bool


_SPECS: dict[type[WireModel], tuple[_FieldSpec, ...]] = {}


def _specs(cls: type[WireModel]) -> tuple[_FieldSpec, ...]:
    """The field specs of a model, derived once from its type hints."""
    specs = _SPECS.get(cls)
    if specs is None:
        hints = typing.get_type_hints(cls)
        specs = _SPECS[cls] = tuple(
            _FieldSpec(
                field.name,
                _codec_for(hints[field.name], field.metadata.get("wire")),
                field.default is attrs.NOTHING,
            )
            for field in attrs.fields(cls)
            if field.name != "extras"
        )
    return specs


def _known_keys(cls: type[WireModel]) -> frozenset[str]:
    names = {field.name for field in attrs.fields(cls) if field.name != "extras"}
    if cls.wire_type is not None:
        names.add("type")
    return frozenset(names)


def _check_extras(instance: WireModel, _: attrs.Attribute[Any], value: Mapping[str, Any]) -> None:
    known = _known_keys(type(instance))
    for key, item in value.items():
        if key in known:
            raise ParseError(key, "is a field of this message: set it directly, not in extras")
        check_json(item, key)


@attrs.frozen
class WireModel:
    """Base of every message: strict :meth:`from_json`, canonical :meth:`to_json`.

    ``extras`` holds the keys this model does not know, unchanged; they are
    written back after the known fields.
    """

    wire_type: ClassVar[str | None] = None
    """A fixed ``"type"`` key: always written, and when read it must match."""

    extras: Mapping[str, JSONValue] = attrs.field(
        factory=dict, kw_only=True, validator=_check_extras
    )

    @classmethod
    def from_json(cls, data: bytes | str | Mapping[str, object]) -> Self:
        """Parse a JSON document (bytes, text, or already decoded) or raise ParseError."""
        return cls._from_object(load_object(data), "")

    @classmethod
    def _from_object(cls, doc: JSONObject, path: str) -> Self:
        """Build from a checked JSON object found at ``path`` (used for nesting)."""
        if cls.wire_type is not None and "type" in doc and doc["type"] != cls.wire_type:
            raise ParseError(
                join_path(path, "type"),
                f"expected {cls.wire_type!r}, found {describe(doc['type'])}",
            )
        kwargs: dict[str, Any] = {}
        for spec in _specs(cls):
            where = join_path(path, spec.name)
            if spec.name in doc:
                kwargs[spec.name] = spec.codec.decode(doc[spec.name], where)
            elif spec.required:
                raise ParseError(where, "missing")
        known = _known_keys(cls)
        extras = {key: value for key, value in doc.items() if key not in known}
        return cls._build(kwargs, extras, path)

    @classmethod
    def _build(cls, kwargs: Mapping[str, Any], extras: JSONObject, path: str) -> Self:
        """Construct, re-rooting a validator's ParseError at ``path``."""
        try:
            return cls(**kwargs, extras=extras)
        except ParseError as exc:
            raise ParseError(
                join_path(path, exc.field) if exc.field else path, exc.reason
            ) from None

    def to_json(self) -> JSONObject:
        """The wire form: known fields (``None`` left out), then extras."""
        doc: JSONObject = {}
        if self.wire_type is not None:
            doc["type"] = self.wire_type
        for spec in _specs(type(self)):
            value = getattr(self, spec.name)
            if value is not None:
                doc[spec.name] = spec.codec.encode(value)
        for key, value in self.extras.items():
            doc.setdefault(key, check_json(value, key))
        return doc

    def dumps(self) -> str:
        """:meth:`to_json` as compact JSON text."""
        return dumps(self.to_json())


# --- validators: value rules shared by the models -------------------------------------------

Validator: TypeAlias = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def in_range(low: int, high: int) -> Validator:
    """A number within ``[low, high]`` (``None`` passes: absence is the type's business)."""

    def check(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParseError(attribute.name, f"expected a number, found {type(value).__name__}")
        if not low <= value <= high:
            raise ParseError(attribute.name, f"must be between {low} and {high}, found {value}")

    return check


def non_negative(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParseError(attribute.name, f"expected a number, found {type(value).__name__}")
    if not (math.isfinite(value) and value >= 0):
        raise ParseError(attribute.name, f"must be a finite number >= 0, found {value}")


def non_empty(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value == "":
        raise ParseError(attribute.name, "must not be empty")


def one_of(allowed: Iterable[str], *, case_sensitive: bool = True) -> Validator:
    """One of a fixed set of words (``None`` passes)."""
    words = tuple(str(word) for word in allowed)
    accepted = set(words) if case_sensitive else {word.lower() for word in words}

    def check(_: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
        if value is None:
            return
        if (value if case_sensitive else value.lower()) not in accepted:
            listed = ", ".join(repr(word) for word in words)
            raise ParseError(attribute.name, f"must be one of {listed}, found {value!r}")

    return check


def http_url(_: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    """An absolute http(s) URL with a host (``None`` passes)."""
    if value is None:
        return
    try:
        parts = urllib.parse.urlsplit(value)
        _ = parts.port  # raises on a malformed or out-of-range port
    except ValueError as exc:
        raise ParseError(attribute.name, f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ParseError(attribute.name, f"expected an http(s) URL with a host, found {value!r}")


def json_object(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """A JSON object (``None`` passes); catches non-JSON values put in from Python."""
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise _expected("object", value, attribute.name)
    check_json(value, attribute.name)
