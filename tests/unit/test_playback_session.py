"""PlaybackSession (sans-IO) over real recorded segments, with a virtual clock: pacing, segment
boundaries and gaps, pause, seek, progress and the end of the span."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tests.support.recordings import FRAME_MS, GOP_MS, frame_times, parse_flv, record
from xp2p.device.playback_session import LEAD_MS, PlaybackSession
from xp2p.device.record_index import RecordIndex, Segment
from xp2p.flv import FlvTag, starts_gop

T0 = 1_790_000_000_000  # a whole second, unix ms


class Player:
    """Runs a session the way the asyncio shell does, on a virtual clock."""

    def __init__(self, folder: Path, session: PlaybackSession) -> None:
        self.folder = folder
        self.session = session
        self.now = 1000.0
        self.out = bytearray()
        self.sent_at: list[tuple[float, int]] = []  # (clock, bytes so far)

    def step(self) -> bool:
        """Read or send what the session wants at ``now``; False when it waits for time."""
        data = self.session.poll(self.now)
        if data:
            self.out += data
            self.sent_at.append((self.now, len(self.out)))
            return True
        read = self.session.want_read()
        if read is not None:
            path = self.folder / read.file_name
            chunk = b""
            if path.exists():
                with open(path, "rb") as handle:
                    handle.seek(read.offset)
                    chunk = handle.read(read.length)
            self.session.on_read(read, chunk)
            return True
        return False

    def run_for(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end and not self.session.finished:
            if self.step():
                continue
            wait = self.session.next_wakeup(self.now)
            self.now = min(end, self.now + (0.05 if wait is None else max(wait, 0.001)))

    def run_to_end(self, limit: float = 120.0) -> None:
        self.run_for(limit)
        assert self.session.finished

    def tags(self) -> list[FlvTag]:
        headers, tags = parse_flv(bytes(self.out))
        assert len(headers) == 1
        return tags


def video(tags: list[FlvTag]) -> list[FlvTag]:
    return [t for t in tags if t.is_video and not t.is_sequence_header]


def assert_continuous(tags: list[FlvTag]) -> None:
    stamps = [t.timestamp for t in tags if not t.is_script and not t.is_sequence_header]
    assert stamps == sorted(stamps), "timestamps go back"
    frames = [t.timestamp for t in video(tags)]
    gaps = [b - a for a, b in itertools.pairwise(frames)]
    assert gaps and max(gaps) <= FRAME_MS and min(gaps) > 0, gaps


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Segment]]:
    folder = tmp_path_factory.mktemp("ch0")
    # 12 s in 2 s segments from T0 + 0.5 s, then, after a gap, 6 s more from T0 + 60 s.
    segments = record(folder, T0 + 500, seconds=12.0, segment_ms=2000)
    segments += record(folder, T0 + 60_000, seconds=6.0, segment_ms=2000, variant=1)
    return folder, segments


def test_plays_from_the_keyframe_before_the_start_across_segments_in_real_time(
    recorded: tuple[Path, list[Segment]],
) -> None:
    folder, segments = recorded
    start, end = T0 + 3000, T0 + 9000  # keyframes sit at T0 + n s + 0.5 s
    player = Player(folder, PlaybackSession(RecordIndex(segments), start, end))
    began = player.now
    player.run_to_end()
    tags = player.tags()
    assert tags[0].is_metadata and all(t.is_sequence_header for t in tags[1:3])
    frames = video(tags)
    assert starts_gop(frames[0]) and frames[0].timestamp == 0
    assert_continuous(tags)
    # Byte for byte the recorded frames from T0 + 2.5 s up to the end of the span.
    by_data = frame_times(folder, segments)
    times = [by_data[f.data] for f in frames]
    assert times == list(range(T0 + 2500, end, FRAME_MS))
    # Paced: the last frame left no earlier than its time minus the lead.
    last_sent = player.sent_at[-1][0]
    assert last_sent - began >= (frames[-1].timestamp - LEAD_MS) / 1000
    # The viewer is where the clock is: the lead is still to play when the last tag left.
    progress = player.session.progress_ms(player.now)
    assert abs(progress - (times[-1] - start - LEAD_MS)) <= FRAME_MS
    assert abs(player.session.progress_ms(player.now + 1) - (times[-1] - start)) <= FRAME_MS


def test_a_gap_in_the_recordings_costs_one_frame_not_the_gap(
    recorded: tuple[Path, list[Segment]],
) -> None:
    folder, segments = recorded
    player = Player(folder, PlaybackSession(RecordIndex(segments), T0 + 10_000, T0 + 63_000))
    player.run_to_end()
    tags = player.tags()
    assert_continuous(tags)
    frames = video(tags)
    by_data = frame_times(folder, segments)
    times = [by_data[f.data] for f in frames]
    jump = times.index(T0 + 60_000)
    assert times[jump - 1] == T0 + 12_460  # the last frame before the gap
    assert frames[jump].timestamp - frames[jump - 1].timestamp == FRAME_MS
    assert times[-1] == T0 + 62_960
    assert player.now - 1000.0 < 6.0  # 2.5 s + 3 s of video, not the 48 s gap


def test_pause_sends_nothing_and_resume_continues_without_a_gap(
    recorded: tuple[Path, list[Segment]],
) -> None:
    folder, segments = recorded
    session = PlaybackSession(RecordIndex(segments), T0 + 1000, T0 + 8000)
    player = Player(folder, session)
    player.run_for(2.0)
    progress = session.progress_ms(player.now)
    assert 1000 <= progress <= 2000
    session.pause(player.now)
    size = len(player.out)
    player.run_for(10.0)
    assert len(player.out) == size
    assert session.progress_ms(player.now) == progress
    assert session.next_wakeup(player.now) is None
    session.resume(player.now)
    player.run_to_end()
    assert_continuous(player.tags())
    assert player.tags()[0].is_metadata  # and no second FLV header (Player.tags checks)


def test_seeks_land_on_the_keyframe_at_or_before_with_monotonic_timestamps(
    recorded: tuple[Path, list[Segment]],
) -> None:
    folder, segments = recorded
    start, end = T0 + 1000, T0 + 65_000
    session = PlaybackSession(RecordIndex(segments), start, end)
    player = Player(folder, session)
    by_data = frame_times(folder, segments)
    player.run_for(1.5)
    for target in (T0 + 7700, T0 + 2100, T0 + 61_300, T0 + 30_000):
        before = len(video(player.tags()))
        session.seek(target, player.now)
        assert session.progress_ms(player.now) == target - start
        player.run_for(1.0)
        after = video(player.tags())[before:]
        assert starts_gop(after[0])
        landed = by_data[after[0].data]
        if target == T0 + 30_000:  # in the gap: the next recording's first keyframe
            assert landed == T0 + 60_000
        else:
            assert target - GOP_MS < landed <= target
        assert_continuous(player.tags())
    with pytest.raises(ValueError):
        session.seek(end, player.now)
    with pytest.raises(ValueError):
        session.seek(start - 1, player.now)


def test_segments_deleted_under_a_playback_are_skipped(tmp_path: Path) -> None:
    segments = record(tmp_path, T0, seconds=12.0, segment_ms=2000)
    index = RecordIndex(segments)
    player = Player(tmp_path, PlaybackSession(index, T0, T0 + 12_000))
    # Retention took one (index first, then the file); another file vanished by hand.
    index.remove(segments[1].file_name)
    (tmp_path / segments[1].file_name).unlink()
    (tmp_path / segments[3].file_name).unlink()
    player.run_to_end()
    kept = [segments[0], segments[2], *segments[4:]]
    by_data = frame_times(tmp_path, kept)
    times = [by_data[f.data] for f in video(player.tags())]
    expected = [t for s in kept for t in range(s.start_ms, s.end_ms, FRAME_MS)]
    assert times == expected
    assert_continuous(player.tags())


def test_a_span_with_no_recordings_is_refused(recorded: tuple[Path, list[Segment]]) -> None:
    _, segments = recorded
    with pytest.raises(ValueError):
        PlaybackSession(RecordIndex(segments), T0 + 20_000, T0 + 50_000)
