"""attrs models of every JSON message in the BYOC wire contract.

Each model is a frozen attrs class with the same two-way API:

- ``Model.from_json(data)`` parses bytes, text or an already decoded mapping,
  strictly, and raises :class:`byockit.protocol.errors.ParseError` naming the
  offending field by its dotted path (``params.max_framerate``) and the reason;
- ``model.to_json()`` gives the wire form as a plain dict, ``model.dumps()``
  as compact JSON text.

Keys a model does not know are kept in its ``extras`` and written back, as the
real network passes them through. Wire names are Python names.

Worker side (what an orchestrator sends): :class:`WorkerStartRequest`,
:class:`StreamParams`, :class:`ControlMessage`, :class:`WorkerHealth`.
Status and events: :class:`StreamStatus` (also the ``status`` event),
:class:`EventMessage` holding one :data:`Event`. Registration:
:class:`CapabilityRegistration`. Gateway side (what a client sends):
:class:`LivepeerHeader`, :class:`StartRequest`, :class:`StreamUrls`.
"""

from byockit.protocol.models._wire import JSONObject, JSONValue, WireModel
from byockit.protocol.models.events import (
    ErrorEvent,
    Event,
    EventMessage,
    ParamsUpdateEvent,
    QueueEventType,
    StreamStoppedEvent,
    TraceEvent,
    TraceType,
    UnknownEvent,
)
from byockit.protocol.models.gateway import (
    JobParameters,
    JobRequestDetails,
    LivepeerHeader,
    OrchestratorFilter,
    StartRequest,
    StreamUrls,
)
from byockit.protocol.models.registration import CURRENCIES, CapabilityRegistration
from byockit.protocol.models.status import (
    InferenceStatus,
    InputStatus,
    StreamState,
    StreamStatus,
)
from byockit.protocol.models.worker import (
    MAX_DIMENSION,
    ControlMessage,
    HealthStatus,
    StreamParams,
    WorkerHealth,
    WorkerStartRequest,
)

__all__ = [
    "CURRENCIES",
    "MAX_DIMENSION",
    "CapabilityRegistration",
    "ControlMessage",
    "ErrorEvent",
    "Event",
    "EventMessage",
    "HealthStatus",
    "InferenceStatus",
    "InputStatus",
    "JSONObject",
    "JSONValue",
    "JobParameters",
    "JobRequestDetails",
    "LivepeerHeader",
    "OrchestratorFilter",
    "ParamsUpdateEvent",
    "QueueEventType",
    "StartRequest",
    "StreamParams",
    "StreamState",
    "StreamStatus",
    "StreamStoppedEvent",
    "StreamUrls",
    "TraceEvent",
    "TraceType",
    "UnknownEvent",
    "WireModel",
    "WorkerHealth",
    "WorkerStartRequest",
]
