"""byockit client SDK: drive BYOC capabilities on a Livepeer gateway.

Start a stream, change its params, read its status and data, stop it::

    async with GatewayClient("https://gateway:8088") as client:
        stream = await client.start("my-capability", {"strength": 0.5}, data_output=True)
        asyncio.create_task(stream.watch())   # a stream that fails raises StreamFailed
        await stream.update({"strength": 0.8})
        async for event in stream.data():
            ...
        await stream.stop()

:func:`discover` probes several gateways and orders them for failover.
Media lives in submodules, imported on demand so that this package stays light
(it loads only aiohttp, attrs and :mod:`byockit.protocol`'s models):

- :mod:`byockit.client.webrtc`: ``WhipPublisher`` (frames to ``whip_url``) and
  ``WhepPlayer`` (frames from ``whep_url``), over aiortc;
- :mod:`byockit.client.trickle_direct`: ``TrickleDirect``, MPEG-TS straight to and
  from an orchestrator's trickle channels;
- :mod:`byockit.client.sources`: ``TestPatternSource``, ``FileSource``,
  ``WebcamSource``, ``PushSource``;
- :mod:`byockit.client.sinks`: ``FrameSink`` (frames with measured latency),
  ``Recorder`` (MP4).

The preview page and the CLI are not here yet.
"""

from byockit.client.discovery import GatewayProbe, discover
from byockit.client.errors import (
    ClientError,
    GatewayError,
    GatewayTLSError,
    GatewayUnavailable,
    InvalidGatewayAnswer,
    NoGatewayAvailable,
    StreamFailed,
)
from byockit.client.gateway import GatewayClient, GatewayReply, StartSettings
from byockit.client.session import StreamSession

__version__ = "0.1.0"

__all__ = [
    "ClientError",
    "GatewayClient",
    "GatewayError",
    "GatewayProbe",
    "GatewayReply",
    "GatewayTLSError",
    "GatewayUnavailable",
    "InvalidGatewayAnswer",
    "NoGatewayAvailable",
    "StartSettings",
    "StreamFailed",
    "StreamSession",
    "__version__",
    "discover",
]
