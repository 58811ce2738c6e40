"""``xp2p download``: a recorded file from a device, resumably, verified by sha256.

The download itself is the SDK's ``P2PModule.download_to_file``; this is argparse, the
progress display and the exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from xp2p.cli.common import (
    Interrupted,
    Subparsers,
    add_app_args,
    app_params,
    console,
    link_config,
    split_device,
    status,
    unless_stopped,
)
from xp2p.errors import XP2PError

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


#: A plain progress line this often when stderr is not a terminal (logs, pipes, tests).
LINE_INTERVAL = 5.0

EPILOG = """\
examples:
  xp2p download DEMO/cam1 20240101-120000.flv
  xp2p download DEMO/cam1 clip.mp4 -o ~/clips/ --channel 1
  xp2p download DEMO/cam1 20240101-120000.flv --mp4   # and 20240101-120000.mp4 for a phone

How it saves: bytes go to PATH.part (with PATH.part.json noting which file they belong to)
and PATH appears only once every byte is there and the sha256 of the whole file matches the
device's x-content-sha256; on a mismatch the partial is deleted and the command fails.
Resuming: run the same command again. A PATH.part continues from its size unless the device's
file changed since (other size or digest: it starts over). An existing PATH without .part
(a partial from elsewhere) is continued from its size too; if it is longer than the device's
file it starts over, and if the finished file does not match, it is deleted.
Progress goes to stderr (a bar on a terminal, a line every few seconds otherwise); the saved
path goes to stdout. Exit status: 0 saved and verified, 1 anything else (2 bad usage).
The app secret comes from $XP2P_APP_SECRET or --secret-file, never the command line.
Apps get the same from the SDK: P2PModule.download_to_file."""


# ---- progress ---------------------------------------------------------------------------------


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


class ProgressDisplay:
    """The ``on_progress`` of a download: rich's bar on a terminal; otherwise a plain line
    (percent, bytes, rate, ETA) every ``LINE_INTERVAL`` s and at the end, never redrawn."""

    def __init__(self, out: TextIO, *, tty: bool | None = None) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.done = 0  #: bytes in the file so far: what an interruption keeps
        self.total = 0
        self.start_done = 0
        self.started = time.monotonic()
        self._last_line = -float("inf")  # the first line always shows
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def __call__(self, done: int, total: int) -> None:
        if total != self.total or done < self.done:  # the device answered, or a restart
            self.start_done, self.started = done, time.monotonic()
        self.done, self.total = done, total
        if total <= 0:
            return  # nothing to show before the device said how big the file is
        if self.tty:
            self._draw()
        elif time.monotonic() - self._last_line >= LINE_INTERVAL:
            self._write_line()

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-6)
        rate = (self.done - self.start_done) / elapsed
        percent = 100.0 * self.done / self.total if self.total else 100.0
        eta = (self.total - self.done) / rate if rate > 0 else None
        eta_text = "--:--" if eta is None else f"{int(eta) // 60:d}:{int(eta) % 60:02d}"
        return (
            f"{percent:5.1f}%  {_size(self.done)} / {_size(self.total)}  "
            f"{_size(rate)}/s  ETA {eta_text}"
        )

    def _write_line(self) -> None:
        self._last_line = now = time.monotonic()
        self.out.write(self.line(now) + "\n")
        self.out.flush()

    def _draw(self) -> None:
        if self._bar is None:
            # rich loads here, not at import: every xp2p command imports this module.
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TaskProgressColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._bar = Progress(
                BarColumn(),
                TaskProgressColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(file=self.out, force_terminal=True),
            )
            self._bar.start()
            self._task = self._bar.add_task("download", total=self.total)
        assert self._task is not None
        self._bar.update(self._task, completed=self.done, total=self.total)

    def notice(self, text: str) -> None:
        """A line about the download (resuming, starting over): above a live bar, so that
        the bar is not torn, else a plain line."""
        if self._bar is not None:
            self._bar.console.print(text, style="yellow", markup=False, highlight=False)
        else:
            console(stderr=True).print(text, style="yellow")

    def finish(self) -> None:
        """The last state, shown once the file is saved."""
        if self.tty:
            if self._bar is not None:
                self._draw()
        else:
            self._write_line()
        self.close()

    def close(self) -> None:
        """Leave the terminal as it was (cursor back, bar kept)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


# ---- the command --------------------------------------------------------------------------------


async def _cmd_download(args: argparse.Namespace, stop: asyncio.Event) -> None:
    from xp2p.viewer import P2PModule, StreamInfo

    product, device = split_device(args.device)
    params = app_params(args)
    module = P2PModule(link_config(args))
    progress = ProgressDisplay(sys.stderr)
    try:
        await module.init(params)
        info = StreamInfo(product_id=product, device_name=device)
        await module.start_p2p_service("download", info)
        download = module.download_to_file(
            "download",
            args.file,
            args.output,
            channel=args.channel,
            on_progress=progress,
            on_notice=progress.notice,
        )
        saved = await unless_stopped(download, stop)
        progress.finish()
    except Interrupted:  # Ctrl-C: the SDK kept what arrived
        progress.close()
        status(
            f"xp2p download: interrupted; run the same command again to resume "
            f"({progress.done} bytes kept)",
            ok=False,
            stderr=True,
        )
        raise SystemExit(1) from None
    except (XP2PError, OSError) as exc:
        progress.close()
        status(f"xp2p download: {exc}", ok=False, stderr=True)
        raise SystemExit(1) from None
    finally:
        await module.destroy()
    check = "sha256 verified" if saved.verified else "not verified"
    status(f"saved {saved.path} ({saved.size} bytes, {check})", ok=True)
    if args.mp4:
        await _save_mp4(saved.path)


async def _save_mp4(path: Path) -> None:
    """``--mp4``: the verified recording beside itself as MP4 (the FLV stays: it is what
    resuming and the sha256 check work on)."""
    from xp2p.media.remux import remux_flv_to_mp4
    from xp2p.media.source import MediaError

    if path.suffix.lower() == ".mp4":
        status(f"{path} is an MP4 already", ok=True)
        return
    mp4 = path.with_suffix(".mp4")
    try:
        await asyncio.to_thread(remux_flv_to_mp4, path, mp4)
    except MediaError as exc:
        status(f"xp2p download: {exc}", ok=False, stderr=True)
        raise SystemExit(1) from None
    status(f"saved {mp4} ({mp4.stat().st_size} bytes, remuxed from {path.name})", ok=True)


def register(commands: Subparsers) -> None:
    parser = commands.add_parser(
        "download",
        help="download a recorded file from a device (resumable, sha256-verified)",
        description="Download FILE from the recordings of PRODUCT/DEVICE over a P2P link. "
        "Interrupted downloads resume when you run the same command again.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("device", metavar="PRODUCT/DEVICE")
    parser.add_argument("file", metavar="FILE", help="file name, as get_file_list lists it")
    parser.add_argument(
        "-o", "--output", metavar="PATH", help="where to save (a file or a folder; default ./FILE)"
    )
    parser.add_argument("--channel", type=int, default=0, help="camera channel (0)")
    parser.add_argument(
        "--mp4",
        action="store_true",
        help="also save the recording as MP4 (streams copied, not re-encoded), beside it",
    )
    add_app_args(parser)
    parser.set_defaults(run=_cmd_download)
