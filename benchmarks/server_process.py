"""Run ``byockit-testkit trickle-server`` in its own process for benchmarks."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def trickle_server_process(auto_create: bool = True) -> AsyncIterator[str]:
    """Start the server process, wait until it answers, yield its base URL."""
    port = free_port()
    args = ["-m", "byockit.testkit", "trickle-server", "--host", "127.0.0.1", "--port", str(port)]
    if auto_create:
        args.append("--auto-create")
    process = await asyncio.create_subprocess_exec(sys.executable, *args)
    url = f"http://127.0.0.1:{port}/"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(url + "probe/next"):
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            else:
                raise RuntimeError("trickle server process did not start")
        yield url
    finally:
        process.terminate()
        await process.wait()
