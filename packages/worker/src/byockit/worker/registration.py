"""Registering the worker's capability with an orchestrator (PROTOCOL.md section 4).

An orchestrator keeps registrations in memory only: it forgets them when it
restarts, and drops one when its worker answers 401. So a :class:`Registrar`
registers at start-up, retries with a growing pause while the orchestrator
cannot be reached or refuses, re-registers periodically, and unregisters on a
clean shutdown.

A re-registration resets the orchestrator's count of streams in use, and the
orchestrator then offers the worker's whole capacity to gateways again. So
periodic re-registration waits until the worker is idle (``is_idle``): a
stream that outlives its orchestrator ends with it, and the worker registers
again once idle.

The registration is checked before anything is sent (go-livepeer fails on a
price that is not an integer or an unknown currency), with errors naming the
field. The orchestrator secret travels only in the ``Authorization`` header:
never in logs, reprs or error messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import urllib.parse
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Final, Self

import aiohttp
import attrs

from byockit.protocol.errors import ByockitError, ParseError
from byockit.protocol.models import CapabilityRegistration
from byockit.protocol.trickle.http import request_ssl, require_positive

logger = logging.getLogger(__name__)

REGISTER_PATH: Final = "/capability/register"
UNREGISTER_PATH: Final = "/capability/unregister"
DEFAULT_REFRESH_INTERVAL: Final = 60.0
"""Seconds between re-registrations (while the worker is idle)."""
DEFAULT_MIN_BACKOFF: Final = 1.0
DEFAULT_MAX_BACKOFF: Final = 30.0
"""The pause after a failed attempt doubles from the first value up to the second."""
DEFAULT_REQUEST_TIMEOUT: Final = 10.0
"""Seconds one register or unregister request may take."""
_BUSY_POLL: Final = 1.0
"""Seconds between checks of ``is_idle`` while a due re-registration waits for it."""
_BODY_LIMIT: Final = 1024
"""Bytes of an orchestrator's answer kept for error messages."""

ENVIRONMENT: Final[Mapping[str, str]] = {
    "orch_url": "ORCH_URL",
    "orch_secret": "ORCH_SECRET",
    "name": "CAPABILITY_NAME",
    "description": "CAPABILITY_DESCRIPTION",
    "url": "CAPABILITY_URL",
    "capacity": "CAPABILITY_CAPACITY",
    "price_per_unit": "CAPABILITY_PRICE_PER_UNIT",
    "price_scaling": "CAPABILITY_PRICE_SCALING",
    "currency": "CAPABILITY_CURRENCY",
    "token": "CAPABILITY_TOKEN",
}
"""The environment variable behind each :class:`RegistrationSettings` field.

The first eight are the names BYOC workers commonly read; ``CAPABILITY_CURRENCY``
and ``CAPABILITY_TOKEN`` complete the set so that a container needs no flags.
"""

_INTEGER_FIELDS: Final = frozenset({"capacity", "price_per_unit", "price_scaling"})


class RegistrationError(ByockitError):
    """A register or unregister request failed.

    ``status`` is the orchestrator's HTTP status, or ``None`` when it could
    not be reached (or did not answer in time).
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


@attrs.frozen(kw_only=True)
class RegistrationSettings:
    """Where and what to register, field by field, each possibly unset.

    Built from command-line flags and from the environment
    (:meth:`from_env`), the flags winning (:meth:`or_else`); then
    :meth:`registration` fills in defaults and checks every value.
    """

    orch_url: str | None = None
    orch_secret: str | None = attrs.field(default=None, repr=False)
    name: str | None = None
    description: str | None = None
    url: str | None = None
    capacity: int | None = None
    price_per_unit: int | None = None
    price_scaling: int | None = None
    currency: str | None = None
    token: str | None = attrs.field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Self:
        """Read :data:`ENVIRONMENT`; an empty variable counts as unset.

        :class:`ParseError` naming the variable for a number that is not an integer.
        """
        values: dict[str, str | int] = {}
        for field, variable in ENVIRONMENT.items():
            text = environ.get(variable, "").strip()
            if not text:
                continue
            if field in _INTEGER_FIELDS:
                try:
                    values[field] = int(text)
                except ValueError:
                    raise ParseError(variable, f"expected an integer, found {text!r}") from None
            else:
                values[field] = text
        return cls(**values)  # type: ignore[arg-type]

    def or_else(self, fallback: RegistrationSettings) -> RegistrationSettings:
        """These settings, with each unset field taken from ``fallback``."""
        mine = attrs.asdict(self)
        theirs = attrs.asdict(fallback)
        return RegistrationSettings(
            **{key: theirs[key] if value is None else value for key, value in mine.items()}
        )

    def registration(self, *, default_url: str, default_capacity: int) -> CapabilityRegistration:
        """The capability to register; :class:`ParseError` naming the field that is wrong.

        ``default_url`` (where the orchestrator reaches this worker) and
        ``default_capacity`` stand in for an unset ``url`` and ``capacity``.
        """
        if self.name is None:
            raise ParseError("name", "missing: the capability needs a name")
        return CapabilityRegistration(
            name=self.name,
            url=self.url or default_url,
            capacity=self.capacity if self.capacity is not None else default_capacity,
            description=self.description or "",
            price_per_unit=self.price_per_unit or 0,
            price_scaling=self.price_scaling if self.price_scaling is not None else 1,
            currency=self.currency or "",
            token=self.token,
        )


class Registrar:
    """Keeps one capability registered with one orchestrator; an async context manager.

    :meth:`start` registers in the background and keeps the registration
    alive; :meth:`stop` ends that and unregisters. :meth:`register` and
    :meth:`unregister` make one attempt each, raising :class:`RegistrationError`.

    ``verify_tls``: ``True`` verifies the orchestrator's certificate, ``False``
    accepts any (orchestrators often serve a self-signed one), an
    ``ssl.SSLContext`` verifies with that context. ``is_idle``: re-register
    only when it returns ``True`` (see the module docs); ``None``: always.
    """

    def __init__(
        self,
        orch_url: str,
        secret: str,
        registration: CapabilityRegistration,
        *,
        verify_tls: bool | ssl.SSLContext = True,
        refresh_interval: float = DEFAULT_REFRESH_INTERVAL,
        min_backoff: float = DEFAULT_MIN_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        is_idle: Callable[[], bool] | None = None,
    ) -> None:
        require_positive(
            refresh_interval=refresh_interval,
            min_backoff=min_backoff,
            max_backoff=max_backoff,
            request_timeout=request_timeout,
        )
        if max_backoff < min_backoff:
            raise ValueError(f"max_backoff ({max_backoff}) is below min_backoff ({min_backoff})")
        _check_orch_url(orch_url)
        _check_secret(secret)
        # Strict re-parse of the wire form: catches what attrs validators let
        # through from Python (a float price, a bool capacity).
        self.registration: Final = CapabilityRegistration.from_json(registration.to_json())
        self.orch_url: Final = orch_url.rstrip("/")
        self._secret = secret
        self._ssl = request_ssl(verify_tls)
        self._refresh_interval = refresh_interval
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._is_idle = is_idle
        self._task: asyncio.Task[None] | None = None
        self._registered = False
        self._ever_registered = False
        self._interrupted = False
        """A register request was cancelled midway: the orchestrator may have taken it."""
        self._last_error: str | None = None

    def __repr__(self) -> str:
        return f"Registrar({self.registration.name!r} at {self.orch_url})"

    @property
    def registered(self) -> bool:
        """Whether the last attempt succeeded (the orchestrator may have forgotten since)."""
        return self._registered

    @property
    def last_error(self) -> str | None:
        """Why the last attempt failed; ``None`` after a success."""
        return self._last_error

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def start(self) -> None:
        """Register in the background, then keep the registration alive until :meth:`stop`."""
        if self._task is not None:
            raise RuntimeError("the registrar has already been started")
        self._task = asyncio.create_task(self._keep_registered(), name="byockit-registrar")

    async def stop(self, *, unregister: bool = True) -> None:
        """Stop re-registering and, if it may have registered, unregister (best effort).

        Never raises for an orchestrator that is gone: a failed unregister is logged.
        """
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if unregister and (self._ever_registered or self._interrupted):
            try:
                await self.unregister()
            except RegistrationError as exc:
                logger.warning("could not unregister %r: %s", self.registration.name, exc)

    async def register(self) -> None:
        """Register once; :class:`RegistrationError` if the orchestrator did not accept it."""
        self._interrupted = True
        try:
            await self._post(REGISTER_PATH, self.registration.dumps(), "application/json")
        except RegistrationError as exc:
            self._interrupted = self._registered = False
            self._last_error = str(exc)
            raise
        self._interrupted = False
        self._registered = self._ever_registered = True
        self._last_error = None

    async def unregister(self) -> None:
        """Unregister once; :class:`RegistrationError` if the orchestrator did not answer 200."""
        self._registered = False
        await self._post(UNREGISTER_PATH, self.registration.name, "text/plain")
        logger.info("unregistered capability %r from %s", self.registration.name, self.orch_url)

    async def _keep_registered(self) -> None:
        backoff = self._min_backoff
        reported: str | None = None
        first = True
        while True:
            try:
                await self.register()
            except RegistrationError as exc:
                if str(exc) != reported:
                    level = logging.ERROR if exc.status is not None else logging.WARNING
                    logger.log(level, "%s; will keep retrying (next in %.1f s)", exc, backoff)
                    reported = str(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            level = logging.INFO if first or reported is not None else logging.DEBUG
            logger.log(
                level,
                "registered capability %r with %s (worker at %s)",
                self.registration.name,
                self.orch_url,
                self.registration.url,
            )
            first, reported, backoff = False, None, self._min_backoff
            await asyncio.sleep(self._refresh_interval)
            # is_idle is a plain predicate: there is no event to wait on.
            while self._is_idle is not None and not self._is_idle():  # noqa: ASYNC110
                await asyncio.sleep(min(_BUSY_POLL, self._refresh_interval))

    async def _post(self, path: str, body: str, content_type: str) -> None:
        url = self.orch_url + path
        headers = {"Authorization": self._secret, "Content-Type": content_type}
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as session,
                session.post(url, data=body.encode(), headers=headers, ssl=self._ssl) as resp,
            ):
                answer = (await resp.content.read(_BODY_LIMIT)).decode(errors="replace").strip()
                status = resp.status
        except aiohttp.ClientConnectorCertificateError as exc:
            raise RegistrationError(
                f"the orchestrator's TLS certificate at {url} failed verification "
                f"({exc.certificate_error}); orchestrators often use a self-signed certificate: "
                "trust its CA or turn certificate verification off"
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            reason = exc.os_error.strerror or str(exc.os_error)
            raise RegistrationError(f"cannot reach the orchestrator at {url}: {reason}") from exc
        except TimeoutError as exc:
            raise RegistrationError(
                f"the orchestrator at {url} did not answer within {self._timeout.total} s"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise RegistrationError(f"cannot reach the orchestrator at {url}: {exc!r}") from exc
        if status != 200:
            hint = " (the orchestrator secret is wrong)" if "authorization" in answer else ""
            raise RegistrationError(
                f"the orchestrator at {url} answered {status} {answer!r}{hint}", status=status
            )


def _check_orch_url(orch_url: str) -> None:
    try:
        parts = urllib.parse.urlsplit(orch_url)
        _ = parts.port
    except ValueError as exc:
        raise ParseError("orch_url", f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ParseError("orch_url", f"expected an http(s) URL with a host, found {orch_url!r}")


def _check_secret(secret: str) -> None:
    # The value itself is never put in a message.
    if not secret:
        raise ParseError("secret", "must not be empty")
    if any(ord(char) < 32 or ord(char) == 127 for char in secret):
        raise ParseError("secret", "contains control characters (a header cannot carry them)")
