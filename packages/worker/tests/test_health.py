"""The worker's health is derived from facts each time, so it follows them both ways."""

from __future__ import annotations

import pytest

from byockit.protocol.models import (
    HealthStatus,
    InferenceStatus,
    InputStatus,
    StreamStatus,
)
from byockit.worker.health import (
    SessionHealth,
    SessionSnapshot,
    WorkerSnapshot,
    worker_health,
)


@pytest.mark.parametrize(
    ("loading", "load_error", "sessions", "expected"),
    [
        (True, None, [], HealthStatus.LOADING),
        (False, None, [], HealthStatus.IDLE),
        (False, None, ["starting"], HealthStatus.OK),
        (False, None, ["ok", "ok"], HealthStatus.OK),
        (False, None, ["ok", "error"], HealthStatus.ERROR),
        (False, "ImportError: no model", [], HealthStatus.ERROR),
    ],
)
def test_health_from_facts(
    loading: bool,
    load_error: str | None,
    sessions: list[SessionHealth],
    expected: HealthStatus,
) -> None:
    assert worker_health(loading=loading, load_error=load_error, sessions=sessions) == expected


def test_an_error_lasts_only_while_a_session_reports_it() -> None:
    """The same worker, asked at successive moments: error, recovery, error, the session gone."""
    moments: list[list[SessionHealth]] = [["ok"], ["error"], ["ok"], ["error"], []]
    assert [worker_health(loading=False, load_error=None, sessions=m) for m in moments] == [
        HealthStatus.OK,
        HealthStatus.ERROR,
        HealthStatus.OK,
        HealthStatus.ERROR,
        HealthStatus.IDLE,
    ]


def test_snapshot_picks_rates_and_latency_from_status() -> None:
    status = StreamStatus(
        state="ONLINE",
        input_status=InputStatus(fps=30.0, dropped_frames=4),
        inference_status=InferenceStatus(fps=29.5, latency_ms=41.0),
    )
    running = SessionSnapshot.of("a", "ok", status)
    starting = SessionSnapshot.of("b", "starting", StreamStatus(state="LOADING"))
    assert running == SessionSnapshot("a", "ok", "ONLINE", 30.0, 29.5, 41.0, 4)
    assert starting == SessionSnapshot("b", "starting", "LOADING", None, None, None, None)

    snapshot = WorkerSnapshot(HealthStatus.OK, capacity=2, sessions=(running, starting))
    assert (snapshot.fps_in, snapshot.fps_out, snapshot.latency_ms) == (30.0, 29.5, 41.0)
    idle = WorkerSnapshot(HealthStatus.IDLE, capacity=2, sessions=())
    assert (idle.fps_in, idle.fps_out, idle.latency_ms) == (0.0, 0.0, None)
