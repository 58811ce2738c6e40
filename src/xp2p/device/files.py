"""``GET /ipc.flv?action=download&channel=N&file_name=F&offset=B``: a file of a channel's
recordings folder (``<recordings_dir>/ch<N>/``), from byte B to the end (docs/protocol.md §9).

Which names are served, decided in two steps so that the answer is predictable:

* **400 "bad file name: ..."**: the name itself is not a plain file name: missing or empty,
  ``.`` or ``..``, containing ``/``, ``\\``, NUL or any other control character, or longer
  than 255 bytes. Decided from the text alone, before the filesystem is touched (so
  ``../x``, ``/etc/passwd``, ``a/b`` and their percent-encoded forms never reach it).
* **404 "no such file: ..."**: a plain name, but the folder holds no regular file by that
  name: missing, a directory, a FIFO, socket or device node, unreadable, or a symlink that
  does not point at a regular file directly inside the same folder. A symlink leaving the
  folder is answered exactly like a missing file, so a viewer learns nothing about what lies
  outside. The final ``open`` is ``O_NOFOLLOW`` relative to the folder's descriptor, so a link
  swapped in between the check and the open is refused, not followed. Dot-files (the
  recorder's ``.xp2p-index.json``, its temporary files, anything hidden) are the device's own
  and answered the same 404, as is a symlink to one: they are never listed or served.

``offset`` is a non-negative decimal integer (ASCII digits only), at most the file's size
(400 otherwise); ``offset == size`` is a 200 with an empty body. The response carries
``x-content-sha256`` of the *whole* file so that a resumed download can be verified; digests
are computed in a worker thread and cached by (device, inode, size, mtime).

The file is snapshotted at open: a file still growing (the recorder's current segment) is
served up to the size it had then, with the digest of exactly those bytes. A file that
shrinks while it is served gets its stream reset, never a short body that looks complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import logging
import os
import re
import stat
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from xp2p.device.request import BadRequest, RequestContext
from xp2p.link import StreamClosed

logger = logging.getLogger("xp2p.device")

#: Bytes read from disk per worker-thread call, and written to the link per write.
READ_CHUNK = 256 * 1024
#: Bytes hashed per read when computing a file's digest.
HASH_CHUNK = 1024 * 1024
#: Digests kept per device (a recordings folder rarely has more files worth resuming).
DIGEST_CACHE_SIZE = 64
NAME_MAX = 255
_OFFSET = re.compile(r"[0-9]{1,19}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

FileKey = tuple[int, int, int, int]  #: (st_dev, st_ino, st_size, st_mtime_ns)


@dataclass(frozen=True)
class OpenedFile:
    """A regular file opened for serving, with the stat taken at open (the snapshot)."""

    fd: int
    size: int
    key: FileKey


class FileTruncated(OSError):
    """The file got shorter than its snapshot while it was read."""


def check_file_name(name: str | None) -> str:
    """The name if it is a plain file name; raises BadRequest(400) otherwise."""
    if not name:
        raise BadRequest(400, "bad file name: file_name is required")
    if name in (".", ".."):
        raise BadRequest(400, "bad file name: '.' and '..' are not files")
    if "/" in name or "\\" in name:
        raise BadRequest(400, "bad file name: it must not contain '/' or '\\'")
    if _CONTROL.search(name):
        raise BadRequest(400, "bad file name: it must not contain NUL or control characters")
    if len(name.encode("utf-8", "surrogatepass")) > NAME_MAX:
        raise BadRequest(400, f"bad file name: longer than {NAME_MAX} bytes")
    return name


def check_offset(raw: str | None) -> int:
    """``offset`` as an int (absent = 0); raises BadRequest(400) unless plain ASCII digits."""
    if raw is None:
        return 0
    if not _OFFSET.fullmatch(raw):
        raise BadRequest(400, f"offset must be a non-negative integer, got {raw[:40]!r}")
    return int(raw)


# ---- opening, without following anything out of the folder ---------------------------------


def is_private(name: str) -> bool:
    """A dot-file or dot-directory: the device's own (the recordings index), never served."""
    return name.startswith(".")


def open_in_folder(folder: Path, name: str) -> OpenedFile | None:
    """Open ``folder/name`` if it is a regular file there (directly or through a symlink to a
    sibling); None when there is no such file. Blocking: run it in a worker thread."""
    if is_private(name):
        return None
    try:
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None
    try:
        opened = _open_plain(dir_fd, name)
        if opened is None and _is_symlink(dir_fd, name):
            target = os.path.realpath(os.path.join(folder, name))
            # Only a sibling in the same folder; its final open refuses further links.
            sibling = os.path.basename(target)
            if os.path.dirname(target) == os.path.realpath(folder) and not is_private(sibling):
                opened = _open_plain(dir_fd, sibling)
        return opened
    finally:
        os.close(dir_fd)


def _open_plain(dir_fd: int, name: str) -> OpenedFile | None:
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
            return None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None
    return OpenedFile(fd, st.st_size, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))


def _is_symlink(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def read_exactly(fd: int, size: int, offset: int) -> bytes:
    """``size`` bytes at ``offset`` (positional, so threads never share a file position)."""
    data = os.pread(fd, size, offset)
    if len(data) < size:
        raise FileTruncated(f"file ended at {offset + len(data)}, expected {offset + size}")
    return data


def hash_file(fd: int, size: int) -> str:
    """sha256 of the first ``size`` bytes of ``fd``; closes ``fd`` (its own duplicate)."""
    try:
        digest = hashlib.sha256()
        position = 0
        while position < size:
            block = read_exactly(fd, min(HASH_CHUNK, size - position), position)
            digest.update(block)
            position += len(block)
        return digest.hexdigest()
    finally:
        os.close(fd)


class DigestCache:
    """sha256 of served files by (device, inode, size, mtime); concurrent requests for the
    same file share one computation, and a viewer leaving does not cancel it for others."""

    def __init__(self, capacity: int = DIGEST_CACHE_SIZE) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[FileKey, asyncio.Future[str]] = OrderedDict()

    async def digest(self, opened: OpenedFile) -> str:
        future = self._entries.get(opened.key)
        if future is None:
            loop = asyncio.get_running_loop()
            # The worker gets its own descriptor: the request may close ``opened.fd`` (viewer
            # gone) while the hash is still being computed for others.
            future = loop.run_in_executor(None, hash_file, os.dup(opened.fd), opened.size)
            self._entries[opened.key] = future
            future.add_done_callback(functools.partial(self._settled, opened.key))
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(opened.key)
        return await asyncio.shield(future)

    def _settled(self, key: FileKey, future: asyncio.Future[str]) -> None:
        if future.cancelled() or future.exception() is not None:
            if self._entries.get(key) is future:
                del self._entries[key]


def _digests(ctx: RequestContext) -> DigestCache:
    if ctx.device.digests is None:
        ctx.device.digests = DigestCache()
    return ctx.device.digests


# ---- the handler -------------------------------------------------------------------------------


async def serve(ctx: RequestContext) -> None:
    ctx.require("download")
    channel = ctx.channel()
    recordings = ctx.device.config.recordings_dir
    if recordings is None:
        raise BadRequest(404, "this device keeps no recordings")
    name = check_file_name(ctx.params.get("file_name"))
    offset = check_offset(ctx.params.get("offset"))
    folder = Path(recordings) / f"ch{channel.number}"
    try:
        opened = await _open(folder, name)
    except OSError as exc:
        logger.warning("cannot open %r in %s: %s", name, folder, exc)
        raise BadRequest(500, "cannot open the file") from exc
    if opened is None:
        raise BadRequest(404, f"no such file: {name}")
    try:
        await _send(ctx, opened, name, offset)
    finally:
        os.close(opened.fd)


async def _open(folder: Path, name: str) -> OpenedFile | None:
    future = asyncio.get_running_loop().run_in_executor(None, open_in_folder, folder, name)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        future.add_done_callback(_close_unused)  # the link went away while opening
        raise


def _close_unused(future: asyncio.Future[OpenedFile | None]) -> None:
    if not future.cancelled() and future.exception() is None:
        opened = future.result()
        if opened is not None:
            os.close(opened.fd)


async def _send(ctx: RequestContext, opened: OpenedFile, name: str, offset: int) -> None:
    request = ctx.request
    if offset > opened.size:
        raise BadRequest(400, f"offset {offset} is beyond the end of the file ({opened.size})")
    try:
        digest = await _digests(ctx).digest(opened)
    except OSError as exc:
        logger.warning("cannot hash %r: %s", name, exc)
        raise BadRequest(500, "cannot read the file") from exc
    if request.closed:
        return
    remaining = opened.size - offset
    logger.info(
        "link %d: download %r from %d (%d of %d bytes)",
        request.link.id,
        name,
        offset,
        remaining,
        opened.size,
    )
    headers = [
        ("content-type", "application/octet-stream"),
        ("content-length", str(remaining)),
        ("x-file-size", str(opened.size)),
        ("x-offset", str(offset)),
        ("x-content-sha256", digest),
    ]
    try:
        await request.respond(200, headers)
        if remaining == 0:
            await request.write(b"", end=True)
            return
        await _stream(ctx, opened.fd, offset, opened.size)
    except StreamClosed:
        logger.info("link %d: download %r stopped by the viewer", request.link.id, name)
    except OSError as exc:
        # Headers promised ``remaining`` bytes: a short body must not end cleanly.
        logger.warning("link %d: download %r aborted: %s", request.link.id, name, exc)
        request.cancel()


async def _stream(ctx: RequestContext, fd: int, position: int, end: int) -> None:
    """Read ahead one chunk in a worker thread while the previous one goes out on the link;
    ``write`` waits on the link's back-pressure, and a viewer that leaves stops both."""
    request = ctx.request
    loop = asyncio.get_running_loop()

    def read_at(start: int) -> asyncio.Future[bytes]:
        return loop.run_in_executor(None, read_exactly, fd, min(READ_CHUNK, end - start), start)

    pending: asyncio.Future[bytes] | None = read_at(position)
    try:
        while pending is not None:
            data = await pending
            position += len(data)
            pending = read_at(position) if position < end and not request.closed else None
            await request.write(data, end=position >= end)
    finally:
        if pending is not None:
            # The caller closes ``fd`` next: let the read in flight finish first (pread on a
            # closed, reused descriptor could read someone else's file into the void).
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(pending)
