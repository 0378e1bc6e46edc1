"""The client end to end on loopback: GatewayClient -> FakeGateway -> FakeOrchestrator -> worker.

Everything is real HTTP and real video: the worker is byockit's WorkerServer,
input video goes in through the fake gateway's test hook (no WHIP yet).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from byockit.client import GatewayClient, GatewayError, StreamFailed, StreamSession
from byockit.protocol.models import CapabilityRegistration, JSONObject, StreamStoppedEvent
from byockit.testkit.gateway import EXHAUSTED_ERROR, FakeGateway
from byockit.testkit.orchestrator import FakeOrchestrator
from byockit.testkit.synthetic import synthetic_frames
from byockit.worker import session as worker_session
from byockit.worker.frames import Frame
from byockit.worker.processor import ParamsRejected, Processor
from byockit.worker.server import WorkerServer

CAPABILITY = "inverter"
TIMEOUT = 20.0


@dataclass
class Params:
    invert: bool = True


class DataInverter(Processor[Params]):
    """Inverts frames while ``invert`` is on and reports each frame's index as data."""

    params_type = Params

    def validate_params(self, params: Params) -> None:
        if not isinstance(params.invert, bool):
            raise ParamsRejected("invert must be a boolean")

    def process(self, frame: Frame[npt.NDArray[np.uint8]]) -> npt.NDArray[np.uint8]:
        frame.stream.emit_data({"index": frame.index})
        params = frame.stream.params
        assert isinstance(params, Params)
        return 255 - frame.data if params.invert else frame.data


@contextlib.asynccontextmanager
async def network() -> AsyncIterator[tuple[FakeOrchestrator, WorkerServer, FakeGateway]]:
    sessions = functools.partial(worker_session.StreamSession, status_interval=0.2)
    async with (
        FakeOrchestrator(keepalive_interval=0.5, event_timeout=5.0) as orch,
        WorkerServer(DataInverter, port=0, session_factory=sessions) as worker,
        FakeGateway([orch]) as gateway,
    ):
        await worker.wait_loaded()
        await orch.register(
            CapabilityRegistration(name=CAPABILITY, url=worker.url, capacity=worker.capacity)
        )
        yield orch, worker, gateway


async def status_where(stream: StreamSession, key: str, value: object) -> JSONObject:
    """The first status document whose ``inference_status[key]`` is ``value``."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            status = await stream.status()
            inference = status.get("inference_status") if status else None
            if status is not None and isinstance(inference, dict) and inference.get(key) == value:
                return status
            await asyncio.sleep(0.05)


async def test_status_update_data_and_stop_through_the_fake_gateway() -> None:
    before = asyncio.all_tasks()
    async with network() as (orch, worker, gateway), GatewayClient(gateway.url) as client:
        stream = await client.start(CAPABILITY, {"invert": True}, data_output=True)
        watching = asyncio.create_task(stream.watch(poll_interval=0.1))
        status = await status_where(stream, "last_params", {"invert": True})
        assert status["stream_id"] == stream.stream_id
        assert status["orchestrator_info"] == {"address": "", "url": orch.url}

        answer = await stream.update({"invert": False})
        assert answer.status == 200
        assert stream.params == {"invert": False}
        await status_where(stream, "last_params", {"invert": False})
        with pytest.raises(GatewayError) as refused:
            await stream.update({"invert": "yes"})
        assert refused.value.status == 400
        assert "must be a boolean" in refused.value.body

        received: list[Any] = []
        first_data = asyncio.Event()

        async def read_data() -> None:
            async for value in stream.data():
                received.append(value)
                first_data.set()

        reading = asyncio.create_task(read_data())
        fake_stream = await gateway.stream(stream.stream_id)
        publishing = asyncio.create_task(
            fake_stream.publish(synthetic_frames(900, width=160, height=96))
        )
        async with asyncio.timeout(TIMEOUT):
            await first_data.wait()
        publishing.cancel()
        await asyncio.gather(publishing, return_exceptions=True)

        await stream.stop(b"client left")
        async with asyncio.timeout(TIMEOUT):
            await reading
            await watching
        stopped = await fake_stream.wait_event(StreamStoppedEvent)
        assert stopped.reason == "client left"
        assert all(isinstance(value, dict) and set(value) == {"index"} for value in received)
        assert stream.failure is None
        await stream.stop()  # again: harmless
        async with asyncio.timeout(TIMEOUT):
            while worker.sessions:  # noqa: ASYNC110 - the worker tears down on its own
                await asyncio.sleep(0.05)
    leftover = {task for task in asyncio.all_tasks() - before if not task.done()}
    assert leftover == set()


async def test_watch_reports_a_stream_no_orchestrator_is_left_to_run() -> None:
    async with network() as (orch, _, gateway), GatewayClient(gateway.url) as client:
        stream = await client.start(CAPABILITY, {"invert": True})
        await status_where(stream, "last_params", {"invert": True})
        watching = asyncio.create_task(stream.watch(error_grace=0.3, poll_interval=0.05))
        await orch.stop()
        async with asyncio.timeout(TIMEOUT):
            with pytest.raises(StreamFailed) as caught:
                await watching
        assert EXHAUSTED_ERROR in caught.value.reason
        assert stream.failure is caught.value
        await stream.stop()  # the gateway forgot it: 404, which is fine
