"""``download_to_file``: a recorded file from the device into a local file, resumable and
verified by sha256 (what ``xp2p download`` does, for any app).

How it saves: bytes go to ``PATH.part`` (with ``PATH.part.json`` noting which device file
they belong to) and ``PATH`` appears only once every byte is there and the sha256 of the
whole file matches the device's ``x-content-sha256``; on a mismatch the partial is deleted
and the download fails. Resuming is calling it again: a ``PATH.part`` continues from its size
unless the device's file changed since (another size or digest: it starts over). An existing
``PATH`` without ``.part`` (a partial from elsewhere) is continued from its size too; if it is
longer than the device's file it starts over, and if the finished file does not match, it is
deleted. Cancelling the coroutine stops the transfer and keeps what arrived, written out,
for the next call to continue. Every failure is an ``XP2PError`` -2701 saying what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from xp2p.errors import ErrorCode, XP2PError
from xp2p.viewer.download import LocalDownloadResult, start_local_download, stop_local_download
from xp2p.viewer.service import Service
from xp2p.viewer.types import NoticeCallback, ProgressCallback

#: Bytes gathered from the link's small chunks before they are hashed and written.
WRITE_BLOCK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SavedFile:
    """A finished ``download_to_file``: where it is, how big, its sha256, and whether that
    digest was checked against the device's (False: the device sent none)."""

    path: Path
    size: int
    sha256: str
    verified: bool
    #: the byte the last transfer started at (0: the whole file came in one go)
    resumed_from: int = 0


def _failed(message: str) -> XP2PError:
    return XP2PError(ErrorCode.DOWNLOAD_FAILED, message)


# ---- the partial file ---------------------------------------------------------------------


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

    def from_scratch(self) -> Plan:
        return Plan(self.target, self.part, self.meta, 0, None, None)


def output_path(file_name: str, path: str | os.PathLike[str] | None) -> Path:
    """Where ``file_name`` is saved: ``path`` itself, in ``path`` when it is a folder (or
    names one with a trailing separator, ``clips/``: made if missing), or in the current
    folder when None."""
    name = Path(file_name).name or "download"
    if path is None:
        return Path(name)
    chosen = Path(path).expanduser()
    as_folder = os.fspath(path).endswith(("/", os.sep))
    return chosen / name if as_folder or chosen.is_dir() else chosen


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


# ---- one transfer ---------------------------------------------------------------------------


class Restart(Exception):
    """The partial cannot be continued: start over from byte 0."""


class FileSink:
    """The callbacks of one ``start_local_download``, writing into PATH.part."""

    def __init__(
        self,
        service: Service,
        plan: Plan,
        source: dict[str, Any],
        on_progress: ProgressCallback | None,
    ) -> None:
        self.service = service
        self.plan = plan
        self.source = source
        self.on_progress = on_progress
        self.digest: Any = None
        self.file: Any = None
        self.buffer = bytearray()
        self.done = plan.offset
        self.expected_sha = ""
        self.size = 0
        self.restart = False
        self.write_error: OSError | None = None
        #: a stop started from a plain callback (a failed write): held until it ran
        self._cancelling: asyncio.Task[None] | None = None
        self.outcome: LocalDownloadResult | None = None
        self.finished = asyncio.Event()

    async def cancel(self) -> None:
        await stop_local_download(self.service)

    def _report(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.done, self.size)

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
        self._report()

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
        self._report()

    def _flush(self) -> None:
        if self.buffer and self.file is not None:
            self.digest.update(self.buffer)
            self.file.write(self.buffer)
            self.buffer.clear()

    def on_result(self, result: LocalDownloadResult) -> None:
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


async def transfer(service: Service, url_params: str, sink: FileSink) -> None:
    """One request; raises Restart or XP2PError, returns once every byte is written.
    Cancelled, it stops the transfer and writes out what came before it re-raises."""
    await start_local_download(service, url_params, sink.callbacks())
    try:
        await sink.finished.wait()
    finally:
        if not sink.finished.is_set():  # cancelled: end the transfer, keep what arrived
            await stop_local_download(service)
        await asyncio.to_thread(sink.close)
    result = sink.outcome
    assert result is not None  # on_complete comes after exactly one outcome
    if sink.write_error is not None:
        raise _failed(f"cannot write {sink.plan.part}: {sink.write_error}")
    if sink.restart:
        raise Restart("the device's file changed since the partial download began")
    if result.status != 200:
        if result.status == 400 and sink.plan.offset > 0:
            raise Restart(f"the device refused offset {sink.plan.offset}: {result.errmsg}")
        reason = result.errmsg or "no answer"
        where = f"the device refused ({result.status})" if result.status else "no download"
        raise _failed(f"{where}: {reason}")
    if result.errmsg:
        raise _failed(
            f"transfer broken after {sink.done} bytes: {result.errmsg} (run again to resume)"
        )


async def download_to_file(
    service: Service,
    file_name: str,
    path: str | os.PathLike[str] | None = None,
    *,
    channel: int = 0,
    on_progress: ProgressCallback | None = None,
    on_notice: NoticeCallback | None = None,
) -> SavedFile:
    """Download ``file_name`` of ``channel`` into ``path`` (see the module's docstring)."""
    if not isinstance(file_name, str) or not file_name:
        raise XP2PError(ErrorCode.BAD_PARAM, "file_name must be a non-empty string")
    if isinstance(channel, bool) or not isinstance(channel, int) or channel < 0:
        raise XP2PError(ErrorCode.BAD_PARAM, f"channel must be an int >= 0, not {channel!r}")

    def notice(text: str) -> None:
        if on_notice is not None:
            on_notice(text)

    info = service.info
    # What PATH.part.json records, to tell a partial of this file from any other.
    source: dict[str, Any] = {
        "device": f"{info.product_id}/{info.device_name}",
        "channel": channel,
        "file": file_name,
    }
    target = output_path(file_name, path)
    if path is not None and os.fspath(path).endswith(("/", os.sep)):
        try:  # "clips/" names a folder to save into: made if missing (a file path is not)
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _failed(
                f"cannot make the folder {target.parent}: {exc.strerror or exc}"
            ) from None
    query = f"channel={channel}&file_name={quote(file_name, safe='')}"
    current = plan(target, source)
    for attempt in range(2):
        if current.offset:
            notice(f"resuming {current.resume_from} at byte {current.offset}")
        if on_progress is not None:
            on_progress(current.offset, 0)  # what is kept so far; the size comes with the answer
        sink = FileSink(service, current, source, on_progress)
        try:
            await transfer(service, f"{query}&offset={current.offset}", sink)
            break
        except Restart as exc:
            if attempt:
                raise _failed(str(exc)) from None
            notice(f"{exc}; starting over")
            current = current.from_scratch()
    got = sink.digest.hexdigest()
    if not sink.expected_sha:
        notice("warning: the device sent no x-content-sha256; not verified")
    elif got != sink.expected_sha:
        current.part.unlink(missing_ok=True)
        current.meta.unlink(missing_ok=True)
        raise _failed(
            f"sha256 mismatch: got {got}, the device says {sink.expected_sha}; "
            f"deleted {current.part} (run again to download from the start)"
        )
    try:
        os.replace(current.part, target)
        current.meta.unlink(missing_ok=True)
    except OSError as exc:
        raise _failed(f"cannot save {target}: {exc}") from exc
    return SavedFile(target, sink.done, got, bool(sink.expected_sha), current.offset)
