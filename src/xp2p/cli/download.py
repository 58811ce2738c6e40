"""``xp2p download``: download a recorded file from a device, resumably, verified by sha256."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from xp2p.cli.common import Subparsers, add_app_args, app_params, link_config, split_device
from xp2p.errors import XP2PError

#: Bytes gathered from the link's small chunks before they are hashed and written.
WRITE_BLOCK = 1024 * 1024
#: Progress updates at most this often on a terminal, and this often as plain lines.
TTY_INTERVAL, LINE_INTERVAL = 0.2, 5.0

EPILOG = """\
examples:
  xp2p download DEMO/cam1 20240101-120000.flv
  xp2p download DEMO/cam1 clip.mp4 -o ~/clips/ --channel 1

How it saves: bytes go to PATH.part (with PATH.part.json noting which file they belong to)
and PATH appears only once every byte is there and the sha256 of the whole file matches the
device's x-content-sha256; on a mismatch the partial is deleted and the command fails.
Resuming: run the same command again. A PATH.part continues from its size unless the device's
file changed since (other size or digest: it starts over). An existing PATH without .part
(a partial from elsewhere) is continued from its size too; if it is longer than the device's
file it starts over, and if the finished file does not match, it is deleted.
Progress goes to stderr (a bar on a terminal, a line every few seconds otherwise); the saved
path goes to stdout. Exit status: 0 saved and verified, 1 anything else (2 bad usage).
The app secret comes from $XP2P_APP_SECRET or --secret-file, never the command line."""


class DownloadFailed(Exception):
    """Ends the command with exit status 1 and this message."""


# ---- progress ---------------------------------------------------------------------------------


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


class Progress:
    """Percent, bytes, rate and ETA; a redrawn bar on a terminal, plain lines otherwise."""

    def __init__(self, out: TextIO, total: int, done: int, *, tty: bool | None = None) -> None:
        self.out = out
        self.total = total
        self.tty = out.isatty() if tty is None else tty
        self.start_done = done
        self.started = time.monotonic()
        self.last = -float("inf")  # the first update always shows

    def line(self, done: int, now: float) -> str:
        elapsed = max(now - self.started, 1e-6)
        rate = (done - self.start_done) / elapsed
        percent = 100.0 * done / self.total if self.total else 100.0
        eta = (self.total - done) / rate if rate > 0 else None
        eta_text = "--:--" if eta is None else f"{int(eta) // 60:d}:{int(eta) % 60:02d}"
        text = (
            f"{percent:5.1f}%  {_size(done)} / {_size(self.total)}  {_size(rate)}/s  ETA {eta_text}"
        )
        if self.tty:
            filled = int(30 * percent / 100)
            text = f"[{'#' * filled}{'.' * (30 - filled)}] {text}"
        return text

    def update(self, done: int, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < (TTY_INTERVAL if self.tty else LINE_INTERVAL):
            return
        self.last = now
        text = self.line(done, now)
        if self.tty:
            self.out.write(f"\r{text}\033[K" + ("\n" if final else ""))
        else:
            self.out.write(text + "\n")
        self.out.flush()


# ---- the partial file -------------------------------------------------------------------------


@dataclass
class Plan:
    """Where bytes go and where the transfer starts."""

    target: Path
    part: Path
    meta: Path
    offset: int
    #: the existing partial to continue: ``part`` itself, or ``target`` (moved to ``part``)
    resume_from: Path | None
    #: what PATH.part.json said the partial belongs to (None: no note, e.g. a foreign partial)
    expected: dict[str, Any] | None


def output_path(file_name: str, output: str | None) -> Path:
    name = Path(file_name).name or "download"
    if output is None:
        return Path(name)
    path = Path(output).expanduser()
    return path / name if path.is_dir() else path


def plan(target: Path, source: dict[str, Any]) -> Plan:
    part = target.with_name(target.name + ".part")
    meta = target.with_name(target.name + ".part.json")
    expected = None
    with contextlib.suppress(OSError, ValueError):
        note = json.loads(meta.read_text())
        if isinstance(note, dict) and note.get("source") == source:
            expected = note
    for candidate in (part, target):
        if candidate.is_file():
            if candidate == target:
                expected = None  # a note belongs to PATH.part, not to PATH
            return Plan(target, part, meta, candidate.stat().st_size, candidate, expected)
    return Plan(target, part, meta, 0, None, None)


def hash_prefix(path: Path, size: int) -> Any:
    """sha256 state over the first ``size`` bytes of ``path`` (the part being continued)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while size > 0 and (block := f.read(min(WRITE_BLOCK, size))):
            digest.update(block)
            size -= len(block)
    return digest


# ---- one transfer -------------------------------------------------------------------------------


class Restart(Exception):
    """The partial cannot be continued: start over from byte 0."""


class FileSink:
    """The callbacks of one ``start_local_download``, writing into PATH.part."""

    def __init__(
        self, plan: Plan, source: dict[str, Any], err: TextIO, cancel: Callable[[], Awaitable[None]]
    ) -> None:
        self.plan = plan
        self.cancel = cancel
        self.source = source
        self.err = err
        self.digest: Any = None
        self.file: Any = None
        self.buffer = bytearray()
        self.done = plan.offset
        self.expected_sha = ""
        self.size = 0
        self.progress: Progress | None = None
        self.restart = False
        self.write_error: OSError | None = None
        self._cancelling: asyncio.Future[None] | None = None
        self.outcome: Any = None
        self.finished = asyncio.Event()

    async def on_headers(self, info: dict[str, Any]) -> None:
        status, headers = info["status"], info["headers"]
        if status != 200:
            return  # on_failure tells why
        self.size = int(headers.get("x-file-size", "0") or 0)
        self.expected_sha = headers.get("x-content-sha256", "")
        expected = self.plan.expected
        if expected is not None and (expected.get("sha256"), expected.get("size")) != (
            self.expected_sha,
            self.size,
        ):
            self.restart = True  # the device's file changed since the partial began
            await self.cancel()
            return
        try:
            await self._open()
        except OSError as exc:
            self.write_error = exc
            await self.cancel()
            return
        self.progress = Progress(self.err, self.size, self.done)

    async def _open(self) -> None:
        plan = self.plan
        if plan.resume_from is not None and plan.offset > 0:
            self.digest = await asyncio.to_thread(hash_prefix, plan.resume_from, plan.offset)
            if plan.resume_from != plan.part:
                os.replace(plan.resume_from, plan.part)
        else:
            self.digest = hashlib.sha256()
        note = {"source": self.source, "sha256": self.expected_sha, "size": self.size}
        plan.meta.write_text(json.dumps(note) + "\n")
        mode = "ab" if plan.offset > 0 else "wb"
        self.file = plan.part.open(mode)
        if plan.offset > 0:
            self.file.truncate(plan.offset)  # never keep bytes past what was hashed

    def on_chunk(self, data: bytes) -> None:
        if self.write_error is not None:
            return
        self.buffer += data
        self.done += len(data)
        if len(self.buffer) >= WRITE_BLOCK:
            try:
                self._flush()
            except OSError as exc:  # disk full...: stop the transfer, say why afterwards
                self.write_error = exc
                self._cancelling = asyncio.ensure_future(self.cancel())
                return
        if self.progress is not None:
            self.progress.update(self.done)

    def _flush(self) -> None:
        if self.buffer and self.file is not None:
            self.digest.update(self.buffer)
            self.file.write(self.buffer)
            self.buffer.clear()

    def on_result(self, result: Any) -> None:
        self.outcome = result

    def on_complete(self) -> None:
        self.finished.set()

    def close(self) -> None:
        """Write what is buffered (a partial stays resumable) and close the file."""
        if self.file is not None:
            try:
                if self.write_error is None:
                    self._flush()
                    self.file.flush()
                    os.fsync(self.file.fileno())
            finally:
                self.file.close()
                self.file = None

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_headers_received": self.on_headers,
            "on_chunk_received": self.on_chunk,
            "on_success": self.on_result,
            "on_failure": self.on_result,
            "on_error": self.on_result,
            "on_complete": self.on_complete,
        }


async def transfer(module: Any, url: str, sink: FileSink, stop: asyncio.Event) -> None:
    """One request; raises Restart or DownloadFailed, returns once every byte is written."""
    await module.start_local_download("download", url, **sink.callbacks())
    stopping = asyncio.ensure_future(stop.wait())
    finished = asyncio.ensure_future(sink.finished.wait())
    try:
        await asyncio.wait({stopping, finished}, return_when=asyncio.FIRST_COMPLETED)
        if not finished.done():  # Ctrl-C
            await module.stop_local_download("download")
    finally:
        stopping.cancel()
        finished.cancel()
        await asyncio.to_thread(sink.close)
    result = sink.outcome
    if sink.write_error is not None:
        raise DownloadFailed(f"cannot write {sink.plan.part}: {sink.write_error}")
    if sink.restart:
        raise Restart("the device's file changed since the partial download began")
    if stop.is_set() and result.errmsg == "stopped":
        raise DownloadFailed(
            f"interrupted; run the same command again to resume ({sink.done} bytes kept)"
        )
    if result.status != 200:
        if result.status == 400 and sink.plan.offset > 0:
            raise Restart(f"the device refused offset {sink.plan.offset}: {result.errmsg}")
        reason = result.errmsg or "no answer"
        where = f"the device refused ({result.status})" if result.status else "no download"
        raise DownloadFailed(f"{where}: {reason}")
    if result.errmsg:
        raise DownloadFailed(
            f"transfer broken after {sink.done} bytes: {result.errmsg} (run again to resume)"
        )


async def download(args: argparse.Namespace, module: Any, stop: asyncio.Event) -> Path:
    product, device = split_device(args.device)
    source = {"device": f"{product}/{device}", "channel": args.channel, "file": args.file}
    target = output_path(args.file, args.output)
    query = f"channel={args.channel}&file_name={quote(args.file, safe='')}"
    current = plan(target, source)
    for attempt in range(2):
        if current.offset:
            print(f"resuming {current.resume_from} at byte {current.offset}", file=sys.stderr)
        sink = FileSink(current, source, sys.stderr, lambda: module.stop_local_download("download"))
        try:
            await transfer(module, f"{query}&offset={current.offset}", sink, stop)
            break
        except Restart as exc:
            if attempt:
                raise DownloadFailed(str(exc)) from None
            print(f"{exc}; starting over", file=sys.stderr)
            current = Plan(target, current.part, current.meta, 0, None, None)
    if sink.progress is not None:
        sink.progress.update(sink.done, final=True)
    got = sink.digest.hexdigest()
    if not sink.expected_sha:
        print("warning: the device sent no x-content-sha256; not verified", file=sys.stderr)
    elif got != sink.expected_sha:
        current.part.unlink(missing_ok=True)
        current.meta.unlink(missing_ok=True)
        raise DownloadFailed(
            f"sha256 mismatch: got {got}, the device says {sink.expected_sha}; "
            f"deleted {current.part} (run again to download from the start)"
        )
    os.replace(current.part, target)
    current.meta.unlink(missing_ok=True)
    return target


async def _cmd_download(args: argparse.Namespace, stop: asyncio.Event) -> None:
    from xp2p.viewer import P2PModule, StreamInfo

    product, device = split_device(args.device)
    params = app_params(args)
    module = P2PModule(link_config(args))
    try:
        await module.init(params)
        info = StreamInfo(product_id=product, device_name=device)
        await module.start_p2p_service("download", info)
        saved = await download(args, module, stop)
    except (XP2PError, DownloadFailed, OSError) as exc:
        print(f"xp2p download: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        await module.destroy()
    print(f"saved {saved} ({saved.stat().st_size} bytes, sha256 verified)", flush=True)


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
    add_app_args(parser)
    parser.set_defaults(run=_cmd_download)
