"""What a worker says about itself: its ``/health`` state and a snapshot for people.

The health state is *derived*, never stored: it is recomputed from the facts
each time it is asked for (is the processor loading, did loading fail, what
does each running session report). So an error cannot stick: once the
session that reported it recovers or ends, the next answer says so.

- ``LOADING`` while the processor's ``load()`` runs;
- ``ERROR`` when loading failed, or while any session reports ``"error"``;
- ``IDLE`` with no session running;
- ``OK`` with sessions running, none in error (a session still connecting counts as OK).

This follows go-livepeer's contract for AI-worker containers (PROTOCOL.md 2):
2 failed polls or ``ERROR`` fail the container, ``LOADING`` over 3 minutes too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import attrs

from byockit.protocol.models import HealthStatus, StreamStatus

SessionHealth = Literal["starting", "ok", "error"]
"""What one stream session reports about itself."""


def worker_health(
    *, loading: bool, load_error: str | None, sessions: Iterable[SessionHealth]
) -> HealthStatus:
    """The worker's ``/health`` status from the facts of this moment."""
    if loading:
        return HealthStatus.LOADING
    if load_error is not None:
        return HealthStatus.ERROR
    healths = list(sessions)
    if not healths:
        return HealthStatus.IDLE
    if "error" in healths:
        return HealthStatus.ERROR
    return HealthStatus.OK


@attrs.frozen
class SessionSnapshot:
    """One running stream, as a status line shows it (``None``: not measured yet)."""

    stream_id: str
    health: SessionHealth
    state: str
    fps_in: float | None
    fps_out: float | None
    latency_ms: float | None
    dropped_frames: int | None

    @classmethod
    def of(cls, stream_id: str, health: SessionHealth, status: StreamStatus) -> SessionSnapshot:
        """Pick the numbers a person watches out of a session's full status document."""
        inputs = status.input_status
        inference = status.inference_status
        return cls(
            stream_id=stream_id,
            health=health,
            state=status.state,
            fps_in=inputs.fps if inputs else None,
            fps_out=inference.fps if inference else None,
            latency_ms=inference.latency_ms if inference else None,
            dropped_frames=inputs.dropped_frames if inputs else None,
        )


@attrs.frozen
class WorkerSnapshot:
    """The whole worker at one moment: for a live status line (``byockit-worker serve``)."""

    health: HealthStatus
    capacity: int
    sessions: tuple[SessionSnapshot, ...]
    load_error: str | None = None

    @property
    def fps_in(self) -> float:
        """Input frames per second over every session."""
        return sum(s.fps_in or 0.0 for s in self.sessions)

    @property
    def fps_out(self) -> float:
        """Output frames per second over every session."""
        return sum(s.fps_out or 0.0 for s in self.sessions)

    @property
    def latency_ms(self) -> float | None:
        """The worst end-to-end latency of any session, ``None`` before one is measured."""
        measured = [s.latency_ms for s in self.sessions if s.latency_ms is not None]
        return max(measured) if measured else None
