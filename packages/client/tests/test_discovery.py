"""Gateway discovery against real loopback servers: probing, ordering, discovery lists."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from byockit.client import InvalidGatewayAnswer, discover

Route = tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]


@contextlib.asynccontextmanager
async def server(*routes: Route) -> AsyncIterator[str]:
    app = web.Application()
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def gateway(delay: float = 0.0) -> Route:
    async def options(_: web.Request) -> web.Response:
        await asyncio.sleep(delay)
        return web.Response(status=204)

    return ("OPTIONS", "/process/stream/", options)


def listing(document: object) -> Route:
    async def handler(_: web.Request) -> web.Response:
        return web.json_response(document)

    return ("GET", "/gateways", handler)


async def test_discover_orders_healthy_by_speed_then_the_rest() -> None:
    async with (
        server(gateway(delay=0.3)) as slow,
        server(gateway()) as fast,
        server() as not_a_gateway,
    ):
        probes = await discover([not_a_gateway, slow, fast + "/", slow])
    assert [p.url for p in probes] == [fast, slow, not_a_gateway]
    assert [p.healthy for p in probes] == [True, True, False]
    assert probes[2].latency is None
    assert "HTTP 404" in (probes[2].error or "")


async def test_discover_reads_a_discovery_list() -> None:
    async with (
        server(gateway()) as one,
        server(gateway()) as two,
        server(listing([one, {"address": two}])) as registry,
    ):
        probes = await discover(discovery_url=registry + "/gateways", timeout=2.0)
    assert {p.url for p in probes} == {one, two}
    assert all(p.healthy for p in probes)


async def test_discover_reports_a_gateway_that_is_down() -> None:
    async with server() as gone:
        pass
    (probe,) = await discover([gone], timeout=2.0)
    assert not probe.healthy
    assert "cannot reach" in (probe.error or "")


@pytest.mark.parametrize(
    ("document", "reason"),
    [({"gateways": []}, "not a JSON list"), ([{"url": 1}], "entry 0 is not a gateway URL")],
)
async def test_a_bad_discovery_list_is_a_typed_error(document: object, reason: str) -> None:
    async with server(listing(document)) as registry:
        with pytest.raises(InvalidGatewayAnswer, match=reason):
            await discover(discovery_url=registry + "/gateways")


async def test_discover_needs_something_to_probe() -> None:
    with pytest.raises(ValueError, match="no gateway to probe"):
        await discover([])
    with pytest.raises(ValueError, match="gateway URL"):
        await discover(["gateway:8088"])
