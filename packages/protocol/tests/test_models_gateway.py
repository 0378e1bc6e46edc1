"""The gateway's stream API: the Livepeer header, StartRequest and StreamUrls."""

from __future__ import annotations

import base64
import json

import pytest

from byockit.protocol.errors import ParseError
from byockit.protocol.models import (
    JobParameters,
    JobRequestDetails,
    LivepeerHeader,
    OrchestratorFilter,
    StartRequest,
    StreamUrls,
)

ORCH_A = "https://orch-a.example:8935"
ORCH_B = "https://orch-b.example:8935"

# PROTOCOL.md section 5: request "{}" on start; parameters holding the three switches and the
# orchestrator filter; capability; timeout_seconds.
START_HEADER_JSON = {
    "capability": "watercolor",
    "timeout_seconds": 30,
    "request": "{}",
    "parameters": json.dumps(
        {
            "enable_video_ingress": True,
            "enable_video_egress": True,
            "enable_data_output": False,
            "orchestrators": {"include": [ORCH_A], "exclude": [ORCH_B]},
        },
        separators=(",", ":"),
    ),
}


def _b64(doc) -> str:
    return base64.b64encode(json.dumps(doc).encode()).decode()


def test_start_header_round_trips_exactly():
    header = LivepeerHeader.from_header(_b64(START_HEADER_JSON))
    assert header == LivepeerHeader(
        capability="watercolor",
        timeout_seconds=30,
        request=JobRequestDetails(),
        parameters=JobParameters(
            enable_video_ingress=True,
            enable_video_egress=True,
            orchestrators=OrchestratorFilter(include=(ORCH_A,), exclude=(ORCH_B,)),
        ),
    )
    assert header.to_json() == START_HEADER_JSON
    assert json.loads(base64.b64decode(header.to_header(), validate=True)) == START_HEADER_JSON


def test_update_header_carries_the_stream_id():
    # PROTOCOL.md section 5: the update's request is {"stream_id": id}.
    doc = dict(START_HEADER_JSON, request='{"stream_id":"cam-7f3a"}')
    header = LivepeerHeader.from_header(_b64(doc))
    assert header.request.stream_id == "cam-7f3a"
    assert header.to_json() == doc


def test_header_as_the_gateway_forwards_it_keeps_its_keys():
    # Go marshals every JobRequest field; JobParameters with omitempty drops false switches.
    forwarded = {
        "id": "cam-7f3a",
        "request": "{}",
        "parameters": '{"orchestrators":{},"enable_video_ingress":true}',
        "capability": "watercolor",
        "capability_url": "",
        "sender": "0x9c2f1a3b5d7e4f60812a3b4c5d6e7f8091a2b3c4",
        "sig": "0x" + "ab" * 65,
        "timeout_seconds": 30,
    }
    header = LivepeerHeader.from_header(_b64(forwarded))
    assert (header.id, header.sender, header.sig) == (
        forwarded["id"], forwarded["sender"], forwarded["sig"],
    )  # fmt: skip
    assert header.extras == {"capability_url": ""}
    assert header.parameters == JobParameters(enable_video_ingress=True)
    assert LivepeerHeader.from_header(header.to_header()) == header


def test_null_request_and_parameters_read_as_empty_as_in_go():
    header = LivepeerHeader.from_json(dict(START_HEADER_JSON, request="null", parameters="null"))
    assert (header.request, header.parameters) == (JobRequestDetails(), JobParameters())
    assert header.to_json()["request"] == "{}"


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"timeout_seconds": ...}, "timeout_seconds", "missing"),
        ({"timeout_seconds": 0}, "timeout_seconds", "must be between 1 and"),
        ({"timeout_seconds": -5}, "timeout_seconds", "must be between 1 and"),
        ({"timeout_seconds": 30.5}, "timeout_seconds", "expected integer, found number 30.5"),
        ({"timeout_seconds": "30"}, "timeout_seconds", "expected integer, found string '30'"),
        ({"capability": ...}, "capability", "missing"),
        ({"capability": ""}, "capability", "must not be empty"),
        ({"request": ...}, "request", "missing"),
        ({"request": ""}, "request", "not valid JSON"),
        ({"request": {}}, "request", "expected a string holding JSON, found object"),
        ({"request": "[]"}, "request", "expected object, found array"),
        ({"request": '{"stream_id": 7}'}, "request.stream_id", "expected string, found integer"),
        ({"parameters": "{"}, "parameters", "not valid JSON"),
        ({"parameters": '{"enable_video_ingress": "true"}'}, "parameters.enable_video_ingress",
         "expected boolean, found string 'true'"),
        ({"parameters": '{"orchestrators": {"include": "https://o"}}'},
         "parameters.orchestrators.include", "expected array of strings, found string"),
        ({"parameters": '{"orchestrators": {"exclude": ["https://o", 1]}}'},
         "parameters.orchestrators.exclude[1]", "expected string, found integer 1"),
        ({"id": 12}, "id", "expected string, found integer 12"),
    ],
)  # fmt: skip
def test_header_errors_name_the_field(changes, field, reason):
    doc = dict(START_HEADER_JSON)
    for key, value in changes.items():
        if value is ...:
            del doc[key]
        else:
            doc[key] = value
    with pytest.raises(ParseError) as caught:
        LivepeerHeader.from_header(_b64(doc))
    assert caught.value.field == field
    assert reason in caught.value.reason


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("e30", "not standard base64"),  # "{}" without its padding
        ("e30=?", "not standard base64"),
        ("é30=", "not standard base64"),
        (base64.urlsafe_b64encode(b'{"a":"\xff\xfe>>"}').decode(), "not standard base64"),
        (base64.b64encode(b"\xff").decode(), "not UTF-8"),
        (base64.b64encode(b"[]").decode(), "expected a JSON object"),
        ("", "not valid JSON"),
    ],
)
def test_header_values_that_are_not_base64_json_objects_are_refused(value, reason):
    with pytest.raises(ParseError) as caught:
        LivepeerHeader.from_header(value)
    assert caught.value.field == ""
    assert reason in caught.value.reason


def test_a_header_built_in_python_is_validated():
    with pytest.raises(ParseError) as caught:
        LivepeerHeader(capability="x", timeout_seconds=0, request=JobRequestDetails(),
                       parameters=JobParameters())  # fmt: skip
    assert caught.value.field == "timeout_seconds"


# go-livepeer's StartRequest: every field a string; params a JSON string holding an object.
START_REQUEST = {
    "stream_name": "cam",
    "stream_id": "7f3a",
    "rtmp_output": "rtmp://live.example/app/key",
    "params": '{"prompt":"a watercolor cat","width":512,"height":512}',
}


def test_start_request_round_trips_exactly():
    request = StartRequest.from_json(json.dumps(START_REQUEST))
    assert request.params == {"prompt": "a watercolor cat", "width": 512, "height": 512}
    assert request.to_json() == START_REQUEST


@pytest.mark.parametrize("params", ["", "null", ...])
def test_start_request_without_params(params):
    doc = {"stream_name": "cam"} if params is ... else {"stream_name": "cam", "params": params}
    request = StartRequest.from_json(doc)
    assert request.params is None
    assert request.to_json() == {"stream_name": "cam", "stream_id": "", "rtmp_output": ""}
    assert StartRequest.from_json({}) == StartRequest()


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"stream_name": "cam-out"}, "stream_name", "must not end in '-out'"),
        ({"params": {"prompt": "x"}}, "params", "expected a string holding JSON, found object"),
        ({"params": "[1, 2]"}, "params", "expected object, found array"),
        ({"params": "prompt=x"}, "params", "not valid JSON"),
        ({"stream_id": 7}, "stream_id", "expected string, found integer 7"),
    ],
)
def test_start_request_errors_name_the_field(changes, field, reason):
    with pytest.raises(ParseError) as caught:
        StartRequest.from_json(dict(START_REQUEST, **changes))
    assert caught.value.field == field
    assert reason in caught.value.reason


def test_start_request_params_built_in_python_must_be_json():
    with pytest.raises(ParseError) as caught:
        StartRequest(params={"t": float("nan")})
    assert caught.value.field == "params.t"


# go-livepeer's answer with ingress and egress enabled, data output off.
STREAM_URLS = {
    "stream_id": "cam-7f3a",
    "whip_url": "https://gw.example/process/stream/cam-7f3a/whip",
    "whep_url": "https://gw.example:8889/cam-7f3a-b41c09d2-out/whep",
    "rtmp_url": "rtmp://localhost:1935/cam-7f3a",
    "rtmp_output_url": "rtmp://live.example/app/key,rtmp://localhost:1935/cam-7f3a-out,"
    "rtmp://localhost:1935/cam-7f3a-b41c09d2-out",
    "update_url": "https://gw.example/process/stream/cam-7f3a/update",
    "status_url": "https://gw.example/process/stream/cam-7f3a/status",
    "data_url": "",
    "stop_url": "https://gw.example/process/stream/cam-7f3a/stop",
}


def test_stream_urls_round_trip_exactly():
    urls = StreamUrls.from_json(json.dumps(STREAM_URLS).encode())
    assert urls.data_url == ""
    assert urls.to_json() == STREAM_URLS


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"stream_id": ...}, "stream_id", "missing"),
        ({"stream_id": ""}, "stream_id", "must not be empty"),
        ({"data_url": None}, "data_url", "expected string, found null"),
    ],
)
def test_stream_urls_errors_name_the_field(changes, field, reason):
    doc = dict(STREAM_URLS)
    for key, value in changes.items():
        if value is ...:
            del doc[key]
        else:
            doc[key] = value
    with pytest.raises(ParseError) as caught:
        StreamUrls.from_json(doc)
    assert (caught.value.field, caught.value.reason) == (field, reason)
