"""Trickle over HTTPS: verification on by default, a trusted CA, or a self-signed certificate."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import pytest
import trustme

from byockit.protocol.errors import TrickleTLSError
from byockit.protocol.trickle import TricklePublisher, TrickleSubscriber, create_session
from byockit.testkit.trickle_server import TrickleServer

pytestmark = pytest.mark.usefixtures("no_leaks")

TIMEOUT = 15.0


@pytest.fixture(scope="module")
def certificate_authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_server(certificate_authority: trustme.CA) -> AsyncIterator[TrickleServer]:
    """A trickle server whose certificate no system CA vouches for."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate_authority.issue_cert("127.0.0.1").configure_cert(context)
    async with TrickleServer(ssl_context=context) as server:
        yield server


async def round_trip(url: str, verify_tls: bool | ssl.SSLContext) -> tuple[int, bytes]:
    async with (
        asyncio.timeout(TIMEOUT),
        TricklePublisher(url, verify_tls=verify_tls) as pub,
        TrickleSubscriber(url, start=0, verify_tls=verify_tls) as sub,
    ):
        await pub.write_segment(b"over tls")
        segment = await sub.next_segment()
        assert segment is not None
        return segment.seq, await segment.read()


async def test_verification_with_the_servers_ca_passes(
    tls_server: TrickleServer, certificate_authority: trustme.CA
) -> None:
    url = tls_server.create_channel("trusted")
    assert url.startswith("https://")
    trusting = ssl.create_default_context()
    certificate_authority.configure_trust(trusting)
    assert await round_trip(url, trusting) == (0, b"over tls")


async def test_a_self_signed_certificate_is_accepted_when_asked(
    tls_server: TrickleServer,
) -> None:
    url = tls_server.create_channel("insecure")
    assert await round_trip(url, verify_tls=False) == (0, b"over tls")


async def test_an_untrusted_certificate_fails_the_publisher_at_once(
    tls_server: TrickleServer,
) -> None:
    url = tls_server.create_channel("untrusted-pub")
    async with asyncio.timeout(TIMEOUT), TricklePublisher(url) as pub:
        with pytest.raises(TrickleTLSError, match="verify_tls=False"):
            await pub.write_segment(b"refused")
        with pytest.raises(TrickleTLSError):
            await pub.write_segment(b"still refused")


async def test_an_untrusted_certificate_fails_the_subscriber_at_once(
    tls_server: TrickleServer,
) -> None:
    url = tls_server.create_channel("untrusted-sub")
    async with asyncio.timeout(TIMEOUT), TrickleSubscriber(url, max_failures=100) as sub:
        with pytest.raises(TrickleTLSError, match="certificate verification failed"):
            await sub.next_segment()
        with pytest.raises(TrickleTLSError):
            await sub.next_segment()


async def test_a_shared_lenient_session_does_not_weaken_verification(
    tls_server: TrickleServer,
) -> None:
    url = tls_server.create_channel("shared")
    lenient = create_session(verify_tls=False)
    try:
        async with asyncio.timeout(TIMEOUT), TricklePublisher(url, session=lenient) as pub:
            with pytest.raises(TrickleTLSError):
                await pub.write_segment(b"refused")
        async with TricklePublisher(url, session=lenient, verify_tls=False) as pub:
            assert await pub.write_segment(b"accepted") == 0
    finally:
        await lenient.close()
