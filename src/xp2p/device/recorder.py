"""Recording one live channel into segment files.

``SegmentRecorder`` is the sans-IO core: tags and wall-clock times in, file actions out (open,
write, close with the finished segment's index entry). It cuts at the first keyframe after
``segment_ms`` and starts every segment with the FLV header, onMetaData, the sequence headers
and that keyframe, so each file plays alone. Tests drive it faster than real time with
synthetic clocks.

``ChannelRecorder`` is the asyncio shell: it subscribes to the channel like a viewer (so a slow
disk can only make the recording skip, never stall the camera), feeds the core and runs the
file actions on a worker thread, one batch at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from xp2p.device.channel import LiveChannel, Subscription
from xp2p.device.record_index import Keyframe, Segment, is_end_of_sequence, segment_name
from xp2p.flv import FlvHeader, FlvReader, FlvTag, starts_gop

logger = logging.getLogger("xp2p.device.recordings")

#: Where media time and the wall clock disagree by more than this, a new segment is anchored
#: to the wall clock again (the source restarted, or the clock was stepped).
MAX_DRIFT_MS = 5_000
#: Jumps in source timestamps that end a segment: a hole (the subscription skipped ahead
#: because the disk was slow, or the source stalled) or a restart. Segments stay gapless, so
#: playback and the index see the hole as what it is.
MAX_FORWARD_JUMP_MS = 2_000
MAX_BACKWARD_JUMP_MS = 1_000
#: Audio-only channels have no keyframes: index a seek point this often instead.
AUDIO_SEEK_POINT_MS = 1_000


@dataclass(frozen=True, slots=True)
class OpenSegment:
    file_name: str


@dataclass(frozen=True, slots=True)
class WriteSegment:
    file_name: str
    data: bytes


@dataclass(frozen=True, slots=True)
class CloseSegment:
    segment: Segment


RecorderAction = OpenSegment | WriteSegment | CloseSegment


@dataclass
class _Writing:
    """The segment being written."""

    file_name: str
    start_ms: int
    base_ts: int  #: source timestamp written as 0
    size: int = 0
    keyframes: list[Keyframe] = field(default_factory=list)
    last_ts: int = 0
    last_video_ts: int | None = None
    frame_ms: int = 0

    def duration_ms(self) -> int:
        # The same rule as SegmentScanner, so a rescanned segment gets the same span.
        video_end = 0 if self.last_video_ts is None else self.last_video_ts + self.frame_ms
        return max(video_end, self.last_ts)


class SegmentRecorder:
    """Cuts a live tag stream into self-contained segments (sans-IO)."""

    def __init__(self, segment_ms: int, header: FlvHeader | None = None) -> None:
        if segment_ms <= 0:
            raise ValueError("segment_ms must be positive")
        self.segment_ms = segment_ms
        self.header = header or FlvHeader()
        self._metadata: FlvTag | None = None
        self._video_header: FlvTag | None = None
        self._audio_header: FlvTag | None = None
        self._writing: _Writing | None = None
        #: (start_ms, base_ts) of the last segment: the next one continues its clock
        self._anchor: tuple[int, int] | None = None
        self._last_start_ms: int | None = None
        self._last_source_ts: int | None = None
        self._seen_video = False

    @property
    def current(self) -> Segment | None:
        """The segment being written, as far as written so far."""
        return None if self._writing is None else self._entry(self._writing, recording=True)

    def feed(self, tag: FlvTag, wall_ms: int) -> list[RecorderAction]:
        """One tag from the source; ``wall_ms`` is the unix time (ms) it was live."""
        if tag.is_script:
            if tag.is_metadata:
                self._metadata = tag
            return []
        if tag.is_sequence_header:
            return self._sequence_header(tag)
        if is_end_of_sequence(tag):
            return []  # the source's stream ended, not the recording's; nor is it a frame
        actions: list[RecorderAction] = []
        ts = tag.timestamp
        last = self._last_source_ts
        if last is not None and not (
            last - MAX_BACKWARD_JUMP_MS <= ts <= last + MAX_FORWARD_JUMP_MS
        ):
            logger.info("source timestamps jumped from %d to %d ms: new segment", last, ts)
            actions += self.finish()
        self._last_source_ts = ts
        self._seen_video = self._seen_video or tag.is_video
        if self._is_cut_point(tag):
            writing = self._writing
            if writing is None or ts - writing.base_ts >= self.segment_ms:
                actions += self.finish()
                actions += self._start(tag, wall_ms)
                return actions
        if self._writing is not None:
            actions.append(self._write(self._writing, tag))
        return actions

    def finish(self) -> list[RecorderAction]:
        """Close the segment being written (on stop, or before a cut)."""
        writing, self._writing = self._writing, None
        if writing is None:
            return []
        return [CloseSegment(self._entry(writing, recording=False))]

    def abandon(self) -> None:
        """Forget the segment being written (its file could not be written); the next
        keyframe starts a new one."""
        self._writing = None

    # ---- internals --------------------------------------------------------------------

    def _is_cut_point(self, tag: FlvTag) -> bool:
        if starts_gop(tag):
            return True
        return tag.is_audio and not self._seen_video and not self.header.has_video

    def _sequence_header(self, tag: FlvTag) -> list[RecorderAction]:
        previous = self._video_header if tag.is_video else self._audio_header
        if tag.is_video:
            self._video_header = tag
        else:
            self._audio_header = tag
        if previous is not None and previous.data != tag.data and self._writing is not None:
            # Frames from here on need the new header; a segment must carry the header its
            # frames were coded with, so the next one starts at the next keyframe.
            return self.finish()
        return []

    def _start(self, tag: FlvTag, wall_ms: int) -> list[RecorderAction]:
        start_ms = wall_ms
        if self._anchor is not None:
            anchor_start, anchor_ts = self._anchor
            predicted = anchor_start + (tag.timestamp - anchor_ts)
            # Following the media clock keeps back-to-back segments exactly contiguous.
            if abs(predicted - wall_ms) <= MAX_DRIFT_MS:
                start_ms = predicted
        if self._last_start_ms is not None and start_ms <= self._last_start_ms:
            start_ms = self._last_start_ms + 1  # names stay unique and ordered
        self._last_start_ms = start_ms
        self._anchor = (start_ms, tag.timestamp)
        writing = _Writing(segment_name(start_ms), start_ms, tag.timestamp)
        head = [self.header.encode()]
        for extra in (self._metadata, self._video_header, self._audio_header):
            if extra is not None:
                head.append(extra.with_timestamp(0).encode())
        head_bytes = b"".join(head)
        writing.size = len(head_bytes)
        self._writing = writing
        first = self._write(writing, tag)
        return [OpenSegment(writing.file_name), WriteSegment(writing.file_name, head_bytes), first]

    def _write(self, writing: _Writing, tag: FlvTag) -> WriteSegment:
        ts = max(0, tag.timestamp - writing.base_ts)
        if self._is_cut_point(tag) and (
            starts_gop(tag)
            or not writing.keyframes
            or ts - writing.keyframes[-1].timestamp >= AUDIO_SEEK_POINT_MS
        ):
            writing.keyframes.append(Keyframe(writing.size, ts))
        if tag.is_video:
            if writing.last_video_ts is not None and ts > writing.last_video_ts:
                writing.frame_ms = ts - writing.last_video_ts
            writing.last_video_ts = ts
        writing.last_ts = max(writing.last_ts, ts)
        data = tag.with_timestamp(ts).encode()
        writing.size += len(data)
        return WriteSegment(writing.file_name, data)

    @staticmethod
    def _entry(writing: _Writing, *, recording: bool) -> Segment:
        return Segment(
            writing.file_name,
            writing.start_ms,
            writing.start_ms + writing.duration_ms(),
            writing.size,
            tuple(writing.keyframes),
            recording,
        )


# ---- the asyncio shell ------------------------------------------------------------------


class SegmentSink(Protocol):
    """Where finished and growing segments are announced (``RecordStore``)."""

    folder: Path

    def segment_updated(self, segment: Segment) -> None: ...

    async def segment_closed(self, segment: Segment) -> None: ...

    def segment_lost(self, file_name: str) -> None: ...


class SegmentFiles:
    """The open segment files; used only from the writer thread."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._files: dict[str, IO[bytes]] = {}

    def apply(self, actions: list[RecorderAction]) -> None:
        for action in actions:
            if isinstance(action, OpenSegment):
                # "x": never overwrite a recording, whatever the clock did.
                self._files[action.file_name] = open(self.folder / action.file_name, "xb")
            elif isinstance(action, WriteSegment):
                self._files[action.file_name].write(action.data)
            else:
                self.close(action.segment.file_name)
        for handle in self._files.values():
            handle.flush()  # playback may read the growing segment

    def close(self, file_name: str) -> None:
        handle = self._files.pop(file_name, None)
        if handle is not None:
            with contextlib.suppress(OSError):
                handle.close()

    def close_all(self) -> None:
        for name in list(self._files):
            self.close(name)


def _coalesce(actions: list[RecorderAction]) -> list[RecorderAction]:
    """One write per file per batch instead of one per tag."""
    out: list[RecorderAction] = []
    for action in actions:
        previous = out[-1] if out else None
        if (
            isinstance(action, WriteSegment)
            and isinstance(previous, WriteSegment)
            and previous.file_name == action.file_name
        ):
            out[-1] = WriteSegment(action.file_name, previous.data + action.data)
        else:
            out.append(action)
    return out


class ChannelRecorder:
    """Records ``live`` into ``sink.folder`` until ``stop()``."""

    def __init__(
        self,
        live: LiveChannel,
        sink: SegmentSink,
        segment_ms: int,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.live = live
        self.sink = sink
        self.segment_ms = segment_ms
        self._clock = clock
        self._files = SegmentFiles(sink.folder)
        self._subscription: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.segments_written = 0
        self.write_errors = 0
        self._failing = False

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"recorder-{self.live.name}")

    async def stop(self) -> None:
        """Stop recording; the segment being written is finished and indexed."""
        self._stopping.set()
        if self._subscription is not None:
            self._subscription.close()  # next_batch() drains what is queued, then ends
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        try:
            while not await self.live.wait_ready(1.0):
                if self._stopping.is_set() or self.live.failed:
                    logger.warning("recorder %s: nothing to record", self.live.name)
                    return
            if self._stopping.is_set():
                return
            start, subscription = self.live.subscribe()
            self._subscription = subscription
            await self._record(start, subscription)
        except Exception:  # a recorder bug must not take the live channel down
            logger.exception("recorder %s failed", self.live.name)
        finally:
            if self._subscription is not None:
                self._subscription.close()
            await asyncio.to_thread(self._files.close_all)

    async def _record(self, start: bytes, subscription: Subscription) -> None:
        items = FlvReader().feed(start)
        header = next((i for i in items if isinstance(i, FlvHeader)), self.live.header)
        core = SegmentRecorder(self.segment_ms, header)
        logger.info(
            "recorder %s: recording into %s (%d s segments)",
            self.live.name,
            self.sink.folder,
            self.segment_ms // 1000,
        )
        gop = [i for i in items if isinstance(i, FlvTag)]
        now = self._now_ms()
        newest = max((t.timestamp for t in gop), default=0)
        # The cached GOP is already in the past: date each tag by its distance from the newest.
        actions = [a for t in gop for a in core.feed(t, now - (newest - t.timestamp))]
        await self._apply(core, actions)
        while batch := await subscription.next_batch():
            now = self._now_ms()
            await self._apply(core, [a for tag in batch for a in core.feed(tag, now)])
        await self._apply(core, core.finish())

    async def _apply(self, core: SegmentRecorder, actions: list[RecorderAction]) -> None:
        if actions:
            try:
                await asyncio.to_thread(self._files.apply, _coalesce(actions))
            except OSError as exc:
                # Disk full, folder gone...: drop the segments this batch touched from the
                # index (a restart rescans what reached the disk) and retry at the next
                # keyframe, rather than stop recording for good.
                self.write_errors += 1
                core.abandon()
                touched = {
                    a.segment.file_name if isinstance(a, CloseSegment) else a.file_name
                    for a in actions
                }
                # Once per outage, not once per keyframe.
                log = logger.debug if self._failing else logger.error
                log("recorder %s: cannot write %s: %s", self.live.name, sorted(touched), exc)
                self._failing = True
                for name in touched:
                    await asyncio.to_thread(self._files.close, name)
                    self.sink.segment_lost(name)
                return
            if self._failing:
                self._failing = False
                logger.warning("recorder %s: writing again", self.live.name)
        closed = [a.segment for a in actions if isinstance(a, CloseSegment)]
        # Publish the finished segments and the new one in the same tick: a playback that
        # follows the recording must never see the old one finished and no next one.
        for segment in closed:
            self.sink.segment_updated(segment)
        current = core.current
        if current is not None:
            self.sink.segment_updated(current)
        for segment in closed:
            self.segments_written += 1
            await self.sink.segment_closed(segment)
