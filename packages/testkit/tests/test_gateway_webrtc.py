"""The fake gateway's WHIP ingest and WHEP playback, driven by plain aiortc peers over loopback.

Indexed test frames go in over WHIP, through a fake orchestrator to a real
worker that inverts them, and come back over WHEP with their indexes readable.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
from collections.abc import AsyncIterator, Iterator

import aiohttp
import av
import numpy as np
import numpy.typing as npt
import pytest
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from byockit.protocol.models import (
    CapabilityRegistration,
    JobParameters,
    JobRequestDetails,
    LivepeerHeader,
    StreamUrls,
)
from byockit.testkit.gateway import FakeGateway
from byockit.testkit.orchestrator import FakeOrchestrator
from byockit.testkit.synthetic import indexed_frame, read_index
from byockit.testkit.webrtc import loopback_ice
from byockit.worker.frames import Frame
from byockit.worker.processor import Processor
from byockit.worker.server import WorkerServer

CAPABILITY = "inverter"
TIMEOUT = 30.0
WIDTH, HEIGHT, FPS = 160, 96, 15


class Inverter(Processor[None]):
    def process(self, frame: Frame[npt.NDArray[np.uint8]]) -> npt.NDArray[np.uint8]:
        return 255 - frame.data


class IndexedTrack(MediaStreamTrack):
    """Indexed test frames at ``FPS``, paced in real time."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._index = 0

    async def recv(self) -> av.VideoFrame:
        await asyncio.sleep(1 / FPS)
        frame = av.VideoFrame.from_ndarray(indexed_frame(self._index, WIDTH, HEIGHT), "rgb24")
        frame.pts, frame.time_base = self._index * 90_000 // FPS, fractions.Fraction(1, 90_000)
        self._index += 1
        return frame


@pytest.fixture(autouse=True)
def loopback() -> Iterator[None]:
    with loopback_ice():
        yield


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
        yield session


@contextlib.asynccontextmanager
async def gateway_with_worker(*, webrtc: bool = True) -> AsyncIterator[FakeGateway]:
    async with (
        FakeOrchestrator(keepalive_interval=0.5, event_timeout=10.0) as orch,
        WorkerServer(Inverter, port=0) as worker,
    ):
        await worker.wait_loaded()
        await orch.register(
            CapabilityRegistration(name=CAPABILITY, url=worker.url, capacity=worker.capacity)
        )
        async with FakeGateway([orch], webrtc=webrtc) as gateway:
            yield gateway


async def start_stream(
    http: aiohttp.ClientSession, gateway: FakeGateway, *, video: bool = True
) -> StreamUrls:
    header = LivepeerHeader(
        capability=CAPABILITY,
        timeout_seconds=10,
        request=JobRequestDetails(stream_id="s1"),
        parameters=JobParameters(enable_video_ingress=video, enable_video_egress=video),
    )
    body = {"stream_id": "s1", "params": json.dumps({})}
    async with http.post(
        f"{gateway.url}/process/stream/start", json=body, headers={"Livepeer": header.to_header()}
    ) as resp:
        assert resp.status == 200, await resp.text()
        return StreamUrls.from_json(await resp.text())


async def offer(http: aiohttp.ClientSession, url: str, pc: RTCPeerConnection) -> tuple[str, str]:
    """Offer ``pc`` at ``url``; the resource URL and the playback URL answered."""
    await pc.setLocalDescription(await pc.createOffer())
    headers = {"Content-Type": "application/sdp"}
    async with http.post(url, data=pc.localDescription.sdp, headers=headers) as resp:
        assert resp.status == 201, await resp.text()
        assert resp.content_type == "application/sdp"
        answer = await resp.text()
        location = str(resp.url.with_path(resp.headers["Location"]))
        playback = resp.headers["Livepeer-Playback-URL"]
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    return location, playback


async def state(pc: RTCPeerConnection, wanted: str) -> None:
    async with asyncio.timeout(TIMEOUT):
        while pc.connectionState != wanted:  # noqa: ASYNC110 - aiortc signals no event per state
            await asyncio.sleep(0.05)


def new_pc() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


async def test_whip_in_whep_out_through_a_worker(http: aiohttp.ClientSession) -> None:
    async with gateway_with_worker() as gateway:
        urls = await start_stream(http, gateway)
        assert urls.whip_url == f"{gateway.url}/process/stream/s1/whip"
        assert urls.whep_url == f"{gateway.url}/process/stream/s1/whep"

        sender, receiver = new_pc(), new_pc()
        sender.addTransceiver(IndexedTrack(), direction="sendonly")
        whip_location, playback = await offer(http, urls.whip_url, sender)
        assert playback == urls.whep_url

        received: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
        receiver.on("track", received.set_result)
        receiver.addTransceiver("video", direction="recvonly")
        whep_location, _ = await offer(http, urls.whep_url, receiver)

        indexes: list[int] = []
        async with asyncio.timeout(TIMEOUT):
            track = await received
            while len(indexes) < 20:
                frame = await track.recv()
                assert isinstance(frame, av.VideoFrame)
                rgb = frame.to_ndarray(format="rgb24")
                with contextlib.suppress(ValueError):  # a frame damaged in transit
                    indexes.append(read_index(rgb))
        assert indexes == sorted(indexes)
        assert len(set(indexes)) == len(indexes)
        # the worker inverted the picture: the top-left reference cell is white in the input
        assert rgb[2, 2].mean() < 128

        for location in (whip_location, whep_location):
            async with http.delete(location) as resp:
                assert resp.status == 200
            async with http.delete(location) as resp:
                assert resp.status == 404
        await state(receiver, "closed")
        await sender.close()
        await receiver.close()


async def test_stopping_the_stream_closes_its_webrtc_sessions(
    http: aiohttp.ClientSession,
) -> None:
    async with gateway_with_worker() as gateway:
        urls = await start_stream(http, gateway)
        receiver = new_pc()
        receiver.addTransceiver("video", direction="recvonly")
        await offer(http, urls.whep_url, receiver)
        await state(receiver, "connected")
        async with http.post(urls.stop_url) as resp:
            assert resp.status == 200
        await state(receiver, "closed")


async def test_offers_are_checked(http: aiohttp.ClientSession) -> None:
    async with gateway_with_worker() as gateway:
        urls = await start_stream(http, gateway)
        text = {"Content-Type": "text/plain"}
        async with http.post(urls.whip_url, data="v=0", headers=text) as resp:
            assert resp.status == 415
        sdp = {"Content-Type": "application/sdp"}
        async with http.post(urls.whip_url, data="not sdp", headers=sdp) as resp:
            assert resp.status == 400
            assert "SDP" in await resp.text()
        async with http.post(urls.whip_url, data=b"v" * 70_000, headers=sdp) as resp:
            assert resp.status == 413
        missing = urls.whip_url.replace("/s1/", "/nope/")
        async with http.post(missing, data="v=0", headers=sdp) as resp:
            assert resp.status == 404
        async with http.delete(f"{urls.whip_url}/unknown") as resp:
            assert resp.status == 404


async def test_webrtc_urls_follow_the_settings(http: aiohttp.ClientSession) -> None:
    async with gateway_with_worker(webrtc=False) as gateway:
        urls = await start_stream(http, gateway)
        assert (urls.whip_url, urls.whep_url) == ("", "")
        sdp = {"Content-Type": "application/sdp"}
        async with http.post(f"{gateway.url}/process/stream/s1/whip", headers=sdp) as resp:
            assert resp.status in (404, 405)
    async with gateway_with_worker() as gateway:
        urls = await start_stream(http, gateway, video=False)
        assert (urls.whip_url, urls.whep_url) == ("", "")
        async with http.post(f"{gateway.url}/process/stream/s1/whip", headers=sdp) as resp:
            assert resp.status == 400
            assert "no video ingress" in await resp.text()
