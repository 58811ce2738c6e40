"""Playback of recorded segments as one paced FLV stream (sans-IO).

``PlaybackSession`` decides which bytes of which segment to read next (``want_read``), takes
them back (``on_read``), and hands out the encoded tags due at a given clock time (``poll``);
the asyncio shell (``xp2p.device.playback``) does the file reads on a worker thread and the
waiting. The session never reads a file or a clock itself, so pacing, pause, seek and
segment boundaries are tested with a virtual clock.

The output is one FLV stream: a single FLV header, then onMetaData and the sequence headers of
the first segment (later ones only if a segment's headers differ), then media from the keyframe
at or before the start. Timestamps are rebased so they start at 0 and never go back: across
contiguous segments the recording's own clock continues; across a gap in the recordings or a
seek, the next keyframe follows the last frame sent by one frame interval.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from xp2p.device.record_index import RecordIndex, Segment, is_end_of_sequence
from xp2p.flv import FlvError, FlvHeader, FlvReader, FlvTag

#: Tags go out this far ahead of the clock: the player's buffer absorbs the link's jitter.
LEAD_MS = 500
#: Bytes per file read, and how much parsed media may wait in the session.
READ_SIZE = 128 * 1024
MAX_QUEUED_BYTES = 512 * 1024
#: The frame interval assumed until two video frames have been seen.
DEFAULT_FRAME_MS = 40
MAX_FRAME_MS = 1_000


@dataclass(frozen=True, slots=True)
class FileRead:
    """Read ``length`` bytes of ``file_name`` from ``offset`` and give them to ``on_read``."""

    file_name: str
    offset: int
    length: int


class PlaybackSession:
    def __init__(
        self, index: RecordIndex, start_ms: int, end_ms: int, *, lead_ms: int = LEAD_MS
    ) -> None:
        segments = index.overlapping(start_ms, end_ms)
        if not segments:
            raise ValueError("nothing is recorded in that span")
        self.index = index
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.lead_ms = lead_ms
        # where reading is
        self._segment = segments[0]
        self._offset = 0
        self._need_head = True
        self._reader = FlvReader(expect_header=False)
        self._pending: FileRead | None = None
        self._end_reached = False
        # what is parsed and not yet sent: (tag with its output timestamp, its unix ms)
        self._queue: deque[tuple[FlvTag, int | None]] = deque()
        self._queued_bytes = 0
        self._prefix = b""  # the FLV header, once
        self._header_sent = False
        self._metadata_sent = False
        self._sequence_headers: dict[int, bytes] = {}
        # output timeline: out_ts = unix_ms - _out_offset
        self._out_offset: int | None = None
        self._rebase = True
        self._continuous = False
        self._last_out_ts = 0
        self._last_video_out: int | None = None
        self._frame_ms = DEFAULT_FRAME_MS
        # what was sent, and the pacing clock: tag due at anchor_clock + (ts - anchor_ts)
        self._sent_ts = 0
        self._sent_video_ts: int | None = None
        self._sent_unix: int | None = None
        self._anchor: tuple[float, int] | None = None
        self._paused_at: float | None = None
        self._seek_target: int | None = None
        self._position(self._segment, start_ms, continuous=False)

    # ---- state --------------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self._paused_at is not None

    @property
    def finished(self) -> bool:
        """Everything up to the end of the span has been handed out."""
        return self._end_reached and not self._queue and not self._prefix

    @property
    def segment(self) -> Segment:
        return self._segment

    # ---- reading ------------------------------------------------------------------------

    def _position(self, segment: Segment, unix_ms: int, *, continuous: bool) -> None:
        self._segment = segment
        self._offset = segment.keyframe_at_or_before(unix_ms).offset
        self._need_head = True
        self._pending = None
        self._continuous = continuous
        self._rebase = True

    def _advance(self) -> None:
        following = self.index.after(self._segment)
        if following is None or following.start_ms >= self.end_ms:
            self._end_reached = True
            self._pending = None
        else:
            self._position(following, following.start_ms, continuous=True)

    def want_read(self) -> FileRead | None:
        """The next read to do, or None: enough is queued, a read is out, or the end is
        reached (or the segment being recorded has no more bytes yet)."""
        while not (self._end_reached or self._pending or self._queued_bytes >= MAX_QUEUED_BYTES):
            current = self.index.get(self._segment.file_name)
            if current is None:  # deleted by retention under our feet
                self._advance()
                continue
            self._segment = current
            if self._need_head:
                self._pending = FileRead(current.file_name, 0, current.head_size)
            elif self._offset < current.size:
                length = min(READ_SIZE, current.size - self._offset)
                self._pending = FileRead(current.file_name, self._offset, length)
            elif current.recording:
                return None  # caught up with the recorder: ask again later
            else:
                self._advance()
                continue
        return self._pending

    def on_read(self, read: FileRead, data: bytes) -> None:
        """The bytes of ``read`` (fewer if the file is shorter; empty if it is gone)."""
        if read is not self._pending:
            return  # a seek made it stale
        self._pending = None
        if len(data) < read.length and not self._segment.recording:
            data = b""  # the file shrank or vanished: what it held is no longer trusted
        if not data:
            self._advance()
            return
        try:
            if self._need_head:
                self._need_head = False
                self._reader = FlvReader(expect_header=False)
                items = FlvReader().feed(data)
            else:
                self._offset += len(data)
                items = list(self._reader.feed(data))
        except FlvError:
            self._advance()  # a damaged segment ends early; the next one may be fine
            return
        for item in items:
            if isinstance(item, FlvHeader):
                if not self._header_sent:
                    self._prefix = item.encode()
                    self._header_sent = True
            elif not self._end_reached:
                self._accept(item)

    def _accept(self, tag: FlvTag) -> None:
        if tag.is_script:
            if tag.is_metadata and not self._metadata_sent:
                self._metadata_sent = True  # only at the very start
                self._enqueue(tag.with_timestamp(0), None)
            return
        if tag.is_sequence_header:
            if self._sequence_headers.get(tag.tag_type) != tag.data:
                self._sequence_headers[tag.tag_type] = tag.data
                self._enqueue(tag.with_timestamp(self._last_out_ts), None)
            return
        if is_end_of_sequence(tag):
            return  # a file's end, not the playback's
        unix_ms = self._segment.start_ms + tag.timestamp
        if unix_ms >= self.end_ms:
            self._end_reached = True
            return
        if self._rebase:
            self._rebase_at(unix_ms)
        assert self._out_offset is not None
        out_ts = max(unix_ms - self._out_offset, self._last_out_ts)
        if tag.is_video:
            if self._last_video_out is not None and out_ts > self._last_video_out:
                self._frame_ms = min(out_ts - self._last_video_out, MAX_FRAME_MS)
            self._last_video_out = out_ts
        self._last_out_ts = out_ts
        self._enqueue(tag.with_timestamp(out_ts), unix_ms)

    def _rebase_at(self, unix_ms: int) -> None:
        """Map the first tag after a (re)positioning onto the output timeline."""
        self._rebase = False
        if self._out_offset is None:
            self._out_offset = unix_ms
            return
        next_frame = self._last_out_ts
        if self._last_video_out is not None:
            next_frame = max(next_frame, self._last_video_out + self._frame_ms)
        gap = (unix_ms - self._out_offset) - self._last_out_ts
        if self._continuous and 0 <= gap <= 2 * self._frame_ms:
            return  # back-to-back segments: their own clock is already continuous
        self._out_offset = unix_ms - next_frame

    def _enqueue(self, tag: FlvTag, unix_ms: int | None) -> None:
        self._queue.append((tag, unix_ms))
        self._queued_bytes += tag.size

    # ---- sending ------------------------------------------------------------------------

    def _due(self, tag: FlvTag, now: float) -> float:
        if self._anchor is None:
            self._anchor = (now, tag.timestamp)
        clock, ts = self._anchor
        return clock + (tag.timestamp - ts) / 1000

    def poll(self, now: float) -> bytes:
        """The encoded tags due by ``now`` (seconds on the shell's clock)."""
        out = [self._prefix]
        self._prefix = b""
        while self._queue and self._paused_at is None:
            tag, unix_ms = self._queue[0]
            if unix_ms is not None and self._due(tag, now) > now + self.lead_ms / 1000:
                break
            self._queue.popleft()
            self._queued_bytes -= tag.size
            out.append(tag.encode())
            if unix_ms is not None:
                self._sent_ts, self._sent_unix = tag.timestamp, unix_ms
                if tag.is_video:
                    self._sent_video_ts = tag.timestamp
                self._seek_target = None
        return b"".join(out)

    def next_wakeup(self, now: float) -> float | None:
        """Seconds until ``poll`` has something to send; None while paused or waiting on a
        read."""
        if self._prefix:
            return 0.0
        if self._paused_at is not None or not self._queue:
            return None
        tag, unix_ms = self._queue[0]
        if unix_ms is None:
            return 0.0
        return max(0.0, self._due(tag, now) - self.lead_ms / 1000 - now)

    # ---- control ------------------------------------------------------------------------

    def pause(self, now: float) -> None:
        if self._paused_at is None:
            self._paused_at = now

    def resume(self, now: float) -> None:
        if self._paused_at is None:
            return
        if self._anchor is not None:
            clock, ts = self._anchor
            self._anchor = (clock + now - self._paused_at, ts)
        self._paused_at = None

    def seek(self, unix_ms: int, now: float) -> None:
        """Continue from the keyframe at or before ``unix_ms`` (within the span)."""
        if not self.start_ms <= unix_ms < self.end_ms:
            raise ValueError("the seek target is outside the playback span")
        self._queue.clear()
        self._queued_bytes = 0
        # Parsing resumes from what was sent, so output timestamps stay monotonic.
        self._last_out_ts = self._sent_ts
        self._last_video_out = self._sent_video_ts
        self._anchor = None
        self._seek_target = unix_ms
        self._end_reached = False
        candidates = self.index.overlapping(unix_ms, self.end_ms)
        if not candidates:
            self._end_reached = True
            self._pending = None
            return
        self._position(candidates[0], unix_ms, continuous=False)

    def progress_ms(self, now: float) -> int:
        """Where the viewer is, in ms from the start of the span."""
        if self._seek_target is not None:
            position = self._seek_target
        elif self._sent_unix is None:
            position = self.start_ms
        else:
            position = self._sent_unix
            if self._anchor is not None:
                clock = self._paused_at if self._paused_at is not None else now
                played_to = self._anchor[1] + (clock - self._anchor[0]) * 1000
                # Tags go out up to LEAD_MS early; the viewer is where the clock is.
                position -= int(max(0.0, self._sent_ts - played_to))
        return max(0, min(position - self.start_ms, self.end_ms - self.start_ms))
