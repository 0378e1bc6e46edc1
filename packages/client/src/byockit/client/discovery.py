"""Find usable gateways: probe each, healthy and fastest first.

:func:`discover` takes gateway URLs, or a discovery URL answering a JSON list
of them (strings, or objects with an ``address``, as Livepeer's discovery
webhooks answer), probes every gateway at once with ``OPTIONS
/process/stream/`` (go-livepeer answers 204 without touching any stream) and
returns the results best first. Hand the healthy ones to
:class:`~byockit.client.gateway.GatewayClient`, which fails over from one to
the next on a failed start::

    probes = await discover(["https://gw-a:8088", "https://gw-b:8088"])
    client = GatewayClient([probe.url for probe in probes if probe.healthy])
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Iterable
from typing import Final

import aiohttp
import attrs

from byockit.client.errors import ClientError, InvalidGatewayAnswer
from byockit.client.gateway import DEFAULT_TIMEOUT, RetryPolicy, gateway_base, send
from byockit.protocol.trickle.http import require_positive

PROBE_PATH: Final = "/process/stream/"


@attrs.frozen
class GatewayProbe:
    """What probing one gateway found: its round-trip time, or why it is unusable."""

    url: str
    latency: float | None
    """Seconds the probe took; ``None`` when it failed."""
    error: str | None = None

    @property
    def healthy(self) -> bool:
        return self.error is None


async def discover(
    urls: Iterable[str] = (),
    *,
    discovery_url: str | None = None,
    session: aiohttp.ClientSession | None = None,
    verify_tls: bool | ssl.SSLContext = True,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - a per-request deadline
) -> list[GatewayProbe]:
    """Probe ``urls`` (and those listed at ``discovery_url``); healthy by speed, then the rest.

    Raises ``ValueError`` for a malformed URL or when there is nothing to
    probe, and the client's errors when the discovery list cannot be had
    (fetching it is retried like any idempotent request).
    """
    require_positive(timeout=timeout)
    own_session = session is None
    http = session or aiohttp.ClientSession()
    try:
        candidates = [gateway_base(url) for url in urls]
        if discovery_url is not None:
            candidates += await fetch_gateway_list(
                http, discovery_url, verify_tls=verify_tls, timeout=timeout
            )
        candidates = list(dict.fromkeys(candidates))
        if not candidates:
            raise ValueError("no gateway to probe: give URLs or a discovery URL that lists some")
        probes = await asyncio.gather(
            *(_probe(http, url, verify_tls=verify_tls, timeout=timeout) for url in candidates)
        )
    finally:
        if own_session:
            await http.close()
    healthy = sorted((p for p in probes if p.latency is not None), key=lambda p: p.latency or 0)
    return healthy + [probe for probe in probes if not probe.healthy]


async def fetch_gateway_list(
    http: aiohttp.ClientSession,
    discovery_url: str,
    *,
    verify_tls: bool | ssl.SSLContext = True,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109
) -> list[str]:
    """The gateway URLs a discovery endpoint lists (strings or ``{"address": url}`` objects)."""
    gateway_base(discovery_url)  # the same URL checks as a gateway's
    reply = await send(
        http,
        "GET",
        discovery_url,
        verify_tls=verify_tls,
        timeout=timeout,
        retry=RetryPolicy(),
    )
    reply.raise_for_status()
    try:
        listed = json.loads(reply.body)
    except ValueError as exc:
        raise InvalidGatewayAnswer(f"discovery list is not JSON: {exc}", url=reply.url) from None
    if not isinstance(listed, list):
        raise InvalidGatewayAnswer("discovery answer is not a JSON list", url=reply.url)
    urls = []
    for index, item in enumerate(listed):
        address = item.get("address") if isinstance(item, dict) else item
        try:
            urls.append(gateway_base(address if isinstance(address, str) else ""))
        except ValueError:
            raise InvalidGatewayAnswer(
                f"discovery entry {index} is not a gateway URL (or an object with an "
                f"'address'): {item!r:.100}",
                url=reply.url,
            ) from None
    return urls


async def _probe(
    http: aiohttp.ClientSession,
    url: str,
    *,
    verify_tls: bool | ssl.SSLContext,
    timeout: float,  # noqa: ASYNC109
) -> GatewayProbe:
    began = time.monotonic()
    try:
        reply = await send(
            http, "OPTIONS", url + PROBE_PATH, verify_tls=verify_tls, timeout=timeout, retry=None
        )
    except ClientError as exc:
        return GatewayProbe(url, None, str(exc))
    if not 200 <= reply.status < 300:
        return GatewayProbe(url, None, f"OPTIONS {PROBE_PATH} answered HTTP {reply.status}")
    return GatewayProbe(url, time.monotonic() - began)
