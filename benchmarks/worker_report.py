"""The worker benchmark's results: what was measured, the table, the goals, the Markdown file.

:class:`Results` holds every figure of a run of :mod:`benchmarks.worker_bench`;
the functions here turn it into the terminal table, the check of issue 3's
goals (met or missed, never adjusted) and the Markdown written to
``benchmarks/results/``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Final

import attrs
from rich.console import Console
from rich.table import Table

from benchmarks.machine import machine_description
from benchmarks.worker_clip import CLIP_FPS
from benchmarks.worker_drive import (
    DRAIN,
    RSS_INTERVAL,
    SETTLE,
    WARMUP,
    Measured,
    Trace,
    measure,
    percentile,
)
from byockit.worker.pipeline import DEFAULT_X264_PRESET

PRESETS: Final = {"byockit": DEFAULT_X264_PRESET, "pytrickle": "superfast"}
"""The x264 preset each worker encodes with, both with zero-latency tuning (byockit's worker
its default; pytrickle 0.1.6 hard-codes its own)."""
BOUNDED_GROWTH: Final = 0.050
"""Latency counts as bounded when the last third's median is within this of the first third's."""
FLAT_RSS: Final = 5 * 2**20
"""Memory counts as flat when it grew less than this after warm-up."""


@attrs.frozen
class Case:
    """One workload: ``rate`` input frames per second for ``seconds`` through ``processor``."""

    key: str
    label: str
    width: int
    height: int
    processor: str
    rate: float
    seconds: float
    rounds: int = 1
    """Runs per implementation, alternating implementations; the table shows the median."""

    @property
    def frames(self) -> int:
        return round(self.rate * self.seconds)

    @property
    def real_time(self) -> bool:
        """Input at the clip's own rate: latency is compared with the floor."""
        return self.rate == CLIP_FPS

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)


@attrs.frozen
class Run:
    """One implementation's run of a case: its figures, or why it failed."""

    measured: Measured | None
    error: str | None = None


def median_run(runs: Sequence[Run]) -> Run:
    """The run with the median output fps (the lower middle one of an even count); a failure
    if any run failed, since a failure is news the median must not hide."""
    for run in runs:
        if run.measured is None:
            return run
    ordered = sorted(runs, key=lambda run: run.measured.fps_out if run.measured else 0.0)
    return ordered[(len(ordered) - 1) // 2]


@attrs.define
class Results:
    """Everything a benchmark run measured: floors by input size, runs by (case, implementation)."""

    implementations: list[str]
    codec_floors: dict[tuple[tuple[int, int], str], float] = attrs.field(factory=dict)
    """Decoding and encoding back to back, by (size, preset)."""
    paced_floors: dict[tuple[int, int], float] = attrs.field(factory=dict)
    """The same at the clip's rate, with byockit's preset, by size."""
    paced_rgb_floors: dict[tuple[int, int], float] = attrs.field(factory=dict)
    """The same with the RGB round trip of a numpy processor, by size."""
    latency_floors: dict[tuple[int, int], Measured] = attrs.field(factory=dict)
    runs: dict[tuple[str, str], Run] = attrs.field(factory=dict)
    """The median round of each (case, implementation)."""
    round_fps: dict[tuple[str, str], list[float]] = attrs.field(factory=dict)
    """Output fps of every round of the cases run more than once."""
    soaks: dict[str, Trace | str] = attrs.field(factory=dict)

    @property
    def failed(self) -> bool:
        return any(run.error for run in self.runs.values()) or any(
            isinstance(soak, str) for soak in self.soaks.values()
        )


def ms(seconds: float | None, digits: int = 1) -> str:
    if seconds is None or math.isnan(seconds):
        return "-"
    return f"{seconds * 1e3:.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
        return "-"
    return f"{a / b:.2f}x"


@attrs.frozen
class Row:
    """One line of the results table, as text."""

    case: Case
    implementation: str
    cells: tuple[str, ...]


COLUMNS: Final = (
    "output fps",
    "latency p50 / p95 ms",
    "over floor p50 ms",
    "dropped",
    "worker CPU ms/frame (x raw floor)",
    "first output s",
)
SHORT_COLUMNS: Final = ("fps", "p50/p95 ms", "+floor", "dropped", "CPU ms/f (floor)", "1st s")
"""The same, narrow enough for a terminal."""


def table_rows(results: Results, cases: Sequence[Case]) -> list[Row]:
    rows = []
    for case in cases:
        runs = {impl: results.runs.get((case.key, impl)) for impl in results.implementations}
        figures: dict[str, Measured] = {}
        for impl, run in runs.items():
            if run is None:
                continue
            if run.measured is None:
                rows.append(Row(case, impl, (f"failed: {run.error}",) + ("",) * 5))
                continue
            figures[impl] = m = run.measured
            excess = _excess(results, case, m)
            floor = results.codec_floors.get((case.size, PRESETS[impl]))
            cpu = f"{ms(m.cpu_per_frame, 2)} ({ratio(m.cpu_per_frame, floor)})"
            rows.append(
                Row(
                    case,
                    impl,
                    (
                        f"{m.fps_out:.1f}",
                        f"{ms(m.latency_p50)} / {ms(m.latency_p95)}",
                        ms(excess),
                        f"{m.dropped} / {m.published}",
                        cpu,
                        "-" if m.first_output is None else f"{m.first_output:.2f}",
                    ),
                )
            )
        if len(figures) == 2:
            b, p = figures["byockit"], figures["pytrickle"]
            rows.append(
                Row(
                    case,
                    "byockit / pytrickle",
                    (
                        ratio(b.fps_out, p.fps_out),
                        f"{ratio(b.latency_p50, p.latency_p50)} / "
                        f"{ratio(b.latency_p95, p.latency_p95)}",
                        ratio(_excess(results, case, b), _excess(results, case, p)),
                        "",
                        ratio(b.cpu_per_frame, p.cpu_per_frame),
                        ratio(b.first_output, p.first_output),
                    ),
                )
            )
    return rows


def _excess(results: Results, case: Case, measured: Measured) -> float | None:
    floor = results.latency_floors.get(case.size)
    if not case.real_time or floor is None:
        return None
    return measured.latency_p50 - floor.latency_p50


@attrs.frozen
class Goal:
    text: str
    measured: str
    met: bool | None
    """``None``: not measured in this run."""


def goals(results: Results, cases: Sequence[Case]) -> list[Goal]:
    """Issue 3's goals for the cases that ran, each checked against byockit's figures.

    A goal whose run failed (or, for a comparison, whose pytrickle run is
    missing) is listed as not measured.
    """
    out = []
    for case in cases:
        byockit = _measured(results, case, "byockit")
        if case.key.startswith("ceiling-"):
            out.append(_ceiling_goal(case, byockit, _measured(results, case, "pytrickle")))
        if case.key == "passthrough-512":
            text = "added latency, 512x512 passthrough, within 12 ms of the floor (p50)"
            excess = None if byockit is None else _excess(results, case, byockit)
            out.append(
                Goal(text, "not measured", None)
                if excess is None
                else Goal(text, f"{ms(excess)} ms", excess <= 0.012)
            )
        if case.key.startswith("passthrough-"):
            out.append(_cpu_goal(results, case, byockit))
        if not case.real_time:
            out.append(_bounded_goal(case, byockit))
    firsts = [
        m.first_output
        for case in cases
        if case.real_time
        and (m := _measured(results, case, "byockit")) is not None
        and m.first_output is not None
    ]
    if any(case.real_time for case in cases):
        text = "first output frame within 0.3 s of the first input frame (30 fps cases)"
        out.append(
            Goal(text, f"worst {max(firsts):.3f} s", max(firsts) <= 0.3)
            if firsts
            else Goal(text, "not measured", None)
        )
    if "byockit" in results.soaks:
        out.append(_soak_goal(results.soaks["byockit"]))
    return out


def _measured(results: Results, case: Case, implementation: str) -> Measured | None:
    run = results.runs.get((case.key, implementation))
    return None if run is None else run.measured


def _ceiling_goal(case: Case, byockit: Measured | None, pytrickle: Measured | None) -> Goal:
    text = f"throughput ceiling >= 2x pytrickle's ({case.label})"
    if byockit is None or pytrickle is None:
        return Goal(text, "not measured", None)
    return Goal(
        text,
        f"{byockit.fps_out:.1f} vs {pytrickle.fps_out:.1f} fps",
        byockit.fps_out >= 2 * pytrickle.fps_out,
    )


def _cpu_goal(results: Results, case: Case, byockit: Measured | None) -> Goal:
    text = f"CPU per frame within 1.3x of the raw floor ({case.label})"
    floor = results.codec_floors.get((case.size, PRESETS["byockit"]))
    if byockit is None or byockit.cpu_per_frame is None or floor is None:
        return Goal(text, "not measured", None)
    cpu = byockit.cpu_per_frame
    measured = f"{ms(cpu, 2)} vs {ms(floor, 2)} ms ({ratio(cpu, floor)})"
    paced = results.paced_floors.get(case.size)
    paced_rgb = results.paced_rgb_floors.get(case.size)
    if paced is not None and paced_rgb is not None:
        measured += (
            f"; at {CLIP_FPS} fps the floor is {ms(paced, 2)} ms ({ratio(cpu, paced)}), "
            f"with the RGB round trip {ms(paced_rgb, 2)} ms ({ratio(cpu, paced_rgb)})"
        )
    return Goal(text, measured, cpu <= 1.3 * floor)


def _bounded_goal(case: Case, byockit: Measured | None) -> Goal:
    text = f"latency bounded when the worker is slower than the input ({case.label})"
    if byockit is None:
        return Goal(text, "not measured", None)
    return Goal(
        text,
        f"median {ms(byockit.early_p50)} -> {ms(byockit.late_p50)} ms (first -> last third), "
        f"p95 {ms(byockit.latency_p95)} ms, {byockit.dropped} dropped",
        byockit.late_p50 - byockit.early_p50 <= BOUNDED_GROWTH,
    )


def _soak_goal(soak: Trace | str) -> Goal:
    text = "memory flat after warm-up in the soak"
    if isinstance(soak, str):
        return Goal(text, f"soak failed: {soak}", None)
    summary = rss_summary(soak)
    return Goal(
        text,
        f"{summary.growth / 2**20:+.1f} MiB after warm-up ({summary.minutes:g} min soak)",
        summary.growth < FLAT_RSS,
    )


@attrs.frozen
class RssSummary:
    minutes: float
    warm: int
    """RSS once warmed up: the median of the second fifth of the samples."""
    end: int
    """The median of the last fifth."""
    peak: int

    @property
    def growth(self) -> int:
        return self.end - self.warm


def rss_summary(trace: Trace) -> RssSummary:
    samples = [rss for _, rss in trace.rss]
    fifth = max(1, len(samples) // 5)
    return RssSummary(
        minutes=round((trace.publish_end - trace.sent[0]) / 60, 1),
        warm=round(statistics.median(samples[fifth : 2 * fifth])),
        end=round(statistics.median(samples[-fifth:])),
        peak=max(samples),
    )


def soak_section(results: Results) -> str:
    lines = ["## Soak", ""]
    traces = {impl: soak for impl, soak in results.soaks.items() if isinstance(soak, Trace)}
    for impl, soak in results.soaks.items():
        if isinstance(soak, str):
            lines.append(f"{impl}: failed: {soak}\n")
    if not traces:
        return "\n".join(lines)
    lines += [
        f"One stream of 512x512 passthrough at {CLIP_FPS} fps per implementation; the "
        f"worker's RSS sampled every {RSS_INTERVAL:g} s. Warm RSS is the median of the "
        "second fifth of the samples, end RSS of the last fifth.",
        "",
        "| implementation | warm RSS MiB | end RSS MiB | growth MiB | peak MiB "
        "| latency p50 per minute ms | dropped |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for impl, soak in traces.items():
        summary = rss_summary(soak)
        per_minute = " / ".join(ms(p50) for p50 in _latency_by_minute(soak))
        lines.append(
            f"| {impl} | {summary.warm / 2**20:.1f} | {summary.end / 2**20:.1f} "
            f"| {summary.growth / 2**20:+.1f} | {summary.peak / 2**20:.1f} | {per_minute} "
            f"| {measure(soak).dropped} / {len(soak.sent)} |"
        )
    lines += ["", "RSS samples (MiB):", ""]
    impls = list(traces)
    lines += [
        "| s | " + " | ".join(impls) + " |",
        "|---:|" + "---:|" * len(impls),
    ]
    longest = max(len(t.rss) for t in traces.values())
    step = max(1, math.ceil(longest / 40))
    for position in range(0, longest, step):
        cells = []
        at = ""
        for impl in impls:
            rss = traces[impl].rss
            if position < len(rss):
                at = f"{rss[position][0]:.0f}"
                cells.append(f"{rss[position][1] / 2**20:.1f}")
            else:
                cells.append("")
        lines.append(f"| {at} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _latency_by_minute(trace: Trace) -> list[float]:
    start = trace.sent[0]
    by_minute: dict[int, list[float]] = {}
    seen: set[int] = set()
    for index, at in trace.received:
        if index in seen or not 0 <= index < len(trace.sent):
            continue
        seen.add(index)
        sent = trace.sent[index]
        if sent >= start + WARMUP:
            by_minute.setdefault(int((sent - start) // 60), []).append(at - sent)
    return [percentile(sorted(values), 50) for _, values in sorted(by_minute.items())]


def print_table(console: Console, rows: list[Row], title: str) -> None:
    table = Table(title=title)
    table.add_column("case")
    table.add_column("worker")
    for column in SHORT_COLUMNS:
        table.add_column(column, justify="right")
    for row in rows:
        worker = "ratio b/p" if row.implementation == "byockit / pytrickle" else row.implementation
        table.add_row(row.case.key, worker, *row.cells)
    console.print(table)


def markdown(results: Results, cases: Sequence[Case], command: str, soak_minutes: float) -> str:
    parts = [
        "# Worker benchmark: byockit vs pytrickle 0.1.6",
        "",
        machine_description(),
        "",
        "The harness, the fake orchestrator's trickle server and the worker share this "
        "machine's cores, and the machine may be shared with other work: treat differences "
        "of a few percent as noise, and compare implementations within one run.",
        "",
        f"Command: `{command}` (`nox -s bench` runs it with pytrickle's environment).",
        "",
        _method(results, soak_minutes),
        "",
    ]
    if cases:
        rows = table_rows(results, cases)
        parts += [
            "## Results",
            "",
            "| case | implementation | " + " | ".join(COLUMNS) + " |",
            "|---|---|" + "---:|" * len(COLUMNS),
        ]
        parts += [f"| {r.case.label} | {r.implementation} | {' | '.join(r.cells)} |" for r in rows]
        if results.round_fps:
            parts += ["", "## Rounds", "", _rounds(results, cases)]
        parts += ["", "## Floors", "", _floors(results), ""]
    parts += ["## Goals (issue 3)", "", "| goal | measured (byockit) | met |", "|---|---|---|"]
    for goal in goals(results, cases):
        met = {True: "yes", False: "**MISSED**", None: "not measured"}[goal.met]
        parts.append(f"| {goal.text} | {goal.measured} | {met} |")
    parts.append("")
    if results.soaks:
        parts.append(soak_section(results))
    return "\n".join(parts) + "\n"


def _method(results: Results, soak_minutes: float) -> str:
    notes = [
        "Each worker runs in its own process and gets the same stream through the testkit's "
        "FakeOrchestrator and TrickleServer (both in the harness process), started "
        f"{SETTLE:g} s before the first input frame. Start params: the clip's width and "
        "height, `max_framerate` 60 (pytrickle caps at 24 fps without it).",
        "Input: a synthetic clip showing each frame's index (x264 ultrafast, one GOP per 1 s "
        "segment), pre-encoded so that publishing costs the harness no CPU, written frame by "
        f"frame at the case's rate. Its timestamps are always {CLIP_FPS} fps apart, so an "
        f"input above {CLIP_FPS} fps is a burst faster than real time that neither worker's "
        "frame-rate cap thins out: the worker must drop or queue.",
        "*Latency*: publish time to receive time of each frame, matched by the index read "
        f"from its pixels, over the frames published after the first {WARMUP:g} s. "
        "*Over floor*: minus the no-worker floor (the harness reading its own input channel "
        "through the same server).",
        f"*Output fps*: frames received from {WARMUP:g} s after the first input frame to the "
        "last input frame, per second. *Dropped*: input frames never seen in the output (the "
        f"run waits up to {DRAIN:g} s after the last input frame for late ones).",
        "*Worker CPU*: user + system time of the worker process (`/proc/<pid>/stat`) over "
        "the run, per output frame. *Raw floor*: PyAV decoding the same frames and libx264 "
        "re-encoding them in one process, nothing else, with each worker's own x264 preset "
        f"(byockit: {PRESETS['byockit']}, pytrickle: {PRESETS['pytrickle']}), frames back to "
        f"back. The floors table adds the same at {CLIP_FPS} fps (the process sleeping between "
        "frames as a live worker waits: idle threads and cold caches cost CPU that back-to-back "
        "frames do not pay), and that again with each frame converted to RGB and back as a "
        "numpy processor's frames are: what any worker serving that processor must spend, "
        "before HTTP, threads and its own code.",
        "*First output*: from the first input frame to the first output frame.",
        "A case with rounds (the ceilings, whose figures move with the machine's load from one "
        "run to the next) runs that many times per implementation, the implementations "
        "alternating; the results table shows each implementation's median round by output "
        "fps, the goals compare those, and *Rounds* lists every round.",
        "The 20 ms processor sleeps 20 ms in a synchronous call (a model call that costs this "
        "machine no CPU). pytrickle requires async handlers, so its handler makes that call "
        "inside the coroutine, as a handler calling a synchronous model does.",
        "pytrickle 0.1.6 with its pinned PyAV 14.2 opens its encoder at PyAV's default "
        "640x480 and resizes every output frame to that size (its log says so): this is how "
        "it behaves, and it is measured as it is.",
    ]
    if "pytrickle" not in results.implementations:
        notes.append("**pytrickle was not measured in this run** (no `--pytrickle-python`).")
    if 0 < soak_minutes < 10:
        notes.append(
            f"The soak ran {soak_minutes:g} minute(s) per implementation: the default run's "
            "short soak (`--soak-minutes 10` runs the issue's 10 minutes)."
        )
    return "\n".join(f"- {note}" for note in notes)


def _rounds(results: Results, cases: Sequence[Case]) -> str:
    """Output fps of every round of the cases run more than once, and the median shown above."""
    lines = ["| case | implementation | output fps of each round | median |", "|---|---|---|---:|"]
    for case in cases:
        for implementation in results.implementations:
            fps = results.round_fps.get((case.key, implementation))
            if fps:
                rounds = ", ".join(f"{value:.1f}" for value in fps)
                median = statistics.median_low(fps)
                lines.append(f"| {case.label} | {implementation} | {rounds} | {median:.1f} |")
    return "\n".join(lines)


def _floors(results: Results) -> str:
    lines = [
        "| input | latency floor p50 / p95 ms | first frame ms | raw codec floor CPU ms/frame "
        f"| at {CLIP_FPS} fps | at {CLIP_FPS} fps with the RGB round trip |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    sizes = sorted({size for size, _ in results.codec_floors})
    for size in sizes:
        floor = results.latency_floors.get(size)
        latency = first = "-"
        if floor is not None:
            latency = f"{ms(floor.latency_p50, 2)} / {ms(floor.latency_p95, 2)}"
            first = ms(floor.first_output, 1)
        codec = ", ".join(
            f"{preset} {ms(cpu, 2)}"
            for (at, preset), cpu in sorted(results.codec_floors.items())
            if at == size
        )
        paced = ms(results.paced_floors.get(size), 2)
        paced_rgb = ms(results.paced_rgb_floors.get(size), 2)
        lines.append(
            f"| {size[0]}x{size[1]} | {latency} | {first} | {codec} | {paced} | {paced_rgb} |"
        )
    return "\n".join(lines)
