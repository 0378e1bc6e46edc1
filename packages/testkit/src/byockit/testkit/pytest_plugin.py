"""The testkit as pytest fixtures, for your own CI (registered as the ``byockit`` plugin).

Installing byockit-testkit registers it; it imports the testkit only when a
fixture is used, so other test runs do not pay for it. Every fixture is function-scoped
and stops what it started at teardown, also when the test fails. The async
ones are pytest-asyncio fixtures: they work in ``asyncio_mode = "auto"`` and
in strict mode (there, mark your tests ``@pytest.mark.asyncio``).

- ``trickle_server``: a running :class:`TrickleServer` (see :func:`stack.trickle_server`);
- ``orchestrator``: a :class:`FakeOrchestrator` keeping its channels there;
- ``gateway``: a :class:`FakeGateway` over it (WebRTC kept on loopback);
- ``worker``: ``await worker(processor, **options)`` serves a processor, registered
  with the orchestrator: a :class:`stack.RunningWorker` (needs byockit-worker);
- ``client``: a byockit-client ``GatewayClient`` for the gateway (needs byockit-client);
- ``test_clip``: a :class:`SyntheticClip`, sized by ``@pytest.mark.test_clip(...)``;
- ``faults``: the trickle server's :class:`TrickleFaults`, all removed at teardown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

if TYPE_CHECKING:
    from byockit.client import GatewayClient
    from byockit.testkit.clip import SyntheticClip
    from byockit.testkit.gateway import FakeGateway
    from byockit.testkit.orchestrator import FakeOrchestrator
    from byockit.testkit.stack import WorkerFactory
    from byockit.testkit.trickle_server import TrickleFaults, TrickleServer


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "test_clip(seconds=2.0, fps=30, width=160, height=96, gop_seconds=1.0): "
        "the byockit test_clip fixture's clip",
    )


@pytest_asyncio.fixture(loop_scope="function")
async def trickle_server() -> AsyncIterator[TrickleServer]:
    """A trickle server on 127.0.0.1 under ``/ai/trickle/``, channels created server-side."""
    from byockit.testkit import stack

    async with stack.trickle_server() as server:
        yield server


@pytest_asyncio.fixture(loop_scope="function")
async def orchestrator(trickle_server: TrickleServer) -> AsyncIterator[FakeOrchestrator]:
    """A fake orchestrator whose streams' channels live on ``trickle_server``."""
    from byockit.testkit import stack

    async with stack.orchestrator(trickle_server) as orchestrator:
        yield orchestrator


@pytest_asyncio.fixture(loop_scope="function")
async def gateway(orchestrator: FakeOrchestrator) -> AsyncIterator[FakeGateway]:
    """A fake gateway in front of ``orchestrator``, serving WHIP/WHEP on loopback."""
    from byockit.testkit.gateway import FakeGateway
    from byockit.testkit.webrtc import loopback_ice

    with loopback_ice():
        async with FakeGateway([orchestrator]) as gateway:
            yield gateway


@pytest_asyncio.fixture(loop_scope="function")
async def worker(orchestrator: FakeOrchestrator) -> AsyncIterator[WorkerFactory]:
    """``await worker(processor, capability=..., **server_options)``: a served processor."""
    from byockit.testkit import stack

    async with stack.WorkerFactory(orchestrator) as factory:
        yield factory


@pytest_asyncio.fixture(loop_scope="function")
async def client(gateway: FakeGateway) -> AsyncIterator[GatewayClient]:
    """A byockit-client ``GatewayClient`` pointed at ``gateway``."""
    from byockit.testkit import stack

    async with stack.gateway_client(gateway.url) as client:
        yield client


@pytest.fixture(name="test_clip")
def clip_fixture(request: pytest.FixtureRequest) -> SyntheticClip:
    """A synthetic indexed clip; ``@pytest.mark.test_clip(seconds=..., ...)`` shapes it."""
    from byockit.testkit.clip import SyntheticClip

    marker = request.node.get_closest_marker("test_clip")
    return SyntheticClip(*marker.args, **marker.kwargs) if marker else SyntheticClip()


@pytest.fixture
def faults(trickle_server: TrickleServer) -> Iterator[TrickleFaults]:
    """Delay, drop, 470 and restart on ``trickle_server``; every fault is removed at teardown."""
    yield trickle_server.faults
    trickle_server.faults.clear()
