"""The parsing boundary every model shares: input forms, strict JSON, extras, nulls."""

from __future__ import annotations

import json

import pytest

from byockit.protocol.errors import ParseError
from byockit.protocol.models import (
    InputStatus,
    StreamParams,
    StreamStatus,
    StreamUrls,
    WorkerHealth,
)

HEALTH = {"status": "OK"}


@pytest.mark.parametrize(
    "data",
    [
        json.dumps(HEALTH),
        json.dumps(HEALTH).encode(),
        bytearray(json.dumps(HEALTH).encode()),
        HEALTH,
        ' \n{"status":"OK"}\t',
    ],
    ids=["text", "bytes", "bytearray", "mapping", "whitespace"],
)
def test_every_input_form_parses_the_same(data):
    assert WorkerHealth.from_json(data) == WorkerHealth(status="OK")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        ("{", "not valid JSON"),
        ('{"status": "OK"} x', "not valid JSON"),
        ("[]", "expected a JSON object, found array"),
        ("null", "expected a JSON object, found null"),
        ('"OK"', "expected a JSON object, found string 'OK'"),
        ('{"status": "OK", "x": NaN}', "NaN is not JSON"),
        ('{"status": "OK", "x": -Infinity}', "-Infinity is not JSON"),
        ('{"status": "OK", "x": 1e999}', "out of range"),
        ('{"status": "OK", "x": ' + "1" * 5000 + "}", "not valid JSON"),
        ('{"status": "OK", "x": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested deeper"),
        ('{"status": "OK", "x": ' + "[" * 150 + "]" * 150 + "}", "nested deeper"),
        (["status"], "expected a JSON object, found array"),
        (42, "expected a JSON object, found integer 42"),
    ],
)
def test_documents_that_are_not_json_objects_are_refused(data, reason):
    with pytest.raises(ParseError) as caught:
        WorkerHealth.from_json(data)
    assert reason in caught.value.reason


@pytest.mark.parametrize(
    ("doc", "field", "reason"),
    [
        ({"status": "OK", 1: "x"}, "", "object key 1 is not a string"),
        ({"status": "OK", "x": float("nan")}, "x", "expected a finite number, found nan"),
        ({"status": "OK", "x": {"y": {1, 2}}}, "x.y", "not a JSON value: set"),
        ({"status": "OK", "x": [1, b"raw"]}, "x[1]", "not a JSON value: bytes"),
        ({"status": "OK", "x": 10**400}, "x", "number out of range"),
    ],
)
def test_decoded_mappings_are_checked_for_json_values(doc, field, reason):
    with pytest.raises(ParseError) as caught:
        WorkerHealth.from_json(doc)
    assert (caught.value.field, caught.value.reason) == (field, reason)


def test_unknown_keys_are_kept_and_written_back():
    doc = {"status": "IDLE", "pipeline_ready": True, "additional_info": {"gpu": [0, 1]}}
    health = WorkerHealth.from_json(doc)
    assert health.extras == {"pipeline_ready": True, "additional_info": {"gpu": [0, 1]}}
    assert health.to_json() == doc


def test_parsed_extras_are_a_copy_of_the_input():
    doc = {"status": "OK", "info": {"n": 1}}
    health = WorkerHealth.from_json(doc)
    doc["info"]["n"] = 2  # type: ignore[index]
    assert health.extras == {"info": {"n": 1}}


@pytest.mark.parametrize(
    ("extras", "field", "reason"),
    [
        ({"status": "OK"}, "status", "is a field of this message"),
        ({"x": float("inf")}, "x", "expected a finite number"),
        ({"x": object()}, "x", "not a JSON value: object"),
    ],
)
def test_extras_given_in_python_must_be_json_and_not_shadow_fields(extras, field, reason):
    with pytest.raises(ParseError) as caught:
        WorkerHealth(status="OK", extras=extras)
    assert caught.value.field == field
    assert reason in caught.value.reason


def test_extras_cannot_shadow_a_fixed_type():
    with pytest.raises(ParseError) as caught:
        StreamStatus(state="ONLINE", extras={"type": "error"})
    assert caught.value.field == "type"


def test_null_means_absent_for_optional_fields_only():
    params = StreamParams.from_json({"width": None, "height": None, "max_framerate": None})
    assert params == StreamParams()
    assert params.to_json() == {}
    with pytest.raises(ParseError) as caught:
        StreamUrls.from_json({"stream_id": None})
    assert (caught.value.field, caught.value.reason) == ("stream_id", "expected string, found null")


@pytest.mark.parametrize(
    ("value", "found"),
    [
        ("30", "string '30'"),
        (30.0, "number 30.0"),
        (True, "boolean true"),
        ([30], "array"),
        ({"fps": 30}, "object"),
    ],
)
def test_integers_are_never_coerced(value, found):
    with pytest.raises(ParseError) as caught:
        StreamParams.from_json({"max_framerate": value})
    assert caught.value.field == "max_framerate"
    assert caught.value.reason == f"expected integer, found {found}"


def test_numbers_accept_integers_and_keep_them():
    status = InputStatus.from_json({"fps": 0})
    assert status.fps == 0
    assert status.dumps() == '{"fps":0}'


def test_integers_must_fit_in_64_bits():
    with pytest.raises(ParseError) as caught:
        StreamParams.from_json({"max_framerate": 2**64})
    assert caught.value.field == "max_framerate"
    assert "does not fit in 64 bits" in caught.value.reason


def test_dumps_is_compact_ascii_json():
    health = WorkerHealth.from_json({"status": "OK", "note": "caf\u00e9 \ud800"})
    text = health.dumps()
    assert text == '{"status":"OK","note":"caf\\u00e9 \\ud800"}'
    assert WorkerHealth.from_json(text) == health


def test_parse_error_message_names_the_field():
    with pytest.raises(ParseError, match=r"field 'status': must be one of"):
        WorkerHealth.from_json({"status": "READY"})
