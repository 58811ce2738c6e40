"""The long-running commands: demo, cloud, device, watch."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from xp2p import __version__
from xp2p.cli.admin import ADMIN_TOKEN_ENV
from xp2p.cli.common import (
    DEFAULT_CLOUD,
    Subparsers,
    add_app_args,
    add_cloud_trust_args,
    add_log_format_arg,
    add_source_args,
    add_turn_ca_arg,
    app_params,
    cloud_trust,
    link_config,
    secret,
    source_factory,
    split_device,
)
from xp2p.cli.edge import add_edge_args, edge_config
from xp2p.device.config import DeviceConfig
from xp2p.errors import XP2PError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from xp2p.cloud.account_db import AccountDatabase
    from xp2p.cloud.accounts import Accounts
    from xp2p.cloud.app import CloudServer
    from xp2p.cloud.config import CloudConfig
    from xp2p.player.server import PlayerServer
    from xp2p.viewer import P2PModule

#: ``xp2p demo``'s cloud port (the web app's address) unless ``--cloud-port``; if it is taken,
#: any free port: the printed address names it, and a newcomer has nothing to choose.
DEMO_CLOUD_PORT = 8080
#: The bearer token a Prometheus scraper sends for ``/metrics``; without it, loopback only.
METRICS_TOKEN_ENV = "XP2P_METRICS_TOKEN"
#: The key app secrets are sealed under in the registry database (or --registry-key-file).
REGISTRY_KEY_ENV = "XP2P_REGISTRY_KEY"

# ---- commands ---------------------------------------------------------------------------


async def _cmd_cloud(args: argparse.Namespace, stop: asyncio.Event) -> None:
    from xp2p.cloud.app import CloudServer
    from xp2p.cloud.config import ConfigError
    from xp2p.cloud.demo_login import DemoLogin
    from xp2p.cloud.metrics import MetricsAccess

    # Like every secret: from the environment, never argv (visible in ps) or the config file.
    metrics = MetricsAccess(os.environ.get(METRICS_TOKEN_ENV, ""))
    try:
        config = _cloud_config(args)
        edge = edge_config(args)
        # Demo accounts: the web app signs in as the demo app with a code in its address.
        login = None if args.config or args.db else DemoLogin(config.apps[0].key)
        registry_db, accounts = await _open_registry(args, config)
        server = CloudServer(
            config,
            edge=edge,
            demo_login=login,
            metrics_access=metrics,
            accounts=accounts,
            registry_db=registry_db,
            admin_token=os.environ.get(ADMIN_TOKEN_ENV, ""),
        )
    except ConfigError as exc:  # the operator gets the setting and the problem, no traceback
        raise SystemExit(f"xp2p cloud: {exc}") from None
    try:
        await server.start()
    except ConfigError as exc:  # an unloadable TLS certificate or key
        raise SystemExit(f"xp2p cloud: {exc}") from None
    host, port = server.stun_address
    print(
        f"xp2p cloud {__version__} listening on {server.url} (STUN udp {host}:{port})", flush=True
    )
    _print_trust(config, server.grant_public_key, args.export_grant_key)
    if server.demo_login is not None:
        print(f"  web app: open {server.app_url}", flush=True)
        _print_webapp_notes(server)
    if edge.enabled:
        print(f"  1vN edge: {server.url}/api/v1/swarm (linger {edge.linger:g} s)", flush=True)
    for entry in config.turn:
        print(f"  TURN {', '.join(entry.urls)} (credentials valid {entry.ttl} s)", flush=True)
    who = f"bearer ${METRICS_TOKEN_ENV}" if metrics.token else "this machine only"
    print(f"  metrics: {server.url}/metrics (Prometheus; {who})", flush=True)
    if registry_db is not None:
        admin = f"{server.url}/api/v1/admin" if os.environ.get(ADMIN_TOKEN_ENV) else "off"
        print(f"  registry: {registry_db!r}; admin API: {admin}", flush=True)
    await stop.wait()
    await server.stop()
    if registry_db is not None:
        await registry_db.close()


async def _open_registry(
    args: argparse.Namespace, config: CloudConfig
) -> tuple[AccountDatabase | None, Accounts | None]:
    """``--db``: the registry database, migrated, seeded from the TOML's accounts."""
    if not args.db:
        if os.environ.get(ADMIN_TOKEN_ENV):
            print(f"  (${ADMIN_TOKEN_ENV} is set, but the admin API needs --db)", flush=True)
        return None, None
    from sqlalchemy.exc import SQLAlchemyError

    from xp2p.cloud.account_db import AccountDatabase, short_error
    from xp2p.cloud.admin import MIN_TOKEN_LENGTH
    from xp2p.cloud.secret_box import SecretBox, SecretBoxError

    token = os.environ.get(ADMIN_TOKEN_ENV, "")
    if token and len(token) < MIN_TOKEN_LENGTH:
        raise SystemExit(f"xp2p cloud: ${ADMIN_TOKEN_ENV} must be {MIN_TOKEN_LENGTH}+ characters")
    try:
        box = SecretBox.from_env_or_file(REGISTRY_KEY_ENV, args.registry_key_file)
        db = AccountDatabase(args.db, box)
    except (SecretBoxError, ValueError, OSError) as exc:
        raise SystemExit(f"xp2p cloud: --db: {exc}") from None
    try:
        await db.migrate()
        added = await db.seed(config)
        accounts = await db.accounts()
    except (SQLAlchemyError, SecretBoxError, OSError) as exc:
        await db.close()
        raise SystemExit(f"xp2p cloud: the registry database: {short_error(exc)}") from None
    print(
        f"  registry: {len(accounts.apps)} apps, {len(accounts.devices)} devices "
        f"({added} added from the config)",
        flush=True,
    )
    if config.grant_key_file is None:
        print(
            "  WARNING: no grant_key_file: a new grant key every start, and provisioned "
            "devices pin it, so after a restart they cannot sign in; set grant_key_file",
            flush=True,
        )
    return db, accounts


def _print_trust(config: CloudConfig, grant_key: Ed25519PublicKey, export_to: Path | None) -> None:
    """What devices and apps pin: the TLS certificate (file and fingerprint) and the
    grant-signing public key (written to ``--export-grant-key``)."""
    from xp2p.trust import certificate_sha256, grant_public_key_pem

    if config.tls_cert_file is not None:
        fingerprint = certificate_sha256(config.tls_cert_file.read_bytes())
        print(f"  TLS certificate {config.tls_cert_file} (SHA-256 {fingerprint})", flush=True)
    if export_to is not None:
        export_to.write_text(grant_public_key_pem(grant_key))
        print(
            f"  grant-signing public key written to {export_to} (xp2p device --grant-key)",
            flush=True,
        )


def _with_tls(args: argparse.Namespace, config: CloudConfig) -> CloudConfig:
    """``--tls-cert/--tls-key``, or ``--tls-self-signed DIR``: a fresh pair for local use."""
    from xp2p.cloud.config import WILDCARD_HOSTS
    from xp2p.trust import self_signed_certificate

    if args.tls_self_signed is not None:
        if args.tls_cert or args.tls_key:
            raise SystemExit("xp2p cloud: --tls-self-signed replaces --tls-cert/--tls-key")
        hosts = ["localhost", "127.0.0.1", "::1"]
        hosts += [h for h in (config.host, config.public_host) if h and h not in WILDCARD_HOSTS]
        cert, key = self_signed_certificate(Path(args.tls_self_signed), hosts, name="cloud")
        print(f"Self-signed TLS certificate for {', '.join(dict.fromkeys(hosts))}: {cert}")
        print(f"  clients: --cloud-ca {cert} (or --cloud-fingerprint, below)")
        return dataclasses.replace(config, tls_cert_file=cert, tls_key_file=key)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise SystemExit("xp2p cloud: --tls-cert and --tls-key go together")
    if args.tls_cert:
        return dataclasses.replace(config, tls_cert_file=args.tls_cert, tls_key_file=args.tls_key)
    return config


def _cloud_config(args: argparse.Namespace) -> CloudConfig:
    from xp2p.cloud.config import CloudConfig, TurnServerConfig

    overrides = {
        k: v
        for k, v in (
            ("host", args.host),
            ("port", args.port),
            ("stun_port", args.stun_port),
            ("stun_alt_port", args.stun_alt_port),
            ("stun_alt_host", args.stun_alt_host),
        )
        if v is not None
    }
    if args.config:
        config = dataclasses.replace(CloudConfig.from_toml(args.config), **overrides)
    elif getattr(args, "db", None):
        config = CloudConfig(**overrides)  # the registry holds the accounts
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
    if args.turn:
        turn = TurnServerConfig(
            tuple(args.turn), secret(args, "XP2P_TURN_SECRET", "TURN secret"), args.turn_ttl
        )
        config = dataclasses.replace(config, turn=(*config.turn, turn))
    return _with_tls(args, config)


async def _cmd_device(args: argparse.Namespace, stop: asyncio.Event) -> None:
    from xp2p.device import ChannelConfig, DeviceAgent

    cloud, product, device, device_secret, device_key, grant_key = _device_identity(args)
    config = DeviceConfig(
        cloud_url=cloud,
        product_id=product,
        device_name=device,
        device_secret=device_secret,
        device_key=device_key,
        grant_public_key=grant_key,
        cloud_trust=cloud_trust(args),
        channels={0: ChannelConfig(default=source_factory(args))},
        link=link_config(args),
    )
    agent = DeviceAgent(with_device_options(config, args))
    await agent.start()
    try:
        await agent.wait_signed_in(timeout=15.0)
        print(f"device {product}/{device} signed in to {cloud}", flush=True)
    except Exception as exc:  # keep retrying in the background; say why now
        print(f"device {product}/{device}: not signed in yet ({exc}); retrying", flush=True)
    await stop.wait()
    await agent.close()


def _device_identity(
    args: argparse.Namespace,
) -> tuple[str, str, str, str, Ed25519PrivateKey | None, Ed25519PublicKey]:
    """(cloud URL, product, device, secret, key, grant key): from ``--provisioning FILE``
    (a key-pair camera, as ``xp2p admin device add`` wrote it) or from the arguments and
    $XP2P_DEVICE_SECRET (a camera the cloud's TOML names)."""
    if args.provisioning is None:
        if args.device is None:
            raise SystemExit("xp2p device: give PRODUCT/DEVICE, or --provisioning FILE")
        product, device = split_device(args.device)
        device_secret = secret(args, "XP2P_DEVICE_SECRET", "device secret")
        return args.cloud, product, device, device_secret, None, _grant_key(args)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from xp2p.auth import b64url_decode
    from xp2p.cli.admin import read_provisioning
    from xp2p.trust import load_grant_public_key

    try:
        doc = read_provisioning(args.provisioning)
        key = Ed25519PrivateKey.from_private_bytes(b64url_decode(doc["device_key"]))
        grant_key = load_grant_public_key(doc["grant_public_key"])
    except ValueError as exc:
        raise SystemExit(f"xp2p device: --provisioning: {exc}") from None
    if args.device is not None and args.device != f"{doc['product_id']}/{doc['device_name']}":
        raise SystemExit(f"xp2p device: {args.provisioning} is not for {args.device}")
    cloud = doc["cloud_url"] if args.cloud == DEFAULT_CLOUD else args.cloud
    return cloud, doc["product_id"], doc["device_name"], "", key, grant_key


def _grant_key(args: argparse.Namespace) -> Ed25519PublicKey:
    """``--grant-key FILE``: the cloud's grant-signing public key, pinned (required)."""
    from xp2p.trust import load_grant_public_key

    if args.grant_key is None:
        raise SystemExit(
            "xp2p device: no --grant-key: pin the cloud's grant-signing public key "
            "(written by xp2p cloud --export-grant-key FILE)"
        )
    try:
        return load_grant_public_key(Path(args.grant_key).read_text())
    except OSError as exc:
        raise SystemExit(f"xp2p device: --grant-key {args.grant_key}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise SystemExit(f"xp2p device: --grant-key {args.grant_key}: {exc}") from None


async def _cmd_watch(args: argparse.Namespace, stop: asyncio.Event) -> None:
    from xp2p.player.server import PlayerServer
    from xp2p.viewer import P2PModule

    label, streams, domain = _watched(args)
    _check_player_args(args)
    module = P2PModule(link_config(args))
    params = app_params(args)
    try:
        await module.init(params)
    except XP2PError as exc:
        raise SystemExit(f"xp2p watch: {exc}") from exc
    player = _player(PlayerServer, module, args, label, streams=streams, live_stream_domain=domain)
    await _start_player(player, args)
    print(f"Open {player.live_url(label)}  (page: {player.page_url})", flush=True)
    print(f"  e.g. ffplay '{player.live_url(label)}'", flush=True)
    await stop.wait()
    await player.stop()
    await module.destroy()


def _watched(args: argparse.Namespace) -> tuple[str, dict[str, str], str]:
    """What ``xp2p watch`` serves: the player's label for it, the 1vN streams by label, and
    the switch's edge (checked now, so a typo fails before anyone opens the player)."""
    from xp2p.swarm.edge_messages import MessageError, check_source_url
    from xp2p.viewer import switch

    if (args.device is None) == (args.url is None):
        raise SystemExit("xp2p watch: give PRODUCT/DEVICE or --url URL (one of them)")
    if args.url is not None:
        if args.live_stream_domain:
            raise SystemExit("xp2p watch: --live-stream-domain is for a device, not --url")
        try:
            url = check_source_url(args.url)
        except MessageError as exc:
            raise SystemExit(f"xp2p watch: --url: {exc}") from None
        if not url.startswith(("http://", "https://")):
            raise SystemExit("xp2p watch: --url must be an http(s) HTTP-FLV stream")
        label = f"stream/{stream_name(url)}"
        return label, {label: url}, ""
    product, device = split_device(args.device)
    domain = args.live_stream_domain or ""
    if domain:
        try:
            switch.edge_url(domain)
        except XP2PError as exc:
            raise SystemExit(f"xp2p watch: --live-stream-domain: {exc.message}") from None
    return f"{product}/{device}", {}, domain


def stream_name(url: str) -> str:
    """A player path for a 1vN stream: its file's name (``x`` of ``.../live/x.flv``), in the
    characters a path segment keeps as they are."""
    stem = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1].removesuffix(".flv")
    name = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in stem)
    return name.strip(".") or "live"


async def _start_demo_cloud(port: int | None) -> CloudServer:
    """The demo's cloud with its demo sign-in, on ``port``; with none given,
    ``DEMO_CLOUD_PORT`` or, if that is taken, any free port."""
    from xp2p.cloud.app import CloudServer
    from xp2p.cloud.config import CloudConfig
    from xp2p.cloud.demo_login import DemoLogin

    config = CloudConfig.demo(port=DEMO_CLOUD_PORT if port is None else port, stun_port=0)
    login = DemoLogin(config.apps[0].key)
    cloud = CloudServer(config, demo_login=login)
    try:
        await cloud.start()
    except OSError as exc:
        if port is not None or exc.errno != errno.EADDRINUSE:
            reason = exc.strerror or exc
            raise SystemExit(
                f"xp2p demo: cannot listen on 127.0.0.1:{config.port} ({reason}); "
                "choose another --cloud-port (0 = any free)"
            ) from None
        print(f"port {DEMO_CLOUD_PORT} is taken: the cloud listens on a free port", flush=True)
        cloud = CloudServer(dataclasses.replace(config, port=0), demo_login=login)
        await cloud.start()
    return cloud


def _print_webapp_notes(cloud: CloudServer) -> None:
    """What is missing for the web app to play, when something is."""
    web = cloud.webapp
    if web is None:
        return
    if not web.available():
        print(f"  (no web app here: {web.web_dir}/app/ is part of a source checkout)", flush=True)
    elif not web.sdk_complete():
        print(
            "  (web/node_modules is missing: run `npm ci` in web/, or scripts/setup.sh; "
            "the page cannot play video without mpegts.js)",
            flush=True,
        )


async def _cmd_demo(args: argparse.Namespace, stop: asyncio.Event) -> None:
    from xp2p.cli.demo_state import DemoState, remove_state, write_state
    from xp2p.device import ChannelConfig, DeviceAgent
    from xp2p.player.server import PlayerServer
    from xp2p.viewer import AppParams, P2PModule

    _check_player_args(args)
    if args.cloud_port is not None and not 0 <= args.cloud_port <= 65535:
        raise SystemExit("xp2p demo: --cloud-port must be 0 to 65535")
    cloud = await _start_demo_cloud(args.cloud_port)
    config = cloud.config
    device_account = config.devices[0]
    demo_device = DeviceConfig(
        cloud_url=cloud.url,
        product_id=device_account.product_id,
        device_name=device_account.device_name,
        device_secret=device_account.secret,
        # In one process the key is passed directly: nothing travels that could be swapped.
        grant_public_key=cloud.grant_public_key,
        channels={0: ChannelConfig(default=source_factory(args))},
    )
    agent = DeviceAgent(with_device_options(demo_device, args))
    await agent.start()
    await agent.wait_signed_in(timeout=10.0)
    module = P2PModule()
    app = config.apps[0]
    await module.init(AppParams(cloud.url, app.key, app.secret))
    label = f"{device_account.product_id}/{device_account.device_name}"
    player = _player(PlayerServer, module, args, label)
    await _start_player(player, args)
    print(f"xp2p demo: cloud {cloud.url}, camera {label} online, NAT {module.nat_type}", flush=True)
    # The one address to open. Its fragment is the sign-in code: printed here for the
    # person at this terminal, never logged, and never sent to a server by the browser.
    print(f"Open {cloud.app_url}", flush=True)
    print(
        "  in a browser: the web app plays the camera; the part after # signs the page in "
        "for this run (keep it to yourself)",
        flush=True,
    )
    _print_webapp_notes(cloud)
    print(
        f"  player (ffplay, VLC, mpv): {player.live_url(label)}  (page: {player.page_url})",
        flush=True,
    )
    state = write_state(DemoState(cloud.url, app.key, app.secret, os.getpid()))
    print(
        f"  xp2p cmd, talk, download and records reach this demo with no flags "
        f"(they read {state}, mode 0600, removed at exit)",
        flush=True,
    )
    print("Ctrl-C stops.", flush=True)
    try:
        await stop.wait()
    finally:
        remove_state(state)
        await player.stop()
        await module.destroy()
        await agent.close()
        await cloud.stop()
        print("xp2p demo stopped.", flush=True)


async def _start_player(player: PlayerServer, args: argparse.Namespace) -> None:
    """The player's listen failure (-2301) as one line naming the address, no traceback."""
    try:
        await player.start()
    except XP2PError as exc:
        raise SystemExit(f"xp2p {args.command}: {exc.message}; choose another --port") from None


def _check_player_args(args: argparse.Namespace) -> None:
    """A bad player setting stops the command before anything started, naming the setting."""
    from xp2p.player.access import AccessConfigError, PlayerAccess

    try:
        PlayerAccess.create(
            host=args.host, allow_origins=args.allow_origin or (), public=args.player_public
        )
    except AccessConfigError as exc:
        raise SystemExit(f"xp2p {args.command}: {exc}") from None


def _player(
    cls: type[PlayerServer],
    module: P2PModule,
    args: argparse.Namespace,
    device: str,
    *,
    streams: dict[str, str] | None = None,
    live_stream_domain: str = "",
) -> PlayerServer:
    """The local player of watch and demo: only ``device`` (or the 1vN stream ``streams``
    names), loopback unless --player-public (checked by ``_check_player_args`` first)."""
    return cls(
        module,
        host=args.host,
        port=args.port,
        devices=[] if streams else [device],
        streams=streams,
        live_stream_domain=live_stream_domain,
        allow_origins=args.allow_origin or (),
        public=args.player_public,
    )


def add_player_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("local player")
    group.add_argument("--host", default="127.0.0.1", help="player address (127.0.0.1)")
    group.add_argument("--port", type=int, default=8000, help="player port (8000; 0 = any free)")
    group.add_argument(
        "--player-public",
        action="store_true",
        help="allow a --host beyond loopback; the token in the printed URLs is then the only "
        "authentication (anyone holding a URL can watch)",
    )
    group.add_argument(
        "--allow-origin",
        action="append",
        metavar="ORIGIN",
        help="a web origin (https://app.example) whose pages may use the player; repeat for "
        "several (default: none, cross-site requests get 403)",
    )


# ---- argument parsing -------------------------------------------------------------------


def add_device_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("device")
    group.add_argument(
        "--recordings-dir",
        type=Path,
        help="record the live stream into FLV segments here (and serve playback, file "
        "lists and downloads from it); without it the camera records nothing",
    )
    group.add_argument(
        "--segment-seconds", type=float, default=60.0, help="length of one recording (60)"
    )
    group.add_argument(
        "--max-viewers", type=int, default=4, help="viewers that may pull video at once (4)"
    )
    group.add_argument(
        "--max-links",
        type=int,
        default=32,
        help="open links, pulling or not (32); more viewers get 503 busy",
    )
    group.add_argument(
        "--app-link-share",
        type=float,
        default=0.5,
        help="the part of the links (and of those being set up) one app may hold (0.5; "
        "1 = no per-app limit)",
    )
    group.add_argument(
        "--link-idle-timeout",
        type=float,
        default=120.0,
        help="close a link that served no request for this many seconds (120)",
    )


def with_device_options(config: DeviceConfig, args: argparse.Namespace) -> DeviceConfig:
    if min(args.max_viewers, args.max_links, args.segment_seconds) < 1:
        raise SystemExit(
            "xp2p: --max-viewers, --max-links and --segment-seconds must be at least 1"
        )
    if not 0 < args.app_link_share <= 1:
        raise SystemExit("xp2p: --app-link-share must be more than 0 and at most 1")
    if not args.link_idle_timeout > 0:
        raise SystemExit("xp2p: --link-idle-timeout must be more than 0")
    return dataclasses.replace(
        config,
        recordings_dir=args.recordings_dir,
        segment_seconds=args.segment_seconds,
        max_viewers=args.max_viewers,
        max_links=args.max_links,
        app_link_share=args.app_link_share,
        link_idle_timeout=args.link_idle_timeout,
    )


def register(commands: Subparsers) -> None:
    demo = commands.add_parser(
        "demo",
        help="cloud + web app + test-pattern camera DEMO/cam1 + local player, in one process; "
        "prints the address to open in a browser",
        description="Run everything in one process with in-memory state and no config file: "
        "the cloud serving the web app, a test-pattern camera DEMO/cam1, and a viewer with "
        "its local player. Prints one address to open in a browser, "
        "'Open http://127.0.0.1:8080/app/#login=CODE': the web app, signed in by the code "
        "after '#' (new at every start; a browser never sends the part after '#' to a "
        "server, and the page removes it from the address bar), playing the camera over "
        "WebRTC. Below it, the local player's URL for ffplay, VLC or mpv.",
    )
    demo.add_argument(
        "--cloud-port",
        type=int,
        metavar="PORT",
        help=f"the cloud's HTTP port, so the web app's address ({DEMO_CLOUD_PORT}; if that is "
        "taken, any free port, and the printed address says which; a PORT given here that "
        "is taken is an error; 0 = any free)",
    )
    add_player_args(demo)
    add_source_args(demo)
    add_device_args(demo)

    cloud = commands.add_parser(
        "cloud",
        help="the cloud service: accounts, presence, signalling, STUN",
        description="Run the cloud: app and device accounts, device presence and xp2pInfo, "
        "access grants, the signalling hub, and a STUN responder on UDP. GET /metrics is "
        "Prometheus' text format: for a scraper holding $XP2P_METRICS_TOKEN (Authorization: "
        "Bearer), or, with no token set, for clients on this machine only.",
    )
    add_log_format_arg(cloud)
    cloud.add_argument(
        "--config",
        type=Path,
        help="TOML config (apps, devices, ports, TURN); without it: demo accounts with new secrets",
    )
    cloud.add_argument(
        "--host",
        help="listen address (overrides the config); other than loopback it needs TLS",
    )
    tls = cloud.add_argument_group("TLS (required unless the cloud listens on loopback)")
    tls.add_argument("--tls-cert", type=Path, metavar="PEM", help="certificate chain (PEM)")
    tls.add_argument("--tls-key", type=Path, metavar="PEM", help="its private key (PEM)")
    tls.add_argument(
        "--tls-self-signed",
        metavar="DIR",
        help="make a self-signed certificate in DIR for local use (cloud-cert.pem, "
        "cloud-key.pem) and print what clients pin (--cloud-ca or --cloud-fingerprint)",
    )
    cloud.add_argument(
        "--export-grant-key",
        type=Path,
        metavar="FILE",
        help="write the grant-signing public key (PEM) to FILE at start: devices pin it with "
        "--grant-key (set grant_key_file in the config for a key that survives restarts)",
    )
    cloud.add_argument("--port", type=int, help="HTTP port (overrides the config)")
    cloud.add_argument("--stun-port", type=int, help="STUN UDP port (overrides the config)")
    cloud.add_argument(
        "--stun-alt-port", type=int, help="second STUN UDP port, for NAT-behaviour probing"
    )
    cloud.add_argument(
        "--stun-alt-host",
        help="second IP address of this machine for STUN (needs --stun-alt-port and a specific "
        "--host or public_host): NAT-behaviour probing per RFC 5780",
    )
    cloud.add_argument(
        "--turn",
        action="append",
        metavar="URL",
        help="a TURN server for apps and devices, with time-limited credentials (TURN REST "
        "API): turn:HOST:3478?transport=udp, turn:HOST:3478?transport=tcp (for networks that "
        "block UDP), turns:HOST:5349; repeat for several. Run coturn with use-auth-secret and "
        "static-auth-secret set to the same secret",
    )
    cloud.add_argument(
        "--secret-file",
        type=Path,
        metavar="FILE",
        help="with --turn: the file holding coturn's static-auth-secret (else $XP2P_TURN_SECRET)",
    )
    cloud.add_argument(
        "--turn-ttl",
        type=int,
        default=3600,
        metavar="SECONDS",
        help="lifetime of the TURN credentials handed out (3600)",
    )
    registry = cloud.add_argument_group("registry (apps and devices in a database)")
    registry.add_argument(
        "--db",
        metavar="URL",
        help="sqlite:///PATH (one node) or postgresql://USER@HOST/DB (several nodes): apps "
        "and devices there, provisioned with xp2p admin while running; --config's accounts "
        "seed it. Without --db: the config's accounts, in memory",
    )
    registry.add_argument(
        "--registry-key-file",
        type=Path,
        metavar="FILE",
        help=f"the key app secrets are sealed under (else ${REGISTRY_KEY_ENV}; "
        "xp2p admin keygen makes one). The admin API is on when $XP2P_ADMIN_TOKEN is set",
    )
    add_edge_args(cloud)
    cloud.add_argument(
        "--no-edge", action="store_true", help="without the 1vN edge routes (/api/v1/swarm)"
    )
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
    device.add_argument("device", metavar="PRODUCT/DEVICE", nargs="?")
    device.add_argument(
        "--provisioning",
        type=Path,
        metavar="FILE",
        help="sign in with the key pair of this provisioning file (xp2p admin device add "
        "writes it: device, key, cloud URL, grant key) instead of a secret",
    )
    device.add_argument("--cloud", default=DEFAULT_CLOUD, help=f"cloud URL ({DEFAULT_CLOUD})")
    device.add_argument("--secret-file", help="file holding the device secret")
    device.add_argument(
        "--grant-key",
        type=Path,
        metavar="FILE",
        help="the cloud's grant-signing public key (PEM or base64url; required), as "
        "xp2p cloud --export-grant-key writes it: grants are checked against it alone",
    )
    add_turn_ca_arg(device)
    add_cloud_trust_args(device)
    add_source_args(device)
    add_device_args(device)

    watch = commands.add_parser(
        "watch",
        help="a viewer with its local player; prints the address to open",
        description="Connect to PRODUCT/DEVICE through the cloud (or join the 1vN stream "
        "--url names) and serve its live stream on a local HTTP-FLV URL. Opening the URL "
        "starts the pull, closing it stops it. "
        "The app secret comes from $XP2P_APP_SECRET or --secret-file.",
        epilog="examples:\n"
        "  xp2p watch DEMO/cam1\n"
        "  xp2p watch DEMO/cam1 --live-stream-domain https://cloud.example  # 1vN when full\n"
        "  xp2p watch --url https://origin.example/live/x.flv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    watch.add_argument("device", metavar="PRODUCT/DEVICE", nargs="?")
    watch.add_argument(
        "--url",
        metavar="URL",
        help="watch a 1vN stream instead of a device: an HTTP(S)-FLV URL "
        "(https://host/live/x.flv), shared with its other viewers through the edge; the "
        "player serves it as /live/stream/x.flv",
    )
    watch.add_argument(
        "--live-stream-domain",
        metavar="URL",
        help="the seed's 1v1->1vN switch: an edge (host or http(s) URL, usually the cloud's) "
        "whose swarm of the camera the viewer joins when the camera is full",
    )
    add_app_args(watch)
    add_player_args(watch)
    demo.set_defaults(run=_cmd_demo)
    cloud.set_defaults(run=_cmd_cloud)
    device.set_defaults(run=_cmd_device)
    watch.set_defaults(run=_cmd_watch)
