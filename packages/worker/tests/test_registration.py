"""Registrar against the fake orchestrator on loopback: register, retry, refresh, unregister."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trustme

from byockit.protocol.errors import ParseError
from byockit.protocol.models import CapabilityRegistration
from byockit.testkit.orchestrator import FakeOrchestrator
from byockit.worker.registration import (
    ENVIRONMENT,
    Registrar,
    RegistrationError,
    RegistrationSettings,
)

SECRET = "s3cret-orch-value"
TOKEN = "t0ken-worker-value"
TIMEOUT = 10.0
FAST: dict[str, Any] = {"min_backoff": 0.02, "max_backoff": 0.1, "request_timeout": 2.0}
"""Short pauses and timeouts for the tests."""

CAPABILITY = CapabilityRegistration(
    name="flip",
    url="http://127.0.0.1:9/",
    capacity=2,
    description="flips frames",
    price_per_unit=7,
    price_scaling=3,
    currency="wei",
    token=TOKEN,
)


@pytest.fixture
async def orchestrator() -> AsyncIterator[FakeOrchestrator]:
    async with FakeOrchestrator(secret=SECRET) as orch:
        yield orch


async def eventually(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not condition():  # noqa: ASYNC110 - polling another object's state
            await asyncio.sleep(0.01)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_registers_the_capability_as_given(orchestrator: FakeOrchestrator) -> None:
    async with Registrar(orchestrator.url, SECRET, CAPABILITY, **FAST) as registrar:
        registered = await orchestrator.wait_registered("flip")
        assert registered == CAPABILITY
        await eventually(lambda: registrar.registered)
        assert registrar.last_error is None


async def test_a_trailing_slash_on_the_orchestrator_url_is_harmless(
    orchestrator: FakeOrchestrator,
) -> None:
    registrar = Registrar(orchestrator.url + "/", SECRET, CAPABILITY)
    await registrar.register()
    assert "flip" in orchestrator.registrations
    await registrar.stop()


async def test_a_wrong_secret_is_refused_and_retried(orchestrator: FakeOrchestrator) -> None:
    registrar = Registrar(orchestrator.url, "not-the-secret", CAPABILITY, **FAST)
    with pytest.raises(RegistrationError, match="invalid authorization") as refused:
        await registrar.register()
    assert refused.value.status == 400
    assert "secret is wrong" in str(refused.value)
    assert not registrar.registered
    async with registrar:
        await eventually(lambda: registrar.last_error is not None)
    assert orchestrator.registrations == {}
    assert orchestrator.unregistered == []  # never registered: nothing to undo


async def test_retries_while_unreachable_then_registers(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with Registrar(url, SECRET, CAPABILITY, **FAST) as registrar:
        await eventually(lambda: registrar.last_error is not None)
        assert "cannot reach the orchestrator" in str(registrar.last_error)
        assert not registrar.registered
        async with FakeOrchestrator(port=port, secret=SECRET) as orch:
            await orch.wait_registered("flip")
            await eventually(lambda: registrar.registered)
    assert any("retrying" in record.getMessage() for record in caplog.records)


async def test_re_registers_after_the_orchestrator_restarted(
    orchestrator: FakeOrchestrator,
) -> None:
    async with Registrar(orchestrator.url, SECRET, CAPABILITY, refresh_interval=0.05, **FAST):
        await orchestrator.wait_registered("flip")
        await orchestrator.stop()
        assert orchestrator.registrations == {}
        await orchestrator.start()  # same port, empty memory
        await orchestrator.wait_registered("flip")


async def test_re_registers_after_the_orchestrator_dropped_it(
    orchestrator: FakeOrchestrator,
) -> None:
    async with Registrar(orchestrator.url, SECRET, CAPABILITY, refresh_interval=0.05, **FAST):
        await orchestrator.wait_registered("flip")
        orchestrator.forget("flip")  # what a 401 from the worker makes it do
        await orchestrator.wait_registered("flip")


async def test_re_registration_waits_until_the_worker_is_idle(
    orchestrator: FakeOrchestrator,
) -> None:
    idle = True
    registrar = Registrar(
        orchestrator.url,
        SECRET,
        CAPABILITY,
        refresh_interval=0.02,
        is_idle=lambda: idle,
        **FAST,
    )
    async with registrar:
        await orchestrator.wait_registered("flip")
        idle = False
        await asyncio.sleep(0.05)  # any refresh in flight lands now
        orchestrator.forget("flip")
        await asyncio.sleep(0.3)  # many refresh intervals while busy
        assert "flip" not in orchestrator.registrations
        idle = True
        await orchestrator.wait_registered("flip")


async def test_unregisters_on_stop(orchestrator: FakeOrchestrator) -> None:
    async with Registrar(orchestrator.url, SECRET, CAPABILITY, **FAST) as registrar:
        await orchestrator.wait_registered("flip")
    assert orchestrator.unregistered == ["flip"]
    assert orchestrator.registrations == {}
    assert not registrar.registered


async def test_stop_can_leave_the_registration(orchestrator: FakeOrchestrator) -> None:
    registrar = Registrar(orchestrator.url, SECRET, CAPABILITY, **FAST)
    registrar.start()
    await orchestrator.wait_registered("flip")
    await registrar.stop(unregister=False)
    assert orchestrator.unregistered == []
    assert "flip" in orchestrator.registrations


async def test_stop_survives_a_vanished_orchestrator(caplog: pytest.LogCaptureFixture) -> None:
    async with FakeOrchestrator(secret=SECRET) as orch:
        registrar = Registrar(orch.url, SECRET, CAPABILITY, **FAST)
        await registrar.register()
    await registrar.stop()  # logged, not raised
    assert any("could not unregister" in record.getMessage() for record in caplog.records)


async def test_starting_twice_is_an_error(orchestrator: FakeOrchestrator) -> None:
    async with Registrar(orchestrator.url, SECRET, CAPABILITY, **FAST) as registrar:
        with pytest.raises(RuntimeError, match="already"):
            registrar.start()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"price_per_unit": 1.5}, "price_per_unit"),
        ({"price_per_unit": -1}, "price_per_unit"),
        ({"price_scaling": 2.0}, "price_scaling"),
        ({"capacity": True}, "capacity"),
        ({"capacity": 0}, "capacity"),
        ({"currency": "usd"}, "currency"),
        ({"url": "ftp://worker"}, "url"),
    ],
)
def test_price_currency_and_fields_are_checked_before_sending(
    changes: dict[str, object], field: str
) -> None:
    fields = {
        "name": "flip",
        "url": "http://127.0.0.1:9",
        "capacity": 1,
        "price_per_unit": 0,
        "price_scaling": 1,
        "currency": "",
    } | changes
    with pytest.raises(ParseError) as error:
        # Built from Python, attrs validators catch ranges and words; the
        # registrar's strict re-parse catches the wrong types.
        Registrar("http://127.0.0.1:9", SECRET, CapabilityRegistration(**fields))  # type: ignore[arg-type]
    assert error.value.field == field


@pytest.mark.parametrize(
    ("orch_url", "secret", "field"),
    [
        ("127.0.0.1:8935", SECRET, "orch_url"),
        ("http://:8935", SECRET, "orch_url"),
        ("http://127.0.0.1:99999", SECRET, "orch_url"),
        ("http://127.0.0.1:8935", "", "secret"),
        ("http://127.0.0.1:8935", SECRET + "\r\nX-Evil: 1", "secret"),
    ],
)
def test_bad_orchestrator_url_or_secret_is_refused(orch_url: str, secret: str, field: str) -> None:
    with pytest.raises(ParseError) as error:
        Registrar(orch_url, secret, CAPABILITY)
    assert error.value.field == field
    assert SECRET not in str(error.value)


def test_bad_timings_are_refused() -> None:
    with pytest.raises(ValueError, match="refresh_interval"):
        Registrar("http://127.0.0.1:9", SECRET, CAPABILITY, refresh_interval=0)
    with pytest.raises(ValueError, match="max_backoff"):
        Registrar("http://127.0.0.1:9", SECRET, CAPABILITY, min_backoff=2, max_backoff=1)


async def test_the_secret_never_reaches_logs_reprs_or_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    wrong = Registrar(f"http://127.0.0.1:{free_port()}", "wrong-" + SECRET, CAPABILITY, **FAST)
    with pytest.raises(RegistrationError) as unreachable:
        await wrong.register()
    texts.append(str(unreachable.value))
    async with FakeOrchestrator(secret=SECRET) as orch:
        refused = Registrar(orch.url, "wrong-" + SECRET, CAPABILITY, **FAST)
        with pytest.raises(RegistrationError) as error:
            await refused.register()
        texts.append(str(error.value))
        async with Registrar(orch.url, SECRET, CAPABILITY, refresh_interval=0.02, **FAST) as good:
            await orch.wait_registered("flip")
            await eventually(lambda: good.registered)
            await asyncio.sleep(0.1)  # a few refreshes
            texts += [repr(good), repr(RegistrationSettings(orch_secret=SECRET, token=TOKEN))]
    texts.append(caplog.text)
    texts += [record.getMessage() for record in caplog.records]
    assert any("registered capability" in record.getMessage() for record in caplog.records)
    for text in texts:
        assert SECRET not in text
        assert TOKEN not in text


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_tls_is_verified_unless_told_otherwise() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    async with FakeOrchestrator(secret=SECRET, ssl_context=server_context) as orch:
        assert orch.url.startswith("https://")
        with pytest.raises(RegistrationError, match="certificate"):
            await Registrar(orch.url, SECRET, CAPABILITY).register()
        assert orch.registrations == {}
        await Registrar(orch.url, SECRET, CAPABILITY, verify_tls=trusting(ca)).register()
        orch.forget("flip")
        await Registrar(orch.url, SECRET, CAPABILITY, verify_tls=False).register()
        assert "flip" in orch.registrations


def test_settings_read_the_usual_environment_names() -> None:
    environ = {
        "ORCH_URL": "https://orch:8935",
        "ORCH_SECRET": SECRET,
        "CAPABILITY_NAME": "flip",
        "CAPABILITY_DESCRIPTION": "flips frames",
        "CAPABILITY_URL": "http://worker:8000",
        "CAPABILITY_CAPACITY": "3",
        "CAPABILITY_PRICE_PER_UNIT": " 12 ",
        "CAPABILITY_PRICE_SCALING": "0",
        "CAPABILITY_CURRENCY": "ETH",
        "CAPABILITY_TOKEN": TOKEN,
        "UNRELATED": "x",
    }
    settings = RegistrationSettings.from_env(environ)
    assert settings == RegistrationSettings(
        orch_url="https://orch:8935",
        orch_secret=SECRET,
        name="flip",
        description="flips frames",
        url="http://worker:8000",
        capacity=3,
        price_per_unit=12,
        price_scaling=0,
        currency="ETH",
        token=TOKEN,
    )
    assert set(ENVIRONMENT.values()) == set(environ) - {"UNRELATED"}
    registration = settings.registration(default_url="http://unused:1", default_capacity=1)
    assert registration.to_json() == {
        "name": "flip",
        "url": "http://worker:8000",
        "capacity": 3,
        "description": "flips frames",
        "price_per_unit": 12,
        "price_scaling": 0,
        "currency": "ETH",
        "token": TOKEN,
    }


def test_empty_variables_count_as_unset_and_defaults_fill_in() -> None:
    settings = RegistrationSettings.from_env({"ORCH_URL": "", "CAPABILITY_NAME": "flip"})
    assert settings.orch_url is None
    registration = settings.registration(default_url="http://worker:8000", default_capacity=4)
    assert registration == CapabilityRegistration(
        name="flip", url="http://worker:8000", capacity=4, price_scaling=1
    )


@pytest.mark.parametrize(
    "variable", ["CAPABILITY_CAPACITY", "CAPABILITY_PRICE_PER_UNIT", "CAPABILITY_PRICE_SCALING"]
)
def test_a_number_that_is_not_an_integer_names_its_variable(variable: str) -> None:
    with pytest.raises(ParseError) as error:
        RegistrationSettings.from_env({variable: "1.5"})
    assert error.value.field == variable


def test_bad_values_from_the_environment_name_the_field() -> None:
    settings = RegistrationSettings.from_env(
        {"CAPABILITY_NAME": "flip", "CAPABILITY_CURRENCY": "usd"}
    )
    with pytest.raises(ParseError) as error:
        settings.registration(default_url="http://worker:8000", default_capacity=1)
    assert error.value.field == "currency"
    with pytest.raises(ParseError) as missing:
        RegistrationSettings().registration(default_url="http://worker:8000", default_capacity=1)
    assert missing.value.field == "name"


def test_flags_win_over_the_environment() -> None:
    flags = RegistrationSettings(name="from-flag", capacity=2)
    environ = RegistrationSettings(name="from-env", capacity=5, orch_url="http://orch:1")
    merged = flags.or_else(environ)
    assert merged == RegistrationSettings(name="from-flag", capacity=2, orch_url="http://orch:1")
