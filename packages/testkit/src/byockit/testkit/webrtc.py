"""WebRTC for the fake gateway: WHIP ingest into, and WHEP playback out of, a stream's orchestrator.

A go-livepeer gateway takes WHIP video and writes it, as MPEG-TS segments,
into the orchestrator's input channel; playback is WHEP from its media server
(MediaMTX), fed from the output channel. :class:`WhipIngest` and
:class:`WhepPlayback` do the same over aiortc for
:class:`~byockit.testkit.gateway.FakeGateway`, which stands in for MediaMTX
by serving WHEP itself. Each follows the orchestrator that runs the stream
now, so a swap mid-stream carries on with the next one.

:func:`loopback_ice` keeps aiortc's ICE on ``127.0.0.1`` for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Final

import aioice.ice
import av
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from byockit.protocol.errors import TrickleError
from byockit.testkit.orchestrator import FakeStream

logger = logging.getLogger(__name__)

CurrentStream = Callable[[], Awaitable[FakeStream]]
"""Waits for the orchestrator's stream running the gateway stream now; ``LookupError`` once over."""
LOOPBACK: Final = "127.0.0.1"


class OfferError(ValueError):
    """The client's SDP offer cannot be answered; the message says why (the gateway's 400)."""


@contextlib.contextmanager
def loopback_ice() -> Iterator[None]:
    """Offer only ``127.0.0.1`` as an ICE host candidate while inside, for tests on loopback.

    aioice gathers host candidates on every interface except loopback and has
    no setting to choose them, so this swaps its address lookup for the
    duration (every peer connection gathering candidates meanwhile, in this
    process, gets loopback only; no STUN or TURN is involved).
    """
    original = aioice.ice.get_host_addresses

    def loopback_only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [LOOPBACK] if use_ipv4 else []

    aioice.ice.get_host_addresses = loopback_only
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = original


class _PeerSession:
    """One peer connection and the task that moves its video; closes both."""

    def __init__(self) -> None:
        self.pc: Final = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._task: asyncio.Task[None] | None = None

    def _spawn(self, work: Coroutine[None, None, None]) -> None:
        self._task = asyncio.create_task(work)
        self._task.add_done_callback(_report)

    async def _answer(self, offer_sdp: str) -> str:
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        except (ValueError, KeyError, IndexError) as exc:
            raise OfferError(f"invalid SDP offer: {exc}") from None
        if not any(t.kind == "video" for t in self.pc.getTransceivers()):
            raise OfferError("the SDP offer has no video")
        self._offered()
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription.sdp

    def _offered(self) -> None:
        """Called between the offer and the answer, to attach what the session sends."""

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.pc.close()


class WhipIngest(_PeerSession):
    """A WHIP session: the client's video track, encoded into the current orchestrator's input."""

    def __init__(self, current: CurrentStream) -> None:
        super().__init__()
        self._current = current
        self.pc.on("track", self._on_track)

    async def accept(self, offer_sdp: str) -> str:
        """The SDP answer to the client's offer; :class:`OfferError` if it cannot be answered."""
        return await self._answer(offer_sdp)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video" and self._task is None:
            self._spawn(self._ingest(track))

    async def _ingest(self, track: MediaStreamTrack) -> None:
        """Publish the track's frames until it ends; after a swap, into the next orchestrator."""
        while True:
            try:
                stream = await self._current()
            except LookupError:
                return
            try:
                await stream.publish(_received(track), realtime=False)
            except TrickleError as exc:
                if not stream.ended:
                    raise
                logger.info("WHIP ingest moves on from an ended stream: %s", exc)
                continue
            return


class WhepPlayback(_PeerSession):
    """A WHEP session: the current orchestrator's decoded output, sent as a video track."""

    def __init__(self, current: CurrentStream) -> None:
        super().__init__()
        self._current = current
        self._frames: asyncio.Queue[av.VideoFrame | None] = asyncio.Queue(maxsize=2)

    def _offered(self) -> None:
        self.pc.addTrack(_QueueTrack(self._frames))  # takes the offer's video transceiver

    async def accept(self, offer_sdp: str) -> str:
        """The SDP answer to the client's receive-only offer; starts feeding output frames."""
        answer = await self._answer(offer_sdp)
        self._spawn(self._feed())
        return answer

    async def _feed(self) -> None:
        """Queue output frames until the gateway stream ends; after a swap, the next one's."""
        while True:
            try:
                stream = await self._current()
            except LookupError:
                break
            async with contextlib.aclosing(stream.output_frames()) as frames:
                async for frame in frames:
                    await self._frames.put(frame)
            if not stream.ended:
                break
        await self._frames.put(None)


class _QueueTrack(MediaStreamTrack):
    """A video track sending what the queue gives, until ``None``."""

    kind = "video"

    def __init__(self, frames: asyncio.Queue[av.VideoFrame | None]) -> None:
        super().__init__()
        self._frames = frames

    async def recv(self) -> av.VideoFrame:
        frame = await self._frames.get()
        if frame is None:
            self.stop()
            raise MediaStreamError("the stream's output ended")
        return frame


async def _received(track: MediaStreamTrack) -> AsyncIterator[av.VideoFrame]:
    """A received track's video frames until it ends."""
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if isinstance(frame, av.VideoFrame):
            yield frame


def _report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        logger.error("WebRTC session failed: %s", error, exc_info=error)
