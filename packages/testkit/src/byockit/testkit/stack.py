"""The loopback network the pytest plugin's fixtures build, usable without pytest too.

A trickle server, a fake orchestrator using it, a fake gateway in front, real
workers serving the processors under test and a gateway client. The testkit
does not depend on byockit-worker or byockit-client (they are extras):
:class:`WorkerFactory` and :func:`gateway_client` import them when called and
say which extra to install when one is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
from typing import TYPE_CHECKING, Any, Final

import av

from byockit.protocol.lifecycle import Closeable
from byockit.protocol.models import CapabilityRegistration, HealthStatus, JSONValue
from byockit.testkit.clip import SyntheticClip
from byockit.testkit.orchestrator import TRICKLE_BASE_PATH, FakeOrchestrator, FakeStream
from byockit.testkit.trickle_server import TrickleServer

if TYPE_CHECKING:
    from collections.abc import Mapping

    from byockit.client import GatewayClient
    from byockit.worker.server import WorkerServer

DEFAULT_CAPABILITY: Final = "test-capability"
"""The capability a test worker registers unless told another."""
STATUS_INTERVAL: Final = 0.5
"""Seconds between a test worker's status events (go-livepeer's workers: 10 s)..."""
EVENT_TIMEOUT: Final = 5.0
"""... so that the test orchestrator can fail a silent stream after 5 s (go-livepeer: 30 s)."""
KEEPALIVE_INTERVAL: Final = 1.0
"""Seconds between control-channel keepalives of the test orchestrator (go-livepeer: 10 s)."""
OUTPUT_IDLE: Final = 3.0
"""Seconds without output after which :meth:`RunningWorker.process` deems the output over."""


def trickle_server() -> TrickleServer:
    """A trickle server on 127.0.0.1 (a free port) under ``/ai/trickle/``, as an orchestrator's.

    Channels are created server-side (:meth:`TrickleServer.create_channel`), never by a POST.
    """
    return TrickleServer(base_path=TRICKLE_BASE_PATH)


def orchestrator(trickle: TrickleServer) -> FakeOrchestrator:
    """A fake orchestrator on 127.0.0.1 keeping its streams' channels on ``trickle``."""
    return FakeOrchestrator(
        trickle=trickle, keepalive_interval=KEEPALIVE_INTERVAL, event_timeout=EVENT_TIMEOUT
    )


def require(module: str, extra: str) -> None:
    """:class:`ImportError` naming the extra to install unless ``module`` is importable."""
    if importlib.util.find_spec(module) is None:
        package = module.replace(".", "-")
        raise ImportError(
            f"{package} is not installed, and the {extra} fixture needs it: "
            f"pip install 'byockit-testkit[{extra}]' (or {package})",
            name=module,
        )


def gateway_client(gateway_url: str) -> GatewayClient:
    """A byockit-client :class:`GatewayClient` for ``gateway_url``; close it when done."""
    require("byockit.client", "client")
    from byockit.client import GatewayClient

    return GatewayClient(gateway_url)


class RunningWorker:
    """A ``WorkerServer`` serving a processor, registered with an orchestrator as ``capability``."""

    def __init__(
        self, server: WorkerServer, orchestrator: FakeOrchestrator, capability: str
    ) -> None:
        self.server: Final = server
        self.orchestrator: Final = orchestrator
        self.capability: Final = capability

    def __repr__(self) -> str:
        return f"<RunningWorker {self.capability!r} at {self.server.url}>"

    async def start_stream(
        self, params: Mapping[str, object] | None = None, **options: Any
    ) -> FakeStream:
        """Start a stream on this worker through the orchestrator.

        ``params``: the start params; ``options``: those of
        :meth:`FakeOrchestrator.start_stream` (``stream_id``, ``video_ingress``...).
        """
        return await self.orchestrator.start_stream(self.capability, params, **options)

    async def process(
        self,
        clip: SyntheticClip,
        params: Mapping[str, JSONValue] | None = None,
        *,
        timeout: float = 30.0,  # noqa: ASYNC109 - a test helper bounds its own wait
    ) -> list[av.VideoFrame]:
        """Stream ``clip`` through the worker in real time: the output frames, in order.

        Starts a stream with ``params``, publishes the clip and collects output
        until the frame showing the clip's last index, or until no output came
        for :data:`OUTPUT_IDLE` seconds; then stops the stream.
        Raises what publishing raised, :class:`TimeoutError` after ``timeout``.
        """
        stream = await self.start_stream(params)
        sending = asyncio.create_task(stream.publish(clip.frames()))
        output: list[av.VideoFrame] = []
        try:
            async with (
                asyncio.timeout(timeout),
                contextlib.aclosing(stream.output_frames()) as frames,
            ):
                while True:
                    try:
                        async with asyncio.timeout(OUTPUT_IDLE if output else None):
                            frame = await anext(frames, None)
                    except TimeoutError:
                        break
                    if frame is None:
                        break
                    output.append(frame)
                    if clip.index_of(frame) == clip.count - 1:
                        break
            if sending.done():
                sending.result()  # a publishing failure
        finally:
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
            await stream.stop()  # also after a timeout: the worker's slot is free again
        return output

    async def wait_idle(
        self,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 - a test helper bounds its own wait
    ) -> None:
        """Until no stream runs on the worker; :class:`TimeoutError` after ``timeout``."""
        async with asyncio.timeout(timeout):
            while self.server.health is not HealthStatus.IDLE:  # noqa: ASYNC110 - no event
                await asyncio.sleep(0.05)


class WorkerFactory(Closeable):
    """Starts workers for ``orchestrator`` (``await factory(processor)``); closing stops them."""

    def __init__(self, orchestrator: FakeOrchestrator) -> None:
        self._orchestrator = orchestrator
        self._running = contextlib.AsyncExitStack()

    async def __call__(
        self, processor: object, *, capability: str = DEFAULT_CAPABILITY, **server_options: Any
    ) -> RunningWorker:
        """Serve ``processor`` (a function, ``Processor`` class or instance) and register it.

        ``server_options`` go to ``WorkerServer`` (``capacity``, ``token``...);
        it listens on a free port and sends status every :data:`STATUS_INTERVAL`
        seconds unless told otherwise. Returns once the processor has loaded;
        :class:`RuntimeError` if it failed to.
        """
        require("byockit.worker", "worker")
        from byockit.worker.server import WorkerServer
        from byockit.worker.session import StreamSession

        options: dict[str, Any] = {
            "port": 0,
            "session_factory": functools.partial(StreamSession, status_interval=STATUS_INTERVAL),
        } | server_options
        server = await self._running.enter_async_context(WorkerServer(processor, **options))
        await server.wait_loaded()
        if server.load_error is not None:
            raise RuntimeError(f"the processor failed to load: {server.load_error}")
        registration = CapabilityRegistration(
            name=capability, url=server.url, capacity=server.capacity, token=options.get("token")
        )
        await self._orchestrator.register(registration)
        self._running.callback(self._orchestrator.forget, capability)
        return RunningWorker(server, self._orchestrator, capability)

    async def close(self) -> None:
        """Stop every worker started, the last first."""
        await self._running.aclose()
