"""``xp2p origin``: a live stream as plain HTTP(S)-FLV, for an edge (or a player) to pull."""

from __future__ import annotations

import argparse
import asyncio
import ssl
import tempfile
from pathlib import Path

from xp2p.cli.common import Subparsers, add_source_args, source_factory


def _tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    from xp2p.device.http_origin import self_signed_certificate, server_ssl_context

    if args.tls_self_signed and (args.cert or args.key):
        raise SystemExit("xp2p origin: --tls-self-signed and --cert/--key exclude each other")
    if bool(args.cert) != bool(args.key):
        raise SystemExit("xp2p origin: --cert and --key go together")
    if args.tls_self_signed:
        directory = args.cert_dir or Path(tempfile.mkdtemp(prefix="xp2p-origin-"))
        hosts = ["localhost", "127.0.0.1", "::1", args.host]
        cert, key = self_signed_certificate(directory, hosts)
        print(f"  self-signed certificate {cert} (trust it: xp2p edge --source-ca {cert})")
        return server_ssl_context(cert, key)
    if args.cert:
        try:
            return server_ssl_context(args.cert, args.key)
        except (OSError, ssl.SSLError) as exc:
            raise SystemExit(f"xp2p origin: cannot load --cert/--key: {exc}") from None
    return None


async def _cmd_origin(args: argparse.Namespace, stop: asyncio.Event) -> None:
    from xp2p.device.http_origin import OriginServer

    tls = _tls(args)
    origin = OriginServer(
        source_factory(args), name=args.name, host=args.host, port=args.port, ssl_context=tls
    )
    await origin.start()
    print(f"xp2p origin serving {origin.url}", flush=True)
    print(f"  e.g. ffplay '{origin.url}'", flush=True)
    # The edge pulls only public addresses unless the origin is listed (issue 10 item 2).
    origin_of = origin.url.rsplit("/live/", 1)[0]
    print(f"  an edge pulls it once listed: xp2p edge --allow-source {origin_of}", flush=True)
    await stop.wait()
    await origin.stop()


def register(commands: Subparsers) -> None:
    origin = commands.add_parser(
        "origin",
        help="serve a live stream as plain HTTP(S)-FLV at /live/NAME.flv (a source for the edge)",
        description="Serve the test pattern (or a file or URL) as a live HTTP-FLV stream. Each "
        "client gets the header, the sequence headers and the stream from the newest keyframe.",
    )
    origin.add_argument("--host", default="127.0.0.1", help="listen address (127.0.0.1)")
    origin.add_argument("--port", type=int, default=8081, help="port (8081; 0 = any free)")
    origin.add_argument("--name", default="test", help="stream name: /live/NAME.flv (test)")
    tls = origin.add_argument_group("TLS (HTTPS)")
    tls.add_argument(
        "--tls-self-signed", action="store_true", help="serve HTTPS with a fresh certificate"
    )
    tls.add_argument("--cert-dir", type=Path, help="where --tls-self-signed writes it (a temp dir)")
    tls.add_argument("--cert", type=Path, help="your certificate chain (PEM)")
    tls.add_argument("--key", type=Path, help="its private key (PEM)")
    add_source_args(origin)
    origin.set_defaults(run=_cmd_origin)
