"""The pipeline's frame-rate cap (integer pts arithmetic) and rate meter."""

from __future__ import annotations

import itertools

import pytest

from byockit.worker.pipeline import RATE_WINDOW, FrameRateCap, RateMeter


def admitted(cap: FrameRateCap, timestamps: list[int]) -> list[int]:
    return [i for i, pts in enumerate(timestamps) if cap.admit(pts)]


def test_no_cap_admits_everything() -> None:
    assert admitted(FrameRateCap(None), [0, 0, 5, 1]) == [0, 1, 2, 3]


@pytest.mark.parametrize("fps", [1, 7, 24, 25, 30, 60])
def test_a_cap_equal_to_the_input_rate_drops_nothing(fps: int) -> None:
    # integer timestamps (floor of i * 90000 / fps) fall a tick short of the exact slots
    timestamps = [i * 90_000 // fps for i in range(10 * fps)]
    assert admitted(FrameRateCap(fps), timestamps) == list(range(10 * fps))


def test_jittery_millisecond_timestamps_at_the_cap_are_all_admitted() -> None:
    # 30 fps through a millisecond clock (RTMP): 33, 33, 34 ms apart
    timestamps = [round(i * 1000 / 30) * 90 for i in range(300)]
    assert admitted(FrameRateCap(30), timestamps) == list(range(300))


def test_ntsc_input_under_a_30_fps_cap_passes_whole() -> None:
    timestamps = [i * 3003 for i in range(300)]  # 29.97 fps
    assert admitted(FrameRateCap(30), timestamps) == list(range(300))


def test_halving_keeps_every_other_frame() -> None:
    timestamps = [i * 1500 for i in range(120)]  # 60 fps
    assert admitted(FrameRateCap(30), timestamps) == list(range(0, 120, 2))


def test_the_rate_never_drifts_above_the_cap() -> None:
    timestamps = [i * 90_000 // 24 for i in range(24 * 60)]  # 24 fps for a minute
    kept = admitted(FrameRateCap(10), timestamps)
    assert len(kept) == 10 * 60
    gaps = {b - a for a, b in itertools.pairwise(kept)}
    assert gaps <= {2, 3}


def test_timestamps_going_back_restart_the_cap() -> None:
    cap = FrameRateCap(10)
    assert cap.admit(90_000)
    assert not cap.admit(90_000 + 3000)
    assert cap.admit(0)  # a restarted source
    assert not cap.admit(3000)
    assert cap.admit(9000)


def test_changing_the_cap_applies_from_the_next_frame() -> None:
    cap = FrameRateCap(5)
    timestamps = [i * 3000 for i in range(120)]  # 30 fps
    kept = [i for i in range(60) if cap.admit(timestamps[i])]
    assert len(kept) in (10, 11)  # 2 s at 5 fps, the last slot a little early
    assert {b - a for a, b in itertools.pairwise(kept)} <= {5, 6, 7}
    cap.max_fps = None
    assert all(cap.admit(pts) for pts in timestamps[60:])
    with pytest.raises(ValueError, match="max_fps"):
        cap.max_fps = 0


def test_the_rate_meter_counts_events_in_its_window() -> None:
    meter = RateMeter()
    for i in range(90):
        meter.tick(100.0 + i / 30)
    now = 100.0 + 89 / 30
    assert meter.rate(now) == pytest.approx(61 / RATE_WINDOW)
    assert meter.rate(now + 10) == 0
