"""Every exception the client raises, so that an app can tell its failures apart.

A gateway that answered with an error (:class:`GatewayError`, with status,
body and URL) is not the same as one that could not be reached
(:class:`GatewayUnavailable`) or one that answered nonsense
(:class:`InvalidGatewayAnswer`); a stream that the gateway accepted but that
never came up, went silent or reported an error is a :class:`StreamFailed`.
All derive from :class:`ClientError` and so from
:class:`byockit.protocol.errors.ByockitError`.
"""

from __future__ import annotations

from collections.abc import Mapping

from byockit.protocol.errors import ByockitError


class ClientError(ByockitError):
    """Base class of the client's errors; ``url`` is the request's URL (``""`` if none)."""

    def __init__(self, message: str, *, url: str = "") -> None:
        self.url = url
        super().__init__(f"{message} ({url})" if url else message)


class GatewayError(ClientError):
    """The gateway answered with an error status; ``body`` is its answer (text, truncated)."""

    def __init__(self, status: int, body: str, *, url: str) -> None:
        self.status = status
        self.body = body
        super().__init__(f"HTTP {status}: {body[:200]!r}", url=url)


class GatewayUnavailable(ClientError):
    """No answer from the gateway (refused, reset, timed out) after every allowed try.

    ``__cause__`` holds the last transport failure.
    """


class GatewayTLSError(GatewayUnavailable):
    """The gateway's TLS certificate failed verification; never retried.

    Trust the gateway's CA with an ``ssl.SSLContext`` (``verify_tls=context``).
    """


class NoGatewayAvailable(GatewayUnavailable):
    """Every gateway failed to start the stream; ``failures`` says why, by gateway URL."""

    def __init__(self, failures: Mapping[str, ClientError]) -> None:
        self.failures = dict(failures)
        reasons = "; ".join(f"{url}: {error}" for url, error in self.failures.items())
        super().__init__(f"no gateway could start the stream ({reasons or 'none given'})")


class InvalidGatewayAnswer(ClientError):
    """The gateway answered 2xx but not with what the wire contract says; ``reason`` says how."""

    def __init__(self, reason: str, *, url: str) -> None:
        self.reason = reason
        super().__init__(f"invalid answer from the gateway: {reason}", url=url)


class StreamFailed(ClientError):
    """A started stream did not come up, went silent, reported an error, or disappeared.

    ``stream_id`` names it, ``reason`` says what was seen, ``status`` is the
    last status document the gateway gave (``None`` if it never gave one).
    """

    def __init__(
        self, stream_id: str, reason: str, *, status: Mapping[str, object] | None = None
    ) -> None:
        self.stream_id = stream_id
        self.reason = reason
        self.status = status
        super().__init__(f"stream {stream_id} failed: {reason}")
