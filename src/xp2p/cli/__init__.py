"""The ``xp2p`` command (README.md). Each subcommand module registers its parsers."""

from __future__ import annotations

import argparse
import asyncio
import sys

from xp2p import __version__
from xp2p.cli import admin, cmd, download, edge, origin, records, serve, talk
from xp2p.cli.common import run_until_stopped, setup_logging, status
from xp2p.errors import XP2PError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xp2p",
        description="Open IoT-video P2P: a viewer reaches a camera directly through NATs "
        "(ICE/STUN + QUIC), with a local HTTP-FLV player.",
    )
    parser.add_argument("--version", action="version", version=f"xp2p {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logs (-vv adds ICE/QUIC internals)"
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="log lines as text (default) or one JSON object each, for log shippers",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (serve, edge, origin, cmd, talk, download, records, admin):
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.log_format)
    try:
        asyncio.run(run_until_stopped(lambda stop: args.run(args, stop)))
    except (XP2PError, OSError) as exc:
        status(f"xp2p {args.command}: {exc}", ok=False, stderr=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
