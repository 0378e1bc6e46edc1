"""``byockit demo``: the whole BYOC loop on this machine, with a live view and a summary.

Exit status: 0 when processed frames came back, 1 when none did or the run
failed (with the reason), 130 on a second Ctrl-C. The first Ctrl-C ends the
run early, with the summary.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from byockit.client.cli import ending_on_signals, positive, progress_view, summary_table
from byockit.client.run import TEST_SOURCE, WEBCAM_SOURCE
from byockit.demo.network import DemoNetwork
from byockit.demo.run import DEFAULT_FPS, DemoProgress, DemoResult, DemoSettings, run_demo
from byockit.protocol.errors import ByockitError

PROG: Final = "byockit"
_SIZE = re.compile(r"(\d+)x(\d+)")


def size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT``, both even and at least 64 by 36."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT like 640x360, got {text!r}")
    width, height = int(match[1]), int(match[2])
    if width % 2 or height % 2 or width < 64 or height < 36 or width * height > 3840 * 2160:
        raise argparse.ArgumentTypeError(
            f"{text}: width and height must be even, at least 64x36 and at most 4K"
        )
    return width, height


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="byockit: Livepeer BYOC made easy.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run the whole BYOC loop on this machine",
        description=(
            "Bring up a trickle server, a fake orchestrator and gateway and the reference "
            "effects worker on loopback, stream a test pattern (or a webcam, or a file) "
            "through them, change the effect live, record the output and print a summary."
        ),
    )
    source = demo.add_mutually_exclusive_group()
    source.add_argument(
        "--webcam", action="store_true", help="stream the default camera, not the test pattern"
    )
    source.add_argument("--file", metavar="PATH", help="stream this video file")
    demo.add_argument(
        "--seconds",
        type=positive,
        default=30.0,
        help="how long to run (default: 30); 0 is not allowed, use --forever",
    )
    demo.add_argument("--forever", action="store_true", help="run until Ctrl-C")
    demo.add_argument(
        "--size", type=size, default=(640, 360), help="test pattern size (default: 640x360)"
    )
    demo.add_argument(
        "--fps", type=int, default=DEFAULT_FPS, choices=range(1, 61), metavar="1-60",
        help=f"test pattern frame rate (default: {DEFAULT_FPS})",
    )  # fmt: skip
    demo.add_argument(
        "--output",
        default="byockit-demo.mp4",
        metavar="MP4",
        help="where to record the output (default: byockit-demo.mp4)",
    )
    demo.add_argument("--no-record", action="store_true", help="do not record the output")
    demo.add_argument("--no-preview", action="store_true", help="do not serve the preview page")
    demo.add_argument(
        "--look-interval",
        type=positive,
        default=5.0,
        metavar="SECONDS",
        help="change the effect this often (default: 5)",
    )
    return parser


def settings_from(args: argparse.Namespace) -> DemoSettings:
    source = WEBCAM_SOURCE if args.webcam else args.file or TEST_SOURCE
    if args.file is not None and not Path(args.file).is_file():
        raise ValueError(f"--file {args.file}: no such file")
    return DemoSettings(
        seconds=None if args.forever else args.seconds,
        source=source,
        size=args.size,
        fps=args.fps,
        record=None if args.no_record else args.output,
        preview=not args.no_preview,
        look_interval=args.look_interval,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The console script."""
    args = build_parser().parse_args(argv)
    console = Console()
    try:
        result = asyncio.run(_demo(settings_from(args), console))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (ByockitError, OSError, ValueError, RuntimeError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    console.print()
    console.print(summary_table(result.summary))
    console.print(
        f"looks shown: {result.looks_applied}, look changes refused: {result.looks_failed}"
    )
    if result.summary.frames_out == 0:
        print(f"{PROG}: error: no processed frame came back", file=sys.stderr)
        return 1
    return 0


async def _demo(settings: DemoSettings, console: Console) -> DemoResult:
    stop = asyncio.Event()
    with (
        ending_on_signals(stop),
        Live("starting the network...", console=console, transient=False) as live,
    ):

        def ready(network: DemoNetwork) -> None:
            live.update(
                Group(stages_table(network.stages()), "starting the stream through the gateway...")
            )

        return await run_demo(
            settings,
            on_ready=ready,
            on_progress=lambda progress: live.update(demo_view(progress)),
            until=stop,
        )


def stages_table(stages: list[tuple[str, str, str]]) -> Table:
    table = Table("stage", "at", "state", title="byockit demo: everything on loopback")
    for stage in stages:
        table.add_row(*stage)
    return table


def demo_view(progress: DemoProgress) -> Group:
    """The live view: the stages, the effect in force, the client's measurements."""
    look = f"effect: [bold]{progress.look.name}[/bold] (look {progress.looks_applied})"
    return Group(
        stages_table(progress.stages),
        Panel(Group(look, progress_view(progress.client)), title="client"),
    )


if __name__ == "__main__":
    sys.exit(main())
