"""The server's decisions, apart from any I/O: routes, tokens, admission, session choice."""

from __future__ import annotations

import pytest

from byockit.protocol.errors import ParseError
from byockit.worker.server import (
    Endpoint,
    RequestRefused,
    check_admission,
    choose_stream,
    find_route,
    is_authorized,
    parse_json_object,
    processor_name,
)


@pytest.mark.parametrize(
    ("path", "endpoint"),
    [
        ("/stream/start", Endpoint.START),
        (
            "//stream/start",
            Endpoint.START,
        ),  # registered URL with a trailing slash + "/stream/start"
        ("/api/stream/start", Endpoint.START),
        ("//api//stream//params", Endpoint.PARAMS),
        ("/api/stream/status", Endpoint.STATUS),
        ("/stream/stop", Endpoint.STOP),
        ("/health", Endpoint.HEALTH),
        ("//version", Endpoint.VERSION),
        ("/hardware/info", Endpoint.HARDWARE_INFO),
        ("/hardware/stats", Endpoint.HARDWARE_STATS),
    ],
)
def test_paths_find_their_endpoint(path: str, endpoint: Endpoint) -> None:
    route = find_route(path)
    assert route is not None
    assert route.endpoint == endpoint
    assert route.stream == (
        endpoint in {Endpoint.START, Endpoint.PARAMS, Endpoint.STATUS, Endpoint.STOP}
    )


@pytest.mark.parametrize(
    "path",
    ["/", "/stream", "/stream/start/now", "/api/health", "/apistream/start", "/stream/Start"],
)
def test_other_paths_find_nothing(path: str) -> None:
    assert find_route(path) is None


@pytest.mark.parametrize(
    ("header", "token", "allowed"),
    [
        (None, None, True),
        ("Bearer anything", None, True),
        ("Bearer s3cret", "s3cret", True),
        ("bearer s3cret", "s3cret", True),
        ("  Bearer   s3cret ", "s3cret", True),
        (None, "s3cret", False),
        ("", "s3cret", False),
        ("s3cret", "s3cret", False),  # the orchestrator's own raw-secret form is not a Bearer token
        ("Basic s3cret", "s3cret", False),
        ("Bearer s3cre", "s3cret", False),
        ("Bearer s3cret2", "s3cret", False),
        ("Bearer ", "s3cret", False),
    ],
)
def test_bearer_token(header: str | None, token: str | None, allowed: bool) -> None:
    assert is_authorized(header, token) is allowed


def test_admission_refuses_a_running_stream_and_beyond_capacity() -> None:
    check_admission([], "a", capacity=1)
    check_admission(["a"], "b", capacity=2)
    with pytest.raises(RequestRefused, match="'a' is already running") as running:
        check_admission(["a"], "a", capacity=5)
    with pytest.raises(RequestRefused, match="at capacity: 2 of 2") as full:
        check_admission(["a", "b"], "c", capacity=2)
    assert running.value.status == full.value.status == 409


def test_choosing_the_stream_a_request_means() -> None:
    assert choose_stream(["a"], None) == "a"
    assert choose_stream(["a", "b"], "b") == "b"
    refusals = []
    for running, requested in [([], None), ([], "a"), (["a"], "b"), (["a", "b"], None)]:
        with pytest.raises(RequestRefused) as refused:
            choose_stream(running, requested)
        refusals.append((refused.value.status, refused.value.message))
    assert refusals == [
        (404, "no stream is running"),
        (404, "no stream 'a' is running"),
        (404, "no stream 'b' is running"),
        (400, "2 streams are running: say which in X-Stream-Id"),
    ]


def test_refusal_body_names_the_field() -> None:
    assert RequestRefused(400, "bad", "params.width").to_json() == {
        "error": "bad",
        "field": "params.width",
    }
    assert RequestRefused(409, "full").to_json() == {"error": "full"}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"[1]", "expected a JSON object, found list"),
        (b'{"x": NaN}', "NaN is not JSON"),
        (b"\xff{}", "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    ],
)
def test_params_body_must_be_a_json_object(body: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        parse_json_object(body)


def test_params_body_object() -> None:
    assert parse_json_object(b'{"prompt": "cat", "strength": 0.5}') == {
        "prompt": "cat",
        "strength": 0.5,
    }


def _invert(frame: object) -> object:
    return frame


class _Effect:
    pass


def test_processor_names() -> None:
    here = __name__
    assert processor_name(_invert) == f"{here}._invert"
    assert processor_name(_Effect) == f"{here}._Effect"
    assert processor_name(_Effect()) == f"{here}._Effect"
