"""``byockit-worker``: serve a processor as a BYOC worker, or start a new one.

``byockit-worker serve MODULE:ATTRIBUTE`` imports the processor (from the
current directory too), serves it (:class:`~byockit.worker.server.WorkerServer`)
and, given an orchestrator URL, registers it once it has loaded. Every
registration setting falls back on the usual environment variable
(:data:`~byockit.worker.registration.ENVIRONMENT`). A status line shows
health, streams, frame rates and latency: live on a terminal, as plain lines
(on each change, and every few seconds while streams run) otherwise.
Ctrl-C or SIGTERM stops streams, unregisters and exits cleanly.

``byockit-worker new NAME`` writes ``NAME.py``, a processor ready to edit,
and a ``Dockerfile`` serving it; it never overwrites a file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.resources
import logging
import os
import re
import signal
import socket
import string
import sys
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Final, TextIO

import attrs
from rich.console import Console
from rich.live import Live
from rich.logging import RichHandler
from rich.text import Text

from byockit.protocol.errors import ParseError
from byockit.protocol.media.encoder import X264_PRESETS
from byockit.protocol.models import CapabilityRegistration, HealthStatus
from byockit.worker.health import WorkerSnapshot
from byockit.worker.pipeline import DEFAULT_X264_PRESET, check_x264_preset
from byockit.worker.registration import ENVIRONMENT, Registrar, RegistrationSettings
from byockit.worker.server import WorkerServer

logger = logging.getLogger("byockit.worker.cli")

PROG: Final = "byockit-worker"
STATUS_REFRESH: Final = 0.5
"""Seconds between status updates on a terminal."""
PLAIN_STATUS_INTERVAL: Final = 10.0
"""Seconds between plain status lines while streams run (changes print at once)."""
PRESET_VARIABLE: Final = "BYOCKIT_X264_PRESET"
"""The environment variable ``--x264-preset`` falls back on."""
_WILDCARD_HOSTS: Final = frozenset({"", "0.0.0.0", "::"})
_MODULE_NAME: Final = re.compile(r"[a-z_][a-z0-9_]*\Z")
_FLAGS: Final = {
    "orch_url": "--orch-url",
    "orch_secret": "--orch-secret",
    "name": "--capability",
    "description": "--capability-description",
    "url": "--capability-url",
    "capacity": "--capacity",
    "price_per_unit": "--price-per-unit",
    "price_scaling": "--price-scaling",
    "currency": "--currency",
    "token": "--token",
}
"""The flag behind each registration setting, for error messages."""


class UsageError(Exception):
    """Bad arguments or an unusable processor: printed, exit status 2."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "new":
            return _new(args.name, Path(args.dir))
        return _serve(args)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Serve a frame processor as a Livepeer BYOC worker."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve a processor",
        description="Serve MODULE:ATTRIBUTE (a function, a Processor class or instance). "
        "Registration settings fall back on ORCH_URL, ORCH_SECRET, CAPABILITY_NAME, "
        "CAPABILITY_DESCRIPTION, CAPABILITY_URL, CAPABILITY_CAPACITY, "
        "CAPABILITY_PRICE_PER_UNIT, CAPABILITY_PRICE_SCALING, CAPABILITY_CURRENCY and "
        "CAPABILITY_TOKEN.",
    )
    serve.add_argument("processor", metavar="MODULE:ATTRIBUTE", help="e.g. my_worker:processor")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    serve.add_argument(
        "--port", type=int, default=8000, help="port to bind, 0 for any (default %(default)s)"
    )
    serve.add_argument("--capacity", type=int, help="streams at once (default 1)")
    serve.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on stream calls")
    serve.add_argument(
        "--x264-preset",
        help=f"the output's x264 preset (or {PRESET_VARIABLE}; default {DEFAULT_X264_PRESET})",
    )
    orch = serve.add_argument_group("registration with an orchestrator")
    orch.add_argument("--orch-url", help="the orchestrator to register with")
    orch.add_argument("--orch-secret", help="the orchestrator's secret (better: ORCH_SECRET)")
    orch.add_argument(
        "--orch-insecure",
        action="store_true",
        help="accept the orchestrator's self-signed TLS certificate",
    )
    orch.add_argument("--capability", help="the capability name to register")
    orch.add_argument("--capability-description", help="a description of the capability")
    orch.add_argument(
        "--capability-url",
        help="where the orchestrator reaches this worker (default: http://HOST:PORT)",
    )
    orch.add_argument("--price-per-unit", type=int, help="wei (or eth) per second of compute")
    orch.add_argument("--price-scaling", type=int, help="divides the price (default 1)")
    orch.add_argument("--currency", help="'wei' (default) or 'eth'")
    serve.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="(default %(default)s)",
    )
    new = commands.add_parser(
        "new",
        help="write a new processor and its Dockerfile",
        description="Write NAME.py (a processor to edit) and a Dockerfile serving it.",
    )
    new.add_argument("name", metavar="NAME", help="module name: lower case letters, digits, _")
    new.add_argument("--dir", default=".", help="directory to write into (default: here)")
    return parser


# --- serve -----------------------------------------------------------------------------------


def load_processor(spec: str) -> object:
    """Import ``MODULE:ATTRIBUTE`` (the current directory first on the path).

    :class:`UsageError` saying what is wrong when it cannot be imported or found.
    """
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise UsageError(f"expected MODULE:ATTRIBUTE (e.g. my_worker:processor), got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise UsageError(f"no module named {module_name!r} (looked in {os.getcwd()})") from exc
        raise UsageError(f"importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise UsageError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    target: object = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise UsageError(f"module {module_name!r} has no attribute {attribute!r}") from None
    return target


@attrs.frozen
class ServeConfig:
    """What ``serve`` was asked to do, checked before anything binds."""

    spec: str
    """``MODULE:ATTRIBUTE`` as given."""
    processor: object
    host: str
    port: int
    capacity: int
    token: str | None
    settings: RegistrationSettings
    registration: CapabilityRegistration | None
    verify_orch_tls: bool
    x264_preset: str


def serve_config(args: argparse.Namespace, environ: dict[str, str]) -> ServeConfig:
    """Flags over environment, every value checked; :class:`UsageError` naming what is wrong."""
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0-65535, got {args.port}")
    flags = RegistrationSettings(
        **{field: getattr(args, flag[2:].replace("-", "_")) for field, flag in _FLAGS.items()}
    )
    try:
        settings = flags.or_else(RegistrationSettings.from_env(environ))
    except ParseError as exc:
        raise UsageError(str(exc)) from exc
    capacity = settings.capacity if settings.capacity is not None else 1
    if capacity < 1:
        raise UsageError(f"--capacity / CAPABILITY_CAPACITY must be at least 1, got {capacity}")
    registration = None
    if settings.orch_url is not None:
        if settings.orch_secret is None:
            raise UsageError("registering needs the orchestrator secret: set ORCH_SECRET")
        try:
            registration = settings.registration(
                default_url=advertised_url(args.host, args.port), default_capacity=capacity
            )
            Registrar(settings.orch_url, settings.orch_secret, registration)  # checks them all
        except ParseError as exc:
            raise UsageError(_setting_error(exc)) from exc
    return ServeConfig(
        spec=args.processor,
        processor=load_processor(args.processor),
        host=args.host,
        port=args.port,
        capacity=capacity,
        token=settings.token,
        settings=settings,
        registration=registration,
        verify_orch_tls=not args.orch_insecure,
        x264_preset=x264_preset(args.x264_preset, environ),
    )


def x264_preset(flag: str | None, environ: dict[str, str]) -> str:
    """The output preset: the flag, else the environment, else the default; checked."""
    preset = flag or environ.get(PRESET_VARIABLE) or DEFAULT_X264_PRESET
    try:
        check_x264_preset(preset)
    except ValueError:
        choices = ", ".join(X264_PRESETS)
        raise UsageError(
            f"--x264-preset / {PRESET_VARIABLE} must be one of {choices}, got {preset!r}"
        ) from None
    return preset


def advertised_url(host: str, port: int) -> str:
    """Where an orchestrator reaches a worker bound to ``host:port``.

    A wildcard address is no destination: the machine's host name stands in
    (in a container, one its network resolves).
    """
    name = socket.gethostname() if host in _WILDCARD_HOSTS else host
    return f"http://[{name}]:{port}" if ":" in name else f"http://{name}:{port}"


def _setting_error(exc: ParseError) -> str:
    field = "orch_secret" if exc.field == "secret" else exc.field
    if field in _FLAGS:
        return f"{_FLAGS[field]} / {ENVIRONMENT[field]}: {exc.reason}"
    return str(exc)


def _serve(args: argparse.Namespace) -> int:
    config = serve_config(args, dict(os.environ))
    try:
        server = WorkerServer(
            config.processor,
            host=config.host,
            port=config.port,
            capacity=config.capacity,
            token=config.token,
            x264_preset=config.x264_preset,
        )
    except TypeError as exc:
        raise UsageError(f"{config.spec} cannot serve as a processor: {exc}") from exc
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    terminal = sys.stdout.isatty()
    console = Console()
    _configure_logging(args.log_level.upper(), console if terminal else None)
    try:
        asyncio.run(_run(server, config, StatusDisplay(console, terminal)))
    except OSError as exc:
        print(f"{PROG}: cannot serve on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return 1
    return 0


def _configure_logging(level: str, console: Console | None) -> None:
    handler: logging.Handler
    if console is not None:
        handler = RichHandler(console=console, show_path=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


async def _run(server: WorkerServer, config: ServeConfig, display: StatusDisplay) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    await server.start()
    registrar = _registrar(server, config)
    registering = asyncio.create_task(_register_when_loaded(server, registrar))
    display.announce(f"serving {config.spec} at {server.url}")
    try:
        with display:
            while not stopping.is_set():
                display.show(status_line(server.snapshot(), registrar))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(STATUS_REFRESH):
                        await stopping.wait()
            display.show(status_line(server.snapshot(), registrar, stopping=True))
    finally:
        registering.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await registering
        if registrar is not None:
            await registrar.stop()  # first, so that no new stream is sent here
        await server.stop()
        display.announce("stopped")


def _registrar(server: WorkerServer, config: ServeConfig) -> Registrar | None:
    registration = config.registration
    settings = config.settings
    if registration is None or settings.orch_url is None or settings.orch_secret is None:
        return None
    if settings.url is None and config.port == 0:  # the bound port is known only now
        port = urllib.parse.urlsplit(server.url).port or 0
        registration = attrs.evolve(registration, url=advertised_url(config.host, port))
    return Registrar(
        settings.orch_url,
        settings.orch_secret,
        registration,
        verify_tls=config.verify_orch_tls,
        is_idle=lambda: not server.sessions,
    )


async def _register_when_loaded(server: WorkerServer, registrar: Registrar | None) -> None:
    """Register once the processor is ready: an orchestrator would send streams at once."""
    if registrar is None:
        return
    await server.wait_loaded()
    if server.load_error is not None:
        logger.error("not registering: the processor failed to load (%s)", server.load_error)
        return
    registrar.start()


def status_line(
    snapshot: WorkerSnapshot, registrar: Registrar | None, *, stopping: bool = False
) -> str:
    """One line: health, streams, frame rates, latency and registration."""
    latency = snapshot.latency_ms
    parts = [
        "STOPPING" if stopping else snapshot.health.value,
        f"streams {len(snapshot.sessions)}/{snapshot.capacity}",
        f"in {snapshot.fps_in:.1f} fps",
        f"out {snapshot.fps_out:.1f} fps",
        "latency -" if latency is None else f"latency {latency:.0f} ms",
        _registration_state(registrar),
    ]
    if snapshot.load_error is not None:
        parts.append(f"load failed: {snapshot.load_error}")
    return "  ".join(parts)


def _registration_state(registrar: Registrar | None) -> str:
    if registrar is None:
        return "not registering"
    name = registrar.registration.name
    if registrar.registered:
        return f"registered {name!r} with {registrar.orch_url}"
    if registrar.last_error is not None:
        return f"registering {name!r}: {registrar.last_error}"
    return f"registering {name!r} with {registrar.orch_url}"


_COLOURS: Final = {
    HealthStatus.LOADING.value: "yellow",
    HealthStatus.IDLE.value: "cyan",
    HealthStatus.OK.value: "green",
    HealthStatus.ERROR.value: "red",
}


class StatusDisplay:
    """Shows the status line: redrawn in place on a terminal, as plain lines otherwise."""

    def __init__(self, console: Console, terminal: bool, out: TextIO | None = None) -> None:
        self._console = console
        self._terminal = terminal
        self._out = out or sys.stdout
        self._live: Live | None = None
        self._last_news: list[str] = []
        self._last_printed = 0.0

    def __enter__(self) -> StatusDisplay:
        if self._terminal:
            self._live = Live(console=self._console, auto_refresh=False, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def announce(self, message: str) -> None:
        """A line that stays (start-up, shutdown)."""
        if self._terminal:
            self._console.print(message)
        else:
            print(message, file=self._out, flush=True)

    def show(self, line: str) -> None:
        if self._live is not None:
            text = Text(line, no_wrap=True, overflow="ellipsis")
            word = line.split(" ", 1)[0]
            text.stylize(f"bold {_COLOURS.get(word, 'white')}", 0, len(word))
            self._live.update(text, refresh=True)
            return
        parts = line.split("  ")
        # Rates and latency alone do not make news.
        coarse = [part for part in parts if not part.startswith(("in ", "out ", "latency "))]
        now = time.monotonic()
        streaming = not parts[1].startswith("streams 0/")
        due = streaming and now - self._last_printed >= PLAIN_STATUS_INTERVAL
        if coarse != self._last_news or due:
            print(line, file=self._out, flush=True)
            self._last_news, self._last_printed = coarse, now


# --- new -------------------------------------------------------------------------------------


def _new(name: str, directory: Path) -> int:
    if not _MODULE_NAME.match(name):
        suggestion = re.sub(r"[^a-z0-9_]", "_", name.lower())
        raise UsageError(
            f"NAME must be a module name (lower case letters, digits and _), "
            f"e.g. {suggestion!r}; got {name!r}"
        )
    targets = {
        directory / f"{name}.py": "processor.py.tmpl",
        directory / "Dockerfile": "Dockerfile.tmpl",
    }
    existing = [str(path) for path in targets if path.exists()]
    if existing:
        raise UsageError(f"not overwriting {', '.join(existing)}")
    templates = importlib.resources.files("byockit.worker") / "templates"
    capability = name.replace("_", "-")
    directory.mkdir(parents=True, exist_ok=True)
    for path, template in targets.items():
        text = string.Template((templates / template).read_text(encoding="utf-8"))
        path.write_text(text.substitute(name=name, capability=capability), encoding="utf-8")
        print(f"wrote {path}")
    print(f"serve it with: {PROG} serve {name}:processor --capability {capability}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
