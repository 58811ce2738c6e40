"""The recordings index as data (sans-IO): names, spans, month bitmaps, retention, the index
file, and reading back a segment cut short."""

from __future__ import annotations

import calendar
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.recordings import GOP_MS, pattern_tags
from xp2p.device.record_index import (
    IndexFormatError,
    Keyframe,
    RecordIndex,
    Segment,
    SegmentScanner,
    parse_segment_name,
    segment_name,
)
from xp2p.device.recorder import CloseSegment, SegmentRecorder, WriteSegment

DAY = 86_400_000


def utc_ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return calendar.timegm((year, month, day, hour, minute, 0)) * 1000


def seg(start_ms: int, end_ms: int, size: int = 1000, recording: bool = False) -> Segment:
    return Segment(segment_name(start_ms), start_ms, end_ms, size, (Keyframe(100, 0),), recording)


# ---- names ---------------------------------------------------------------------------------


def test_segment_name_is_readable_utc_and_exact() -> None:
    start = utc_ms(2026, 11, 24, 8, 15) + 123
    name = segment_name(start)
    assert name == f"rec_20261124T081500Z_{start}.flv"
    assert parse_segment_name(name) == start


@given(st.integers(0, 9_999_999_999_999), st.integers(0, 9_999_999_999_999))
def test_segment_names_parse_back_and_sort_by_time(a: int, b: int) -> None:
    assert parse_segment_name(segment_name(a)) == a
    if a // 1000 != b // 1000:  # within one second the ms suffix decides, same length
        assert (segment_name(a) < segment_name(b)) == (a < b)


@pytest.mark.parametrize(
    "name",
    [
        "rec_20261124T081500Z_1.flv",  # readable part disagrees with the ms
        "rec_20261124T081500Z_1795508100000.mp4",
        "../rec_20261124T081500Z_1795508100000.flv",
        "rec_20261124T081500Z_.flv",
        "clip.flv",
        "",
    ],
)
def test_names_the_recorder_did_not_make_are_not_segments(name: str) -> None:
    assert parse_segment_name(name) is None


# ---- queries -------------------------------------------------------------------------------


def test_spans_merge_contiguous_segments_and_clip_to_the_query() -> None:
    t = utc_ms(2026, 3, 1, 10)
    index = RecordIndex(
        [
            seg(t, t + 60_000),
            seg(t + 60_000, t + 120_000),  # back to back
            seg(t + 120_040, t + 180_000),  # one frame later: still contiguous
            seg(t + 600_000, t + 660_000),  # a gap of 7 minutes
        ]
    )
    spans = index.spans(t - 10_000, t + 11 * 60_000)
    assert [(s.start_ms - t, s.end_ms - t) for s in spans] == [(0, 180_000), (600_000, 660_000)]
    clipped = index.spans(t + 30_000, t + 630_000)
    assert [(s.start_ms - t, s.end_ms - t) for s in clipped] == [
        (30_000, 180_000),
        (600_000, 630_000),
    ]
    assert index.spans(t + 200_000, t + 500_000) == []


def test_month_bitmap_marks_utc_days_including_spans_across_midnight() -> None:
    index = RecordIndex(
        [
            seg(utc_ms(2026, 11, 1, 0, 0), utc_ms(2026, 11, 1, 0, 5)),  # day 1
            seg(utc_ms(2026, 11, 3, 23, 50), utc_ms(2026, 11, 4, 0, 10)),  # days 3 and 4
            seg(utc_ms(2026, 11, 30, 23, 58), utc_ms(2026, 12, 1, 0, 2)),  # 30 (+ Dec 1)
            seg(utc_ms(2026, 10, 31, 12), utc_ms(2026, 10, 31, 13)),  # October only
        ]
    )
    assert index.month_days(2026, 11) == (1 << 0) | (1 << 2) | (1 << 3) | (1 << 29)
    assert index.month_days(2026, 12) == 1
    assert index.month_days(2026, 10) == 1 << 30
    assert index.month_days(2026, 9) == 0
    # A span ending exactly at midnight does not mark the next day.
    edge = RecordIndex([seg(utc_ms(2026, 2, 27, 23), utc_ms(2026, 2, 28))])
    assert edge.month_days(2026, 2) == 1 << 26


def test_retention_deletes_old_then_oldest_beyond_the_byte_budget() -> None:
    now = utc_ms(2026, 6, 10, 12)
    old = seg(now - 8 * DAY, now - 8 * DAY + 60_000, size=10)
    a = seg(now - 3000_000, now - 2940_000, size=400)
    b = seg(now - 2000_000, now - 1940_000, size=400)
    c = seg(now - 1000_000, now - 940_000, size=400)
    live = seg(now - 60_000, now, size=5000, recording=True)
    index = RecordIndex([c, live, a, old, b])
    assert index.expired(now, max_bytes=10**9, max_age_ms=7 * DAY) == [old]
    # 6210 bytes, budget 5900: the old one goes by age, then a; b, c and the live one fit.
    assert index.expired(now, max_bytes=5900, max_age_ms=7 * DAY) == [old, a]
    # The segment being written is never deleted, even when it alone is over budget.
    assert index.expired(now, max_bytes=100, max_age_ms=7 * DAY) == [old, a, b, c]


def test_keyframe_at_or_before() -> None:
    s = Segment(
        segment_name(10_000), 10_000, 14_000, 999, (Keyframe(50, 0), Keyframe(400, 2000)), False
    )
    assert s.keyframe_at_or_before(9_000).offset == 50  # before the segment: its first
    assert s.keyframe_at_or_before(11_999).offset == 50
    assert s.keyframe_at_or_before(12_000).offset == 400
    assert s.keyframe_at_or_before(13_999).offset == 400


# ---- the index file ------------------------------------------------------------------------


def test_index_json_round_trip() -> None:
    segments = [seg(1_000_000, 1_060_000), seg(1_060_000, 1_090_000, recording=True)]
    text = RecordIndex(segments).to_json()
    again = RecordIndex.from_json(text)
    assert again.segments == segments
    assert json.loads(text)["version"] == 1


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[]",
        '{"version": 99, "segments": []}',
        '{"version": 1}',
        '{"version": 1, "segments": [{"file": "x.flv"}]}',
        '{"version": 1, "segments": [{"file": "rec_19700101T000016Z_16000.flv",'
        ' "start_ms": 16000, "end_ms": 17000, "size": 10, "keyframes": []}]}',
        '{"version": 1, "segments": [{"file": "rec_19700101T000016Z_16000.flv",'
        ' "start_ms": 16000, "end_ms": 17000, "size": 10, "keyframes": [[20, 0]]}]}',
        '{"version": 1, "segments": [{"file": "rec_19700101T000016Z_16000.flv",'
        ' "start_ms": "16000", "end_ms": 17000, "size": 10, "keyframes": [[2, 0]]}]}',
        b"\xff\xfe",
    ],
)
def test_a_damaged_index_is_an_index_format_error(text: str | bytes) -> None:
    with pytest.raises(IndexFormatError):
        RecordIndex.from_json(text)


# ---- reading back ------------------------------------------------------------------------


def _segment_bytes() -> tuple[bytes, Segment]:
    header, tags = pattern_tags(7.0)
    core = SegmentRecorder(3000, header)
    data = bytearray()
    for tag in tags:
        for action in core.feed(tag, 1_700_000_000_000 + tag.timestamp):
            if isinstance(action, WriteSegment):
                data += action.data
            if isinstance(action, CloseSegment):
                return bytes(data[: action.segment.size]), action.segment
    raise AssertionError("the recorder never cut a segment")


def test_scanner_agrees_with_the_recorder_and_stops_at_the_last_complete_tag() -> None:
    data, segment = _segment_bytes()
    assert segment.end_ms - segment.start_ms >= 3000
    assert len(segment.keyframes) >= 3
    assert [k.timestamp for k in segment.keyframes] == [
        i * GOP_MS for i in range(len(segment.keyframes))
    ]
    scanner = SegmentScanner()
    for i in range(0, len(data), 7777):  # any chunking
        scanner.feed(data[i : i + 7777])
    whole = scanner.result()
    assert whole.error is None and whole.good_size == len(data)
    assert whole.keyframes == segment.keyframes
    assert whole.duration_ms == segment.end_ms - segment.start_ms

    cut = segment.keyframes[2].offset + 100  # inside the third keyframe's tag
    scanner = SegmentScanner()
    scanner.feed(data[:cut])
    partial = scanner.result()
    assert partial.good_size == segment.keyframes[2].offset
    assert partial.keyframes == segment.keyframes[:2]
    assert partial.error is not None and "ends inside a tag" in partial.error

    scanner = SegmentScanner()
    scanner.feed(data[:cut] + b"\xff" * 64)  # garbage where a tag should be
    assert scanner.result().good_size == segment.keyframes[2].offset
    assert scanner.result().error is not None


def test_scanner_of_a_file_with_no_header() -> None:
    scanner = SegmentScanner()
    scanner.feed(b"FL")
    result = scanner.result()
    assert result.keyframes == () and result.good_size == 0 and result.error


@given(
    st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(0, 3000), st.booleans()),
        max_size=30,
    ),
    st.integers(0, 12_000),
    st.integers(0, 12_000),
)
def test_index_queries_agree_with_brute_force(
    updates: list[tuple[int, int, bool]], lo: int, hi: int
) -> None:
    """Updates in any order (a growing segment, late arrivals) keep queries exact."""
    index = RecordIndex()
    truth: dict[str, Segment] = {}
    for start, length, grow in updates:
        segment = seg(start, start + length, size=length + 1, recording=grow)
        index.put(segment)
        truth[segment.file_name] = segment
        index.segments  # noqa: B018 - queries between updates exercise the kept order
    ordered = sorted(truth.values(), key=lambda s: s.start_ms)
    assert index.segments == ordered
    assert index.overlapping(lo, hi) == [s for s in ordered if s.start_ms < hi and s.end_ms > lo]
    for i, segment in enumerate(ordered):
        following = ordered[i + 1] if i + 1 < len(ordered) else None
        assert index.after(segment) == following
