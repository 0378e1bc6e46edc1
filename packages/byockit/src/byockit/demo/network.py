"""A whole Livepeer BYOC network on loopback, in this process, as the demo runs it.

The pieces are the real ones, joined the way the real network joins them:

- a fake orchestrator (:class:`~byockit.testkit.orchestrator.FakeOrchestrator`)
  with its trickle server;
- the reference effects worker (:mod:`byockit.worker.reference`) on a
  :class:`~byockit.worker.WorkerServer`, which registers its capability with
  the orchestrator through the registration API, as ``byockit-worker serve
  --orch-url`` does;
- a fake gateway (:class:`~byockit.testkit.gateway.FakeGateway`) in front of
  the orchestrator, offering WHIP and WHEP to clients.

The client is not part of it: the demo points :func:`byockit.client.run.run`
at :attr:`DemoNetwork.gateway_url`.
"""

from __future__ import annotations

import contextlib
from typing import Final

from byockit.protocol.lifecycle import Service
from byockit.protocol.models import CapabilityRegistration
from byockit.testkit.gateway import FakeGateway
from byockit.testkit.orchestrator import FakeOrchestrator
from byockit.worker import Registrar, WorkerServer
from byockit.worker.cli import status_line

CAPABILITY: Final = "byockit-effects"
"""The capability name the demo's worker registers."""
SECRET: Final = "demo-secret"
"""The orchestrator secret the demo's worker registers with (loopback only)."""
REGISTRATION_TIMEOUT: Final = 30.0
"""Seconds the worker gets to load and register before the demo gives up."""


class DemoNetwork(Service):
    """Orchestrator, trickle server, reference worker and gateway, started and stopped together.

    ``processor`` is what the worker serves (the reference effects chain by
    default; anything :meth:`WorkerServer` takes).
    """

    def __init__(self, processor: object = None) -> None:
        self.worker_label = "worker"
        """The worker's stage name in :meth:`stages` (with the device, for the reference one)."""
        if processor is None:
            import torch  # the reference effects need it: imported only when used

            from byockit.worker.reference import effects

            processor = effects
            device = "CUDA" if torch.cuda.is_available() else "CPU"
            self.worker_label = f"worker (reference effects, {device})"
        self.orchestrator: Final = FakeOrchestrator(secret=SECRET)
        self.worker: Final = WorkerServer(processor, port=0)
        self.gateway: Final = FakeGateway([self.orchestrator], webrtc=True)
        self.registrar: Registrar | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    @property
    def gateway_url(self) -> str:
        return self.gateway.url

    async def start(self) -> None:
        """Start every piece; returns once the worker has loaded and registered."""
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(self.orchestrator)
            await stack.enter_async_context(self.worker)
            await self.worker.wait_loaded()
            if self.worker.load_error is not None:
                raise RuntimeError(f"the reference worker failed to load: {self.worker.load_error}")
            registration = CapabilityRegistration(
                name=CAPABILITY, url=self.worker.url, capacity=self.worker.capacity
            )
            self.registrar = Registrar(
                self.orchestrator.url,
                SECRET,
                registration,
                is_idle=lambda: not self.worker.sessions,
            )
            await stack.enter_async_context(self.registrar)
            await self.orchestrator.wait_registered(CAPABILITY, timeout=REGISTRATION_TIMEOUT)
            await stack.enter_async_context(self.gateway)
            self._stack = stack.pop_all()

    async def stop(self) -> None:
        """Stop in the reverse order: gateway, registration, worker, orchestrator."""
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    def stages(self) -> list[tuple[str, str, str]]:
        """(stage, where, state) for each piece, for the live view."""
        worker = status_line(self.worker.snapshot(), self.registrar)
        streams = len(self.gateway.stream_ids)
        return [
            ("orchestrator", self.orchestrator.url, f"{len(self.orchestrator.streams)} stream(s)"),
            ("trickle server", self.orchestrator.trickle.url, "channels for each stream"),
            (self.worker_label, self.worker.url, worker),
            ("gateway", self.gateway.url, f"{streams} stream(s), WHIP in / WHEP out"),
        ]
