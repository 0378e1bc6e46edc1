"""Registering a worker with an orchestrator (PROTOCOL.md section 4).

The body of ``POST {orchestrator}/capability/register``. go-livepeer panics
on a currency it cannot convert, so the currency is checked here, before
anything is sent.
"""

from __future__ import annotations

from typing import Final

import attrs

from byockit.protocol.models._wire import (
    INT64_MAX,
    WireModel,
    http_url,
    in_range,
    non_empty,
    one_of,
)

CURRENCIES: Final = ("", "wei", "eth")
"""Accepted currencies (any letter case, as go-livepeer compares them): ``""`` means wei."""


@attrs.frozen
class CapabilityRegistration(WireModel):
    """One capability a worker offers.

    ``url`` is where the orchestrator reaches the worker; ``capacity`` the
    number of concurrent streams (the worker itself refuses more);
    ``price_per_unit`` wei (or eth) per second of compute, divided by
    ``price_scaling`` (0 means 1). With a ``token``, the orchestrator calls
    the worker with ``Authorization: Bearer {token}``.
    """

    name: str = attrs.field(validator=non_empty)
    url: str = attrs.field(validator=http_url)
    capacity: int = attrs.field(validator=in_range(1, INT64_MAX))
    description: str = ""
    price_per_unit: int = attrs.field(default=0, validator=in_range(0, INT64_MAX))
    price_scaling: int = attrs.field(default=1, validator=in_range(0, INT64_MAX))
    currency: str = attrs.field(default="", validator=one_of(CURRENCIES, case_sensitive=False))
    token: str | None = None
