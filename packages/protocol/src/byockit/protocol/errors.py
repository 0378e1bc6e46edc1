"""Every exception byockit.protocol raises, so callers can catch by kind.

The hierarchy is shallow on purpose: :class:`ByockitError` catches everything,
:class:`ParseError` is bad input from a peer, :class:`TrickleError` and its
subclasses are transport outcomes a caller may want to act on (a channel that
is gone is not the same as a server answering 500).
"""

from __future__ import annotations


class ByockitError(Exception):
    """Base class of all byockit errors."""


class ParseError(ByockitError, ValueError):
    """A message did not match the wire contract.

    ``field`` is a dotted path to the offending value (``""`` for the whole
    document) and ``reason`` says what was wrong with it.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        where = f"field {field!r}" if field else "document"
        super().__init__(f"{where}: {reason}")


class MediaError(ByockitError):
    """Media could not be encoded or decoded (bad settings, unusable input)."""


class TrickleError(ByockitError):
    """A trickle request failed."""

    def __init__(self, message: str, *, url: str = "") -> None:
        self.url = url
        super().__init__(f"{message} ({url})" if url else message)


class ChannelNotFoundError(TrickleError):
    """The server answered 404: the channel does not exist (or no longer does)."""


class StreamClosedError(TrickleError):
    """The channel has ended (``Lp-Trickle-Closed``) or the client was closed."""


class TrickleHTTPError(TrickleError):
    """The server answered with an unexpected status."""

    def __init__(self, status: int, body: str, *, url: str = "") -> None:
        self.status = status
        self.body = body
        super().__init__(f"HTTP {status}: {body[:200]!r}", url=url)


class TrickleTimeoutError(TrickleError):
    """No byte moved for longer than the idle timeout."""


class TooManyFailuresError(TrickleError):
    """A client gave up after its configured number of consecutive failures.

    ``__cause__`` holds the last failure.
    """


class TrickleTLSError(TrickleError):
    """The server's TLS certificate failed verification.

    Not retried: it will not fix itself. Trust the server's CA with an
    ``ssl.SSLContext``, or accept any certificate with ``verify_tls=False``.
    """
