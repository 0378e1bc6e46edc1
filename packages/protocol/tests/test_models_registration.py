"""The capability registration body, validated before it is sent."""

from __future__ import annotations

import json

import pytest

from byockit.protocol.errors import ParseError
from byockit.protocol.models import CapabilityRegistration

# As a worker registers itself (pytrickle's register helper writes the same keys).
REGISTRATION = {
    "name": "watercolor",
    "url": "http://worker-1.internal:8000",
    "capacity": 2,
    "description": "Watercolor style transfer, 512x512",
    "price_per_unit": 1200,
    "price_scaling": 1,
    "currency": "wei",
    "token": "s3cr3t-worker-token",
}


def test_registration_round_trips_exactly():
    registration = CapabilityRegistration.from_json(json.dumps(REGISTRATION))
    assert registration.price_per_unit == 1200
    assert registration.to_json() == REGISTRATION


def test_defaults_are_free_unscaled_wei_without_token():
    registration = CapabilityRegistration(name="n", url="https://w:1", capacity=1)
    assert registration.to_json() == {
        "name": "n",
        "url": "https://w:1",
        "capacity": 1,
        "description": "",
        "price_per_unit": 0,
        "price_scaling": 1,
        "currency": "",
    }


def test_other_keys_go_livepeer_reads_are_kept():
    doc = dict(REGISTRATION, requirements={"video_ingress": True, "video_egress": True})
    registration = CapabilityRegistration.from_json(doc)
    assert registration.extras == {"requirements": {"video_ingress": True, "video_egress": True}}
    assert registration.to_json() == doc


@pytest.mark.parametrize("currency", ["", "wei", "eth", "ETH", "Wei"])
def test_currencies_go_livepeer_converts_are_accepted_as_written(currency):
    registration = CapabilityRegistration.from_json(dict(REGISTRATION, currency=currency))
    assert registration.to_json()["currency"] == currency


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"currency": "usd"}, "currency", "must be one of '', 'wei', 'eth', found 'usd'"),
        ({"currency": None}, "currency", "expected string, found null"),
        ({"price_per_unit": 1.5}, "price_per_unit", "expected integer, found number 1.5"),
        ({"price_per_unit": "1200"}, "price_per_unit", "expected integer, found string '1200'"),
        ({"price_per_unit": -1}, "price_per_unit", "must be between 0 and"),
        ({"price_per_unit": 2**63}, "price_per_unit", "does not fit in 64 bits"),
        ({"price_scaling": -2}, "price_scaling", "must be between 0 and"),
        ({"capacity": 0}, "capacity", "must be between 1 and"),
        ({"capacity": ...}, "capacity", "missing"),
        ({"name": ""}, "name", "must not be empty"),
        ({"url": "worker-1:8000"}, "url", "expected an http(s) URL with a host"),
        ({"token": 5}, "token", "expected string, found integer 5"),
    ],
)
def test_registration_errors_name_the_field(changes, field, reason):
    doc = dict(REGISTRATION)
    for key, value in changes.items():
        if value is ...:
            del doc[key]
        else:
            doc[key] = value
    with pytest.raises(ParseError) as caught:
        CapabilityRegistration.from_json(doc)
    assert caught.value.field == field
    assert reason in caught.value.reason


def test_a_bad_currency_is_refused_before_anything_is_sent():
    with pytest.raises(ParseError) as caught:
        CapabilityRegistration(name="n", url="https://w:1", capacity=1, currency="usd")
    assert caught.value.field == "currency"


@pytest.mark.parametrize("field", ["price_scaling", "capacity", "price_per_unit"])
def test_python_construction_with_a_non_number_names_the_field(field: str) -> None:
    kwargs = {"name": "cap", "url": "http://127.0.0.1:8000", "capacity": 1, field: "2"}
    with pytest.raises(ParseError) as info:
        CapabilityRegistration(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
