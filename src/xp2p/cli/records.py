"""``xp2p records PRODUCT/DEVICE``: what a camera has recorded, from a shell.

``--month YYYYMM`` (the default: this month) prints the days with recordings; ``--from ISO
[--to ISO]`` prints the recorded spans in that window; ``--files`` adds the files of the window
(recorded segments, videos and pictures put on the camera) that ``xp2p download`` can fetch.
Days and times are UTC, as the device's ``get_month_record`` counts them; an ISO time without
an offset is taken as UTC too.
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from xp2p.cli.common import (
    Subparsers,
    add_app_args,
    app_params,
    console,
    link_config,
    split_device,
)

if TYPE_CHECKING:
    from rich.table import Table

    from xp2p.viewer import P2PModule

SERVICE_ID = "records"
_MONTH = re.compile(r"[0-9]{6}")


def _iso(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO time such as 2026-11-24T08:00 or 2026-11-24T08:00+08:00, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _month(text: str) -> str:
    if not _MONTH.fullmatch(text) or not 1 <= int(text[4:]) <= 12:
        raise argparse.ArgumentTypeError(f"expected YYYYMM, got {text!r}")
    return text


def month_window(month: str) -> tuple[int, int]:
    year, number = int(month[:4]), int(month[4:])
    start = calendar.timegm((year, number, 1, 0, 0, 0))
    return start, start + calendar.monthrange(year, number)[1] * 86_400


def days_of(bitmap: int) -> list[int]:
    return [day + 1 for day in range(31) if bitmap >> day & 1]


def stamp(unix: int | str) -> str:
    return datetime.fromtimestamp(int(unix), UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def length(seconds: int) -> str:
    hours, rest = divmod(max(0, seconds), 3600)
    return (
        f"{hours}h{rest // 60:02d}m{rest % 60:02d}s" if hours else f"{rest // 60}m{rest % 60:02d}s"
    )


def size(n: int | str) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


async def _ask(module: P2PModule, channel: int, cmd: str) -> Any:
    result = await module.send_command(
        SERVICE_ID, f"action=inner_define&channel={channel}&cmd={cmd}"
    )
    if result.type != "success":
        name = cmd.partition("&")[0]
        detail = result.errmsg or result.type
        raise SystemExit(f"xp2p records: {name} failed: {detail} ({result.errcode})")
    return result.data


async def _run(args: argparse.Namespace, stop: asyncio.Event) -> None:
    from xp2p.errors import XP2PError
    from xp2p.viewer import P2PModule, StreamInfo

    product, device = split_device(args.device)
    if args.until is not None and args.since is None:
        raise SystemExit("xp2p records: --to needs --from")
    if args.since is not None:
        month = None
        start = args.since
        end = args.until if args.until is not None else int(datetime.now(UTC).timestamp())
        if end <= start:
            raise SystemExit("xp2p records: --to must be after --from")
    else:
        month = args.month or datetime.now(UTC).strftime("%Y%m")
        start, end = month_window(month)
    module = P2PModule(link_config(args))
    params = app_params(args)
    try:
        await module.init(params)
        await module.start_p2p_service(
            SERVICE_ID, StreamInfo(product_id=product, device_name=device)
        )
    except XP2PError as exc:
        await module.destroy()
        raise SystemExit(f"xp2p records: {exc}") from exc
    label = f"{product}/{device} channel {args.channel}"
    try:
        if month is not None:
            reply = await _ask(module, args.channel, f"get_month_record&time={month}")
            days = days_of(int(reply["video_list"]))
            listed = ", ".join(str(d) for d in days) or "none"
            print(f"{label}: days with recordings in {month[:4]}-{month[4:]} (UTC): {listed}")
        else:
            reply = await _ask(
                module, args.channel, f"get_record_index&start_time={start}&end_time={end}"
            )
            show_spans(label, start, end, reply["video_list"])
        if args.files:
            reply = await _ask(
                module, args.channel, f"get_file_list&start_time={start}&end_time={end}"
            )
            show_files(reply["file_list"])
    finally:
        await module.destroy()


# ---- output: rich tables on a terminal, plain lines (one per span or file) otherwise ----------


def show_spans(label: str, start: int, end: int, spans: list[dict[str, Any]]) -> None:
    title = f"{label}: recorded between {stamp(start)} and {stamp(end)}:"
    rows = []
    for span in spans:
        began, ended = int(span["start_time"]), int(span["end_time"])
        rows.append((stamp(began), stamp(ended), length(ended - began)))
    if sys.stdout.isatty():
        out = console()
        out.print(title if rows else f"{title} nothing", style="bold")
        if rows:
            out.print(_table(("from", "to", "length"), rows, right=(2,)))
        return
    print(title)
    for began_text, ended_text, span_length in rows:
        print(f"  {began_text} -> {ended_text}  ({span_length})")
    if not rows:
        print("  nothing")


def show_files(files: list[dict[str, Any]]) -> None:
    rows = [
        (
            entry["file_name"],
            "picture" if entry["file_type"] == "1" else "video",
            size(entry["file_size"]),
            stamp(entry["start_time"]),
            stamp(entry["end_time"]),
        )
        for entry in files
    ]
    title = f"files ({len(rows)}):"
    if sys.stdout.isatty():
        out = console()
        out.print(title, style="bold")
        if rows:
            out.print(_table(("file", "kind", "size", "from", "to"), rows, right=(2,)))
        return
    print(title)
    for name, kind, file_size, began, ended in rows:
        print(f"  {name}  {kind}  {file_size}  {began} -> {ended}")


def _table(
    headers: tuple[str, ...], rows: Sequence[tuple[str, ...]], right: tuple[int, ...]
) -> Table:
    from rich.table import Table

    table = Table(header_style="bold")
    for index, header in enumerate(headers):
        table.add_column(header, justify="right" if index in right else "left", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table


def register(commands: Subparsers) -> None:
    parser = commands.add_parser(
        "records",
        help="list a device's recordings: days of a month, recorded spans, files",
        description="Ask PRODUCT/DEVICE what it has recorded: the days of a month with "
        "recordings (--month, the default), the recorded spans between two times "
        "(--from/--to), and with --files the files of that window. Times are UTC unless "
        "they carry an offset. The app secret comes from $XP2P_APP_SECRET or --secret-file.",
    )
    parser.add_argument("device", metavar="PRODUCT/DEVICE")
    add_app_args(parser)
    parser.add_argument("--channel", type=int, default=0, help="camera channel (0)")
    window = parser.add_mutually_exclusive_group()
    window.add_argument(
        "--month", type=_month, metavar="YYYYMM", help="UTC month; default: this month"
    )
    window.add_argument(
        "--from",
        dest="since",
        type=_iso,
        metavar="ISO",
        help="ISO time, e.g. 2026-11-24T08:00 (UTC)",
    )
    parser.add_argument(
        "--to", dest="until", type=_iso, metavar="ISO", help="ISO time (default: now)"
    )
    parser.add_argument(
        "--files", action="store_true", help="also list the files of the month or window"
    )
    parser.set_defaults(run=_run)
