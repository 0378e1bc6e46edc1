"""The ``byockit-client`` CLI as a subprocess against a loopback stack run by the test.

The stack (FakeGateway -> FakeOrchestrator -> real WorkerServer) runs in the
test's event loop; each command is ``python -m byockit.client.cli`` with its
own state file.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from byockit.protocol.models import CapabilityRegistration
from byockit.testkit.gateway import FakeGateway
from byockit.testkit.orchestrator import FakeOrchestrator
from byockit.testkit.webrtc import loopback_ice
from byockit.worker import session as worker_session
from byockit.worker.frames import Frame
from byockit.worker.processor import Processor
from byockit.worker.server import WorkerServer

CAPABILITY = "inverter"
TIMEOUT = 60.0


@dataclass
class Params:
    invert: bool = True


class Inverter(Processor[Params]):
    params_type = Params

    def process(self, frame: Frame[npt.NDArray[np.uint8]]) -> npt.NDArray[np.uint8]:
        params = frame.stream.params
        assert isinstance(params, Params)
        return 255 - frame.data if params.invert else frame.data


class Cli:
    """Runs ``byockit-client`` commands with one state file."""

    def __init__(self, state_file: Path) -> None:
        self.state_file = state_file
        self.env = os.environ | {"BYOCKIT_STATE_FILE": str(state_file), "COLUMNS": "200"}

    async def spawn(self, *args: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "byockit.client.cli",
            *args,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

    async def __call__(self, *args: str) -> tuple[int, str, str]:
        return await finish(await self.spawn(*args))

    async def recorded_stream(self) -> str:
        """The id of the stream a running ``run`` recorded (waits for it)."""
        while True:
            if self.state_file.exists():
                records = json.loads(self.state_file.read_text())
                if records:
                    return str(next(iter(records)))
            await asyncio.sleep(0.1)


async def finish(process: asyncio.subprocess.Process) -> tuple[int, str, str]:
    async with asyncio.timeout(TIMEOUT):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture(autouse=True)
def loopback() -> Iterator[None]:
    with loopback_ice():
        yield


@pytest.fixture
async def gateway() -> AsyncIterator[FakeGateway]:
    sessions = functools.partial(worker_session.StreamSession, status_interval=0.2)
    async with (
        FakeOrchestrator(keepalive_interval=0.5, event_timeout=10.0) as orch,
        WorkerServer(Inverter, port=0, session_factory=sessions) as worker,
    ):
        await worker.wait_loaded()
        await orch.register(
            CapabilityRegistration(name=CAPABILITY, url=worker.url, capacity=worker.capacity)
        )
        async with FakeGateway([orch]) as gateway:
            yield gateway


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "state" / "streams.json")


async def test_run_records_and_summarises(gateway: FakeGateway, cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    code, stdout, stderr = await cli(
        "run",
        "--gateway",
        gateway.url,
        "--capability",
        CAPABILITY,
        "--source",
        "test",
        "--params",
        '{"invert": true}',
        "--seconds",
        "3",
        "--record",
        str(out),
    )
    assert code == 0, stderr
    assert "byockit run summary" in stdout
    assert "frames out" in stdout
    assert re.search(r"bitrate in / out\s*│\s*[1-9]\d* kbit/s / [1-9]\d* kbit/s", stdout), stdout
    assert str(out) in stdout
    assert out.stat().st_size > 0
    assert json.loads(cli.state_file.read_text()) == {}  # the finished stream is forgotten
    assert gateway.stream_ids == frozenset()


async def test_status_update_and_stop_act_on_a_running_stream(
    gateway: FakeGateway, cli: Cli
) -> None:
    running = await cli.spawn("run", "--gateway", gateway.url, "--capability", CAPABILITY)
    try:
        async with asyncio.timeout(TIMEOUT):
            stream_id = await cli.recorded_stream()
        code, stdout, stderr = await cli("status", stream_id)
        assert code == 0, stderr
        assert json.loads(stdout)["stream_id"] == stream_id
        code, stdout, stderr = await cli("update", stream_id, '{"invert": false}')
        assert code == 0, stderr
        assert stdout.startswith("HTTP 200")
        code, _, stderr = await cli("update", "--gateway", gateway.url, stream_id, '{"invert": 3}')
        assert code == 1
        assert "HTTP 400" in stderr
        assert "must be a boolean" in stderr
        code, _, stderr = await cli("status", "--gateway", "http://127.0.0.1:9", stream_id)
        assert code == 1
        assert f"runs on {gateway.url}" in stderr
        code, stdout, stderr = await cli("stop", stream_id)
        assert code == 0, stderr
        assert f"stopped {stream_id}" in stdout
        assert gateway.stream_ids == frozenset()
        code, _, stderr = await cli("status", stream_id)
        assert code == 1
        assert "only streams started by" in stderr
        # the gateway ends the run's output, which ends the run
        code, stdout, stderr = await finish(running)
        assert code == 0, stderr
        assert "byockit run summary" in stdout
    finally:
        if running.returncode is None:
            running.kill()
            await running.wait()


async def test_ctrl_c_ends_a_run_with_a_summary(gateway: FakeGateway, cli: Cli) -> None:
    running = await cli.spawn("run", "--gateway", gateway.url, "--capability", CAPABILITY)
    try:
        async with asyncio.timeout(TIMEOUT):
            await cli.recorded_stream()
        running.send_signal(signal.SIGINT)
        code, stdout, stderr = await finish(running)
    finally:
        if running.returncode is None:
            running.kill()
            await running.wait()
    assert code == 0, stderr
    assert "byockit run summary" in stdout
    assert gateway.stream_ids == frozenset()


async def test_failures_exit_non_zero_with_a_clear_message(cli: Cli) -> None:
    code, _, stderr = await cli(
        "run", "--gateway", "http://127.0.0.1:9", "--capability", CAPABILITY, "--seconds", "1"
    )
    assert code == 1
    assert "no gateway could start the stream" in stderr
    assert "Traceback" not in stderr
    code, _, stderr = await cli("run", "--gateway", "http://127.0.0.1:9", "--capability", "x",
                                "--params", "[1]")  # fmt: skip
    assert code == 2
    assert "must be a JSON object" in stderr
    code, _, stderr = await cli("run", "--gateway", "nope", "--capability", CAPABILITY)
    assert code == 1
    assert "gateway URL must be http" in stderr
    code, _, stderr = await cli("stop", "unknown")
    assert code == 1
    assert "no stream 'unknown'" in stderr
    cli.state_file.parent.mkdir(parents=True)
    cli.state_file.write_text("[")
    code, _, stderr = await cli("status", "unknown")
    assert code == 1
    assert "cannot read the state file" in stderr
