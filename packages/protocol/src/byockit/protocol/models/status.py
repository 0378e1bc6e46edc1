"""The worker's status document: ``GET /stream/status`` and the ``status`` event.

It is one document for both, laid out as ai-runner lays out its status
(``state``, ``input_status``, ``inference_status``) so that tools and
go-livepeer's gateway (which carries ``inference_status.last_params`` over
between status events) read byockit workers and existing workers alike.
byockit adds frame counters and latency. Timestamps are Unix milliseconds.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import ClassVar

import attrs

from byockit.protocol.models._wire import JSONValue, WireModel, json_object, non_empty, non_negative


class StreamState(enum.StrEnum):
    """States a worker reports (ai-runner's words). Other workers may report other words."""

    LOADING = "LOADING"
    ONLINE = "ONLINE"
    OFFLINE = "OFFLINE"
    DEGRADED_INPUT = "DEGRADED_INPUT"
    DEGRADED_INFERENCE = "DEGRADED_INFERENCE"
    ERROR = "ERROR"


@attrs.frozen
class InputStatus(WireModel):
    """What arrives: input frame rate, last input time, frames decoded and dropped.

    ``dropped_frames`` counts frames discarded before inference because a
    newer frame replaced them (the processor was busy).
    """

    fps: float | None = attrs.field(default=None, validator=non_negative)
    last_input_time: int | None = None
    frames: int | None = attrs.field(default=None, validator=non_negative)
    dropped_frames: int | None = attrs.field(default=None, validator=non_negative)


@attrs.frozen
class InferenceStatus(WireModel):
    """What leaves: output frame rate and count, latency, current params, last error."""

    fps: float | None = attrs.field(default=None, validator=non_negative)
    last_output_time: int | None = None
    frames: int | None = attrs.field(default=None, validator=non_negative)
    latency_ms: float | None = attrs.field(default=None, validator=non_negative)
    last_params: Mapping[str, JSONValue] | None = attrs.field(default=None, validator=json_object)
    last_params_update_time: int | None = None
    last_error: str | None = None
    last_error_time: int | None = None


@attrs.frozen
class StreamStatus(WireModel):
    """The status of one stream; on the events channel it is the ``status`` event.

    An event whose ``type`` is ``"status"`` replaces the whole document the
    client sees, so each one is complete. ``state`` is free text (see
    :class:`StreamState` for the usual words).
    """

    wire_type: ClassVar[str | None] = "status"

    state: str = attrs.field(validator=non_empty)
    stream_id: str | None = None
    pipeline: str | None = None
    start_time: int | None = None
    input_status: InputStatus | None = None
    inference_status: InferenceStatus | None = None
    timestamp: int | None = None
