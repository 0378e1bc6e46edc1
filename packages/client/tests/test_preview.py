"""Preview server over real HTTP and WebSocket: page, newest frames, state, params, shutdown."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import av
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedOK, InvalidStatus

from byockit.client.preview import MAX_PREVIEW_WIDTH, PreviewServer
from byockit.protocol.media.pattern import indexed_frame, read_index

W, H = 160, 90


def frame(index: int, width: int = W, height: int = H) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(indexed_frame(index, width, height), format="rgb24")


def ws_url(server: PreviewServer) -> str:
    return server.url.replace("http://", "ws://") + "ws"


def decode_jpeg(data: bytes) -> av.VideoFrame:
    with av.open(io.BytesIO(data), mode="r", format="mjpeg") as container:
        return next(container.decode(video=0))


async def drain(connection: ClientConnection) -> None:
    """Read messages until the connection closes (which raises)."""
    while True:
        await connection.recv()


async def next_image(connection: ClientConnection, side: int) -> av.VideoFrame:
    """The next image the page gets for ``side`` (0: input, 1: output)."""
    async with asyncio.timeout(10):
        while True:
            message = await connection.recv()
            if isinstance(message, bytes) and message[0] == side:
                return decode_jpeg(message[1:])


async def next_message(connection: ClientConnection, kind: str) -> dict[str, Any]:
    """The next JSON message of this ``type``."""
    async with asyncio.timeout(10):
        while True:
            message = await connection.recv()
            if isinstance(message, str):
                document: dict[str, Any] = json.loads(message)
                if document["type"] == kind:
                    return document


@pytest.fixture
async def accepted() -> list[dict[str, Any]]:
    return []


@pytest.fixture
async def server(accepted: list[dict[str, Any]]) -> AsyncIterator[PreviewServer]:
    async def on_params(params: dict[str, Any]) -> tuple[int, str]:
        if params.get("explode"):
            raise RuntimeError("worker is on fire")
        accepted.append(params)
        return 200, '{"accepted": true}'

    async with PreviewServer(on_params=on_params) as server:
        yield server


async def test_serves_the_page_and_its_files_only(server: PreviewServer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(server.url) as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            page = await response.text()
        assert 'src="preview.js"' in page
        assert 'href="preview.css"' in page
        for name, content_type in [("preview.js", "text/javascript"), ("preview.css", "text/css")]:
            async with http.get(server.url + name) as response:
                assert response.status == 200
                assert response.content_type == content_type
        async with http.get(server.url + "secret.txt") as response:
            assert response.status == 404
            assert "/secret.txt" in await response.text()


async def test_a_page_gets_only_the_newest_frame_of_each_side(server: PreviewServer) -> None:
    async with connect(ws_url(server)) as page:
        await next_message(page, "state")
        for index in range(30):  # no await in between: the pump can only see the last one
            server.show_input(frame(index))
        server.show_output(frame(500), latency=0.04)
        assert read_index((await next_image(page, 0)).to_ndarray(format="rgb24")) == 29
        assert read_index((await next_image(page, 1)).to_ndarray(format="rgb24")) == 500
        state = await next_message(page, "state")
        assert state["output"]["latency_ms"] == pytest.approx(40)
        assert state["input"]["fps"] is not None


async def test_a_page_opened_later_gets_the_last_frames(server: PreviewServer) -> None:
    server.show_input(frame(7))  # nobody watches yet: kept, not encoded
    async with connect(ws_url(server)) as first:
        assert read_index((await next_image(first, 0)).to_ndarray(format="rgb24")) == 7
        async with connect(ws_url(server)) as second:
            assert read_index((await next_image(second, 0)).to_ndarray(format="rgb24")) == 7


async def test_wide_frames_are_scaled_down(server: PreviewServer) -> None:
    async with connect(ws_url(server)) as page:
        server.show_output(frame(3, 1280, 720), latency=None)
        image = await next_image(page, 1)
        assert (image.width, image.height) == (MAX_PREVIEW_WIDTH, 360)
        assert read_index(image.to_ndarray(format="rgb24")) == 3


async def test_state_carries_stats_and_params(server: PreviewServer) -> None:
    server.set_stats({"bitrate": "1.2 Mb/s", "dropped": 3})
    server.set_params({"strength": 0.5})
    async with connect(ws_url(server)) as page:
        state = await next_message(page, "state")
        assert state["stats"] == {"bitrate": "1.2 Mb/s", "dropped": 3}
        assert state["params"] == {"strength": 0.5}
        assert state["params_form"] is True
        assert state["input"]["fps"] is None
        assert state["output"]["latency_ms"] is None


async def send_params(page: ClientConnection, text: str) -> dict[str, Any]:
    await page.send(json.dumps({"type": "params", "text": text}))
    return await next_message(page, "reply")


async def test_params_from_the_page_reach_on_params(
    server: PreviewServer, accepted: list[dict[str, Any]]
) -> None:
    async with connect(ws_url(server)) as page:
        reply = await send_params(page, '{"strength": 0.9, "prompt": "cat"}')
        assert reply == {"type": "reply", "status": 200, "body": '{"accepted": true}'}
        assert accepted == [{"strength": 0.9, "prompt": "cat"}]


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (json.dumps({"type": "params", "text": "{oops"}), "params must be a JSON object: "),
        (json.dumps({"type": "params", "text": "[1, 2]"}), "JSON object, not list"),
        (json.dumps({"type": "params", "text": 5}), "'text' must be a string"),
        (json.dumps({"type": "hello"}), "expected {'type': 'params'"),
        ("not json", "params must be a JSON object: "),
        (
            json.dumps({"type": "params", "text": '{"explode": 1}'}),
            "RuntimeError: worker is on fire",
        ),
    ],
)
async def test_bad_params_are_answered_with_an_error(
    server: PreviewServer, accepted: list[dict[str, Any]], message: str, error: str
) -> None:
    async with connect(ws_url(server)) as page:
        await page.send(message)
        reply = await next_message(page, "reply")
        assert error in reply["error"]
        assert "status" not in reply
    assert accepted == []


async def test_without_on_params_the_form_is_off() -> None:
    async with PreviewServer() as server, connect(ws_url(server)) as page:
        assert (await next_message(page, "state"))["params_form"] is False
        reply = await send_params(page, '{"strength": 1}')
        assert "no on_params handler" in reply["error"]


async def test_other_origins_are_refused(server: PreviewServer) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(server), origin="http://evil.example"):  # type: ignore[arg-type]
            pass
    assert refused.value.response.status_code == 403
    own_origin = server.url.rstrip("/")
    async with connect(ws_url(server), origin=own_origin) as page:  # type: ignore[arg-type]
        await next_message(page, "state")


def test_bad_input_is_refused_with_a_clear_error() -> None:
    server = PreviewServer()
    with pytest.raises(TypeError, match="stats must be JSON-serialisable"):
        server.set_stats({"when": object()})
    with pytest.raises(TypeError, match="params must be JSON-serialisable"):
        server.set_params({"strength": float("nan")})
    with pytest.raises(TypeError, match=r"expected an av\.VideoFrame, got bytes"):
        server.show_input(b"jpeg")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.url


async def test_shutdown_with_an_open_page_leaves_nothing_behind() -> None:
    before = asyncio.all_tasks()
    server = PreviewServer()
    await server.__aenter__()
    page = await connect(ws_url(server))
    server.show_input(frame(1))
    await next_image(page, 0)
    await server.__aexit__(None, None, None)  # while the page is still open
    async with asyncio.timeout(10):
        with pytest.raises(ConnectionClosedOK):
            await drain(page)
    assert page.close_code == 1001  # going away
    assert asyncio.all_tasks() == before
    assert not [t for t in threading.enumerate() if t.name.startswith("byockit-preview")]
