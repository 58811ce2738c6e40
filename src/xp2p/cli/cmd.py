"""``xp2p cmd``: send one command to a device over a P2P link and print the reply."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import NoReturn
from urllib.parse import quote

from xp2p.cli.common import (
    Interrupted,
    Subparsers,
    add_app_args,
    app_params,
    link_config,
    split_device,
    status,
    unless_stopped,
)
from xp2p.errors import XP2PError

#: Exit statuses besides 0 (success) and argparse's 2 (bad usage).
EXIT_FAILURE, EXIT_USAGE, EXIT_TIMEOUT, EXIT_ERROR, EXIT_INTERRUPTED = 1, 2, 3, 4, 130
_EXITS = {"failure": EXIT_FAILURE, "timeout": EXIT_TIMEOUT, "error": EXIT_ERROR}

EPILOG = f"""\
examples:
  xp2p cmd DEMO/cam1 get_device_st type=live
  xp2p cmd DEMO/cam1 get_nvr_list nvr=cam1
  xp2p cmd DEMO/cam1 request_keyframe --channel 1
  xp2p cmd DEMO/cam1 --user '{{"topic":"ptz","data":{{"cmd":"ptz_up_press"}},"message_id":1}}'

The reply is printed to stdout as pretty JSON (text replies as they are).
exit status: 0 success; {EXIT_FAILURE} the device refused (its errmsg goes to stderr);
{EXIT_TIMEOUT} no reply within --timeout; {EXIT_ERROR} no link or the link broke;
{EXIT_USAGE} bad usage.
The app secret comes from $XP2P_APP_SECRET or --secret-file, never the command line."""


def _usage(message: str) -> NoReturn:
    status(f"xp2p cmd: {message}", ok=False, stderr=True)
    raise SystemExit(EXIT_USAGE)


def build_query(args: argparse.Namespace) -> str:
    """The command query from the arguments; values are escaped, so any text goes."""
    if args.user is not None:
        if args.command or args.params:
            _usage("give either a COMMAND or --user TEXT, not both")
        return f"action=user_define&channel={args.channel}&cmd={quote(args.user, safe='')}"
    if not args.command:
        _usage("give a COMMAND (e.g. get_device_st) or --user TEXT")
    query = f"action=inner_define&channel={args.channel}&cmd={quote(args.command, safe='')}"
    for param in args.params:
        key, sep, value = param.partition("=")
        if not sep or not key:
            _usage(f"parameters look like KEY=VALUE, got {param!r}")
        query += f"&{quote(key, safe='')}={quote(value, safe='')}"
    return query


async def _cmd_cmd(args: argparse.Namespace, stop: asyncio.Event) -> None:
    from xp2p.viewer import CommandResult, P2PModule, StreamInfo

    product, device = split_device(args.device)
    query = build_query(args)
    params = app_params(args)
    module = P2PModule(link_config(args))

    async def exchange() -> CommandResult:
        await module.init(params)
        await module.start_p2p_service("cmd", StreamInfo(product_id=product, device_name=device))
        return await module.send_command("cmd", query, timeout=args.timeout)

    try:
        result = await unless_stopped(exchange(), stop)
    except Interrupted:
        raise SystemExit(EXIT_INTERRUPTED) from None
    except XP2PError as exc:
        status(f"xp2p cmd: {exc}", ok=False, stderr=True)
        raise SystemExit(EXIT_ERROR) from None
    finally:
        await module.destroy()
    if result.type == "success":
        if isinstance(result.data, str):
            print(result.data)
        else:
            print(json.dumps(result.data, indent=2, ensure_ascii=False))
        return
    status(
        f"xp2p cmd: {result.type} (status {result.status}, errcode {result.errcode}): "
        f"{result.errmsg}",
        ok=False,
        stderr=True,
    )
    raise SystemExit(_EXITS.get(result.type, EXIT_ERROR))


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _channel(text: str) -> int:
    if not text.isdigit() or len(text) > 4:
        raise argparse.ArgumentTypeError(f"must be a small non-negative integer, got {text!r}")
    return int(text)


def register(commands: Subparsers) -> None:
    cmd = commands.add_parser(
        "cmd",
        help="send a command to a device and print its JSON reply",
        description=(
            "Connect to PRODUCT/DEVICE through the cloud and send one command:\n"
            "an inner_define COMMAND with KEY=VALUE parameters (get_device_st, get_nvr_list,\n"
            "request_keyframe, get_month_record, ...), or with --user a user_define text\n"
            "for the device maker's handler (by default the demo's PTZ simulator)."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument("device", metavar="PRODUCT/DEVICE")
    cmd.add_argument("command", nargs="?", metavar="COMMAND", help="inner_define command name")
    cmd.add_argument(
        "params", nargs="*", metavar="KEY=VALUE", help="parameters of the command, e.g. type=live"
    )
    cmd.add_argument(
        "--user", metavar="TEXT", help="send TEXT as an action=user_define command instead"
    )
    cmd.add_argument(
        "--channel", type=_channel, default=0, help="the device channel (0; NVRs have more)"
    )
    cmd.add_argument(
        "--timeout", type=_positive, default=7.5, help="seconds to wait for the reply (7.5)"
    )
    add_app_args(cmd)
    cmd.set_defaults(run=_cmd_cmd)
