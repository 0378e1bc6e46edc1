"""Messages on a stream's events channel (PROTOCOL.md section 3).

Each segment holds one JSON object, in one of two envelopes:
``{"queue_event_type": ..., "event": {...}}`` (what ai-runner and pytrickle
write) or a bare event with a ``type``. go-livepeer's gateway reads the
wrapped form when ``event`` is a non-null object and the bare form
otherwise, stores ``status`` events as the stream's status, and forwards
everything else untouched, so events of unknown types are kept as
:class:`UnknownEvent`, never refused. Every event may carry ``timestamp``
(Unix milliseconds), as ai-runner adds one to each.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import ClassVar, Self

import attrs

from byockit.protocol.errors import ParseError
from byockit.protocol.models._wire import (
    JSONObject,
    JSONValue,
    WireModel,
    check_json,
    describe,
    join_path,
    json_object,
    one_of,
)
from byockit.protocol.models.status import StreamStatus


class QueueEventType(enum.StrEnum):
    """``queue_event_type`` values: the gateway forwards events to the queue of that name."""

    STREAM_EVENTS = "ai_stream_events"
    STREAM_TRACE = "stream_trace"


class TraceType(enum.StrEnum):
    """Milestones a worker reports once per stream, for start-up latency tracing."""

    FIRST_INGEST_SEGMENT = "runner_receive_first_ingest_segment"
    FIRST_PROCESSED_SEGMENT = "runner_send_first_processed_segment"


@attrs.frozen
class TraceEvent(WireModel):
    """A milestone (:class:`TraceType`), sent in the ``stream_trace`` queue."""

    type: str = attrs.field(validator=one_of(TraceType))
    timestamp: int | None = None


@attrs.frozen
class ErrorEvent(WireModel):
    """An error the worker hit while the stream goes on (or just before it stops)."""

    wire_type: ClassVar[str | None] = "error"

    message: str
    timestamp: int | None = None


@attrs.frozen
class ParamsUpdateEvent(WireModel):
    """The worker applied new parameters (``params``: the whole applied set)."""

    wire_type: ClassVar[str | None] = "params_update"

    params: Mapping[str, JSONValue] = attrs.field(validator=json_object)
    timestamp: int | None = None


@attrs.frozen
class StreamStoppedEvent(WireModel):
    """The worker stopped the stream; ``reason`` says why (the stop body, an error...)."""

    wire_type: ClassVar[str | None] = "stream_stopped"

    reason: str | None = None
    timestamp: int | None = None


@attrs.frozen
class UnknownEvent(WireModel):
    """An event of any other type (or none), kept whole in ``extras``."""

    type: str | None = None


Event = (
    StreamStatus | TraceEvent | ErrorEvent | ParamsUpdateEvent | StreamStoppedEvent | UnknownEvent
)

_EVENT_CLASSES: Mapping[str, type[Event]] = {
    "status": StreamStatus,
    "error": ErrorEvent,
    "params_update": ParamsUpdateEvent,
    "stream_stopped": StreamStoppedEvent,
    **{trace.value: TraceEvent for trace in TraceType},
}


def _parse_event(doc: JSONObject, path: str) -> Event:
    """Pick the event class by ``type``; unknown types become :class:`UnknownEvent`."""
    kind = doc.get("type")
    if kind is None:
        return UnknownEvent._from_object(doc, path)
    if not isinstance(kind, str):
        raise ParseError(join_path(path, "type"), f"expected string, found {describe(kind)}")
    return _EVENT_CLASSES.get(kind, UnknownEvent)._from_object(doc, path)


def _default_queue(message: EventMessage) -> str:
    if isinstance(message.event, TraceEvent):
        return QueueEventType.STREAM_TRACE.value
    return QueueEventType.STREAM_EVENTS.value


@attrs.frozen
class EventMessage(WireModel):
    """One events-channel segment: an event and its envelope.

    ``queue_event_type`` is ``None`` for a bare event; otherwise the wrapped
    form is written. New messages default to the wrapped form with the queue
    ai-runner uses (``stream_trace`` for traces, ``ai_stream_events`` else).
    ``extras`` holds other keys of the wrapper (a bare event keeps its own).
    """

    event: Event
    queue_event_type: str | None = attrs.field(
        default=attrs.Factory(_default_queue, takes_self=True)
    )

    def __attrs_post_init__(self) -> None:
        if self.queue_event_type is None and self.extras:
            raise ParseError("extras", "a bare event has no envelope to hold extra keys")

    @classmethod
    def _from_object(cls, doc: JSONObject, path: str) -> Self:
        wrapped = doc.get("event")
        if wrapped is None:
            return cls._build(
                {"event": _parse_event(doc, path), "queue_event_type": None}, {}, path
            )
        if not isinstance(wrapped, dict):
            raise ParseError(
                join_path(path, "event"), f"expected object, found {describe(wrapped)}"
            )
        queue = doc.get("queue_event_type")
        if queue is not None and not isinstance(queue, str):
            raise ParseError(
                join_path(path, "queue_event_type"), f"expected string, found {describe(queue)}"
            )
        extras = {
            key: value for key, value in doc.items() if key not in ("event", "queue_event_type")
        }
        event = _parse_event(wrapped, join_path(path, "event"))
        return cls._build({"event": event, "queue_event_type": queue or ""}, extras, path)

    def to_json(self) -> JSONObject:
        if self.queue_event_type is None:
            return self.event.to_json()
        doc: JSONObject = {"queue_event_type": self.queue_event_type, "event": self.event.to_json()}
        for key, value in self.extras.items():
            doc.setdefault(key, check_json(value, key))
        return doc
