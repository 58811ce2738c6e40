"""One channel's recordings folder on disk: ``<recordings_dir>/ch<N>/``.

The folder is flat: the recorder's segments (``rec_...flv``), files a person dropped there
(MP4 or FLV videos, JPEG/PNG pictures) and the index (a dot file, never listed). The store
keeps the ``RecordIndex`` in memory, writes it atomically (temp file + rename) whenever a
segment closes, repairs it on start-up from the files themselves, applies retention, and
lists the files a viewer may download. Every disk access runs on a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xp2p.device.record_index import (
    INDEX_NAME,
    IndexFormatError,
    RecordIndex,
    Segment,
    SegmentScanner,
    parse_segment_name,
)

logger = logging.getLogger("xp2p.device.recordings")

FILE_TYPE_VIDEO = 0
FILE_TYPE_PICTURE = 1
VIDEO_SUFFIXES = frozenset({".flv", ".mp4", ".mov", ".mkv", ".ts", ".avi"})
PICTURE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
_SCAN_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class StoredFile:
    """One entry of ``get_file_list``."""

    file_name: str
    file_size: int
    file_type: int
    start_ms: int
    end_ms: int


def file_type_of(name: str) -> int | None:
    suffix = os.path.splitext(name)[1].lower()
    if suffix in VIDEO_SUFFIXES:
        return FILE_TYPE_VIDEO
    if suffix in PICTURE_SUFFIXES:
        return FILE_TYPE_PICTURE
    return None


# ---- blocking helpers (worker thread) ---------------------------------------------------


def repair_segment(path: Path, start_ms: int) -> Segment | None:
    """Index a segment from its bytes, cutting off whatever follows its last complete tag;
    None (and the file is to be deleted) when not even one keyframe survived."""
    scanner = SegmentScanner()
    with open(path, "rb") as handle:
        while chunk := handle.read(_SCAN_CHUNK):
            scanner.feed(chunk)
    result = scanner.result()
    if not result.keyframes:
        return None
    size = path.stat().st_size
    if result.good_size < size:
        logger.warning(
            "recording %s: %s; keeping its first %d of %d bytes",
            path.name,
            result.error,
            result.good_size,
            size,
        )
        with open(path, "r+b") as handle:
            handle.truncate(result.good_size)
    return Segment(
        path.name,
        start_ms,
        start_ms + result.duration_ms,
        result.good_size,
        result.keyframes,
    )


def load_index(folder: Path) -> RecordIndex:
    """The index of ``folder`` as the files say: trusted entries kept, segments that are not
    indexed, were being written or changed size rescanned, missing ones dropped."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        index = RecordIndex.from_json((folder / INDEX_NAME).read_bytes())
    except FileNotFoundError:
        index = RecordIndex()
    except IndexFormatError as exc:
        logger.warning("recordings %s: index unreadable (%s); rebuilding it", folder, exc)
        index = RecordIndex()
    on_disk: dict[str, int] = {}
    for entry in os.scandir(folder):
        if entry.name.startswith(INDEX_NAME) and entry.name.endswith(".tmp"):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)  # an index write a crash interrupted
            continue
        start_ms = parse_segment_name(entry.name)
        if start_ms is not None and entry.is_file(follow_symlinks=False):
            on_disk[entry.name] = start_ms
    for segment in list(index.segments):
        if segment.file_name not in on_disk:
            index.remove(segment.file_name)
    for name, start_ms in on_disk.items():
        known = index.get(name)
        path = folder / name
        if known is not None and not known.recording and known.size == path.stat().st_size:
            continue
        repaired = repair_segment(path, start_ms)
        if repaired is None:
            logger.warning("recording %s holds no complete keyframe; deleting it", name)
            with contextlib.suppress(OSError):
                path.unlink()
            index.remove(name)
        else:
            index.put(repaired)
    return index


def write_atomically(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never half of one, whatever crashes."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def probe_duration_ms(path: Path) -> int:
    """A video's duration via FFmpeg (0 when it cannot tell)."""
    import av

    try:
        with av.open(str(path)) as container:
            if container.duration:
                return int(container.duration // 1000)  # AV_TIME_BASE is microseconds
            durations = [
                float(s.duration * s.time_base)
                for s in container.streams
                if s.duration and s.time_base
            ]
            return int(max(durations, default=0.0) * 1000)
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        logger.info("cannot probe %s: %s", path.name, exc)
        return 0


# ---- the store --------------------------------------------------------------------------


class RecordStore:
    def __init__(
        self,
        folder: Path,
        index: RecordIndex,
        *,
        retention_bytes: int,
        retention_days: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.folder = folder
        self.index = index
        self.retention_bytes = retention_bytes
        self.retention_ms = int(retention_days * 86_400_000)
        self._clock = clock
        self._save_lock = asyncio.Lock()
        #: durations of dropped-in videos by (name, size, mtime): probing is not free
        self._probed: dict[tuple[str, int, int], int] = {}
        self.deleted: list[str] = []

    @classmethod
    async def open(
        cls,
        folder: Path,
        *,
        retention_bytes: int,
        retention_days: float,
        clock: Callable[[], float] = time.time,
    ) -> RecordStore:
        index = await asyncio.to_thread(load_index, folder)
        store = cls(
            folder,
            index,
            retention_bytes=retention_bytes,
            retention_days=retention_days,
            clock=clock,
        )
        await store.apply_retention()
        await store.save()
        logger.info("recordings %s: %d segments, %d bytes", folder, len(index), index.total_bytes)
        return store

    # ---- what the recorder reports ------------------------------------------------------

    def segment_updated(self, segment: Segment) -> None:
        self.index.put(segment)

    async def segment_closed(self, segment: Segment) -> None:
        self.index.put(segment)
        await self.apply_retention()
        await self.save()

    def segment_lost(self, file_name: str) -> None:
        self.index.remove(file_name)

    # ---- upkeep -------------------------------------------------------------------------

    async def save(self) -> None:
        snapshot = RecordIndex(self.index.segments)  # frozen entries: safe to share
        async with self._save_lock:
            await asyncio.to_thread(write_atomically, self.folder / INDEX_NAME, snapshot.to_json())

    async def apply_retention(self) -> list[str]:
        now_ms = int(self._clock() * 1000)
        doomed = self.index.expired(now_ms, self.retention_bytes, self.retention_ms)
        for segment in doomed:
            self.index.remove(segment.file_name)
        names = [s.file_name for s in doomed]
        if names:
            await asyncio.to_thread(self._delete, names)
            logger.info("recordings %s: retention deleted %s", self.folder, ", ".join(names))
            self.deleted += names
        return names

    def _delete(self, names: list[str]) -> None:
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                (self.folder / name).unlink()

    # ---- get_file_list ------------------------------------------------------------------

    async def list_files(
        self, start_ms: int, end_ms: int, file_type: int | None = None
    ) -> list[StoredFile]:
        """Files with content in ``[start_ms, end_ms)``, oldest first. Segments still being
        written are left out: they are not finished files yet."""
        segments = [
            StoredFile(s.file_name, s.size, FILE_TYPE_VIDEO, s.start_ms, s.end_ms)
            for s in self.index.overlapping(start_ms, end_ms)
            if not s.recording
        ]
        others = await asyncio.to_thread(self._other_files)
        files = segments + [f for f in others if f.start_ms < end_ms and f.end_ms >= start_ms]
        if file_type is not None:
            files = [f for f in files if f.file_type == file_type]
        return sorted(files, key=lambda f: (f.start_ms, f.file_name))

    def _other_files(self) -> list[StoredFile]:
        """Files people put in the folder: dated by their mtime (the end of a video)."""
        files = []
        for entry in os.scandir(self.folder):
            name = entry.name
            kind = file_type_of(name)
            if (
                kind is None
                or name.startswith(".")
                or parse_segment_name(name) is not None
                or not entry.is_file(follow_symlinks=False)
            ):
                continue
            stat = entry.stat(follow_symlinks=False)
            end_ms = stat.st_mtime_ns // 1_000_000
            duration = 0
            if kind == FILE_TYPE_VIDEO:
                key = (name, stat.st_size, stat.st_mtime_ns)
                if key not in self._probed:
                    self._probed[key] = probe_duration_ms(Path(entry.path))
                duration = self._probed[key]
            files.append(StoredFile(name, stat.st_size, kind, end_ms - duration, end_ms))
        return files
