"""The reference worker's Dockerfile, checked without a Docker engine.

No Docker runs where the tests run, so the image is never built here. What
can be checked is checked against the real code: the files it copies exist,
its command is a real console script whose flags the CLI accepts and whose
processor imports and can be served, the environment it sets is what the
worker reads, its health check passes against a real worker's ``/health``
and fails when nothing answers, and the base image and torch are pinned.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import sys
import tomllib
from pathlib import Path
from typing import Final

import attrs
import numpy as np
import numpy.typing as npt
import pytest
from aiohttp import web

from byockit.worker import Frame, ProcessorRuntime, WorkerServer
from byockit.worker.cli import _parser, serve_config
from byockit.worker.registration import ENVIRONMENT
from byockit.worker.server import Endpoint, find_route

REPO: Final = Path(__file__).resolve().parents[3]
DOCKERFILE: Final = REPO / "packages" / "worker" / "Dockerfile"
BUILD_COMMAND: Final = "docker build -f packages/worker/Dockerfile -t byockit-worker ."
VENV_PATH: Final = "PATH"
"""The one variable set for the image itself (the venv's console scripts), not for the worker."""
CUDA_IMAGES: Final = ("nvidia/cuda", "pytorch/pytorch")


@attrs.frozen
class Instruction:
    keyword: str
    """Upper case: ``FROM``, ``RUN``, ``COPY``..."""
    text: str
    """Everything after the keyword, continuation lines joined."""


def instructions(dockerfile: str) -> list[Instruction]:
    """The instructions, with comments dropped and ``\\`` continuations joined, as Docker does."""
    found: list[Instruction] = []
    pending = ""
    for line in dockerfile.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, text = (pending + stripped).partition(" ")
        found.append(Instruction(keyword.upper(), text.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return found


def only(keyword: str) -> Instruction:
    matching = [each for each in INSTRUCTIONS if each.keyword == keyword]
    assert len(matching) == 1, f"expected one {keyword}, found {len(matching)}"
    return matching[0]


def environment() -> dict[str, str]:
    """What the ``ENV`` instructions set (``KEY=VALUE`` pairs, quotes as the shell reads them)."""
    variables: dict[str, str] = {}
    for each in INSTRUCTIONS:
        if each.keyword == "ENV":
            for pair in shlex.split(each.text):
                name, equals, value = pair.partition("=")
                assert equals, f"ENV {pair!r}: use the KEY=VALUE form"
                variables[name] = value
    return variables


def exec_form(text: str) -> list[str]:
    command = json.loads(text)
    assert isinstance(command, list), f"not the exec (JSON) form: {text}"
    assert all(isinstance(part, str) for part in command)
    return command


def serve_command() -> list[str]:
    return exec_form(only("CMD").text)


def health_command() -> list[str]:
    _, _, command = only("HEALTHCHECK").text.partition("CMD ")
    assert command, "HEALTHCHECK without a CMD"
    return exec_form(command)


INSTRUCTIONS: Final = instructions(DOCKERFILE.read_text(encoding="utf-8"))


def test_the_base_image_is_a_cuda_image_pinned_to_a_tag() -> None:
    for each in (each for each in INSTRUCTIONS if each.keyword == "FROM"):
        image = each.text.split()[0]
        name, colon, tag = image.rpartition(":")
        assert colon, f"FROM {image}: pin a tag"
        assert "/" not in tag, f"FROM {image}: pin a tag"
        assert tag != "latest", f"FROM {image}: 'latest' is not a pin"
        assert name.startswith(CUDA_IMAGES), f"FROM {image}: not a CUDA base image"


def test_every_copied_file_exists_in_the_repository() -> None:
    copies = [each for each in INSTRUCTIONS if each.keyword in ("COPY", "ADD")]
    assert copies
    for each in copies:
        parts = [part for part in shlex.split(each.text) if not part.startswith("--")]
        sources = parts[:-1]
        assert sources, f"{each.keyword} {each.text}: no source"
        for source in sources:
            assert (REPO / source).exists(), f"{each.keyword} {source}: not in the repository"


def test_torch_is_pinned_as_in_the_test_environments() -> None:
    noxfile = (REPO / "noxfile.py").read_text(encoding="utf-8")
    tested = re.search(r'^TORCH = "torch==([^"]+)"', noxfile, re.MULTILINE)
    assert tested is not None, "noxfile.py no longer pins torch as TORCH = ..."
    runs = " ".join(each.text for each in INSTRUCTIONS if each.keyword == "RUN")
    assert re.findall(r"torch==([\w.+]+)", runs) == [tested[1]]


def test_the_command_is_the_worker_cli_serving_a_servable_processor() -> None:
    command = serve_command()
    pyproject = tomllib.loads((REPO / "packages/worker/pyproject.toml").read_text("utf-8"))
    assert command[0] in pyproject["project"]["scripts"]
    args = _parser().parse_args(command[1:])  # exits (SystemExit) on an unknown flag
    assert args.command == "serve"
    assert args.host == "0.0.0.0", "a container must listen on every interface"
    config = serve_config(args, environment())  # imports the processor, checks the settings
    assert config.registration is None  # no ORCH_URL baked in: it comes from `docker run -e`
    runtime = ProcessorRuntime.wrap(config.processor)
    assert runtime.frame_format.kind == "torch", "the reference worker is the torch effects chain"


def test_the_exposed_port_is_the_served_port() -> None:
    command = serve_command()
    port = command[command.index("--port") + 1]
    assert only("EXPOSE").text.split() == [port]


def test_every_variable_set_is_one_the_worker_reads() -> None:
    variables = environment()
    unknown = set(variables) - set(ENVIRONMENT.values()) - {VENV_PATH}
    assert not unknown, f"the worker reads none of {sorted(unknown)}"
    assert variables["CAPABILITY_NAME"]
    assert "ORCH_SECRET" not in variables, "a secret must not be baked into an image"


def test_it_runs_as_an_unprivileged_user() -> None:
    users = [each.text for each in INSTRUCTIONS if each.keyword == "USER"]
    assert users, "no USER: the worker would run as root"
    assert users[-1] not in ("root", "0")


def test_the_documented_build_command_is_this_one() -> None:
    assert BUILD_COMMAND in DOCKERFILE.read_text(encoding="utf-8")
    for document in ("README.md", "docs/deploy.md"):
        assert BUILD_COMMAND in (REPO / document).read_text(encoding="utf-8"), document


def invert(frame: Frame[npt.NDArray[np.uint8]]) -> npt.NDArray[np.uint8]:
    return 255 - frame.data


async def run_health_check(port: int) -> int:
    """The image's health check, pointed at ``port`` on this machine; its exit status."""
    command = health_command()
    served = serve_command()
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/[\w/]*)", " ".join(command))
    assert url is not None, "the health check does not call http://127.0.0.1:PORT/..."
    assert url[1] == served[served.index("--port") + 1], "it checks another port than served"
    route = find_route(url[2])
    assert route is not None, f"the worker serves no {url[2]}"
    assert route.endpoint is Endpoint.HEALTH
    assert route.method == "GET"
    assert command[0] == "python"  # the venv's, first on the image's PATH
    pointed = [part.replace(f"127.0.0.1:{url[1]}", f"127.0.0.1:{port}") for part in command]
    process = await asyncio.create_subprocess_exec(sys.executable, *pointed[1:])
    return await asyncio.wait_for(process.wait(), timeout=30)


async def test_the_health_check_passes_on_a_ready_worker_and_fails_without_one() -> None:
    server = WorkerServer(invert, port=0)
    async with server:
        await server.wait_loaded()
        port = int(server.url.rsplit(":", 1)[1].rstrip("/"))
        assert await run_health_check(port) == 0
    assert await run_health_check(port) != 0  # nothing listens any more


@pytest.mark.parametrize(
    ("status", "healthy"), [("LOADING", False), ("ERROR", False), ("OK", True)]
)
async def test_the_health_check_follows_the_status_document(status: str, healthy: bool) -> None:
    # A stand-in answering /health with a fixed status: a worker cannot be held in these states.
    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": status})

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        assert (await run_health_check(port) == 0) is healthy
    finally:
        await runner.cleanup()
