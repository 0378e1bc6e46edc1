"""The demo's run: the loopback network, a client streaming through it, looks changing live.

::

    from byockit.demo import DemoSettings, run_demo

    result = await run_demo(DemoSettings(seconds=20, record="demo.mp4"))
    print(result.summary.frames_out, result.summary.latency_p50)

What it does, in order: starts :class:`~byockit.demo.network.DemoNetwork`
(orchestrator, trickle server, reference worker registering itself,
gateway); runs :func:`byockit.client.run.run` against the gateway (WHIP in,
WHEP out, the preview page, the MP4 recording, a status watch); changes the
effect every ``look_interval`` seconds through the gateway's update API; and
stops everything when the time is up, the source ends or ``until`` is set.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

import attrs

from byockit.client.run import TEST_SOURCE, Progress, RunSummary, SourceSpec, run
from byockit.client.sources import TestPatternSource
from byockit.demo.looks import LOOKS, Look, LookChanger
from byockit.demo.network import CAPABILITY, DemoNetwork
from byockit.testkit.webrtc import loopback_ice

DEFAULT_SIZE: Final = (640, 360)
DEFAULT_FPS: Final = 30


@attrs.frozen
class DemoSettings:
    """What the demo runs.

    ``source``: ``"test"`` (the indexed test pattern at ``size`` and ``fps``,
    which lets the demo measure latency per frame), ``"webcam"`` or a video
    file. ``seconds``: ``None`` runs until ``until`` is set (Ctrl-C in the
    CLI) or a file source ends. ``record``: the MP4 to write (``None``: none).
    ``preview``: serve the side-by-side preview page on 127.0.0.1.
    """

    seconds: float | None = 30.0
    source: str = TEST_SOURCE
    size: tuple[int, int] = DEFAULT_SIZE
    fps: int = DEFAULT_FPS
    record: str | None = "byockit-demo.mp4"
    preview: bool = True
    look_interval: float = 5.0

    def __attrs_post_init__(self) -> None:
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError(f"seconds must be > 0, got {self.seconds}")
        if not self.look_interval > 0:
            raise ValueError(f"the look interval must be > 0 seconds, got {self.look_interval}")


@attrs.frozen
class DemoProgress:
    """A live report: the client's view of the run, each stage's state, the look in force."""

    client: Progress
    stages: list[tuple[str, str, str]]
    look: Look
    looks_applied: int


@attrs.frozen
class DemoResult:
    summary: RunSummary
    looks_applied: int
    """Looks the stream showed, counting the first."""
    looks_failed: int
    """Look changes that were refused or could not be sent."""


async def run_demo(
    settings: DemoSettings,
    *,
    on_progress: Callable[[DemoProgress], None] | None = None,
    on_ready: Callable[[DemoNetwork], None] | None = None,
    until: asyncio.Event | None = None,
) -> DemoResult:
    """Run the demo; ``on_ready`` gets the network once it is up, ``on_progress`` each second.

    Raises what :func:`byockit.client.run.run` raises (the stream failed, the
    source could not be opened...); everything is stopped in every case.
    """
    looks = LookChanger(settings.look_interval, LOOKS)

    def report(progress: Progress) -> None:
        looks.follow(progress)
        if on_progress is not None:
            on_progress(DemoProgress(progress, network.stages(), looks.current, looks.applied))

    source: SourceSpec = settings.source
    if source == TEST_SOURCE:
        source = TestPatternSource(settings.fps, *settings.size)
    with loopback_ice():  # WebRTC candidates on 127.0.0.1: everything here is loopback
        async with DemoNetwork() as network:
            if on_ready is not None:
                on_ready(network)
            try:
                summary = await run(
                    network.gateway_url,
                    CAPABILITY,
                    source=source,
                    params=LOOKS[0].params,
                    seconds=settings.seconds,
                    preview=settings.preview,
                    record=settings.record,
                    on_progress=report,
                    until=until,
                )
            finally:
                await looks.close()
                if isinstance(source, TestPatternSource):
                    await source.close()
    return DemoResult(summary, looks.applied, looks.failed)
