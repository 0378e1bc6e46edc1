"""Every parser, fed anything: it returns a model that round-trips, or raises ParseError.

Random JSON values, random bytes and mutations of valid documents (a key
dropped, a value replaced, a key added, at any depth, including inside the
JSON strings the ``Livepeer`` header and ``StartRequest`` carry). No other
exception, no hang.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from byockit.protocol import models
from byockit.protocol.errors import ParseError
from byockit.protocol.models import LivepeerHeader, WireModel

MODELS: list[type[WireModel]] = sorted(
    (
        value
        for value in vars(models).values()
        if isinstance(value, type) and issubclass(value, WireModel) and value is not WireModel
    ),
    key=lambda cls: cls.__name__,
)

TRICKLE = "https://127.0.0.1:8935/ai/trickle/s1"

# Valid documents to mutate, per model (several shapes where the model has several).
SEEDS: dict[str, list[dict[str, Any]]] = {
    "CapabilityRegistration": [
        {"name": "n", "url": "http://w:8000", "capacity": 2, "description": "d",
         "price_per_unit": 10, "price_scaling": 1, "currency": "eth", "token": "t"},
    ],
    "ControlMessage": [
        {"keep": "alive"},
        {"params": {"width": 512, "height": 512, "prompt": "x"}},
        {"max_framerate": 30, "seed": 4},
    ],
    "ErrorEvent": [{"type": "error", "message": "boom", "timestamp": 1}],
    "EventMessage": [
        {"queue_event_type": "ai_stream_events",
         "event": {"type": "status", "state": "ONLINE", "input_status": {"fps": 30},
                   "inference_status": {"fps": 29.5, "last_params": {"p": 1}}}},
        {"type": "error", "message": "boom", "timestamp": 5},
        {"queue_event_type": "stream_trace",
         "event": {"type": "runner_receive_first_ingest_segment", "timestamp": 7}},
        {"type": "params_update", "params": {"prompt": "x"}},
        {"type": "stream_stopped", "reason": "bye"},
        {"type": "heartbeat", "urls": {"events": TRICKLE}},
    ],
    "InferenceStatus": [{"fps": 1.5, "frames": 3, "latency_ms": 40, "last_error": "e"}],
    "InputStatus": [{"fps": 30, "frames": 10, "dropped_frames": 1, "last_input_time": 9}],
    "JobParameters": [
        {"enable_video_ingress": True, "enable_data_output": True,
         "orchestrators": {"include": ["https://o:1"], "exclude": []}},
    ],
    "JobRequestDetails": [{"stream_id": "s1"}],
    "LivepeerHeader": [
        {"capability": "c", "timeout_seconds": 30, "request": '{"stream_id":"s1"}',
         "parameters": '{"enable_video_egress":true,"orchestrators":{"include":["https://o:1"]}}',
         "id": "s1", "sender": "0xab", "sig": "0xcd", "capability_url": ""},
    ],
    "OrchestratorFilter": [{"include": ["https://o:1"], "exclude": ["https://o:2"]}],
    "ParamsUpdateEvent": [{"type": "params_update", "params": {"a": [1, {"b": None}]}}],
    "StartRequest": [
        {"stream_name": "cam", "stream_id": "1", "rtmp_output": "rtmp://x/y",
         "params": '{"prompt":"x","width":512}'},
    ],
    "StreamParams": [{"width": 640, "height": 360, "max_framerate": 24, "prompt": "x"}],
    "StreamStatus": [
        {"type": "status", "state": "ONLINE", "stream_id": "s1", "pipeline": "p",
         "start_time": 1, "timestamp": 2, "input_status": {"fps": 30, "frames": 9},
         "inference_status": {"fps": 30, "latency_ms": 12.5, "last_params": {"w": 1}}},
    ],
    "StreamStoppedEvent": [{"type": "stream_stopped", "reason": "stream ended"}],
    "StreamUrls": [{"stream_id": "s1", "whip_url": "https://g/w", "data_url": ""}],
    "TraceEvent": [{"type": "runner_send_first_processed_segment", "timestamp": 3}],
    "UnknownEvent": [{"type": "heartbeat", "timestamp": 3}],
    "WorkerHealth": [{"status": "LOADING", "pipeline_ready": False}],
    "WorkerStartRequest": [
        {"gateway_request_id": "s1", "control_url": f"{TRICKLE}-control",
         "events_url": f"{TRICKLE}-events", "subscribe_url": TRICKLE,
         "publish_url": f"{TRICKLE}-out", "data_url": f"{TRICKLE}-data",
         "params": {"width": 512, "height": 512, "max_framerate": 30, "prompt": "x"}},
        {"gateway_request_id": "s1", "control_url": f"{TRICKLE}-control",
         "events_url": f"{TRICKLE}-events", "params": '{"max_framerate": 12}'},
    ],
}  # fmt: skip

FIELD_NAMES = sorted(
    {name for cls in MODELS for name in (a.name for a in cls.__attrs_attrs__)}
    | {"type", "event", "queue_event_type", "keep", "params"}
)

keys = st.sampled_from(FIELD_NAMES) | st.text(max_size=6)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["", "OK", "status", "error", "-out", "https://h:1/x", "{}", "null", "[]"])
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=12,
)
not_json = st.sampled_from([float("nan"), float("inf"), b"raw", {1, 2}, (1, "a"), object()])

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _parse_or_refuse(model: type[WireModel], data: object) -> None:
    """The property: ParseError, or a model that reads back equal from its own JSON."""
    try:
        parsed = model.from_json(data)  # type: ignore[arg-type]
    except ParseError:
        return
    assert type(parsed) is model
    assert model.from_json(parsed.dumps()) == parsed
    assert model.from_json(parsed.to_json()) == parsed


def test_every_model_has_seeds():
    assert sorted(SEEDS) == [cls.__name__ for cls in MODELS]
    for cls in MODELS:
        for seed in SEEDS[cls.__name__]:
            assert cls.from_json(seed).to_json() is not None


@pytest.mark.parametrize("model", MODELS, ids=lambda cls: cls.__name__)
@FUZZ
@given(value=json_values)
def test_random_json_values(model, value):
    _parse_or_refuse(model, value)
    _parse_or_refuse(model, json.dumps(value))


@pytest.mark.parametrize("model", MODELS, ids=lambda cls: cls.__name__)
@FUZZ
@given(data=st.binary(max_size=64) | st.text(max_size=64))
def test_random_bytes_and_text(model, data):
    _parse_or_refuse(model, data)


@pytest.mark.parametrize("model", MODELS, ids=lambda cls: cls.__name__)
@FUZZ
@given(data=st.data())
def test_python_mappings_holding_non_json_values(model, data):
    seed = data.draw(st.sampled_from(SEEDS[model.__name__]))
    key = data.draw(keys)
    _parse_or_refuse(model, {**seed, key: data.draw(not_json)})


def _mutate(data: st.DataObject, value: Any, depth: int = 0) -> Any:
    """One random change somewhere in ``value`` (JSON text inside strings included)."""
    if isinstance(value, dict) and value and depth < 5 and data.draw(st.booleans()):
        doc = dict(value)
        key = data.draw(st.sampled_from(sorted(doc)))
        action = data.draw(st.sampled_from(["drop", "replace", "descend", "add"]))
        if action == "drop":
            del doc[key]
        elif action == "replace":
            doc[key] = data.draw(json_values)
        elif action == "descend":
            doc[key] = _mutate(data, doc[key], depth + 1)
        else:
            doc[data.draw(keys)] = data.draw(json_values)
        return doc
    if isinstance(value, list) and value and depth < 5 and data.draw(st.booleans()):
        items = list(value)
        index = data.draw(st.integers(0, len(items) - 1))
        items[index] = _mutate(data, items[index], depth + 1)
        return items
    if isinstance(value, str) and value.startswith(("{", "[")) and data.draw(st.booleans()):
        return json.dumps(_mutate(data, json.loads(value), depth + 1))
    return data.draw(json_values)


@pytest.mark.parametrize("model", MODELS, ids=lambda cls: cls.__name__)
@settings(FUZZ, max_examples=150)
@given(data=st.data())
def test_mutated_valid_documents(model, data):
    mutated = _mutate(data, data.draw(st.sampled_from(SEEDS[model.__name__])))
    _parse_or_refuse(model, mutated)
    _parse_or_refuse(model, json.dumps(mutated).encode())


def _header_parse_or_refuse(value: str) -> None:
    try:
        header = LivepeerHeader.from_header(value)
    except ParseError:
        return
    assert LivepeerHeader.from_header(header.to_header()) == header


@settings(FUZZ, max_examples=150)
@given(data=st.data())
def test_livepeer_header_values(data):
    raw = data.draw(
        st.text(max_size=40)
        | st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode())
        | json_values.map(lambda v: base64.b64encode(json.dumps(v).encode()).decode())
        | st.builds(
            lambda doc: base64.b64encode(json.dumps(doc).encode()).decode(),
            st.just(SEEDS["LivepeerHeader"][0]).map(lambda seed: _mutate(data, seed)),
        )
    )
    _header_parse_or_refuse(raw)
