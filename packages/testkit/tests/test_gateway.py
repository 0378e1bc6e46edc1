"""The fake gateway's request validation and routes, over real HTTP (PROTOCOL.md 5).

No worker runs here: a registration that points nowhere is enough for what a
client sees before (or without) a worker answering. Streams with a worker
are in test_gateway_worker.py.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from byockit.protocol.models import (
    CapabilityRegistration,
    JobParameters,
    JobRequestDetails,
    LivepeerHeader,
    OrchestratorFilter,
    StreamUrls,
)
from byockit.testkit.gateway import EXHAUSTED_ERROR, MAX_BODY_BYTES, FakeGateway
from byockit.testkit.orchestrator import FakeOrchestrator

CAPABILITY = "inverter"


def header(
    capability: str = CAPABILITY,
    *,
    stream_id: str | None = None,
    data: bool = False,
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
) -> dict[str, str]:
    value = LivepeerHeader(
        capability=capability,
        timeout_seconds=5,
        request=JobRequestDetails(stream_id=stream_id),
        parameters=JobParameters(
            enable_data_output=data,
            orchestrators=OrchestratorFilter(include=include, exclude=exclude),
        ),
    )
    return {"Livepeer": value.to_header()}


def raw_header(document: object) -> dict[str, str]:
    return {"Livepeer": base64.b64encode(json.dumps(document).encode()).decode()}


@pytest.fixture
async def orchestrator() -> AsyncIterator[FakeOrchestrator]:
    async with FakeOrchestrator() as orch:
        # Nothing listens there: every start fails once the gateway tries it.
        await orch.register(
            CapabilityRegistration(name=CAPABILITY, url="http://127.0.0.1:9", capacity=1)
        )
        yield orch


@pytest.fixture
async def gateway(orchestrator: FakeOrchestrator) -> AsyncIterator[FakeGateway]:
    async with FakeGateway([orchestrator]) as gw:
        yield gw


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


async def post(
    http: aiohttp.ClientSession, url: str, body: object, headers: dict[str, str]
) -> tuple[int, str]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with http.post(url, data=data, headers=headers) as resp:
        return resp.status, await resp.text()


async def start(
    http: aiohttp.ClientSession,
    gateway: FakeGateway,
    body: object = None,
    *,
    capability: str = CAPABILITY,
    data: bool = False,
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
) -> tuple[int, str]:
    headers = header(capability, data=data, include=include, exclude=exclude)
    return await post(http, f"{gateway.url}/process/stream/start", body or {}, headers)


async def test_start_answers_the_stream_urls_at_once(
    gateway: FakeGateway, http: aiohttp.ClientSession
) -> None:
    status, text = await start(http, gateway, {"stream_name": "cam", "stream_id": "abc"})
    assert status == 200
    urls = StreamUrls.from_json(text)
    assert urls.stream_id == "cam-abc"
    base = f"{gateway.url}/process/stream/cam-abc"
    assert (urls.update_url, urls.status_url, urls.stop_url) == (
        f"{base}/update",
        f"{base}/status",
        f"{base}/stop",
    )
    assert (urls.data_url, urls.whip_url, urls.whep_url, urls.rtmp_url) == ("", "", "", "")
    assert "cam-abc" in gateway.stream_ids


async def test_ids_are_made_from_the_name_or_at_random(
    gateway: FakeGateway, http: aiohttp.ClientSession
) -> None:
    ids = []
    for body in ({}, {}, {"stream_name": "cam"}, {"stream_id": "fixed"}):
        status, text = await start(http, gateway, body, data=True)
        assert status == 200
        urls = StreamUrls.from_json(text)
        assert urls.data_url.endswith(f"/process/stream/{urls.stream_id}/data")
        ids.append(urls.stream_id)
    assert ids[0] != ids[1]
    assert ids[2].startswith("cam-")
    assert ids[3] == "fixed"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"params": "[1, 2]"}, "invalid model params"),
        ({"params": "{not json"}, "invalid model params"),
        ({"params": {"a": 1}}, "invalid model params"),  # an object, not a JSON string
        ({"stream_name": "cam-out"}, "-out"),
        ({"stream_id": "x-out"}, "-out"),
        ({"stream_id": "a/b"}, "invalid stream id"),
        ({"stream_id": "a b"}, "invalid stream id"),
        ({"stream_id": 7}, "stream_id"),
        (b"{", "invalid JSON request body"),
        (b"[]", "invalid JSON request body"),
    ],
)
async def test_bad_start_bodies_get_400_with_a_reason(
    gateway: FakeGateway, http: aiohttp.ClientSession, body: object, reason: str
) -> None:
    status, text = await start(http, gateway, body)
    assert status == 400
    assert reason in text
    assert gateway.stream_ids == frozenset()


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing Livepeer header"),
        ({"Livepeer": "%%%"}, "base64"),
        (raw_header([]), "Livepeer header"),
        (
            raw_header({"request": "{}", "parameters": "{}", "timeout_seconds": 5}),
            "capability",
        ),
        (
            raw_header({"request": "{}", "parameters": "{}", "capability": CAPABILITY}),
            "timeout_seconds",
        ),
        (
            raw_header(
                {
                    "request": "{}",
                    "parameters": "{}",
                    "capability": CAPABILITY,
                    "timeout_seconds": 0,
                }
            ),
            "timeout_seconds",
        ),
        (
            raw_header(
                {"request": "", "parameters": "{}", "capability": CAPABILITY, "timeout_seconds": 5}
            ),
            "request",
        ),
        (
            raw_header(
                {"request": "{}", "parameters": {}, "capability": CAPABILITY, "timeout_seconds": 5}
            ),
            "parameters",
        ),
    ],
)
async def test_bad_livepeer_headers_get_400_with_a_reason(
    gateway: FakeGateway, http: aiohttp.ClientSession, headers: dict[str, str], reason: str
) -> None:
    status, text = await post(http, f"{gateway.url}/process/stream/start", {}, headers)
    assert status == 400
    assert reason in text


async def test_a_capability_nobody_offers_gets_400(
    gateway: FakeGateway, orchestrator: FakeOrchestrator, http: aiohttp.ClientSession
) -> None:
    status, text = await start(http, gateway, capability="nobody")
    assert (status, text) == (400, "No orchestrators found for capability nobody")
    status, _ = await start(http, gateway, exclude=(orchestrator.url,))
    assert status == 400
    status, _ = await start(http, gateway, include=("http://127.0.0.1:1",))
    assert status == 400
    status, _ = await start(http, gateway, include=(orchestrator.url,))
    assert status == 200


async def test_a_duplicate_stream_id_gets_400(
    gateway: FakeGateway, http: aiohttp.ClientSession
) -> None:
    assert (await start(http, gateway, {"stream_id": "same"}))[0] == 200
    status, text = await start(http, gateway, {"stream_id": "same"})
    assert (status, text) == (400, "stream already exists: same")


async def test_bodies_over_10_mib_get_413(
    gateway: FakeGateway, http: aiohttp.ClientSession
) -> None:
    huge = b'{"stream_id": "' + b"x" * MAX_BODY_BYTES + b'"}'
    status, _ = await start(http, gateway, huge)
    assert status == 413
    _, text = await start(http, gateway, {"stream_id": "s"})
    update = StreamUrls.from_json(text).update_url
    status, _ = await post(http, update, b"{" + b" " * MAX_BODY_BYTES + b"}", header())
    assert status == 413


async def test_unknown_streams_get_404(gateway: FakeGateway, http: aiohttp.ClientSession) -> None:
    base = f"{gateway.url}/process/stream/nope"
    assert (await post(http, f"{base}/update", {}, header()))[0] == 404
    assert (await post(http, f"{base}/stop", b"", {}))[0] == 404
    for route in ("status", "data"):
        async with http.get(f"{base}/{route}") as resp:
            assert (resp.status, await resp.text()) == (404, "Stream not found")


async def test_options_answers_204(gateway: FakeGateway, http: aiohttp.ClientSession) -> None:
    for path in ("/process/stream/", "/process/stream/start"):
        async with http.options(gateway.url + path) as resp:
            assert resp.status == 204


async def test_a_stream_no_orchestrator_can_run_ends_with_an_error_status(
    gateway: FakeGateway, http: aiohttp.ClientSession
) -> None:
    _, text = await start(http, gateway, {"stream_id": "s"}, data=True)
    urls = StreamUrls.from_json(text)
    with pytest.raises(LookupError):
        await gateway.stream("s")
    assert gateway.stream_ids == frozenset()
    async with http.get(urls.status_url) as resp:
        assert resp.status == 200
        status = await resp.json()
    assert status["error"]["error_message"] == EXHAUSTED_ERROR
    assert isinstance(status["error"]["error_time"], int)
    # The stream is gone: stop and update find nothing, the id may be used again.
    assert (await post(http, urls.stop_url, b"", {}))[0] == 404
    assert (await start(http, gateway, {"stream_id": "s"}))[0] == 200
