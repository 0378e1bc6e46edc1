"""WebRTC media for a BYOC stream: publish video over WHIP, play the output over WHEP (aiortc).

Use the ``whip_url`` and ``whep_url`` the gateway returned at start::

    async with WhipPublisher(stream.urls.whip_url, source) as publisher:
        async with WhepPlayer(stream.urls.whep_url) as player:
            async for frame in player:
                ...

Both speak WHIP/WHEP without trickle ICE: the offer carries every local
candidate, the answer every remote one; no STUN or TURN server is configured.
Each ``stop`` deletes the resource (the ``Location`` the server answered) and
closes the peer connection. Both replace a connection that fails or that the
server closes with a fresh offer (bounded retries, backoff) and end cleanly
when the server answers that offer 404 (the stream is gone); both count the
bytes they moved, for bitrates. Importing this module loads aiortc; ``import
byockit.client`` does not.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import urllib.parse
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Final

import aiohttp
import attrs
import av
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from aiortc.stats import RTCTransportStats

from byockit.client.errors import GatewayError, GatewayUnavailable, InvalidGatewayAnswer
from byockit.client.gateway import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    MAX_ANSWER_BYTES,
    RetryPolicy,
    send,
)
from byockit.protocol.lifecycle import Service
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
        self.retry: Final = RetryPolicy(retries=retries)

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
                if not self.retry.retries_status(status):
                    raise failure
            if attempt >= self.retry.retries:
                raise failure
            logger.info("retrying the offer to %s after: %s", self.url, failure)
            await asyncio.sleep(self.retry.delay(attempt))
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
                retry=self.retry,
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


class _Link:
    """A WHIP or WHEP resource kept connected, one peer connection at a time.

    The same logic serves both directions: ``prepare`` adds the owner's
    tracks to each fresh peer connection; a connection that fails or that
    the server closes (or that its owner reports with :meth:`drop`) sets
    :attr:`lost`; :meth:`reconnect` deletes the old resource and makes a
    fresh offer, at most ``retries`` times in all, backing off from the
    second time on. Bytes moved are counted across connections.
    """

    def __init__(
        self,
        endpoint: _Endpoint,
        prepare: Callable[[RTCPeerConnection], None],
        retries: int,
    ) -> None:
        self.endpoint: Final = endpoint
        self._prepare = prepare
        self._retries = retries
        self.pc: RTCPeerConnection | None = None
        """The current peer connection."""
        self.lost = asyncio.Event()
        """Set when the current connection stopped working."""
        self.reconnects = 0
        """Connections that replaced a lost one."""
        self._attempts = 0
        self._earlier = _Transferred(0, 0)
        """Bytes moved by the connections closed so far."""

    async def connect(self) -> None:
        """Offer a fresh peer connection and apply the answer (see :meth:`_Endpoint.negotiate`)."""
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc = pc

        def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self.drop(pc)

        pc.on("connectionstatechange", on_state)
        self._prepare(pc)
        await self.endpoint.negotiate(pc)

    def drop(self, pc: RTCPeerConnection) -> None:
        """Note that ``pc`` stopped working (ignored unless it is the current connection)."""
        if pc is self.pc:
            self.lost.set()

    async def reconnect(self) -> bool:
        """Replace the lost connection; ``False`` when the server says the stream is gone (404).

        Raises :class:`GatewayUnavailable` when ``retries`` reconnects were
        already tried, else what a failed offer raises.
        """
        if self._attempts >= self._retries:
            raise GatewayUnavailable(
                f"the WebRTC connection was lost {self._attempts + 1} times "
                f"(reconnects allowed: {self._retries})",
                url=self.endpoint.url,
            )
        if self._attempts:
            await asyncio.sleep(self.endpoint.retry.delay(self._attempts - 1))
        self._attempts += 1
        await self._close_pc()
        await self.endpoint.delete()
        self.lost.clear()
        try:
            await self.connect()
        except GatewayError as exc:
            if exc.status == 404:
                return False
            raise
        self.reconnects += 1
        return True

    async def transferred(self) -> _Transferred:
        """Bytes sent and received so far, over every connection."""
        if self.pc is None:
            return self._earlier
        return self._earlier + await _transport_bytes(self.pc)

    async def close(self) -> None:
        """Close the connection and delete the resource; idempotent."""
        await self._close_pc()
        await self.endpoint.close()

    async def _close_pc(self) -> None:
        pc, self.pc = self.pc, None
        if pc is not None:
            self._earlier += await _transport_bytes(pc)
            await pc.close()


@attrs.frozen
class _Transferred:
    """Bytes moved over a peer connection's transport: RTP, RTCP and DTLS, what the network
    carried."""

    sent: int
    received: int

    def __add__(self, other: _Transferred) -> _Transferred:
        return _Transferred(self.sent + other.sent, self.received + other.received)


async def _transport_bytes(pc: RTCPeerConnection) -> _Transferred:
    sent = received = 0
    for stats in (await pc.getStats()).values():
        if isinstance(stats, RTCTransportStats):
            sent += stats.bytesSent
            received += stats.bytesReceived
    return _Transferred(sent, received)


class WhipPublisher(Service):
    """Publishes ``source`` (any async iterable of :class:`av.VideoFrame`) to a WHIP endpoint.

    Frames must carry ``pts`` and ``time_base``; they are sent as they come
    (pace a file source in real time). A connection that fails (ICE or DTLS)
    or that the server closed is replaced by a new one (a new offer), up to
    ``retries`` times in all, continuing the same source; :meth:`wait` then
    raises :class:`GatewayUnavailable`. When the server answers the new offer
    404 (the stream was stopped), publishing ends as if the source had.
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
        endpoint = _Endpoint(
            whip_url, session=session, verify_tls=verify_tls, timeout=timeout, retries=retries
        )
        self._link = _Link(endpoint, self._add_track, retries)
        self._source = source
        self._frames: asyncio.Queue[av.VideoFrame | None] = asyncio.Queue(maxsize=SOURCE_QUEUE)
        self._pump: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._failed = asyncio.Event()
        self._finished = asyncio.Event()
        self._failure: BaseException | None = None

    @property
    def playback_url(self) -> str:
        """Where the output plays, as the server said (``Livepeer-Playback-URL``), or ``""``."""
        return self._link.endpoint.playback_url

    @property
    def resource_url(self) -> str | None:
        """The WHIP resource of the current connection (the answer's ``Location``)."""
        return self._link.endpoint.location

    @property
    def reconnects(self) -> int:
        """How many times a failed connection was replaced."""
        return self._link.reconnects

    async def bytes_sent(self) -> int:
        """Bytes sent so far over every connection (what the network carried, all included)."""
        return (await self._link.transferred()).sent

    async def start(self) -> None:
        """Connect (the offer is retried on transient failures) and start sending the source."""
        if self._pump is not None:
            raise RuntimeError("the WhipPublisher is already started")
        self._pump = asyncio.create_task(self._read_source())
        try:
            await self._link.connect()
        except BaseException:
            await self.stop()
            raise
        self._supervisor = asyncio.create_task(self._supervise())

    async def wait(self) -> None:
        """Return once the whole source was sent (or the stream is gone); raise why publishing
        failed, if it did."""
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
        await self._link.close()

    def _add_track(self, pc: RTCPeerConnection) -> None:
        pc.addTransceiver(_SourceTrack(self._frames, self._finished), direction="sendonly")

    async def _supervise(self) -> None:
        """Replace a lost connection while there is something left to send."""
        while True:
            await self._link.lost.wait()
            if self._finished.is_set():
                return
            logger.info("WHIP connection to %s lost; reconnecting", self._link.endpoint.url)
            try:
                if not await self._link.reconnect():
                    logger.info("the stream behind %s is gone", self._link.endpoint.url)
                    self._finished.set()
                    return
            except (GatewayError, GatewayUnavailable, InvalidGatewayAnswer) as exc:
                self._failure = exc
                self._failed.set()
                return

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


class WhepPlayer(Service):
    """Plays a WHEP endpoint: iterate it for the received :class:`av.VideoFrame`\\ s.

    A connection that fails, that the server closes or whose track ends is
    replaced by a new one (a new offer; 502/503/504 answers and unreachable
    servers are retried with backoff), up to ``retries`` times in all, and
    the frames keep coming. Iteration ends when the server answers a new
    offer 404 (the stream ended) or :meth:`stop` is called; it raises
    :class:`GatewayUnavailable` (or the error answer) when the connection
    could not be replaced. Frames are received as they arrive, whether or
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
        endpoint = _Endpoint(
            whep_url, session=session, verify_tls=verify_tls, timeout=timeout, retries=retries
        )
        self._link = _Link(endpoint, self._prepare, retries)
        self._frames: asyncio.Queue[av.VideoFrame | None] = asyncio.Queue(maxsize=PLAYER_QUEUE)
        self._receivers: set[asyncio.Task[None]] = set()
        self._supervisor: asyncio.Task[None] | None = None
        self._started = False
        self._failure: BaseException | None = None
        self._ended = False
        """Whether the end was queued (nothing is queued after it)."""
        self.dropped = 0
        """Frames dropped because the reader was behind."""

    @property
    def resource_url(self) -> str | None:
        """The WHEP resource of the current connection (the answer's ``Location``)."""
        return self._link.endpoint.location

    @property
    def reconnects(self) -> int:
        """How many times a lost connection was replaced."""
        return self._link.reconnects

    async def bytes_received(self) -> int:
        """Bytes received so far over every connection (what the network carried, all included)."""
        return (await self._link.transferred()).received

    async def start(self) -> None:
        """Offer to receive video and apply the answer (retried on transient failures)."""
        if self._started:
            raise RuntimeError("the WhepPlayer is already started")
        self._started = True
        try:
            await self._link.connect()
        except BaseException:
            await self.stop()
            raise
        self._supervisor = asyncio.create_task(self._supervise())

    async def __aiter__(self) -> AsyncIterator[av.VideoFrame]:
        if not self._started:
            raise RuntimeError("start the WhepPlayer first")
        while True:
            frame = await self._frames.get()
            if frame is None:
                self._frames.put_nowait(None)  # the end, for any other reader too
                if self._failure is not None:
                    raise self._failure
                return
            yield frame

    async def stop(self) -> None:
        """Delete the WHEP resource and close the connection (ending iteration); idempotent."""
        tasks = [task for task in (self._supervisor, *self._receivers) if task is not None]
        self._supervisor = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._link.close()
        self._offer(None)

    def _prepare(self, pc: RTCPeerConnection) -> None:
        def on_track(received: MediaStreamTrack) -> None:
            if received.kind == "video" and pc is self._link.pc:
                task = asyncio.create_task(self._receive(received, pc))
                self._receivers.add(task)
                task.add_done_callback(self._receivers.discard)

        pc.on("track", on_track)
        pc.addTransceiver("video", direction="recvonly")

    async def _supervise(self) -> None:
        """Replace a lost connection until the stream is gone or the retries are spent."""
        while True:
            await self._link.lost.wait()
            logger.info("WHEP connection to %s lost; reconnecting", self._link.endpoint.url)
            try:
                if not await self._link.reconnect():
                    logger.info("the stream behind %s is gone", self._link.endpoint.url)
                    break
            except (GatewayError, GatewayUnavailable, InvalidGatewayAnswer) as exc:
                self._failure = exc
                break
        self._offer(None)

    async def _receive(self, track: MediaStreamTrack, pc: RTCPeerConnection) -> None:
        """Move received frames into the bounded queue until the track ends."""
        try:
            while True:
                frame = await track.recv()
                if isinstance(frame, av.VideoFrame):
                    self._offer(frame)
        except MediaStreamError:
            pass
        finally:
            self._link.drop(pc)

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
