"""The preview page in a real headless chromium, driven over the DevTools protocol (CDP).

Chromium is started with ``--remote-debugging-port=0``; the port it picked is
read from ``DevToolsActivePort`` in its profile folder, and the page is
inspected with ``Runtime.evaluate`` over aiohttp's WebSocket client.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest

from byockit.client.preview import PreviewServer
from byockit.protocol.media.pattern import indexed_frame

CHROMIUM = shutil.which("chromium")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None, reason="no chromium binary on PATH (apt install chromium)"
    ),
]


class DevTools:
    """A CDP session on one page target: one command at a time, events ignored."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._ids = itertools.count(1)

    async def command(self, method: str, **params: Any) -> dict[str, Any]:
        command_id = next(self._ids)
        await self._socket.send_json({"id": command_id, "method": method, "params": params})
        while True:
            message = json.loads(await self._socket.receive_str())
            if message.get("id") == command_id:
                if "error" in message:
                    raise RuntimeError(f"{method} failed: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.command(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str) -> Any:
        """Poll ``expression`` until it is truthy; its value."""
        async with asyncio.timeout(20):
            while not (value := await self.evaluate(expression)):  # noqa: ASYNC110 - a browser
                await asyncio.sleep(0.1)
        return value


@contextlib.asynccontextmanager
async def chromium_page(url: str, profile: Path) -> AsyncIterator[DevTools]:
    """Headless chromium showing ``url``, and a CDP session on that page."""
    assert CHROMIUM is not None
    process = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        url,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(30):
                active_port = profile / "DevToolsActivePort"
                # chromium writes this file: there is nothing to wait on but polling
                while not active_port.exists() or not active_port.read_text().strip():  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
                port = int(active_port.read_text().splitlines()[0])
                while True:
                    async with http.get(f"http://127.0.0.1:{port}/json/list") as response:
                        targets = await response.json()
                    pages = [t for t in targets if t["type"] == "page" and t["url"] == url]
                    if pages:
                        break
                    await asyncio.sleep(0.1)
                socket = await http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
            async with socket:
                page = DevTools(socket)
                await page.wait_for(
                    "document.readyState === 'complete'"
                    " && document.getElementById('input') !== null"
                )
                yield page
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


async def feed(server: PreviewServer) -> None:
    """A stream at about 20 fps: input, its output 50 ms later, and stats."""
    for index in itertools.count():
        image = av.VideoFrame.from_ndarray(indexed_frame(index, 320, 180), format="rgb24")
        server.show_input(image)
        server.show_output(image, latency=0.05)
        server.set_stats({"frames sent": index})
        await asyncio.sleep(0.05)


async def test_the_page_shows_video_stats_and_sends_params(tmp_path: Path) -> None:
    received: list[dict[str, Any]] = []

    async def on_params(params: dict[str, Any]) -> tuple[int, str]:
        received.append(params)
        return 200, '{"accepted": true}'

    async with PreviewServer(on_params=on_params) as server:
        server.set_params({"strength": 0.5})
        feeder = asyncio.create_task(feed(server))
        try:
            async with chromium_page(server.url, tmp_path / "profile") as page:
                await page.wait_for(
                    "document.getElementById('input').naturalWidth > 0"
                    " && document.getElementById('output').naturalWidth > 0"
                )
                assert await page.evaluate("document.getElementById('input').naturalWidth") == 320
                input_stats = await page.wait_for(
                    "/[0-9.]+ fps/.test(document.getElementById('input-stats').textContent)"
                    " && document.getElementById('input-stats').textContent"
                )
                assert "fps" in input_stats
                assert "latency 50 ms" in await page.wait_for(
                    "document.getElementById('output-stats').textContent.includes('latency')"
                    " && document.getElementById('output-stats').textContent"
                )
                assert "frames sent" in await page.evaluate(
                    "document.getElementById('stats').textContent"
                )
                assert json.loads(
                    await page.evaluate("document.getElementById('params').value")
                ) == {"strength": 0.5}

                await page.evaluate(
                    "document.getElementById('params').value = '{\"strength\": 0.9}';"
                    " document.getElementById('params').dispatchEvent(new Event('input'));"
                    " document.getElementById('send').click()"
                )
                reply = await page.wait_for(
                    "document.getElementById('reply').textContent.startsWith('200')"
                    " && document.getElementById('reply').textContent"
                )
                assert reply == '200 {"accepted": true}'
                assert received == [{"strength": 0.9}]

                await page.evaluate(
                    "document.getElementById('params').value = '{oops';"
                    " document.getElementById('send').click()"
                )
                error = await page.wait_for(
                    "document.getElementById('reply').textContent.startsWith('error')"
                    " && document.getElementById('reply').textContent"
                )
                assert error.startswith("error: params must be a JSON object")
                assert received == [{"strength": 0.9}]
        finally:
            feeder.cancel()
            await asyncio.wait([feeder])
