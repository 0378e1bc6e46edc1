"""Events-channel messages: both envelopes, every event kind, status documents."""

from __future__ import annotations

import json

import pytest

from byockit.protocol.errors import ParseError
from byockit.protocol.models import (
    ErrorEvent,
    EventMessage,
    InferenceStatus,
    InputStatus,
    ParamsUpdateEvent,
    QueueEventType,
    StreamState,
    StreamStatus,
    StreamStoppedEvent,
    TraceEvent,
    TraceType,
    UnknownEvent,
)

# A byockit worker's periodic status event, in the wrapped envelope ai-runner uses.
STATUS_EVENT = {
    "queue_event_type": "ai_stream_events",
    "event": {
        "type": "status",
        "state": "ONLINE",
        "stream_id": "cam-7f3a",
        "pipeline": "watercolor",
        "start_time": 1718000000000,
        "input_status": {
            "fps": 30.0,
            "last_input_time": 1718000009980,
            "frames": 298,
            "dropped_frames": 3,
        },
        "inference_status": {
            "fps": 29.6,
            "last_output_time": 1718000009995,
            "frames": 295,
            "latency_ms": 41.5,
            "last_params": {"prompt": "a watercolor cat", "width": 512, "height": 512},
            "last_params_update_time": 1718000000120,
        },
        "timestamp": 1718000010000,
    },
}


def test_status_event_round_trips_exactly():
    message = EventMessage.from_json(json.dumps(STATUS_EVENT))
    assert message.queue_event_type == QueueEventType.STREAM_EVENTS
    status = message.event
    assert isinstance(status, StreamStatus)
    assert status.state == StreamState.ONLINE
    assert status.input_status == InputStatus(
        fps=30.0, last_input_time=1718000009980, frames=298, dropped_frames=3
    )
    assert status.inference_status is not None
    assert status.inference_status.latency_ms == 41.5
    assert message.to_json() == STATUS_EVENT


def test_new_messages_default_to_the_wrapped_envelope_and_ai_runners_queues():
    status = StreamStatus(state=StreamState.LOADING, stream_id="s1")
    assert EventMessage(status).to_json() == {
        "queue_event_type": "ai_stream_events",
        "event": {"type": "status", "state": "LOADING", "stream_id": "s1"},
    }
    trace = TraceEvent(type=TraceType.FIRST_PROCESSED_SEGMENT, timestamp=1718000000500)
    assert EventMessage(trace).to_json() == {
        "queue_event_type": "stream_trace",
        "event": {"type": "runner_send_first_processed_segment", "timestamp": 1718000000500},
    }


# What ai-runner itself emits (its status carries nulls, a float last_status_timestamp and
# fields byockit does not model; all of it must survive).
AI_RUNNER_STATUS = {
    "event": {
        "type": "status",
        "pipeline": "streamdiffusion",
        "start_time": 1718000000000,
        "state": "DEGRADED_INFERENCE",
        "last_state_update_time": 1718000004000,
        "input_status": {"last_input_time": 1718000009000, "fps": 30.0},
        "inference_status": {
            "last_output_time": 1718000009010,
            "fps": 12.5,
            "last_params_update_time": None,
            "last_params": None,
            "last_params_hash": None,
            "last_error_time": 1718000008000,
            "last_error": "CUDA out of memory",
            "last_restart_time": None,
            "last_restart_logs": None,
            "restart_count": 0,
        },
        "last_status_timestamp": 1718000000.123,
        "timestamp": 1718000010000,
    },
    "queue_event_type": "ai_stream_events",
}


def test_ai_runner_status_is_read_and_kept():
    message = EventMessage.from_json(json.dumps(AI_RUNNER_STATUS).encode())
    status = message.event
    assert isinstance(status, StreamStatus)
    assert status.state == "DEGRADED_INFERENCE"
    assert status.inference_status == InferenceStatus(
        fps=12.5,
        last_output_time=1718000009010,
        last_error="CUDA out of memory",
        last_error_time=1718000008000,
        extras={
            "last_params_hash": None,
            "last_restart_time": None,
            "last_restart_logs": None,
            "restart_count": 0,
        },
    )
    assert status.extras == {
        "last_state_update_time": 1718000004000,
        "last_status_timestamp": 1718000000.123,
    }
    # Explicit nulls of modelled fields read as absent, and absent is what is written.
    expected = json.loads(json.dumps(AI_RUNNER_STATUS))
    for key in ("last_params_update_time", "last_params"):
        del expected["event"]["inference_status"][key]
    assert message.to_json() == expected


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            {"type": "runner_receive_first_ingest_segment", "timestamp": 1718000000100},
            TraceEvent(type=TraceType.FIRST_INGEST_SEGMENT, timestamp=1718000000100),
        ),
        (
            {"type": "error", "pipeline": "watercolor", "message": "decoder: corrupt frame",
             "time": 1718000003.25, "timestamp": 1718000003250},
            ErrorEvent(message="decoder: corrupt frame", timestamp=1718000003250,
                       extras={"pipeline": "watercolor", "time": 1718000003.25}),
        ),
        (
            {"type": "params_update", "params": {"prompt": "neon"}, "timestamp": 1718000004000},
            ParamsUpdateEvent(params={"prompt": "neon"}, timestamp=1718000004000),
        ),
        (
            {"type": "stream_stopped", "reason": "stream ended", "timestamp": 1718000005000},
            StreamStoppedEvent(reason="stream ended", timestamp=1718000005000),
        ),
        (
            {"type": "heartbeat", "timestamp": 1718000006000,
             "dimensions": {"width": 512, "height": 512}},
            UnknownEvent(type="heartbeat",
                         extras={"timestamp": 1718000006000,
                                 "dimensions": {"width": 512, "height": 512}}),
        ),
        (
            {"message": "an event without a type"},
            UnknownEvent(extras={"message": "an event without a type"}),
        ),
    ],
    ids=["trace", "error", "params_update", "stream_stopped", "unknown", "untyped"],
)  # fmt: skip
@pytest.mark.parametrize("wrapped", [True, False], ids=["wrapped", "bare"])
def test_every_event_kind_round_trips_in_both_envelopes(event, expected, wrapped):
    doc = {"queue_event_type": "stream_trace", "event": event} if wrapped else event
    message = EventMessage.from_json(doc)
    assert message.event == expected
    assert message.queue_event_type == ("stream_trace" if wrapped else None)
    assert message.to_json() == doc


def test_wrapper_keys_beyond_the_envelope_are_kept():
    doc = {"event": {"type": "status", "state": "ONLINE"}, "queue_event_type": None, "seq": 4}
    message = EventMessage.from_json(doc)
    assert message.queue_event_type == ""
    assert message.extras == {"seq": 4}
    assert EventMessage.from_json(message.dumps()) == message


def test_null_event_means_a_bare_event_as_in_go_livepeer():
    message = EventMessage.from_json({"type": "status", "state": "OFFLINE", "event": None})
    assert message.queue_event_type is None
    assert isinstance(message.event, StreamStatus)
    assert message.event.extras == {"event": None}


# go-livepeer's GET /process/stream/{id}/status: the last status event plus gateway keys.
GATEWAY_STATUS = {
    "type": "status",
    "state": "ONLINE",
    "stream_id": "cam-7f3a",
    "input_status": {"fps": 30},
    "inference_status": {"fps": 30, "latency_ms": 38.0},
    "timestamp": 1718000010000,
    "request_id": "b41c09d2",
    "pipeline_id": "",
    "orchestrator_info": {"address": "0x5be4", "url": "https://orch.example:8935"},
}


def test_gateway_status_document_parses_as_a_stream_status():
    status = StreamStatus.from_json(GATEWAY_STATUS)
    assert status.stream_id == "cam-7f3a"
    assert status.extras["orchestrator_info"] == GATEWAY_STATUS["orchestrator_info"]
    assert status.to_json() == GATEWAY_STATUS


def test_worker_status_document_is_the_status_event_body():
    status = StreamStatus.from_json(json.dumps(STATUS_EVENT["event"]))
    assert status.to_json() == STATUS_EVENT["event"]
    untyped = {key: value for key, value in STATUS_EVENT["event"].items() if key != "type"}
    assert StreamStatus.from_json(untyped) == status


@pytest.mark.parametrize(
    ("doc", "field", "reason"),
    [
        ({"event": []}, "event", "expected object, found array"),
        ({"event": "status"}, "event", "expected object, found string 'status'"),
        ({"event": {"type": "status"}, "queue_event_type": 3}, "queue_event_type",
         "expected string, found integer 3"),
        ({"event": {"type": 5}}, "event.type", "expected string, found integer 5"),
        ({"type": ["status"]}, "type", "expected string, found array"),
        ({"event": {"type": "status"}}, "event.state", "missing"),
        ({"type": "status", "state": ""}, "state", "must not be empty"),
        ({"type": "status", "state": "ONLINE", "input_status": {"fps": -1}},
         "input_status.fps", "must be a finite number >= 0, found -1"),
        ({"type": "status", "state": "ONLINE", "inference_status": {"frames": 1.5}},
         "inference_status.frames", "expected integer, found number 1.5"),
        ({"type": "status", "state": "ONLINE", "inference_status": {"last_params": [1]}},
         "inference_status.last_params", "expected object, found array"),
        ({"event": {"type": "error"}}, "event.message", "missing"),
        ({"type": "error", "message": None}, "message", "expected string, found null"),
        ({"type": "params_update", "params": "x=1"}, "params", "expected object"),
        ({"type": "stream_stopped", "timestamp": "now"}, "timestamp", "expected integer"),
        ({"type": "runner_send_first_processed_segment", "timestamp": 1.5e12}, "timestamp",
         "expected integer"),
    ],
)  # fmt: skip
def test_event_errors_name_the_field(doc, field, reason):
    with pytest.raises(ParseError) as caught:
        EventMessage.from_json(doc)
    assert caught.value.field == field
    assert reason in caught.value.reason


def test_an_event_parsed_as_the_wrong_kind_names_the_type():
    with pytest.raises(ParseError) as caught:
        StreamStatus.from_json({"type": "error", "message": "x", "state": "ERROR"})
    assert (caught.value.field, caught.value.reason) == (
        "type", "expected 'status', found string 'error'",
    )  # fmt: skip


def test_trace_events_only_take_known_milestones():
    with pytest.raises(ParseError) as caught:
        TraceEvent(type="gateway_receive_first_processed_segment")
    assert caught.value.field == "type"


def test_a_bare_event_cannot_carry_envelope_extras():
    with pytest.raises(ParseError) as caught:
        EventMessage(ErrorEvent(message="x"), queue_event_type=None, extras={"seq": 1})
    assert caught.value.field == "extras"
