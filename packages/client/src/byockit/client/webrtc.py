"""WebRTC media for a BYOC stream: publish video over WHIP, play the output over WHEP (aiortc).

Use the ``whip_url`` and ``whep_url`` the gateway returned at start::

    async with WhipPublisher(stream.urls.whip_url, source) as publisher:
        async with WhepPlayer(stream.urls.whep_url) as player:
            async for frame in player:
                ...

Both speak WHIP/WHEP without trickle ICE: the offer carries every local
candidate, the answer every remote one; no STUN or TURN server is configured.
Each ``stop`` deletes the resource (the ``Location`` the server answered) and
closes the peer connection. Importing this module loads aiortc; ``import
byockit.client`` does not.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import urllib.parse
from collections.abc import AsyncIterable, AsyncIterator
from types import TracebackType
from typing import Final, Self

import aiohttp
import av
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from byockit.client.errors import GatewayError, GatewayUnavailable, InvalidGatewayAnswer
from byockit.client.gateway import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    MAX_ANSWER_BYTES,
    RetryPolicy,
    send,
)
from byockit.protocol.trickle.http import request_ssl

logger = logging.getLogger(__name__)

MIME_SDP: Final = "application/sdp"
SOURCE_QUEUE: Final = 2
"""Frames read ahead from the source; a full queue holds the source back."""
PLAYER_QUEUE: Final = 16
"""Received frames held for a slow reader (about half a second; output comes in bursts);
when full, the oldest is dropped (latest wins)."""


class _Endpoint:
    """A WHIP or WHEP resource: one offer/answer exchange per peer connection, then DELETE."""

    def __init__(
        self,
        url: str,
        *,
        session: aiohttp.ClientSession | None,
        verify_tls: bool | ssl.SSLContext,
        timeout: float,
        retries: int,
    ) -> None:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"a WHIP/WHEP URL must be http:// or https://: {url!r}")
        self.url: Final = url
        self.location: str | None = None
        """The resource the server made for the current peer connection."""
        self.playback_url = ""
        """``Livepeer-Playback-URL`` of the last answer (``""`` if none)."""
        self._own_http = session is None
        self._http = session
        self._verify_tls = verify_tls
        self._timeout = timeout
        self._retry = RetryPolicy(retries=retries)

    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    async def negotiate(self, pc: RTCPeerConnection) -> None:
        """Send ``pc``'s offer, apply the answer; retried on transient failures.

        :class:`GatewayError` for an error answer, :class:`GatewayUnavailable`
        when no answer came after every try, :class:`InvalidGatewayAnswer`
        for a 201 that is not an SDP answer.
        """
        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp.encode()
        attempt = 0
        while True:
            try:
                status, body, headers = await self._post(offer)
            except GatewayUnavailable as exc:
                failure: GatewayUnavailable | GatewayError = exc
            else:
                if status == 201:
                    break
                failure = GatewayError(status, body, url=self.url)
                if not self._retry.retries_status(status):
                    raise failure
            if attempt >= self._retry.retries:
                raise failure
            logger.info("retrying the offer to %s after: %s", self.url, failure)
            await asyncio.sleep(self._retry.delay(attempt))
            attempt += 1
        location = headers.get("Location")
        if not location:
            raise InvalidGatewayAnswer("201 without a Location header", url=self.url)
        self.location = urllib.parse.urljoin(self.url, location)
        self.playback_url = headers.get("Livepeer-Playback-URL", "")
        try:
            await pc.setRemoteDescription(RTCSessionDescription(body, "answer"))
        except (ValueError, KeyError, IndexError) as exc:
            await self.delete()
            raise InvalidGatewayAnswer(f"not an SDP answer: {exc}", url=self.url) from None

    async def _post(self, offer: bytes) -> tuple[int, str, dict[str, str]]:
        try:
            async with self.http().post(
                self.url,
                data=offer,
                headers={"Content-Type": MIME_SDP},
                ssl=request_ssl(self._verify_tls),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            ) as resp:
                data = await resp.content.read(MAX_ANSWER_BYTES + 1)
                return resp.status, data.decode(errors="replace"), dict(resp.headers)
        except TimeoutError as exc:
            raise GatewayUnavailable(f"no answer within {self._timeout} s", url=self.url) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise GatewayUnavailable(f"cannot reach {self.url}: {exc!r}", url=self.url) from exc

    async def delete(self) -> None:
        """Delete the current resource (best effort: a failure is logged, not raised)."""
        location, self.location = self.location, None
        if location is None:
            return
        try:
            reply = await send(
                self.http(),
                "DELETE",
                location,
                verify_tls=self._verify_tls,
                timeout=self._timeout,
                retry=self._retry,
            )
        except GatewayUnavailable as exc:
            logger.warning("could not delete %s: %s", location, exc)
            return
        if reply.status >= 400 and reply.status != 404:
            logger.warning("deleting %s: HTTP %d %s", location, reply.status, reply.body[:200])

    async def close(self) -> None:
        await self.delete()
        if self._own_http and self._http is not None:
            await self._http.close()
            self._http = None


class WhipPublisher:
    """Publishes ``source`` (any async iterable of :class:`av.VideoFrame`) to a WHIP endpoint.

    Frames must carry ``pts`` and ``time_base``; they are sent as they come
    (pace a file source in real time). A connection that fails (ICE or DTLS)
    or that the server closed is replaced by a new one (a new offer), up to
    ``retries`` times in all, continuing
    the same source; :meth:`wait` then raises :class:`GatewayUnavailable`.
    """

    def __init__(
        self,
        whip_url: str,
        source: AsyncIterable[av.VideoFrame],
        *,
        session: aiohttp.ClientSession | None = None,
        verify_tls: bool | ssl.SSLContext = True,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        self._endpoint = _Endpoint(
            whip_url, session=session, verify_tls=verify_tls, timeout=timeout, retries=retries
        )
        self._source = source
        self._retries = retries
        self._frames: asyncio.Queue[av.VideoFrame | None] = asyncio.Queue(maxsize=SOURCE_QUEUE)
        self._pc: RTCPeerConnection | None = None
        self._pump: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._failed = asyncio.Event()
        self._finished = asyncio.Event()
        self._failure: BaseException | None = None
        self._reconnects = 0

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def playback_url(self) -> str:
        """Where the output plays, as the server said (``Livepeer-Playback-URL``), or ``""``."""
        return self._endpoint.playback_url

    @property
    def resource_url(self) -> str | None:
        """The WHIP resource of the current connection (the answer's ``Location``)."""
        return self._endpoint.location

    @property
    def reconnects(self) -> int:
        """How many times a failed connection was replaced."""
        return self._reconnects

    async def start(self) -> None:
        """Connect (the offer is retried on transient failures) and start sending the source."""
        if self._pump is not None:
            raise RuntimeError("the WhipPublisher is already started")
        self._pump = asyncio.create_task(self._read_source())
        try:
            await self._connect()
        except BaseException:
            await self.stop()
            raise
        self._supervisor = asyncio.create_task(self._supervise())

    async def wait(self) -> None:
        """Return once the whole source was sent; raise why publishing failed, if it did."""
        finished = asyncio.ensure_future(self._finished.wait())
        failed = asyncio.ensure_future(self._failed.wait())
        try:
            await asyncio.wait({finished, failed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            finished.cancel()
            failed.cancel()
        if self._failure is not None:
            raise self._failure

    async def stop(self) -> None:
        """Stop sending, delete the WHIP resource and close the connection; idempotent."""
        for task in (self._supervisor, self._pump):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._supervisor = None
        await self._close_pc()
        await self._endpoint.close()

    async def _connect(self) -> None:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._pc = pc
        pc.on("connectionstatechange", lambda: self._state_changed(pc))
        pc.addTransceiver(_SourceTrack(self._frames, self._finished), direction="sendonly")
        await self._endpoint.negotiate(pc)

    def _state_changed(self, pc: RTCPeerConnection) -> None:
        """A connection we did not close that failed or was closed by the server."""
        if pc is self._pc and pc.connectionState in ("failed", "closed"):
            self._failed.set()

    async def _supervise(self) -> None:
        """Replace a failed connection, up to ``retries`` times."""
        while True:
            await self._failed.wait()
            if self._finished.is_set():
                return
            if self._reconnects >= self._retries:
                self._failure = GatewayUnavailable(
                    f"the WebRTC connection failed {self._reconnects + 1} times",
                    url=self._endpoint.url,
                )
                return
            self._reconnects += 1
            logger.info("WHIP connection failed; reconnecting (%d)", self._reconnects)
            await self._close_pc()
            await self._endpoint.delete()
            self._failed.clear()
            try:
                await self._connect()
            except (GatewayError, GatewayUnavailable, InvalidGatewayAnswer) as exc:
                self._failure = exc
                self._failed.set()
                return

    async def _close_pc(self) -> None:
        pc, self._pc = self._pc, None
        if pc is not None:
            await pc.close()

    async def _read_source(self) -> None:
        """Move source frames into the bounded queue, so that a reconnect keeps the source."""
        try:
            async for frame in self._source:
                await self._frames.put(frame)
        except Exception as exc:
            self._failure = exc
            self._failed.set()
            raise
        await self._frames.put(None)


class WhepPlayer:
    """Plays a WHEP endpoint: iterate it for the received :class:`av.VideoFrame`\\ s.

    Iteration ends when the server ends the track, the connection fails or
    :meth:`stop` is called. Frames are received as they arrive, whether or
    not anyone iterates (aiortc would queue them without bound); at most
    :data:`PLAYER_QUEUE` wait for a slow reader, older ones are dropped
    (counted in :attr:`dropped`) so that what it reads stays recent.
    """

    def __init__(
        self,
        whep_url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        verify_tls: bool | ssl.SSLContext = True,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        self._endpoint = _Endpoint(
            whep_url, session=session, verify_tls=verify_tls, timeout=timeout, retries=retries
        )
        self._pc: RTCPeerConnection | None = None
        self._frames: asyncio.Queue[av.VideoFrame | None] = asyncio.Queue(maxsize=PLAYER_QUEUE)
        self._receiver: asyncio.Task[None] | None = None
        self._ended = False
        """Whether the end was queued (nothing is queued after it)."""
        self.dropped = 0
        """Frames dropped because the reader was behind."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Offer to receive video and apply the answer (retried on transient failures)."""
        if self._pc is not None:
            raise RuntimeError("the WhepPlayer is already started")
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._pc = pc

        def on_track(received: MediaStreamTrack) -> None:
            if received.kind == "video" and self._receiver is None:
                self._receiver = asyncio.create_task(self._receive(received))

        def on_state() -> None:
            if pc.connectionState in ("closed", "failed"):
                self._offer(None)

        pc.on("track", on_track)
        pc.on("connectionstatechange", on_state)
        pc.addTransceiver("video", direction="recvonly")
        try:
            await self._endpoint.negotiate(pc)
        except BaseException:
            await self.stop()
            raise

    async def __aiter__(self) -> AsyncIterator[av.VideoFrame]:
        if self._pc is None and not self._ended:
            raise RuntimeError("start the WhepPlayer first")
        while True:
            frame = await self._frames.get()
            if frame is None:
                self._frames.put_nowait(None)  # the end, for any other reader too
                return
            yield frame

    async def stop(self) -> None:
        """Delete the WHEP resource and close the connection (ending iteration); idempotent."""
        pc, self._pc = self._pc, None
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)
        if pc is not None:
            await pc.close()
        self._offer(None)
        await self._endpoint.close()

    async def _receive(self, track: MediaStreamTrack) -> None:
        """Move received frames into the bounded queue until the track ends."""
        try:
            while True:
                frame = await track.recv()
                if isinstance(frame, av.VideoFrame):
                    self._offer(frame)
        except MediaStreamError:
            pass
        finally:
            self._offer(None)

    def _offer(self, frame: av.VideoFrame | None) -> None:
        """Queue ``frame`` (``None``: the end), dropping the oldest frame when full."""
        if self._ended:
            return
        if self._frames.full():
            self._frames.get_nowait()  # never the end: nothing is queued after it
            self.dropped += 1
        self._frames.put_nowait(frame)
        self._ended = frame is None


class _SourceTrack(MediaStreamTrack):
    """A video track sending the queued source frames; ``None`` marks the source's end."""

    kind = "video"

    def __init__(
        self, frames: asyncio.Queue[av.VideoFrame | None], finished: asyncio.Event
    ) -> None:
        super().__init__()
        self._frames = frames
        self._finished = finished

    async def recv(self) -> av.VideoFrame:
        frame = await self._frames.get()
        if frame is None:
            self._finished.set()
            self.stop()
            raise MediaStreamError("the source ended")
        return frame
