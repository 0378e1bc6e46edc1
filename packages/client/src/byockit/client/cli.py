"""``byockit-client``: run a stream through a capability from the terminal, and manage it.

``byockit-client run --gateway URL --capability NAME --source test`` streams
the source (``test``: the indexed test pattern, ``webcam``, or a file) over
WebRTC, shows a live view (state, frame rates, latency, bitrates) and prints a summary
at the end (after ``--seconds``, at the end of a file, or on Ctrl-C).

``status``, ``update`` and ``stop`` act on a stream that a ``run`` started.
A client may only use the URLs the gateway answered with, never rebuild
them, so ``run`` records each stream's URLs in a state file while it runs
(``~/.cache/byockit/streams.json``; ``$BYOCKIT_STATE_FILE`` or
``--state-file`` choose another) and the other commands look them up there.

Exit status: 0 on success, 1 when the gateway, the stream or the media
failed (the message says why), 2 for a bad command line, 130 when
interrupted twice.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from byockit.client.gateway import GatewayClient, StartSettings
from byockit.client.run import Progress, RunSummary, run
from byockit.client.session import StreamSession
from byockit.protocol.errors import ByockitError, ParseError
from byockit.protocol.models import JSONObject, StreamUrls

STATE_FILE_ENV: Final = "BYOCKIT_STATE_FILE"
MAX_RECORDS: Final = 100
"""Streams a state file remembers (the oldest are forgotten)."""
PROG: Final = "byockit-client"


class CommandError(ByockitError):
    """A command that cannot be carried out as asked (the message says why)."""


def default_state_file() -> Path:
    """``$BYOCKIT_STATE_FILE``, else ``streams.json`` in the user's cache directory."""
    if override := os.environ.get(STATE_FILE_ENV):
        return Path(override)
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "byockit" / "streams.json"


@attrs.frozen
class StreamRecord:
    """What the state file keeps of a running stream: where it runs and how to address it."""

    gateway: str
    urls: StreamUrls
    settings: StartSettings

    def to_json(self) -> JSONObject:
        settings = attrs.asdict(self.settings)
        return {"gateway": self.gateway, "urls": self.urls.to_json(), "settings": settings}

    @classmethod
    def from_json(cls, document: Any, path: Path) -> StreamRecord:
        try:
            settings = dict(document["settings"])
            settings["include"] = tuple(settings["include"])
            settings["exclude"] = tuple(settings["exclude"])
            return cls(
                gateway=str(document["gateway"]),
                urls=StreamUrls.from_json(document["urls"]),
                settings=StartSettings(**settings),
            )
        except (KeyError, TypeError, ValueError, ParseError) as exc:
            raise CommandError(f"{path} holds a damaged stream record: {exc!r}") from None


class StateFile:
    """The streams started by ``run`` and still running, by stream id (a small JSON file)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, Any]:
        try:
            document = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot read the state file {self.path}: {exc}") from None
        if not isinstance(document, dict):
            raise CommandError(f"the state file {self.path} is not a JSON object")
        return document

    def _save(self, records: dict[str, Any]) -> None:
        """Write atomically, so a concurrent reader never sees half a file."""
        kept = dict(list(records.items())[-MAX_RECORDS:])
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                "w", dir=self.path.parent, prefix=".streams-", delete=False
            ) as file:
                json.dump(kept, file, indent=1)
            os.replace(file.name, self.path)
        except OSError as exc:
            raise CommandError(f"cannot write the state file {self.path}: {exc}") from None

    def put(self, stream_id: str, record: StreamRecord) -> None:
        records = self._load()
        records.pop(stream_id, None)
        records[stream_id] = record.to_json()
        self._save(records)

    def remove(self, stream_id: str) -> None:
        records = self._load()
        if records.pop(stream_id, None) is not None:
            self._save(records)

    def get(self, stream_id: str, gateway: str | None) -> StreamRecord:
        """The record of ``stream_id``; ``gateway``, if given, must be the one it runs on."""
        document = self._load().get(stream_id)
        if document is None:
            raise CommandError(
                f"no stream {stream_id!r} in {self.path}: only streams started by "
                f"`{PROG} run` are recorded, while they run"
            )
        record = StreamRecord.from_json(document, self.path)
        if gateway is not None and gateway.rstrip("/") != record.gateway:
            raise CommandError(
                f"stream {stream_id} runs on {record.gateway}, not on {gateway.rstrip('/')}"
            )
        return record


def json_object(text: str) -> JSONObject:
    """``--params`` and ``update``'s params: a JSON object (argparse reports the error)."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, not {type(value).__name__}")
    return value


def positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run video through a Livepeer BYOC capability, and manage running streams.",
        epilog=(
            "status, update and stop need the URLs the gateway gave at start: `run` records "
            f"them, while it runs, in the state file (default ~/.cache/byockit/streams.json, "
            f"or ${STATE_FILE_ENV}, or --state-file)."
        ),
    )
    parser.add_argument(
        "--state-file",
        type=Path,
        default=None,
        help=f"where running streams are recorded (default: ${STATE_FILE_ENV} or "
        "~/.cache/byockit/streams.json)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    start = commands.add_parser("run", help="stream a source through a capability")
    start.add_argument(
        "--gateway",
        action="append",
        required=True,
        help="gateway URL; repeat it to fail over to the next gateway",
    )
    start.add_argument("--capability", required=True, help="the BYOC capability's name")
    start.add_argument(
        "--source",
        default="test",
        help='"test" (indexed test pattern, measures latency), "webcam", or a video file',
    )
    start.add_argument("--params", type=json_object, default=None, help="params, a JSON object")
    start.add_argument("--seconds", type=positive, default=None, help="stop after this long")
    start.add_argument("--preview", action="store_true", help="serve a local preview page")
    start.add_argument("--record", default=None, metavar="OUT.mp4", help="record the output")

    for name, about in (
        ("status", "print a running stream's status"),
        ("update", "send new params to a running stream"),
        ("stop", "stop a running stream"),
    ):
        command = commands.add_parser(name, help=about)
        command.add_argument(
            "--gateway", default=None, help="the gateway it runs on (checked against the record)"
        )
        command.add_argument("stream_id", help="the stream id `run` printed")
        if name == "update":
            command.add_argument("params", type=json_object, help="params, a JSON object")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: parse ``argv``, run the command, return the exit status."""
    args = build_parser().parse_args(argv)
    state = StateFile(args.state_file or default_state_file())
    try:
        return asyncio.run(_command(args, state, Console()))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (ByockitError, OSError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1


async def _command(args: argparse.Namespace, state: StateFile, console: Console) -> int:
    if args.command == "run":
        summary = await _run(args, state, console)
        console.print()
        console.print(summary_table(summary))
        return 0
    record = state.get(args.stream_id, args.gateway)
    async with GatewayClient(record.gateway) as client:
        stream = StreamSession(client, record.settings, record.gateway, record.urls)
        if args.command == "status":
            status = await stream.status()
            if status is None:
                console.print(f"stream {stream.stream_id} has no status yet")
            else:
                console.print_json(data=status)
        elif args.command == "update":
            reply = await stream.update(args.params)
            console.print(f"HTTP {reply.status}: {reply.body}", markup=False, highlight=False)
        else:
            await stream.stop()
            state.remove(stream.stream_id)
            console.print(f"stopped {stream.stream_id}")
    return 0


async def _run(args: argparse.Namespace, state: StateFile, console: Console) -> RunSummary:
    """``run`` with a live view; Ctrl-C (or SIGTERM) ends it with a summary."""
    stop = asyncio.Event()
    recorded: list[str] = []

    def on_progress(progress: Progress) -> None:
        if not recorded or recorded[-1] != progress.stream_id:
            state.put(
                progress.stream_id,
                StreamRecord(progress.gateway, progress.urls, progress.settings),
            )
            recorded.append(progress.stream_id)
        live.update(progress_view(progress))

    with (
        ending_on_signals(stop),
        Live(f"starting on {', '.join(args.gateway)}...", console=console) as live,
    ):
        try:
            return await run(
                args.gateway,
                args.capability,
                source=args.source,
                params=args.params,
                seconds=args.seconds,
                preview=args.preview,
                record=args.record,
                on_progress=on_progress,
                until=stop,
            )
        finally:
            for stream_id in recorded:
                state.remove(stream_id)


@contextlib.contextmanager
def ending_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """Set ``stop`` on the first SIGINT/SIGTERM; a second SIGINT interrupts for real."""
    loop = asyncio.get_running_loop()
    handled = (signal.SIGINT, signal.SIGTERM)

    def first_signal() -> None:
        stop.set()
        for number in handled:
            loop.remove_signal_handler(number)

    for number in handled:
        loop.add_signal_handler(number, first_signal)
    try:
        yield
    finally:
        for number in handled:
            loop.remove_signal_handler(number)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _kbits(bitrate: float) -> str:
    return f"{bitrate / 1000:.0f} kbit/s"


def progress_view(progress: Progress) -> Group:
    """The live view of a run."""
    table = Table.grid(padding=(0, 2))
    table.add_row("stream", progress.stream_id, "state", progress.state)
    table.add_row("gateway", progress.gateway, "elapsed", f"{progress.elapsed:.0f} s")
    table.add_row(
        "fps in", f"{progress.fps_in:.1f} ({progress.frames_in})",
        "fps out", f"{progress.fps_out:.1f} ({progress.frames_out})",
    )  # fmt: skip
    table.add_row(
        "latency", _ms(progress.latency),
        "bitrate", f"{_kbits(progress.bitrate_in)} in / {_kbits(progress.bitrate_out)} out",
    )  # fmt: skip
    table.add_row("dropped", "-" if progress.dropped is None else str(progress.dropped))
    parts: list[Table | str] = [table]
    if progress.preview_url:
        parts.append(f"preview: {progress.preview_url}")
    return Group(*parts)


def summary_table(summary: RunSummary) -> Table:
    """The summary printed when a run ends."""
    table = Table(title="byockit run summary", show_header=False)
    dropped = "-" if summary.dropped is None else str(summary.dropped)
    state = summary.status.get("state") if summary.status else None
    for name, value in (
        ("stream", summary.stream_id),
        ("gateway", summary.gateway),
        ("state", str(state or "-")),
        ("seconds", f"{summary.seconds:.1f}"),
        ("frames in", str(summary.frames_in)),
        ("frames out", str(summary.frames_out)),
        ("fps in / out", f"{summary.fps_in:.1f} / {summary.fps_out:.1f}"),
        ("latency p50 / p95", f"{_ms(summary.latency_p50)} / {_ms(summary.latency_p95)}"),
        ("bitrate in / out", f"{_kbits(summary.bitrate_in)} / {_kbits(summary.bitrate_out)}"),
        ("dropped", dropped),
        ("recorded", summary.recorded or "-"),
    ):
        table.add_row(name, value)
    return table


if __name__ == "__main__":
    sys.exit(main())
