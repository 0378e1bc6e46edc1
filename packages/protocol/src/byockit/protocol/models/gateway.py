"""What a client sends a gateway and gets back (PROTOCOL.md section 5).

The ``Livepeer`` header (standard base64 of a JSON object whose ``request``
and ``parameters`` are themselves JSON *strings*), the ``StartRequest``
body of ``POST /process/stream/start`` and the ``StreamUrls`` it answers.
The gateway signs ``request + parameters`` as strings; byockit does not
sign, so it re-encodes them canonically.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, Final, Self

import attrs

from byockit.protocol.errors import ParseError
from byockit.protocol.models._wire import (
    JSON_TEXT,
    JSONValue,
    WireModel,
    in_range,
    json_object,
    load_object,
    non_empty,
)

MAX_TIMEOUT_SECONDS: Final = 2**31 - 1
"""Go turns ``timeout_seconds`` into nanoseconds; far below that, and ample."""


@attrs.frozen
class OrchestratorFilter(WireModel):
    """Orchestrator URLs to use exclusively (``include``) or never (``exclude``); exact matches."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


@attrs.frozen
class JobParameters(WireModel):
    """The header's ``parameters``: which channels the stream uses, which orchestrators."""

    enable_video_ingress: bool = False
    enable_video_egress: bool = False
    enable_data_output: bool = False
    orchestrators: OrchestratorFilter = attrs.field(factory=OrchestratorFilter)


@attrs.frozen
class JobRequestDetails(WireModel):
    """The header's ``request``: ``{}`` on start, ``{"stream_id": id}`` on update and stop."""

    stream_id: str | None = None


@attrs.frozen
class LivepeerHeader(WireModel):
    """The ``Livepeer`` header of every gateway stream request.

    ``timeout_seconds`` bounds the gateway's and orchestrator's calls to the
    worker. When a gateway forwards the header it adds ``id`` (the stream id),
    ``sender`` and ``sig``; other keys it adds stay in ``extras``.
    """

    capability: str = attrs.field(validator=non_empty)
    timeout_seconds: int = attrs.field(validator=in_range(1, MAX_TIMEOUT_SECONDS))
    request: JobRequestDetails = attrs.field(metadata=JSON_TEXT)
    parameters: JobParameters = attrs.field(metadata=JSON_TEXT)
    id: str | None = None
    sender: str | None = None
    sig: str | None = None

    @classmethod
    def from_header(cls, value: str) -> Self:
        """Decode the header value (standard base64, padded) or raise ParseError."""
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ParseError("", f"not standard base64: {exc}") from None
        return cls._from_object(load_object(raw), "")

    def to_header(self) -> str:
        """The header value: standard base64 of the compact JSON."""
        return base64.b64encode(self.dumps().encode("ascii")).decode("ascii")


def _not_an_output_name(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value.endswith("-out"):
        raise ParseError(
            attribute.name, f"must not end in '-out' (reserved for outputs): {value!r}"
        )


@attrs.frozen
class StartRequest(WireModel):
    """The ``POST /process/stream/start`` body; every field is optional.

    The stream id becomes ``{stream_name}-{stream_id or random}`` (just the
    id, or a random one, without a name). ``params`` travels as a JSON string
    holding an object (``""``, ``"null"`` and absence all mean none).
    """

    stream_name: str = attrs.field(default="", validator=_not_an_output_name)
    stream_id: str = ""
    rtmp_output: str = ""
    params: Mapping[str, JSONValue] | None = attrs.field(
        default=None, metadata=JSON_TEXT, validator=json_object
    )


@attrs.frozen
class StreamUrls(WireModel):
    """The gateway's answer to a start: where to send, watch, update, query and stop.

    A disabled feature's URL is ``""``. ``rtmp_output_url`` may list several
    URLs joined by commas. Use these URLs; never build them.
    """

    stream_id: str = attrs.field(validator=non_empty)
    whip_url: str = ""
    whep_url: str = ""
    rtmp_url: str = ""
    rtmp_output_url: str = ""
    update_url: str = ""
    status_url: str = ""
    data_url: str = ""
    stop_url: str = ""
