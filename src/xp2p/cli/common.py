"""What the xp2p subcommands share: logging, secrets, names, source options, signals."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from xp2p.watchdog import watch_running_loop

if TYPE_CHECKING:
    from rich.console import Console

    from xp2p.link import LinkConfig
    from xp2p.media import MediaSource
    from xp2p.trust import CloudTrust
    from xp2p.viewer import AppParams

DEFAULT_CLOUD = "http://127.0.0.1:8080"

T = TypeVar("T")

#: What a subcommand runs: ``await run(args, stop)``; ``stop`` is set by Ctrl-C / SIGTERM.
Runner = Callable[[argparse.Namespace, asyncio.Event], Awaitable[None]]
#: ``commands.add_parser(...)`` of the top-level parser.
Subparsers = Any


def setup_logging(verbose: int, log_format: str = "text") -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    if log_format == "json":
        from xp2p.log_format import JsonFormatter

        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    # Third-party chatter only when asked for twice.
    for noisy in ("aioice", "quic", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)


def add_log_format_arg(parser: argparse.ArgumentParser) -> None:
    """``--log-format`` after a subcommand too (``xp2p cloud --log-format json``), where an
    operator looks for it; SUPPRESS keeps the top-level value when it is not given here."""
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=argparse.SUPPRESS,
        help="log lines as text (default) or one JSON object each, for log shippers",
    )


def console(*, stderr: bool = False) -> Console:
    """rich's console for the CLI's own lines: colour on a terminal only (none in a pipe or a
    log), and no markup, emoji, highlighting or wrapping: device text prints as it is, and a
    line stays one line for grep."""
    from rich.console import Console

    return Console(stderr=stderr, markup=False, emoji=False, highlight=False, soft_wrap=True)


def status(text: str, *, ok: bool, stderr: bool = False) -> None:
    """One outcome line: green when it worked, red when it did not (plain text off a
    terminal, so scripts and tests read the same words)."""
    console(stderr=stderr).print(text, style="green" if ok else "red")


def secret(args: argparse.Namespace, env: str, what: str) -> str:
    """Secrets come from a file or the environment, never from argv (visible in ps)."""
    if getattr(args, "secret_file", None):
        return Path(args.secret_file).read_text().strip()
    value = os.environ.get(env, "")
    if not value:
        raise SystemExit(f"xp2p: no {what}: set {env} or pass --secret-file")
    return value


def split_device(text: str) -> tuple[str, str]:
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


def add_source_args(parser: argparse.ArgumentParser) -> None:
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
    group.add_argument(
        "--source-credentials-file",
        type=Path,
        metavar="FILE",
        help="user:password (one line) for a URL --source, inserted in memory only, so it "
        "never shows in ps (else $XP2P_SOURCE_CREDENTIALS; a user:password in --source "
        "itself works but is visible to every local user)",
    )


def source_factory(args: argparse.Namespace) -> Callable[[], MediaSource]:
    from xp2p.media import FileSource, TestPatternConfig, TestPatternSource, UrlSource

    if args.source == "testpattern":
        width, height = args.size
        config = TestPatternConfig(
            width=width, height=height, fps=args.fps, bitrate=args.bitrate, gop=args.gop
        )
        return lambda: TestPatternSource(config)
    if "://" in args.source:
        url = _source_url(args)
        return lambda: UrlSource(url)
    if getattr(args, "source_credentials_file", None):
        raise SystemExit("xp2p: --source-credentials-file needs an rtsp:// or http(s):// --source")
    if not Path(args.source).is_file():
        raise SystemExit(f"xp2p: no such file: {args.source}")
    return lambda: FileSource(args.source, loop=True)


def _source_url(args: argparse.Namespace) -> str:
    """``--source`` with the credentials of ``--source-credentials-file`` or
    ``$XP2P_SOURCE_CREDENTIALS`` inserted: in memory only, so never in ``ps``."""
    from xp2p.media.source import has_userinfo, parse_credentials, redact_url, with_credentials

    url: str = args.source
    path = getattr(args, "source_credentials_file", None)
    try:
        if path is not None:
            try:
                text = Path(path).read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise SystemExit(
                    f"xp2p: --source-credentials-file {path}: "
                    f"{getattr(exc, 'strerror', None) or 'not readable text'}"
                ) from None
            return with_credentials(url, parse_credentials(text, "--source-credentials-file"))
        if os.environ.get("XP2P_SOURCE_CREDENTIALS"):
            credentials = parse_credentials(
                os.environ["XP2P_SOURCE_CREDENTIALS"], "XP2P_SOURCE_CREDENTIALS"
            )
            return with_credentials(url, credentials)
    except ValueError as exc:
        raise SystemExit(f"xp2p: {exc}") from None
    if has_userinfo(url):
        logging.getLogger("xp2p").warning(
            "--source %s: a user:password on the command line is visible in ps to every "
            "local user; put it in --source-credentials-file or $XP2P_SOURCE_CREDENTIALS",
            redact_url(url),
        )
    return url


async def run_until_stopped(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    watchdog = watch_running_loop()
    try:
        await main(stop)
    finally:
        watchdog.stop()


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) came before the work was done; the work was cancelled."""


async def unless_stopped(work: Coroutine[Any, Any, T], stop: asyncio.Event) -> T:
    """Run ``work`` to its end unless ``stop`` is set first: then ``work`` is cancelled,
    waited for (so what it holds is released) and ``Interrupted`` raised."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, stopping, return_exceptions=True)
    if task.cancelled():
        raise Interrupted
    return task.result()


def add_app_args(parser: argparse.ArgumentParser) -> None:
    """What every viewer-side command needs to reach the cloud as an app. Without
    ``--app-key`` the command uses the running ``xp2p demo`` (``cli.demo_state``)."""
    parser.add_argument(
        "--cloud", help=f"cloud URL ({DEFAULT_CLOUD}; with no --app-key: the running xp2p demo's)"
    )
    parser.add_argument(
        "--app-key",
        help="the app's key (secret in $XP2P_APP_SECRET or --secret-file); "
        "omit both --cloud and --app-key to use the running xp2p demo",
    )
    parser.add_argument("--secret-file", help="file holding the app secret")
    add_turn_ca_arg(parser)
    add_cloud_trust_args(parser)


def add_cloud_trust_args(parser: argparse.ArgumentParser) -> None:
    """How an https:// cloud's certificate is verified (default: the system's CA store)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--cloud-ca",
        type=Path,
        metavar="PEM",
        help="trust only this CA (or the cloud's self-signed certificate) for an https:// cloud",
    )
    group.add_argument(
        "--cloud-fingerprint",
        metavar="SHA256HEX",
        help="trust exactly the cloud certificate with this SHA-256 fingerprint (64 hex digits, "
        "as xp2p cloud --tls-self-signed prints it)",
    )


def cloud_trust(args: argparse.Namespace) -> CloudTrust:
    """``--cloud-ca`` / ``--cloud-fingerprint``, checked now (a clear exit, no traceback)."""
    from xp2p.trust import CloudTrust

    try:
        trust = CloudTrust(
            ca_file=getattr(args, "cloud_ca", None),
            fingerprint=getattr(args, "cloud_fingerprint", None),
        )
        trust.client_ssl()
    except ValueError as exc:
        raise SystemExit(f"xp2p: {exc}") from None
    return trust


def add_turn_ca_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--turn-ca",
        type=Path,
        metavar="PEM",
        help="verify turns: relays against this CA alone (default: the system's trust store)",
    )


def link_config(args: argparse.Namespace) -> LinkConfig:
    """The link settings the command line sets: ``--turn-ca``, checked now rather than at
    the first relayed connection."""
    from xp2p.link import LinkConfig
    from xp2p.link.errors import LinkError
    from xp2p.link.ice import turn_tls_context

    if args.turn_ca is None:
        return LinkConfig()
    try:
        pem = Path(args.turn_ca).read_text()
        turn_tls_context(pem)
    except OSError as exc:
        raise SystemExit(f"xp2p: --turn-ca {args.turn_ca}: {exc.strerror}") from None
    except (LinkError, ValueError) as exc:
        raise SystemExit(f"xp2p: --turn-ca {args.turn_ca}: not a PEM CA certificate") from exc
    return LinkConfig(turn_tls_ca=pem)


def app_params(args: argparse.Namespace) -> AppParams:
    from xp2p.cli.demo_state import read_state, state_path
    from xp2p.viewer import AppParams

    if args.app_key is None:
        demo = read_state() if args.cloud is None else None
        if demo is None:
            where = "" if args.cloud is None else f" (no --app-key for {args.cloud})"
            raise SystemExit(
                f"xp2p: which app?{where} Pass --cloud URL and --app-key KEY (secret in "
                f"$XP2P_APP_SECRET or --secret-file), or start `xp2p demo` and run this "
                f"again (it finds the demo through {state_path()})"
            )
        print(f"xp2p: using the running xp2p demo at {demo.cloud_url}", file=sys.stderr)
        return AppParams(demo.cloud_url, demo.app_key, demo.app_secret)
    return AppParams(
        args.cloud or DEFAULT_CLOUD,
        args.app_key,
        secret(args, "XP2P_APP_SECRET", "app secret"),
        cloud_trust=cloud_trust(args),
    )
