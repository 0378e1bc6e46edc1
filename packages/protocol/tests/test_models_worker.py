"""What an orchestrator sends a worker: start body, params, control messages, health."""

from __future__ import annotations

import json

import pytest

from byockit.protocol.errors import ParseError
from byockit.protocol.models import (
    ControlMessage,
    HealthStatus,
    StreamParams,
    WorkerHealth,
    WorkerStartRequest,
)

TRICKLE = "https://172.17.0.1:8935/ai/trickle/cam-7f3a"

# go-livepeer builds this body as a Go map (keys come out sorted), with every channel enabled
# and the gateway's {"params": ...} merged in.
GO_START_BODY = (
    "{"
    f'"control_url":"{TRICKLE}-control",'
    f'"data_url":"{TRICKLE}-data",'
    f'"events_url":"{TRICKLE}-events",'
    '"gateway_request_id":"cam-7f3a",'
    '"params":{"height":512,"max_framerate":30,"prompt":"a watercolor cat","strength":0.6,'
    '"width":512},'
    f'"publish_url":"{TRICKLE}-out",'
    f'"subscribe_url":"{TRICKLE}"'
    "}"
)


def test_go_livepeer_start_body_round_trips():
    request = WorkerStartRequest.from_json(GO_START_BODY)
    assert request.stream_id == "cam-7f3a"
    assert request.subscribe_url == TRICKLE
    assert request.publish_url == f"{TRICKLE}-out"
    assert request.params == StreamParams(
        width=512, height=512, max_framerate=30,
        extras={"prompt": "a watercolor cat", "strength": 0.6},
    )  # fmt: skip
    assert request.to_json() == json.loads(GO_START_BODY)


def test_start_body_with_only_the_required_channels_and_null_params():
    body = {
        "gateway_request_id": "s1",
        "control_url": f"{TRICKLE}-control",
        "events_url": f"{TRICKLE}-events",
        "params": None,
    }
    request = WorkerStartRequest.from_json(body)
    assert (request.subscribe_url, request.publish_url, request.data_url) == (None, None, None)
    assert request.params is None
    assert request.to_json() == {key: body[key] for key in body if key != "params"}


def test_start_body_params_may_be_a_json_string_and_extra_keys_are_kept():
    body = json.loads(GO_START_BODY)
    body["params"] = json.dumps(body["params"])
    body["capability"] = "my-capability"
    request = WorkerStartRequest.from_json(body)
    assert request.params == WorkerStartRequest.from_json(GO_START_BODY).params
    assert request.extras == {"capability": "my-capability"}
    assert request.to_json()["params"] == json.loads(GO_START_BODY)["params"]


def _start_body(**changes):
    body = json.loads(GO_START_BODY)
    for key, value in changes.items():
        if value is ...:
            del body[key]
        else:
            body[key] = value
    return body


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"gateway_request_id": ...}, "gateway_request_id", "missing"),
        ({"events_url": ...}, "events_url", "missing"),
        ({"gateway_request_id": ""}, "gateway_request_id", "must not be empty"),
        ({"gateway_request_id": 7}, "gateway_request_id", "expected string, found integer 7"),
        ({"control_url": "/ai/trickle/x"}, "control_url", "expected an http(s) URL with a host"),
        ({"subscribe_url": "ftp://h/x"}, "subscribe_url", "expected an http(s) URL with a host"),
        ({"publish_url": "https://h:99999/x"}, "publish_url", "not a valid URL"),
        ({"data_url": False}, "data_url", "expected string, found boolean false"),
        ({"params": []}, "params", "expected object, found array"),
        ({"params": "[1]"}, "params", "expected object, found array"),
        ({"params": "{oops"}, "params", "not valid JSON"),
        ({"params": {"width": 512}}, "params.height", "missing: width and height come as a pair"),
        ({"params": {"height": 512}}, "params.width", "missing: width and height come as a pair"),
        ({"params": {"width": 0, "height": 512}}, "params.width", "must be between 1 and 8192"),
        ({"params": {"width": 9000, "height": 9}}, "params.width", "must be between 1 and 8192"),
        ({"params": {"max_framerate": 0}}, "params.max_framerate", "must be between 1 and 60"),
        ({"params": {"max_framerate": 61}}, "params.max_framerate", "must be between 1 and 60"),
        ({"params": '{"max_framerate": 75}'}, "params.max_framerate", "must be between 1 and 60"),
        ({"params": {"width": "512", "height": 512}}, "params.width", "expected integer"),
    ],
)
def test_start_body_errors_name_the_field(changes, field, reason):
    with pytest.raises(ParseError) as caught:
        WorkerStartRequest.from_json(_start_body(**changes))
    assert caught.value.field == field
    assert reason in caught.value.reason


def test_params_update_body_keeps_the_processors_own_keys():
    body = {"prompt": "neon city", "seed": 42, "controlnets": [{"enabled": True}]}
    params = StreamParams.from_json(body)
    assert (params.width, params.height, params.max_framerate) == (None, None, None)
    assert params.extras == body
    assert params.to_json() == body


def test_params_built_in_python_are_validated():
    with pytest.raises(ParseError) as caught:
        StreamParams(width=640)
    assert caught.value.field == "height"
    with pytest.raises(ParseError) as caught:
        StreamParams(max_framerate=120)
    assert caught.value.field == "max_framerate"


# PROTOCOL.md section 3: the control channel's keepalive, exactly.
KEEPALIVE_TEXT = '{"keep":"alive"}'


def test_control_keepalive_round_trips_exactly():
    message = ControlMessage.from_json(KEEPALIVE_TEXT)
    assert message.is_keepalive
    assert message.dumps() == KEEPALIVE_TEXT


def test_control_message_after_an_update_is_the_raw_update_body():
    message = ControlMessage.from_json(b'{"prompt":"neon city","width":768,"height":432}')
    assert not message.is_keepalive
    assert message.params == StreamParams(width=768, height=432, extras={"prompt": "neon city"})
    assert message.to_json() == {"width": 768, "height": 432, "prompt": "neon city"}


def test_control_message_before_any_update_unwraps_the_start_params():
    # go-livepeer replays the start body's {"params": ...} when its control publisher starts.
    message = ControlMessage.from_json('{"params":{"prompt":"a cat","max_framerate":24}}')
    assert message.params == StreamParams(max_framerate=24, extras={"prompt": "a cat"})
    assert ControlMessage.from_json('{"params":null}').params == StreamParams()


@pytest.mark.parametrize(
    "params",
    [
        StreamParams(extras={"keep": "alive"}),
        StreamParams(extras={"params": {"nested": 1}}),
        StreamParams(extras={"params": None}),
    ],
)
def test_control_params_that_look_like_a_keepalive_or_wrapper_survive(params):
    message = ControlMessage(params=params)
    assert ControlMessage.from_json(message.dumps()) == message


def test_control_message_errors_name_the_param():
    with pytest.raises(ParseError) as caught:
        ControlMessage.from_json('{"params":{"max_framerate":0}}')
    assert caught.value.field == "params.max_framerate"
    with pytest.raises(ParseError) as caught:
        ControlMessage(params=StreamParams(), extras={"x": 1})
    assert caught.value.field == "extras"


# PROTOCOL.md section 2: {"status": "LOADING" | "IDLE" | "OK" | "ERROR"}.
@pytest.mark.parametrize("text", [f'{{"status":"{value}"}}' for value in HealthStatus])
def test_health_documents_round_trip_exactly(text):
    health = WorkerHealth.from_json(text)
    assert HealthStatus(health.status) == health.status
    assert health.dumps() == text


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({}, "missing"),
        ({"status": "ok"}, "must be one of 'LOADING', 'IDLE', 'OK', 'ERROR', found 'ok'"),
        ({"status": 200}, "expected string, found integer 200"),
    ],
)
def test_health_errors_name_the_status(doc, reason):
    with pytest.raises(ParseError) as caught:
        WorkerHealth.from_json(doc)
    assert (caught.value.field, caught.value.reason) == ("status", reason)


def test_health_built_in_python_is_validated():
    assert WorkerHealth(status=HealthStatus.LOADING).to_json() == {"status": "LOADING"}
    with pytest.raises(ParseError):
        WorkerHealth(status="READY")
