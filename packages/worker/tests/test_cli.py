"""``byockit-worker``: ``new`` and ``serve``, as real subprocesses where they serve."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import attrs
import numpy as np
import pytest
from rich.console import Console

from byockit.protocol.models import CapabilityRegistration, HealthStatus
from byockit.testkit.orchestrator import FakeOrchestrator
from byockit.testkit.synthetic import indexed_frame, read_index, synthetic_frames
from byockit.worker.cli import StatusDisplay, main, status_line
from byockit.worker.health import SessionSnapshot, WorkerSnapshot
from byockit.worker.registration import Registrar, RegistrationError

TIMEOUT = 30.0
SECRET = "cli-orch-secret"


@attrs.define
class Served:
    """A running ``byockit-worker serve``: its process, URL and stdout so far."""

    process: asyncio.subprocess.Process
    url: str
    lines: list[str]
    stderr: Path

    async def read_until(self, pattern: str) -> str:
        """The first stdout line (already read or coming) matching ``pattern``."""
        async with asyncio.timeout(TIMEOUT):
            for line in self.lines:
                if re.search(pattern, line):
                    return line
            assert self.process.stdout is not None
            while raw := await self.process.stdout.readline():
                self.lines.append(line := raw.decode().rstrip("\n"))
                if re.search(pattern, line):
                    return line
        raise AssertionError(f"no line matched {pattern!r}: {self.lines}, {self.errors()}")

    async def finish(self, signum: int) -> int:
        self.process.send_signal(signum)
        async with asyncio.timeout(TIMEOUT):
            assert self.process.stdout is not None
            rest = await self.process.stdout.read()
            self.lines += rest.decode().splitlines()
            return await self.process.wait()

    def errors(self) -> str:
        return self.stderr.read_text()


@contextlib.asynccontextmanager
async def serve(
    directory: Path, *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[Served]:
    """Start ``byockit-worker serve ARGS`` in ``directory`` and wait until it listens."""
    stderr = directory / "stderr.txt"
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ORCH_", "CAPABILITY_"))
    }
    with stderr.open("w") as errors:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "byockit.worker.cli",
            "serve",
            *args,
            cwd=directory,
            env=environ | (env or {}),
            stdout=asyncio.subprocess.PIPE,
            stderr=errors,
        )
    served = Served(process, "", [], stderr)
    try:
        line = await served.read_until(r"^serving .* at http://")
        served.url = line.rsplit(" ", 1)[-1]
        yield served
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def health(url: str) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url + "health") as response,
    ):
        document = await response.json()
        return str(document["status"])


async def wait_health(url: str, wanted: HealthStatus) -> None:
    async with asyncio.timeout(TIMEOUT):
        while await health(url) != wanted.value:  # noqa: ASYNC110 - polling another process
            await asyncio.sleep(0.05)


# --- new -------------------------------------------------------------------------------------


def test_new_writes_a_processor_and_a_dockerfile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["new", "my_fx", "--dir", str(tmp_path / "app")]) == 0
    source = (tmp_path / "app" / "my_fx.py").read_text()
    compile(source, "my_fx.py", "exec")
    assert "class Params" in source
    assert "processor = " in source
    dockerfile = (tmp_path / "app" / "Dockerfile").read_text()
    assert "FROM byockit-worker\n" in dockerfile  # the reference image: torch, CUDA, the SDK
    assert "docker build -f packages/worker/Dockerfile -t byockit-worker ." in dockerfile
    assert "COPY my_fx.py ." in dockerfile
    assert 'CMD ["byockit-worker", "serve", "my_fx:processor"' in dockerfile
    assert "ENV CAPABILITY_NAME=my-fx" in dockerfile
    assert "serve my_fx:processor" in capsys.readouterr().out


def test_new_never_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "Dockerfile").write_text("mine")
    assert main(["new", "my_fx", "--dir", str(tmp_path)]) == 2
    assert "not overwriting" in capsys.readouterr().err
    assert (tmp_path / "Dockerfile").read_text() == "mine"
    assert not (tmp_path / "my_fx.py").exists()  # nothing is written when anything exists


def test_new_wants_a_module_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new", "My-Fx", "--dir", str(tmp_path)]) == 2
    assert "'my_fx'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


async def test_the_new_processor_serves_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    assert main(["new", "fresh", "--dir", str(tmp_path)]) == 0
    async with serve(tmp_path, "fresh:processor", "--port", "0") as served:
        await wait_health(served.url, HealthStatus.IDLE)
        await served.read_until(r"^IDLE  streams 0/1  in 0\.0 fps  out 0\.0 fps  latency -")
        assert await served.finish(signal.SIGINT) == 0
    assert served.lines[-1] == "stopped"
    assert "Traceback" not in served.errors()


# --- serve -----------------------------------------------------------------------------------


async def test_serve_registers_runs_a_stream_and_unregisters(tmp_path: Path) -> None:
    assert main(["new", "inverter", "--dir", str(tmp_path)]) == 0
    async with FakeOrchestrator(secret=SECRET, keepalive_interval=1.0) as orch:
        env = {
            "ORCH_URL": orch.url,
            "ORCH_SECRET": SECRET,
            "CAPABILITY_NAME": "inverter",
            "CAPABILITY_TOKEN": "tok",
        }
        async with serve(tmp_path, "inverter:processor", "--port", "0", env=env) as served:
            registration = await orch.wait_registered("inverter", timeout=TIMEOUT)
            assert registration.url + "/" == served.url  # the bound port, no trailing slash
            assert registration.token == "tok"
            await served.read_until(r"registered 'inverter' with http://")

            stream = await orch.start_stream("inverter", {"strength": 1.0})
            frames = list(synthetic_frames(30, width=320, height=180))
            await stream.publish(frames)
            async with asyncio.timeout(TIMEOUT), contextlib.aclosing(stream.output_frames()) as out:
                first = await anext(out)
            pixels = first.to_ndarray(format="rgb24")
            index = read_index(pixels)  # the code survives inversion
            expected = 255 - indexed_frame(index, 320, 180).astype(np.int16)
            assert np.abs(pixels.astype(np.int16) - expected).mean() < 20
            [line] = await stream.wait_data(1, timeout=TIMEOUT)
            assert line["frame"] % 30 == 0  # what the template emits

            rejected = await stream.update_params({"strength": 2})
            assert rejected.status == 400
            assert "between 0 and 1" in rejected.body
            await served.read_until(r"^OK  streams 1/1")
            assert (await stream.stop(b"done")).status == 200
            await wait_health(served.url, HealthStatus.IDLE)
            assert await served.finish(signal.SIGTERM) == 0
        assert orch.unregistered == ["inverter"]
    assert "Traceback" not in served.errors()
    assert SECRET not in served.errors() + "\n".join(served.lines)


async def test_serve_says_when_the_port_is_taken(tmp_path: Path) -> None:
    assert main(["new", "taken", "--dir", str(tmp_path)]) == 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "byockit.worker.cli", "serve", "taken:processor", "--port", str(port)),
            cwd=tmp_path,
            stderr=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
        )
        async with asyncio.timeout(TIMEOUT):
            _, errors = await process.communicate()
    assert process.returncode == 1
    assert f"cannot serve on 127.0.0.1:{port}" in errors.decode()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current directory with clean registration variables."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for variable in list(os.environ):
        if variable.startswith(("ORCH_", "CAPABILITY_")):
            monkeypatch.delenv(variable)
    return tmp_path


@pytest.mark.parametrize(
    ("source", "spec", "message"),
    [
        (None, "no_colon", "expected MODULE:ATTRIBUTE"),
        (None, "cli_missing_module:processor", "no module named 'cli_missing_module'"),
        ("x = 1\n", "cli_no_attr:processor", "has no attribute 'processor'"),
        ("raise RuntimeError('boom')\n", "cli_raises:p", "RuntimeError: boom"),
        ("import cli_absent_dependency\n", "cli_needs:p", "No module named 'cli_absent_dep"),
        ("processor = 42\n", "cli_number:processor", "cannot serve as a processor"),
        ("class P:\n    pass\n", "cli_plain_class:P", "not a byockit.worker.Processor"),
    ],
)
def test_an_unusable_processor_is_a_clear_error(
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    source: str | None,
    spec: str,
    message: str,
) -> None:
    if source is not None:
        (workdir / f"{spec.split(':')[0]}.py").write_text(source)
    assert main(["serve", spec]) == 2
    error = capsys.readouterr().err
    assert error.startswith("byockit-worker: error: ")
    assert message in error


@pytest.mark.parametrize(
    ("args", "environ", "message"),
    [
        (["--orch-url", "http://orch:1", "--capability", "x"], {}, "ORCH_SECRET"),
        (["--orch-url", "http://orch:1"], {"ORCH_SECRET": "s"}, "--capability / CAPABILITY_NAME"),
        (
            ["--capability", "x"],
            {"ORCH_URL": "http://orch:1", "ORCH_SECRET": "s", "CAPABILITY_CURRENCY": "usd"},
            "--currency / CAPABILITY_CURRENCY: must be one of",
        ),
        (
            ["--orch-url", "orch:8935", "--capability", "x"],
            {"ORCH_SECRET": "s"},
            "--orch-url / ORCH_URL: expected an http(s) URL",
        ),
        (
            ["--orch-url", "http://orch:1", "--capability", "x"],
            {"ORCH_SECRET": "two\nlines"},
            "--orch-secret / ORCH_SECRET: contains control characters",
        ),
        ([], {"CAPABILITY_CAPACITY": "two"}, "CAPABILITY_CAPACITY"),
        (["--capacity", "0"], {}, "at least 1"),
        (["--token", " "], {}, "token must not be empty"),
        (["--port", "70000"], {}, "--port"),
        (["--x264-preset", "quick"], {}, "--x264-preset / BYOCKIT_X264_PRESET must be one of"),
        ([], {"BYOCKIT_X264_PRESET": "fastest"}, "got 'fastest'"),
    ],
)
def test_bad_settings_are_clear_errors(
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    environ: dict[str, str],
    message: str,
) -> None:
    (workdir / "cli_ok.py").write_text("def processor(frame):\n    return frame\n")
    for variable, value in environ.items():
        monkeypatch.setenv(variable, value)
    assert main(["serve", "cli_ok:processor", *args]) == 2
    assert message in capsys.readouterr().err


def test_a_negative_price_names_its_setting(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (workdir / "cli_priced.py").write_text("def processor(frame):\n    return frame\n")
    monkeypatch.setenv("ORCH_SECRET", "s")
    args = ["--orch-url", "http://o:1", "--capability", "x", "--price-per-unit", "-3"]
    assert main(["serve", "cli_priced:processor", *args]) == 2
    assert "--price-per-unit / CAPABILITY_PRICE_PER_UNIT: must be between 0" in (
        capsys.readouterr().err
    )


# --- the status line -------------------------------------------------------------------------


def snapshot(*sessions: SessionSnapshot, health: HealthStatus = HealthStatus.OK) -> WorkerSnapshot:
    return WorkerSnapshot(health=health, capacity=2, sessions=sessions)


def session(fps: float, latency: float | None) -> SessionSnapshot:
    return SessionSnapshot("s", "ok", "ONLINE", fps, fps, latency, 0)


async def test_the_status_line_says_what_a_person_watches() -> None:
    running = snapshot(session(29.96, 41.4), session(10.0, 80.0))
    assert status_line(running, None) == (
        "OK  streams 2/2  in 40.0 fps  out 40.0 fps  latency 80 ms  not registering"
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        unreachable = f"http://127.0.0.1:{sock.getsockname()[1]}"
    registrar = Registrar(
        unreachable, "secret", CapabilityRegistration(name="fx", url="http://x:9", capacity=1)
    )
    idle = snapshot(health=HealthStatus.IDLE)
    assert status_line(idle, registrar).endswith(f"registering 'fx' with {unreachable}")
    with contextlib.suppress(RegistrationError):
        await registrar.register()
    assert "registering 'fx': cannot reach the orchestrator" in status_line(idle, registrar)
    failed = attrs.evolve(idle, health=HealthStatus.ERROR, load_error="OSError: no model")
    assert status_line(failed, None, stopping=True).startswith("STOPPING  streams 0/2")
    assert status_line(failed, None).endswith("load failed: OSError: no model")


def test_plain_status_lines_print_changes_not_every_refresh() -> None:
    out = io.StringIO()
    display = StatusDisplay(Console(file=io.StringIO()), terminal=False, out=out)
    with display:
        display.show("IDLE  streams 0/1  in 0.0 fps  out 0.0 fps  latency -  not registering")
        display.show("IDLE  streams 0/1  in 0.0 fps  out 0.0 fps  latency -  not registering")
        display.show("OK  streams 1/1  in 0.0 fps  out 0.0 fps  latency -  not registering")
        display.show("OK  streams 1/1  in 29.0 fps  out 29.0 fps  latency 40 ms  not registering")
    assert out.getvalue().splitlines() == [
        "IDLE  streams 0/1  in 0.0 fps  out 0.0 fps  latency -  not registering",
        "OK  streams 1/1  in 0.0 fps  out 0.0 fps  latency -  not registering",
    ]


def test_a_terminal_gets_a_live_coloured_line() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120, color_system="standard")
    display = StatusDisplay(console, terminal=True)
    with display:
        display.show("OK  streams 1/1  in 30.0 fps  out 30.0 fps  latency 40 ms  not registering")
    drawn = screen.getvalue()
    assert "streams 1/1" in drawn
    assert "\x1b[" in drawn  # styled and redrawn in place
