"""``byockit-testkit``: run testkit servers from a shell.

``byockit-testkit trickle-server`` serves trickle channels until Ctrl-C or
SIGTERM, printing the base URL it serves once it is listening.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import sys
from collections.abc import Sequence

from byockit.testkit.trickle_server import TrickleServer


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    try:
        ssl_context = _ssl_context(args.tls_cert, args.tls_key)
    except (OSError, ssl.SSLError) as exc:
        parser.error(f"cannot load the TLS certificate: {exc}")
    server = TrickleServer(
        args.host,
        args.port,
        base_path=args.base_path,
        auto_create=args.auto_create,
        ssl_context=ssl_context,
    )
    try:
        asyncio.run(_serve(server))
    except OSError as exc:
        print(f"byockit-testkit: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="byockit-testkit", description="Livepeer BYOC without the network."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    trickle = commands.add_parser(
        "trickle-server",
        help="serve trickle channels like a go-livepeer orchestrator",
        description="Serve trickle channels (PROTOCOL.md section 1) until Ctrl-C or SIGTERM.",
    )
    trickle.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default %(default)s)"
    )
    trickle.add_argument(
        "--port", type=int, default=3389, help="port to bind, 0 for any (default %(default)s)"
    )
    trickle.add_argument(
        "--base-path", default="/", help="path the channels live under, e.g. /ai/trickle/"
    )
    trickle.add_argument(
        "--auto-create",
        action="store_true",
        help="let the first segment POST to an unknown channel create it",
    )
    trickle.add_argument("--tls-cert", metavar="FILE", help="PEM certificate chain: serve HTTPS")
    trickle.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    return parser


def _ssl_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if cert is None or key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def _serve(server: TrickleServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        print(f"trickle server listening on {server.url}", flush=True)
        await stop.wait()
