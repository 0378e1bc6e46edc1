"""byockit client SDK: drive BYOC capabilities on a Livepeer gateway.

Stream a test pattern (or ``source="webcam"``, or a file) through a capability,
with a live preview page, in three lines::

    from byockit.client.run import run

    summary = await run("https://gateway:8088", "my-capability", seconds=30, preview=True)

or from a shell: ``byockit-client run --gateway URL --capability NAME --preview``.

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
  ``Recorder`` (MP4);
- :mod:`byockit.client.preview`: ``PreviewServer``, the live preview page;
- :mod:`byockit.client.run`: ``run``, all of the above in one call;
- :mod:`byockit.client.cli`: the ``byockit-client`` command.
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
