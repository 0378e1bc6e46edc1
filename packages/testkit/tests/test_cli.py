"""``byockit-testkit trickle-server`` as a user runs it: a real process, real signals."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
import trustme

from byockit.testkit.cli import main

TIMEOUT = 20.0
_LAUNCH = "import sys; from byockit.testkit.cli import main; sys.exit(main())"


@asynccontextmanager
async def trickle_server_process(
    *args: str,
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """Start the CLI, wait for the URL it prints, yield (process, url)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _LAUNCH,
        "trickle-server",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), TIMEOUT)).decode()
        match = re.search(r"(https?://\S+/)", line)
        assert match, line
        yield process, match.group(1)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_serves_until_signalled(signum: signal.Signals) -> None:
    async with trickle_server_process(
        "--port", "0", "--auto-create", "--base-path", "/ai/trickle/"
    ) as (process, url):
        assert url.startswith("http://127.0.0.1:")
        assert url.endswith("/ai/trickle/")
        async with aiohttp.ClientSession() as session:
            async with session.post(url + "c/0", data=b"hello") as response:
                assert response.status == 200
            async with session.get(url + "c/0") as response:
                assert await response.read() == b"hello"

        process.send_signal(signum)

        assert await asyncio.wait_for(process.wait(), TIMEOUT) == 0


async def test_without_auto_create_segment_posts_are_404() -> None:
    async with trickle_server_process("--port", "0") as (process, url):
        async with (
            aiohttp.ClientSession() as session,
            session.post(url + "c/0", data=b"x") as response,
        ):
            assert response.status == 404
        process.terminate()
        assert await asyncio.wait_for(process.wait(), TIMEOUT) == 0


async def test_serves_https_with_the_given_certificate(tmp_path: Path) -> None:
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    cert_file = tmp_path / "cert.pem"
    key_file = tmp_path / "key.pem"
    certificate.cert_chain_pems[0].write_to_path(cert_file)
    certificate.private_key_pem.write_to_path(key_file)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)

    async with trickle_server_process(
        "--port", "0", "--auto-create", "--tls-cert", str(cert_file), "--tls-key", str(key_file)
    ) as (process, url):
        assert url.startswith("https://")
        connector = aiohttp.TCPConnector(ssl=client_context)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.post(url + "c/0", data=b"secret") as response,
        ):
            assert response.status == 200
        process.terminate()
        assert await asyncio.wait_for(process.wait(), TIMEOUT) == 0


def test_certificate_without_key_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["trickle-server", "--tls-cert", "cert.pem"])

    assert exit_info.value.code == 2
    assert "--tls-cert and --tls-key go together" in capsys.readouterr().err


def test_unreadable_certificate_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(SystemExit) as exit_info:
        main(["trickle-server", "--tls-cert", missing, "--tls-key", missing])

    assert exit_info.value.code == 2
    assert "cannot load the TLS certificate" in capsys.readouterr().err


def test_port_in_use_fails_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        assert main(["trickle-server", "--port", str(port)]) == 1

    assert f"cannot serve on 127.0.0.1:{port}" in capsys.readouterr().err


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])

    assert exit_info.value.code == 2
