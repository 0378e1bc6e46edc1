"""The gateway API client: start BYOC streams on a Livepeer gateway (PROTOCOL.md section 5).

:class:`GatewayClient` sends ``POST /process/stream/start`` with the
``Livepeer`` header and a ``StartRequest`` built by :mod:`byockit.protocol`,
and hands back a :class:`~byockit.client.session.StreamSession` holding the
URLs the gateway returned; every later call uses those URLs, never rebuilt
ones (the routes have moved before).

Every request has a timeout. Idempotent requests (status, stop, reading
the data stream, fetching a discovery list) are retried with exponential
backoff on transport failures and on 502/503/504; ``start`` is never
retried against the same gateway (a gateway that timed out may have started
the stream after all), but with several gateways a failed start moves on to
the next one, and the session says which gateway took it. A 4xx answer to a
start is the caller's mistake and is raised at once, as another gateway
would refuse it too. TLS certificates are verified unless told otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Final

import aiohttp
import attrs

from byockit.client.errors import (
    ClientError,
    GatewayError,
    GatewayTLSError,
    GatewayUnavailable,
    InvalidGatewayAnswer,
    NoGatewayAvailable,
)
from byockit.client.session import StreamSession
from byockit.protocol.errors import ParseError
from byockit.protocol.lifecycle import Closeable
from byockit.protocol.models import (
    JobParameters,
    JobRequestDetails,
    JSONValue,
    LivepeerHeader,
    OrchestratorFilter,
    StartRequest,
    StreamUrls,
)
from byockit.protocol.trickle.http import request_ssl, require_positive

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT: Final = 10.0
"""Seconds a control request (start, status, stop, probe) may take."""
DEFAULT_RETRIES: Final = 3
"""Extra tries of an idempotent request after a transient failure."""
DEFAULT_BACKOFF: Final = 0.5
"""Seconds before the first retry; doubled for each further one."""
MAX_BACKOFF: Final = 8.0
MAX_ANSWER_BYTES: Final = 1024 * 1024
"""Largest answer body read; longer successful answers are refused, error bodies truncated."""
RETRYABLE_STATUSES: Final = frozenset({502, 503, 504})
"""Answers that say "try again": a proxy or an overloaded gateway, not a verdict."""
_GATEWAY_ROUTES: Final = (
    "whip_url",
    "whep_url",
    "update_url",
    "status_url",
    "data_url",
    "stop_url",
)
"""Answer URLs resolved against the start URL, in case a gateway gives them relative."""
START_PATH: Final = "/process/stream/start"
"""The one route the client builds itself; everything else comes from the start answer."""


@attrs.frozen
class GatewayReply:
    """A gateway's answer: status and body text (an update relays the worker's answer)."""

    status: int
    body: str
    url: str

    def raise_for_status(self) -> None:
        """:class:`GatewayError` unless the status is 2xx."""
        if not 200 <= self.status < 300:
            raise GatewayError(self.status, self.body, url=self.url)


@attrs.frozen
class RetryPolicy:
    """How often and how patiently an idempotent request is retried."""

    retries: int = DEFAULT_RETRIES
    backoff: float = DEFAULT_BACKOFF

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        return float(min(MAX_BACKOFF, self.backoff * 2**attempt))

    @staticmethod
    def retries_status(status: int) -> bool:
        """Whether an answer with ``status`` is worth trying again."""
        return status in RETRYABLE_STATUSES


@attrs.frozen
class StartSettings:
    """Everything a start sends, kept so that a stream can be started again the same way.

    Building it checks every value as the wire contract does (raising
    :class:`~byockit.protocol.errors.ParseError`), before anything is sent.
    """

    capability: str
    params: Mapping[str, JSONValue] | None
    stream_name: str
    stream_id: str
    video_ingress: bool
    video_egress: bool
    data_output: bool
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    timeout_seconds: int

    def __attrs_post_init__(self) -> None:
        self.header(None)
        self.start_body()

    def header(self, stream_id: str | None) -> str:
        """The ``Livepeer`` header: ``request`` is ``{}`` on start, names the stream after."""
        return LivepeerHeader(
            capability=self.capability,
            timeout_seconds=self.timeout_seconds,
            request=JobRequestDetails(stream_id=stream_id),
            parameters=JobParameters(
                enable_video_ingress=self.video_ingress,
                enable_video_egress=self.video_egress,
                enable_data_output=self.data_output,
                orchestrators=OrchestratorFilter(include=self.include, exclude=self.exclude),
            ),
        ).to_header()

    def start_body(self) -> str:
        return StartRequest(
            stream_name=self.stream_name, stream_id=self.stream_id, params=self.params
        ).dumps()


def gateway_base(url: str) -> str:
    """The gateway URL without a trailing slash; ``ValueError`` unless http(s) with a host."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"a gateway URL must be http:// or https:// with a host: {url!r}")
    return url.rstrip("/")


async def send(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    verify_tls: bool | ssl.SSLContext,
    timeout: float,  # noqa: ASYNC109 - every request carries its own deadline
    retry: RetryPolicy | None,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
) -> GatewayReply:
    """One request, retried per ``retry`` (``None``: tried once) on transient failures.

    Returns the answer whatever its status (the caller judges it) once it is
    final: a 502/503/504 is retried while tries remain. Raises
    :class:`GatewayUnavailable` when no answer came, :class:`GatewayTLSError`
    at once for a bad certificate, :class:`InvalidGatewayAnswer` for a 2xx
    body over :data:`MAX_ANSWER_BYTES`.
    """
    attempt = 0
    while True:
        try:
            reply = await _send_once(
                http,
                method,
                url,
                verify_tls=verify_tls,
                timeout=timeout,
                headers=headers,
                body=body,
            )
        except GatewayTLSError:
            raise
        except GatewayUnavailable as exc:
            if retry is None or attempt >= retry.retries:
                raise
            logger.info("retrying %s %s after: %s", method, url, exc)
        else:
            if retry is None or not retry.retries_status(reply.status) or attempt >= retry.retries:
                return reply
            logger.info("retrying %s %s after HTTP %d", method, url, reply.status)
        await asyncio.sleep(retry.delay(attempt))
        attempt += 1


async def _send_once(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    verify_tls: bool | ssl.SSLContext,
    timeout: float,  # noqa: ASYNC109
    headers: Mapping[str, str] | None,
    body: bytes | None,
) -> GatewayReply:
    try:
        async with http.request(
            method,
            url,
            headers=headers,
            data=body,
            ssl=request_ssl(verify_tls),
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            data = await resp.content.read(MAX_ANSWER_BYTES + 1)
            status = resp.status
    except aiohttp.ClientConnectorCertificateError as exc:
        raise GatewayTLSError(
            f"TLS certificate verification failed: {exc.certificate_error}; trust the "
            "gateway's CA with verify_tls=ssl_context",
            url=url,
        ) from exc
    except TimeoutError as exc:
        raise GatewayUnavailable(f"no answer within {timeout} s", url=url) from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise GatewayUnavailable(f"cannot reach the gateway: {exc!r}", url=url) from exc
    if len(data) > MAX_ANSWER_BYTES and 200 <= status < 300:
        raise InvalidGatewayAnswer(f"answer longer than {MAX_ANSWER_BYTES} bytes", url=url)
    return GatewayReply(status, data[:MAX_ANSWER_BYTES].decode(errors="replace"), url)


class GatewayClient(Closeable):
    """Starts BYOC streams on one gateway, or on the first of several that takes them.

    ``url``: a gateway's base URL (``https://gateway:8088``), or several in
    order of preference (see :func:`byockit.client.discovery.discover` to
    order them by health and speed). ``session``: an aiohttp session to use
    (the caller closes it); by default the client makes one and closes it in
    :meth:`close`. ``verify_tls``: ``True`` verifies certificates against the
    system CAs, an ``ssl.SSLContext`` verifies with it, ``False`` accepts any
    (only for a gateway with a self-signed certificate you trust). ``timeout``
    bounds each control request; ``retries`` and ``backoff`` shape the retries
    of idempotent ones.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        session: aiohttp.ClientSession | None = None,
        verify_tls: bool | ssl.SSLContext = True,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
    ) -> None:
        urls = (url,) if isinstance(url, str) else tuple(url)
        if not urls:
            raise ValueError("give at least one gateway URL")
        require_positive(timeout=timeout, backoff=backoff)
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, got {retries!r}")
        self.urls: Final = tuple(gateway_base(item) for item in urls)
        self.verify_tls: Final = verify_tls
        self.timeout: Final = timeout
        self.retry: Final = RetryPolicy(retries, backoff)
        self._session = session
        self._owns_session = session is None

    async def close(self) -> None:
        """Close the HTTP session if the client made it. Streams keep running on the gateway."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def http(self) -> aiohttp.ClientSession:
        """The aiohttp session requests go through (made on first use)."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        *,
        idempotent: bool,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - a per-request deadline
    ) -> GatewayReply:
        """Send one request with the client's TLS policy and timeout (or ``timeout``).

        ``idempotent`` requests are retried per the client's policy; see :func:`send`.
        """
        return await send(
            self.http,
            method,
            url,
            verify_tls=self.verify_tls,
            timeout=timeout or self.timeout,
            retry=self.retry if idempotent else None,
            headers=headers,
            body=body,
        )

    async def start(
        self,
        capability: str,
        params: Mapping[str, JSONValue] | None = None,
        *,
        stream_name: str = "",
        stream_id: str = "",
        video_ingress: bool = True,
        video_egress: bool = True,
        data_output: bool = False,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        timeout_seconds: int = 30,
    ) -> StreamSession:
        """Start a stream of ``capability`` with ``params`` (the pipeline's parameters).

        The gateway answers before it has found an orchestrator, so a started
        stream may still fail: watch it with :meth:`StreamSession.watch`.
        ``stream_name``/``stream_id`` shape the stream id the gateway makes;
        the three switches pick the channels; ``include``/``exclude`` are
        orchestrator URLs (exact matches); ``timeout_seconds`` bounds the
        gateway's and orchestrator's calls to the worker.

        Raises :class:`~byockit.protocol.errors.ParseError` for a value the
        contract forbids (nothing is sent), :class:`GatewayError` for a 4xx
        answer, :class:`NoGatewayAvailable` when every gateway failed.
        """
        settings = StartSettings(
            capability=capability,
            params=params,
            stream_name=stream_name,
            stream_id=stream_id,
            video_ingress=video_ingress,
            video_egress=video_egress,
            data_output=data_output,
            include=tuple(include),
            exclude=tuple(exclude),
            timeout_seconds=timeout_seconds,
        )
        gateway_url, urls = await self.start_urls(settings)
        return StreamSession(self, settings, gateway_url, urls)

    async def start_urls(self, settings: StartSettings) -> tuple[str, StreamUrls]:
        """Start per ``settings`` on the first gateway that takes it: (its URL, its answer)."""
        failures: dict[str, ClientError] = {}
        for base in self.urls:
            try:
                return base, await self._start_on(base, settings)
            except GatewayError as exc:
                if exc.status < 500:
                    raise
                failures[base] = exc
            except (GatewayUnavailable, InvalidGatewayAnswer) as exc:
                failures[base] = exc
            logger.warning("gateway %s could not start the stream: %s", base, failures[base])
        raise NoGatewayAvailable(failures)

    async def _start_on(self, base: str, settings: StartSettings) -> StreamUrls:
        url = base + START_PATH
        reply = await self.request(
            "POST",
            url,
            idempotent=False,
            headers={"Livepeer": settings.header(None), "Content-Type": "application/json"},
            body=settings.start_body().encode(),
        )
        reply.raise_for_status()
        try:
            answer = StreamUrls.from_json(reply.body)
        except ParseError as exc:
            raise InvalidGatewayAnswer(f"start answer: {exc}", url=url) from None
        resolved = {
            name: urllib.parse.urljoin(url, getattr(answer, name))
            for name in _GATEWAY_ROUTES
            if getattr(answer, name)
        }
        return attrs.evolve(answer, **resolved)
