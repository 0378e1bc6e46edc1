"""Video straight over trickle: no gateway, for orchestrator-direct use and local work.

A gateway relays a client's video into a stream's trickle channels; a client
that holds the channel URLs itself (an orchestrator's start answer, or the
testkit's ``FakeStream.channels``) can do the same: encode frames into
MPEG-TS, one GOP per segment, published to the input channel, and decode the
output channel back into frames (PROTOCOL.md 6).

The URLs keep the names of the start body, which are the worker's view:
``subscribe_url`` is the channel the worker reads (this class publishes
into it), ``publish_url`` the one the worker writes (this class reads it)::

    async with TrickleDirect(body["subscribe_url"], body["publish_url"]) as direct:
        async for frame in direct.run(TestPatternSource(count=300)):
            ...
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncGenerator, AsyncIterable
from typing import Final

import aiohttp
import av

from byockit.protocol.lifecycle import Closeable
from byockit.protocol.media import SegmentEncoder, decode_segments, publish_stream
from byockit.protocol.trickle.publisher import TricklePublisher
from byockit.protocol.trickle.subscriber import TrickleSubscriber


class TrickleDirect(Closeable):
    """Publishes frames into ``subscribe_url`` and decodes the frames of ``publish_url``.

    ``verify_tls`` as for :class:`~byockit.protocol.trickle.TricklePublisher`
    (``False`` accepts an orchestrator's self-signed certificate);
    ``session``: a shared ``aiohttp.ClientSession`` (left open);
    ``encoder``: the encoder's settings (default: libx264 ``veryfast``,
    one-second segments). Trickle errors are raised as
    :class:`~byockit.protocol.errors.TrickleError` s.
    """

    def __init__(
        self,
        subscribe_url: str,
        publish_url: str,
        *,
        verify_tls: bool | ssl.SSLContext = True,
        session: aiohttp.ClientSession | None = None,
        encoder: SegmentEncoder | None = None,
    ) -> None:
        self.subscribe_url: Final = subscribe_url
        self.publish_url: Final = publish_url
        self._verify_tls = verify_tls
        self._session = session
        self._encoder = encoder
        self._publisher: TricklePublisher | None = None
        self._subscriber: TrickleSubscriber | None = None

    async def publish(self, frames: AsyncIterable[av.VideoFrame]) -> None:
        """Encode ``frames`` into the input channel; returns when they end, the last segment done.

        Frames need ``pts`` and ``time_base`` (every byockit source sets them).
        One publish at a time; a later call continues the channel.
        """
        if self._publisher is not None:
            raise RuntimeError("this TrickleDirect is already publishing")
        publisher = TricklePublisher(
            self.subscribe_url, session=self._session, verify_tls=self._verify_tls
        )
        self._publisher = publisher
        try:
            async with publisher:
                await publish_stream(frames, publisher, self._encoder)
        finally:
            self._publisher = None

    async def frames(self) -> AsyncGenerator[av.VideoFrame, None]:
        """Decoded frames of the output channel from its first segment, until it ends.

        Audio in the output is skipped. Stop iterating (or close) to let go.
        """
        if self._subscriber is not None:
            raise RuntimeError("this TrickleDirect is already reading its output")
        subscriber = TrickleSubscriber(
            self.publish_url, start=0, session=self._session, verify_tls=self._verify_tls
        )
        self._subscriber = subscriber
        try:
            async with subscriber, contextlib.aclosing(decode_segments(subscriber)) as items:
                async for item in items:
                    if isinstance(item, av.VideoFrame):
                        yield item
        finally:
            self._subscriber = None

    async def run(
        self, frames: AsyncIterable[av.VideoFrame]
    ) -> AsyncGenerator[av.VideoFrame, None]:
        """Publish ``frames`` in the background while yielding the output frames.

        A publishing failure is raised here; leaving the loop stops publishing.
        The output goes on after the input has ended, until the channel ends
        or the caller stops.
        """
        sending = asyncio.create_task(self.publish(frames))
        output = self.frames()
        try:
            while True:
                receiving = asyncio.ensure_future(anext(output, None))
                if not sending.done():
                    await asyncio.wait({receiving, sending}, return_when=asyncio.FIRST_COMPLETED)
                if sending.done() and sending.exception() is not None:
                    receiving.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await receiving
                    await sending  # raises the publishing failure
                frame = await receiving
                if frame is None:  # the output ended
                    if sending.done() and sending.exception() is not None:
                        await sending
                    return
                yield frame
        finally:
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending
            await output.aclose()

    async def close(self) -> None:
        """Stop publishing and reading: the segment being written is abandoned. Idempotent."""
        if self._publisher is not None:
            await self._publisher.close()
        if self._subscriber is not None:
            await self._subscriber.close()
