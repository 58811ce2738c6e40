"""``xp2p edge``: the 1vN edge on its own (the same routes ``xp2p cloud`` serves)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xp2p.cli.common import Subparsers, add_log_format_arg

if TYPE_CHECKING:
    from xp2p.cloud.edge import EdgeConfig


def add_edge_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("1vN edge (overrides the config's [edge] table)")
    group.add_argument(
        "--linger", type=float, help="keep pulling a room this long after its last viewer left"
    )
    group.add_argument(
        "--stall-timeout", type=float, help="seconds without source data before it is stalled"
    )
    group.add_argument("--max-rooms", type=int, help="rooms this edge pulls at most")
    group.add_argument(
        "--allow-source",
        action="append",
        metavar="ORIGIN",
        help="also pull this scheme://host:port although it is not a public address (e.g. "
        "an `xp2p origin` on loopback); adds to the config's allowed_sources; repeatable",
    )
    group.add_argument(
        "--source-ca",
        type=Path,
        metavar="PEM",
        help="also trust this certificate for https:// sources (e.g. `xp2p origin "
        "--tls-self-signed`'s)",
    )


def edge_config(args: argparse.Namespace, **extra: Any) -> EdgeConfig:
    from xp2p.cloud.config import ConfigError
    from xp2p.cloud.edge import EdgeConfig

    try:
        config = EdgeConfig.from_toml(args.config) if args.config else EdgeConfig()
        overrides = {
            k: v
            for k, v in (
                ("linger", args.linger),
                ("stall_timeout", args.stall_timeout),
                ("max_rooms", args.max_rooms),
                ("source_ca_file", args.source_ca),
                *extra.items(),
            )
            if v is not None
        }
        if getattr(args, "no_edge", False):
            overrides["enabled"] = False
        if getattr(args, "allow_source", None):
            overrides["allowed_sources"] = (*config.allowed_sources, *args.allow_source)
        return dataclasses.replace(config, **overrides)
    except ConfigError as exc:
        raise SystemExit(f"xp2p: {exc}") from None


async def _cmd_edge(args: argparse.Namespace, stop: asyncio.Event) -> None:
    from xp2p.cloud.config import CloudConfig, ConfigError
    from xp2p.cloud.edge import EdgeServer

    try:
        cloud = CloudConfig.from_toml(args.config)
        config = edge_config(args, port=args.port, stun=tuple(args.stun) if args.stun else None)
        server = EdgeServer(cloud, config, host=args.host)
    except ConfigError as exc:
        raise SystemExit(f"xp2p edge: {exc}") from None
    await server.start()
    print(f"xp2p edge listening on {server.url}/api/v1/swarm", flush=True)
    print(f"  edge key {server.service.edge_key}", flush=True)
    await stop.wait()
    await server.stop()


def register(commands: Subparsers) -> None:
    edge = commands.add_parser(
        "edge",
        help="the 1vN edge alone: rooms that pull a live HTTP(S)-FLV stream once for all viewers",
        description="Serve the 1vN edge routes (/api/v1/swarm/...) on their own port: each room "
        "pulls its source once, cuts and signs chunks, and introduces its viewers to each "
        "other. App accounts, TURN and the signing key come from the cloud's TOML config; "
        "its [edge] table holds the edge's own settings.",
    )
    edge.add_argument("--config", type=Path, required=True, help="the cloud's TOML config")
    add_log_format_arg(edge)
    edge.add_argument("--host", help="listen address (the config's host)")
    edge.add_argument("--port", type=int, help="HTTP port (the [edge] table's, else 8090)")
    edge.add_argument(
        "--stun", action="append", metavar="URL", help="stun:HOST:PORT handed to viewers"
    )
    add_edge_args(edge)
    edge.set_defaults(run=_cmd_edge)
