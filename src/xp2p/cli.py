"""The ``xp2p`` command: demo, cloud, device and watch (SPEC §9)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from xp2p import __version__
from xp2p.errors import XP2PError

logger = logging.getLogger("xp2p.cli")

DEFAULT_CLOUD = "http://127.0.0.1:8080"


# ---- shared helpers ---------------------------------------------------------------------


def _setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    # Third-party chatter only when asked for twice.
    for noisy in ("aioice", "quic", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)


def _secret(args: argparse.Namespace, env: str, what: str) -> str:
    """Secrets come from a file or the environment, never from argv (visible in ps)."""
    if getattr(args, "secret_file", None):
        return Path(args.secret_file).read_text().strip()
    value = os.environ.get(env, "")
    if not value:
        raise SystemExit(f"xp2p: no {what}: set {env} or pass --secret-file")
    return value


def _split_device(text: str) -> tuple[str, str]:
    product, sep, device = text.partition("/")
    if not sep or not product or not device or "/" in device:
        raise SystemExit(f"xp2p: expected PRODUCT/DEVICE, got {text!r}")
    return product, device


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    try:
        return int(width), int(height)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 640x360, got {text!r}") from None


def _bitrate(text: str) -> int:
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:].lower(), 1)
    try:
        return int(float(text[:-1] if scale > 1 else text) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bitrate must look like 800k or 2M, got {text!r}"
        ) from None


def _add_source_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("video source")
    group.add_argument(
        "--source",
        default="testpattern",
        help="'testpattern' (default), a file (FLV/MP4, looped) or an "
        "rtsp:// / http(s):// URL (remuxed, not re-encoded)",
    )
    group.add_argument("--size", type=_size, default=(640, 360), help="test pattern WxH (640x360)")
    group.add_argument("--fps", type=int, default=25, help="test pattern frame rate (25)")
    group.add_argument(
        "--bitrate",
        type=_bitrate,
        default=800_000,
        help="test pattern video bitrate, e.g. 800k or 2M (800k)",
    )
    group.add_argument(
        "--gop", type=int, default=50, help="test pattern keyframe interval in frames"
    )


def _source_factory(args: argparse.Namespace) -> Callable[[], object]:
    from xp2p.media import FileSource, TestPatternConfig, TestPatternSource, UrlSource

    if args.source == "testpattern":
        width, height = args.size
        config = TestPatternConfig(
            width=width, height=height, fps=args.fps, bitrate=args.bitrate, gop=args.gop
        )
        return lambda: TestPatternSource(config)
    if "://" in args.source:
        return lambda: UrlSource(args.source)
    if not Path(args.source).is_file():
        raise SystemExit(f"xp2p: no such file: {args.source}")
    return lambda: FileSource(args.source, loop=True)


async def _run_until_stopped(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await main(stop)


# ---- commands ---------------------------------------------------------------------------


async def _cmd_cloud(args: argparse.Namespace, stop: asyncio.Event) -> None:
    from xp2p.cloud.app import CloudServer
    from xp2p.cloud.config import CloudConfig

    overrides = {
        k: v
        for k, v in (("host", args.host), ("port", args.port), ("stun_port", args.stun_port))
        if v is not None
    }
    if args.config:
        config = dataclasses.replace(CloudConfig.from_toml(args.config), **overrides)
    else:
        config = CloudConfig.demo(**overrides)
        app = config.apps[0]
        print("No --config given: demo accounts (in memory, new secrets every start):")
        print(f"  app key {app.key}")
        for device in config.devices:
            print(f"  device {device.product_id}/{device.device_name}")
        print("  secrets: pass --print-secrets to show them (for local testing only)")
        if args.print_secrets:
            print(f"  XP2P_APP_SECRET={app.secret}")
            for device in config.devices:
                print(
                    f"  {device.product_id}/{device.device_name} XP2P_DEVICE_SECRET={device.secret}"
                )
    server = CloudServer(config)
    await server.start()
    host, port = server.stun_address
    print(
        f"xp2p cloud {__version__} listening on {server.url} (STUN udp {host}:{port})", flush=True
    )
    await stop.wait()
    await server.stop()


async def _cmd_device(args: argparse.Namespace, stop: asyncio.Event) -> None:
    from xp2p.device.agent import ChannelConfig, DeviceAgent, DeviceConfig

    product, device = _split_device(args.device)
    config = DeviceConfig(
        cloud_url=args.cloud,
        product_id=product,
        device_name=device,
        device_secret=_secret(args, "XP2P_DEVICE_SECRET", "device secret"),
        channels={0: ChannelConfig(default=_source_factory(args))},  # type: ignore[arg-type]
    )
    agent = DeviceAgent(config)
    await agent.start()
    try:
        await agent.wait_signed_in(timeout=15.0)
        print(f"device {product}/{device} signed in to {args.cloud}", flush=True)
    except Exception as exc:  # keep retrying in the background; say why now
        print(f"device {product}/{device}: not signed in yet ({exc}); retrying", flush=True)
    await stop.wait()
    await agent.close()


async def _cmd_watch(args: argparse.Namespace, stop: asyncio.Event) -> None:
    from xp2p.player.server import PlayerServer
    from xp2p.viewer import AppParams, P2PModule

    product, device = _split_device(args.device)
    module = P2PModule()
    params = AppParams(args.cloud, args.app_key, _secret(args, "XP2P_APP_SECRET", "app secret"))
    try:
        await module.init(params)
    except XP2PError as exc:
        raise SystemExit(f"xp2p watch: {exc}") from exc
    player = PlayerServer(module, host=args.host, port=args.port, devices=[f"{product}/{device}"])
    await player.start()
    print(f"Open {player.live_url(f'{product}/{device}')}  (page: {player.url}/)", flush=True)
    print(f"  e.g. ffplay -fflags nobuffer '{player.live_url(f'{product}/{device}')}'", flush=True)
    await stop.wait()
    await player.stop()
    await module.destroy()


async def _cmd_demo(args: argparse.Namespace, stop: asyncio.Event) -> None:
    from xp2p.cloud.app import CloudServer
    from xp2p.cloud.config import CloudConfig
    from xp2p.device.agent import ChannelConfig, DeviceAgent, DeviceConfig
    from xp2p.player.server import PlayerServer
    from xp2p.viewer import AppParams, P2PModule

    config = CloudConfig.demo(port=0, stun_port=0)
    cloud = CloudServer(config)
    await cloud.start()
    device_account = config.devices[0]
    agent = DeviceAgent(
        DeviceConfig(
            cloud_url=cloud.url,
            product_id=device_account.product_id,
            device_name=device_account.device_name,
            device_secret=device_account.secret,
            channels={0: ChannelConfig(default=_source_factory(args))},  # type: ignore[arg-type]
        )
    )
    await agent.start()
    await agent.wait_signed_in(timeout=10.0)
    module = P2PModule()
    app = config.apps[0]
    await module.init(AppParams(cloud.url, app.key, app.secret))
    label = f"{device_account.product_id}/{device_account.device_name}"
    player = PlayerServer(module, host=args.host, port=args.port, devices=[label])
    await player.start()
    print(f"xp2p demo: cloud {cloud.url}, camera {label} online, NAT {module.nat_type}", flush=True)
    print(f"Open {player.live_url(label)}  (page: {player.url}/)", flush=True)
    print(f"  e.g. ffplay -fflags nobuffer '{player.live_url(label)}'", flush=True)
    print("Ctrl-C stops.", flush=True)
    try:
        await stop.wait()
    finally:
        await player.stop()
        await module.destroy()
        await agent.close()
        await cloud.stop()
        print("xp2p demo stopped.", flush=True)


# ---- argument parsing -------------------------------------------------------------------


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
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="cloud + test-pattern camera DEMO/cam1 + viewer and player, in one process",
        description="Run everything in one process with in-memory state and no config file: "
        "the cloud, a test-pattern camera DEMO/cam1, a viewer and its local player. "
        "Prints the URL to open in ffplay, VLC or mpv.",
    )
    demo.add_argument("--host", default="127.0.0.1", help="player address (127.0.0.1)")
    demo.add_argument("--port", type=int, default=8000, help="player port (8000; 0 = any free)")
    _add_source_args(demo)

    cloud = commands.add_parser(
        "cloud",
        help="the cloud service: accounts, presence, signalling, STUN",
        description="Run the cloud: app and device accounts, device presence and xp2pInfo, "
        "access grants, the signalling hub, and a STUN responder on UDP.",
    )
    cloud.add_argument(
        "--config",
        type=Path,
        help="TOML config (apps, devices, ports, TURN); without it: demo accounts with new secrets",
    )
    cloud.add_argument("--host", help="listen address (overrides the config)")
    cloud.add_argument("--port", type=int, help="HTTP port (overrides the config)")
    cloud.add_argument("--stun-port", type=int, help="STUN UDP port (overrides the config)")
    cloud.add_argument(
        "--print-secrets",
        action="store_true",
        help="with demo accounts, print their secrets (local testing only)",
    )

    device = commands.add_parser(
        "device",
        help="a camera agent serving live video to authorised viewers",
        description="Sign in to the cloud as PRODUCT/DEVICE and serve live video over P2P "
        "links. The device secret comes from $XP2P_DEVICE_SECRET or --secret-file.",
    )
    device.add_argument("device", metavar="PRODUCT/DEVICE")
    device.add_argument("--cloud", default=DEFAULT_CLOUD, help=f"cloud URL ({DEFAULT_CLOUD})")
    device.add_argument("--secret-file", help="file holding the device secret")
    _add_source_args(device)

    watch = commands.add_parser(
        "watch",
        help="a viewer with its local player; prints the address to open",
        description="Connect to PRODUCT/DEVICE through the cloud and serve its live stream on a "
        "local HTTP-FLV URL. Opening the URL starts the pull, closing it stops it. "
        "The app secret comes from $XP2P_APP_SECRET or --secret-file.",
    )
    watch.add_argument("device", metavar="PRODUCT/DEVICE")
    watch.add_argument("--cloud", default=DEFAULT_CLOUD, help=f"cloud URL ({DEFAULT_CLOUD})")
    watch.add_argument("--app-key", required=True, help="the app's key")
    watch.add_argument("--secret-file", help="file holding the app secret")
    watch.add_argument("--host", default="127.0.0.1", help="player address (127.0.0.1)")
    watch.add_argument("--port", type=int, default=8000, help="player port (8000; 0 = any free)")
    return parser


COMMANDS = {"demo": _cmd_demo, "cloud": _cmd_cloud, "device": _cmd_device, "watch": _cmd_watch}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    command = COMMANDS[args.command]
    try:
        asyncio.run(_run_until_stopped(lambda stop: command(args, stop)))
    except XP2PError as exc:
        print(f"xp2p {args.command}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"xp2p {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
