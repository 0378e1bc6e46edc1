"""What an orchestrator sends a worker (PROTOCOL.md sections 2 and 3).

The ``POST /stream/start`` body, the stream parameters (in that body, in each
``POST /stream/params`` and on the control channel), control-channel
messages, and the ``GET /health`` document.
"""

from __future__ import annotations

import enum
from typing import Final, Self

import attrs

from byockit.protocol.errors import ParseError
from byockit.protocol.models._wire import (
    JSON_TEXT_ACCEPTED,
    JSONObject,
    WireModel,
    http_url,
    in_range,
    join_path,
    non_empty,
    one_of,
)

MAX_DIMENSION: Final = 8192
"""Largest accepted width or height: the widest frame any H.264 level allows."""


@attrs.frozen
class StreamParams(WireModel):
    """Parameters of one stream.

    ``width``/``height`` (the output size) come as a pair or not at all;
    ``max_framerate`` caps the output rate (1-60). Every other key belongs to
    the processor and is kept in ``extras``.
    """

    width: int | None = attrs.field(default=None, validator=in_range(1, MAX_DIMENSION))
    height: int | None = attrs.field(default=None, validator=in_range(1, MAX_DIMENSION))
    max_framerate: int | None = attrs.field(default=None, validator=in_range(1, 60))

    def __attrs_post_init__(self) -> None:
        if (self.width is None) != (self.height is None):
            missing = "height" if self.height is None else "width"
            raise ParseError(missing, "missing: width and height come as a pair")


@attrs.frozen
class WorkerStartRequest(WireModel):
    """The ``POST /stream/start`` body an orchestrator sends a worker.

    ``subscribe_url``, ``publish_url`` and ``data_url`` are present only when
    video ingress, video egress and data output are enabled. ``params`` is an
    object or ``null``; a JSON string holding an object is accepted too. Keys
    the gateway merged in are kept in ``extras``.
    """

    gateway_request_id: str = attrs.field(validator=non_empty)
    control_url: str = attrs.field(validator=http_url)
    events_url: str = attrs.field(validator=http_url)
    subscribe_url: str | None = attrs.field(default=None, validator=http_url)
    publish_url: str | None = attrs.field(default=None, validator=http_url)
    data_url: str | None = attrs.field(default=None, validator=http_url)
    params: StreamParams | None = attrs.field(default=None, metadata=JSON_TEXT_ACCEPTED)

    @property
    def stream_id(self) -> str:
        """The stream id: go-livepeer sends it as ``gateway_request_id``."""
        return self.gateway_request_id


_KEEPALIVE: Final[JSONObject] = {"keep": "alive"}
"""The control channel's keepalive, written every 10 s; it carries no parameters."""


@attrs.frozen
class ControlMessage(WireModel):
    """One control-channel segment: a keepalive (``params is None``) or parameters.

    When its control publisher starts, go-livepeer writes the client's last
    parameters as it holds them: after an update, the raw update body; before
    any update, the start body's ``{"params": {...}}``. That wrapped form is
    unwrapped, so both read as the same :class:`StreamParams`.
    """

    params: StreamParams | None = None

    def __attrs_post_init__(self) -> None:
        if self.extras:
            raise ParseError("extras", "a control message has no keys of its own: use params")

    @property
    def is_keepalive(self) -> bool:
        return self.params is None

    @classmethod
    def _from_object(cls, doc: JSONObject, path: str) -> Self:
        if doc == _KEEPALIVE:
            return cls()
        if _is_wrapped(doc):
            inner = doc["params"]
            params = StreamParams._from_object(
                inner if isinstance(inner, dict) else {}, join_path(path, "params")
            )
        else:
            params = StreamParams._from_object(doc, path)
        return cls._build({"params": params}, {}, path)

    def to_json(self) -> JSONObject:
        if self.params is None:
            return dict(_KEEPALIVE)
        doc = self.params.to_json()
        # Parameters that would read back as a keepalive or a wrapper get wrapped themselves.
        return {"params": doc} if doc == _KEEPALIVE or _is_wrapped(doc) else doc


def _is_wrapped(doc: JSONObject) -> bool:
    return doc.keys() == {"params"} and (doc["params"] is None or isinstance(doc["params"], dict))


class HealthStatus(enum.StrEnum):
    """The values of ``GET /health``'s ``status`` (go-livepeer's AI-worker contract)."""

    LOADING = "LOADING"
    IDLE = "IDLE"
    OK = "OK"
    ERROR = "ERROR"


@attrs.frozen
class WorkerHealth(WireModel):
    """The ``GET /health`` document: ``{"status": "LOADING" | "IDLE" | "OK" | "ERROR"}``."""

    status: str = attrs.field(validator=one_of(HealthStatus))
