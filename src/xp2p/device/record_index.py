"""The recordings of one channel as data: segment names, the index and its queries (sans-IO).

A segment is one FLV file the recorder wrote, named by the unix time (UTC) of its first
keyframe, with its own FLV header, sequence headers and a keyframe first so it plays alone.
Timestamps inside a segment start at 0, so ``start_ms + tag.timestamp`` is the tag's wall-clock
time. The index keeps, per segment, its span, size and every keyframe's byte offset and
timestamp: playback seeks with them instead of reading files.

Nothing here touches the disk or the clock: the store (``recordings``) does the I/O and hands
bytes and times in, so every rule below is tested without files.
"""

from __future__ import annotations

import calendar
import json
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from xp2p.flv import (
    AvcPacketType,
    ExVideoPacketType,
    FlvError,
    FlvHeader,
    FlvReader,
    FlvTag,
    VideoCodec,
    starts_gop,
)

#: The index file in each channel folder. A dot file: internal, never listed or served.
INDEX_NAME = ".xp2p-index.json"
INDEX_VERSION = 1
#: Spans closer than this are one span in ``get_record_index`` (replies are in whole seconds).
MERGE_GAP_MS = 1000
#: Bytes before a segment's first tag: the 9-byte FLV header and PreviousTagSize0.
FILE_HEAD_BYTES = 13

_NAME = re.compile(r"^rec_(\d{8}T\d{6})Z_(\d{1,15})\.flv$")


def segment_name(start_ms: int) -> str:
    """``rec_20261124T081500Z_1795508100000.flv``: sorts by time, readable, parses back exactly."""
    stamp = datetime.fromtimestamp(start_ms // 1000, UTC).strftime("%Y%m%dT%H%M%S")
    return f"rec_{stamp}Z_{start_ms}.flv"


def parse_segment_name(name: str) -> int | None:
    """The start (unix ms) of a segment file name, or None if the recorder did not name it."""
    match = _NAME.match(name)
    if match is None:
        return None
    start_ms = int(match.group(2))
    # The readable part must agree: a hand-renamed file is not one of ours.
    return start_ms if segment_name(start_ms) == name else None


def is_end_of_sequence(tag: FlvTag) -> bool:
    """An AVC/HEVC end-of-sequence marker (FFmpeg writes one when a file ends). It ends a whole
    stream: in the middle of a recording or a playback it would only confuse players."""
    data = tag.data
    if not tag.is_video or len(data) < 2:
        return False
    if tag.is_enhanced:
        return (data[0] & 0x0F) == ExVideoPacketType.SEQUENCE_END
    return tag.video_codec in (VideoCodec.AVC, VideoCodec.HEVC) and (
        data[1] == AvcPacketType.END_OF_SEQUENCE
    )


@dataclass(frozen=True, slots=True)
class Keyframe:
    offset: int  #: byte offset of the keyframe's tag in the file
    timestamp: int  #: its FLV timestamp (ms from the segment's start)


@dataclass(frozen=True, slots=True)
class Segment:
    file_name: str
    start_ms: int
    end_ms: int
    size: int
    keyframes: tuple[Keyframe, ...]
    #: still being written: its size and keyframes grow, and retention never deletes it
    recording: bool = False

    @property
    def head_size(self) -> int:
        """Bytes before the first keyframe: FLV header, onMetaData and sequence headers."""
        return self.keyframes[0].offset if self.keyframes else self.size

    def keyframe_at_or_before(self, unix_ms: int) -> Keyframe:
        """The keyframe to start from to show ``unix_ms``; the first one if it is earlier."""
        times = [self.start_ms + k.timestamp for k in self.keyframes]
        index = bisect_right(times, unix_ms) - 1
        return self.keyframes[max(index, 0)]

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file_name,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "size": self.size,
            "keyframes": [[k.offset, k.timestamp] for k in self.keyframes],
            "recording": self.recording,
        }

    @classmethod
    def from_json(cls, doc: Any) -> Segment:
        if not isinstance(doc, dict):
            raise ValueError("a segment entry must be an object")
        name = doc.get("file")
        start, end, size = doc.get("start_ms"), doc.get("end_ms"), doc.get("size")
        if not isinstance(name, str) or parse_segment_name(name) != start:
            raise ValueError(f"segment entry with a bad file name: {name!r}")
        if not all(isinstance(v, int) and v >= 0 for v in (start, end, size)):
            raise ValueError(f"segment {name}: start_ms, end_ms and size must be integers")
        assert isinstance(start, int) and isinstance(end, int) and isinstance(size, int)
        raw_keyframes = doc.get("keyframes")
        if not isinstance(raw_keyframes, list):
            raise ValueError(f"segment {name}: keyframes must be a list")
        keyframes = []
        for pair in raw_keyframes:
            if not (
                isinstance(pair, list)
                and len(pair) == 2
                and all(isinstance(v, int) and 0 <= v for v in pair)
                and pair[0] < size
            ):
                raise ValueError(f"segment {name}: bad keyframe entry {pair!r}")
            keyframes.append(Keyframe(pair[0], pair[1]))
        if not keyframes or end < start:
            raise ValueError(f"segment {name}: no keyframes or an empty span")
        return cls(name, start, end, size, tuple(keyframes), bool(doc.get("recording", False)))


@dataclass(frozen=True, slots=True)
class Span:
    start_ms: int
    end_ms: int


class IndexFormatError(ValueError):
    """The index file is not one we wrote (corrupt, foreign or from a future version)."""


def _start(segment: Segment) -> int:
    return segment.start_ms


class RecordIndex:
    """The segments of one channel, ordered by start time."""

    def __init__(self, segments: Iterable[Segment] = ()) -> None:
        self._segments: dict[str, Segment] = {s.file_name: s for s in segments}
        self._order: list[Segment] | None = None

    @property
    def segments(self) -> list[Segment]:
        if self._order is None:
            self._order = sorted(self._segments.values(), key=lambda s: s.start_ms)
        return self._order

    def __len__(self) -> int:
        return len(self._segments)

    def __contains__(self, file_name: object) -> bool:
        return file_name in self._segments

    def get(self, file_name: str) -> Segment | None:
        return self._segments.get(file_name)

    def put(self, segment: Segment) -> None:
        previous = self._segments.get(segment.file_name)
        self._segments[segment.file_name] = segment
        order = self._order
        if order is None:
            return
        # The recorder updates its growing segment after every batch: keep the order
        # instead of sorting again for each update.
        if previous is not None and previous.start_ms == segment.start_ms:
            order[bisect_left(order, segment.start_ms, key=_start)] = segment
        elif previous is None and (not order or order[-1].start_ms < segment.start_ms):
            order.append(segment)
        else:
            self._order = None

    def remove(self, file_name: str) -> None:
        if self._segments.pop(file_name, None) is not None:
            self._order = None

    @property
    def total_bytes(self) -> int:
        return sum(s.size for s in self._segments.values())

    # ---- queries ----------------------------------------------------------------------

    def overlapping(self, start_ms: int, end_ms: int) -> list[Segment]:
        """Segments with media in ``[start_ms, end_ms)``, oldest first."""
        order = self.segments
        candidates = order[: bisect_left(order, end_ms, key=_start)]
        return [s for s in candidates if s.end_ms > start_ms]

    def after(self, segment: Segment) -> Segment | None:
        """The segment that follows ``segment`` in time (None at the newest)."""
        order = self.segments
        index = bisect_right(order, segment.start_ms, key=_start)
        return order[index] if index < len(order) else None

    def spans(self, start_ms: int, end_ms: int, merge_gap_ms: int = MERGE_GAP_MS) -> list[Span]:
        """Recorded time within ``[start_ms, end_ms)``: contiguous segments merged, clipped."""
        spans: list[Span] = []
        for segment in self.overlapping(start_ms, end_ms):
            lo, hi = max(segment.start_ms, start_ms), min(segment.end_ms, end_ms)
            if spans and lo - spans[-1].end_ms <= merge_gap_ms:
                spans[-1] = Span(spans[-1].start_ms, max(spans[-1].end_ms, hi))
            else:
                spans.append(Span(lo, hi))
        return spans

    def month_days(self, year: int, month: int) -> int:
        """Bit ``d - 1`` set when day ``d`` of that month (UTC) has recordings."""
        first = calendar.timegm((year, month, 1, 0, 0, 0)) * 1000
        days = calendar.monthrange(year, month)[1]
        bits = 0
        for span in self.spans(first, first + days * 86_400_000, merge_gap_ms=0):
            first_day = (span.start_ms - first) // 86_400_000
            last_day = (span.end_ms - 1 - first) // 86_400_000
            for day in range(first_day, last_day + 1):
                bits |= 1 << day
        return bits

    def expired(self, now_ms: int, max_bytes: int, max_age_ms: int) -> list[Segment]:
        """What retention deletes: segments that ended more than ``max_age_ms`` ago, then the
        oldest ones until the rest fit in ``max_bytes``. The one being written is kept."""
        doomed: list[Segment] = []
        total = self.total_bytes
        for segment in self.segments:
            if segment.recording:
                continue
            if segment.end_ms < now_ms - max_age_ms or total > max_bytes:
                doomed.append(segment)
                total -= segment.size
        return doomed

    # ---- the index file -----------------------------------------------------------------

    def to_json(self) -> str:
        doc = {"version": INDEX_VERSION, "segments": [s.to_json() for s in self.segments]}
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> RecordIndex:
        try:
            doc = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise IndexFormatError(f"index is not JSON: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("version") != INDEX_VERSION:
            raise IndexFormatError("index has no version or an unknown one")
        entries = doc.get("segments")
        if not isinstance(entries, list):
            raise IndexFormatError("index has no segment list")
        try:
            return cls(Segment.from_json(entry) for entry in entries)
        except ValueError as exc:
            raise IndexFormatError(str(exc)) from exc


# ---- reading a segment back -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What a segment file holds, up to its last complete tag."""

    good_size: int  #: bytes up to the end of the last complete tag
    keyframes: tuple[Keyframe, ...]
    duration_ms: int  #: from the first tag's time to the end of the last frame
    error: str | None  #: why the scan stopped before the end of the file, if it did


class SegmentScanner:
    """Feed a segment's bytes from offset 0; ``result()`` says how much of it is sound.

    Used on start-up to index segments a crash left unindexed or cut short: whatever follows
    the last complete tag (half a tag, garbage) is not part of the recording.
    """

    def __init__(self) -> None:
        self._reader = FlvReader()
        self._good = 0
        self._keyframes: list[Keyframe] = []
        self._last_ts = 0
        self._last_video_ts: int | None = None
        self._frame_ms = 0
        self._error: str | None = None
        self._header_seen = False

    def feed(self, data: bytes) -> None:
        if self._error is not None:
            return
        before = self._reader.offset
        try:
            items = self._reader.feed(data)
        except FlvError as exc:
            items = list(exc.items)
            self._error = f"{exc.message} at byte {exc.offset}"
        self._account(before, items)

    def _account(self, before: int, items: Sequence[FlvHeader | FlvTag]) -> None:
        position = before
        for item in items:
            if isinstance(item, FlvHeader):
                self._header_seen = True
                position = FILE_HEAD_BYTES
                continue
            if starts_gop(item):
                self._keyframes.append(Keyframe(position, item.timestamp))
            if item.is_video and not item.is_sequence_header:
                if self._last_video_ts is not None and item.timestamp > self._last_video_ts:
                    self._frame_ms = item.timestamp - self._last_video_ts
                self._last_video_ts = item.timestamp
            if not item.is_sequence_header and not item.is_script:
                self._last_ts = max(self._last_ts, item.timestamp)
            position += item.size
        self._good = position

    def result(self) -> ScanResult:
        error = self._error
        if error is None and self._reader.buffered:
            error = f"file ends inside a tag at byte {self._good}"
        if not self._header_seen:
            error = error or "no FLV header"
        return ScanResult(self._good, tuple(self._keyframes), self.duration_ms, error)

    @property
    def duration_ms(self) -> int:
        video_end = 0 if self._last_video_ts is None else self._last_video_ts + self._frame_ms
        return max(video_end, self._last_ts)
