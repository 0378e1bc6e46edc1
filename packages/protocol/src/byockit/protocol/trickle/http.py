"""The HTTP plumbing the trickle clients share: one pooled aiohttp session, TLS, timeouts.

Trickle requests stream for as long as a segment lasts and a preconnected
request may wait a long time for its peer, so no request here has a total
deadline: only a connect timeout and an idle timeout (no byte moved for that
long). Connections are kept alive and reused (keep-alive on, idle pooled
connections closed after a minute, as go-livepeer's clients do).
"""

from __future__ import annotations

import functools
import ssl
from typing import Final

import aiohttp

from byockit.protocol.errors import TrickleTLSError

DEFAULT_IDLE_TIMEOUT: Final = 60.0
"""Seconds without a byte moving before a streaming request fails."""
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
"""Seconds to establish a connection (TCP and TLS)."""
DEFAULT_KEEPALIVE_TIMEOUT: Final = 60.0
"""Seconds an idle pooled connection is kept for reuse."""


@functools.cache
def _verifying_context() -> ssl.SSLContext:
    # One shared object, so pooled connections are reused across clients.
    return ssl.create_default_context()


def request_ssl(verify_tls: bool | ssl.SSLContext) -> ssl.SSLContext | bool:
    """The ``ssl=`` argument for one aiohttp request.

    ``verify_tls``: ``True`` verifies against the system CAs, ``False`` accepts
    any certificate, an ``ssl.SSLContext`` verifies with that context.

    ``True`` becomes an explicit verifying context: aiohttp would otherwise
    fall back to the session's own setting, and a shared session created with
    verification off must not silently weaken a client that asked for it.
    """
    if verify_tls is True:
        return _verifying_context()
    return verify_tls


def client_timeout(
    *, idle_timeout: float | None, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
) -> aiohttp.ClientTimeout:
    """Idle and connect timeouts, never a total deadline (``idle_timeout=None``: none)."""
    return aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=idle_timeout)


def create_session(
    *,
    verify_tls: bool | ssl.SSLContext = True,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT,
) -> aiohttp.ClientSession:
    """A pooled session suited to trickle: keep-alive, idle timeouts, the given TLS policy.

    Must be called with an event loop running; the caller closes it.
    """
    require_positive(
        idle_timeout=idle_timeout,
        connect_timeout=connect_timeout,
        keepalive_timeout=keepalive_timeout,
    )
    connector = aiohttp.TCPConnector(
        ssl=request_ssl(verify_tls), keepalive_timeout=keepalive_timeout
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=client_timeout(idle_timeout=idle_timeout, connect_timeout=connect_timeout),
    )


def tls_error(exc: aiohttp.ClientConnectorCertificateError, url: str) -> TrickleTLSError:
    """The typed error for a certificate that failed verification."""
    return TrickleTLSError(
        f"TLS certificate verification failed: {exc.certificate_error}; trust the server's CA "
        "with an ssl.SSLContext or pass verify_tls=False to accept a self-signed certificate",
        url=url,
    )


def require_positive(**values: float) -> None:
    """Raise ``ValueError`` naming the first setting that is not a positive number."""
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")


def channel_base(channel_url: str) -> str:
    """The channel URL without a trailing slash; ``ValueError`` unless it is http(s)."""
    if not channel_url.startswith(("http://", "https://")):
        raise ValueError(f"a trickle channel URL must be http:// or https://: {channel_url!r}")
    return channel_url.rstrip("/")
