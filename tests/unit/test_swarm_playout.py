"""The 1vN viewer's buffer and playhead model (sans-IO): order, holding, stalls, restarts."""

from __future__ import annotations

from xp2p.flv import FlvHeader
from xp2p.swarm import Chunk, InitChunk
from xp2p.swarm.scheduler import Playback
from xp2p.viewer.swarm.playout import Playout

STREAM = 7
INIT = InitChunk(STREAM, 0, FlvHeader(), b"<init0>")


def chunk(seq: int, key: bool = False, init_id: int = 0, stream: int = STREAM) -> Chunk:
    return Chunk(stream, seq, init_id, seq * 300, 300, key, f"<c{seq}>".encode())


def started(start: int = 10, at: float = 5.0) -> Playout:
    p = Playout(STREAM)
    p.add_init(INIT)
    p.begin(start, at)
    return p


def test_first_bytes_wait_for_the_start_time_then_flow_in_order() -> None:
    p = started()
    p.add(chunk(11), b"w11")  # out of order: held until 10 comes
    assert p.take(1.0) == b""
    p.add(chunk(10, key=True), b"w10")
    assert p.take(4.9) == b""  # contiguous, but before the start time
    out = p.take(5.0)
    assert out == FlvHeader().encode() + b"<init0><c10><c11>"
    p.add(chunk(12), b"w12")
    assert p.take(5.1) == b"<c12>"
    assert p.wire(11) == b"w11" and p.stalls == 0


def test_a_chunk_needed_before_it_came_is_a_stall_and_the_clock_restarts() -> None:
    p = started()
    p.add(chunk(10, key=True), b"")
    p.take(5.0)
    assert p.playback(5.0) == Playback(11, 5.3)  # 10 plays from 5.0 for its 0.3 s
    p.take(6.0)  # 11 was due at 5.3: the player starves
    assert p.playback(6.0).deadline < 6.0
    p.add(chunk(11), b"")
    assert p.take(6.5) == b"<c11>"
    assert p.stalls == 1
    assert (
        abs(p.playback(6.5).deadline - 6.8) < 1e-9
    )  # restarted at the arrival, plus 11's duration


def test_a_gap_skips_to_the_next_keyframe_and_counts_once() -> None:
    p = started()
    p.add(chunk(10, key=True), b"")
    p.take(5.0)
    p.add(chunk(12), b"")
    p.add(chunk(13, key=True), b"")
    p.skip_to(12)  # 11 is gone from the edge
    assert p.take(5.1) == b"<c13>"  # 12 cannot be decoded without 11: skipped
    assert p.assembler.stalls == 1


def test_a_new_init_is_fetched_before_its_chunks_play() -> None:
    p = started()
    p.add(chunk(10, key=True), b"")
    p.take(5.0)
    p.add(chunk(11, key=True, init_id=1), b"")
    assert p.take(5.1) == b"" and p.missing_init == 1
    p.add_init(InitChunk(STREAM, 1, FlvHeader(), b"<init1>"))
    assert p.take(5.2) == b"<init1><c11>" and p.missing_init is None


def test_a_continuing_pull_sends_no_second_file_header() -> None:
    p = Playout(STREAM, skip_header=True)
    p.add_init(INIT)
    p.begin(0, 0.0)
    p.add(chunk(0, key=True), b"")
    assert p.take(0.0) == b"<init0><c0>"
    assert p.app_has_header


def test_a_joiner_starts_from_a_keyframe_about_its_delay_old() -> None:
    from xp2p.viewer.swarm.playout import START_BUFFER, pick_start

    # 0.33 s chunks, a keyframe every 6 chunks, live edge at 100, a 3 s delay.
    keyframes = (66, 72, 78, 84, 90, 96)
    start = pick_start(keyframes, 96, 100, 0.33, 3.0)
    age = (100 + 1 - start) * 0.33
    assert start == 90 and age >= 3.0 - START_BUFFER  # the newest old enough
    assert (100 + 1 - 96) * 0.33 < 3.0 - START_BUFFER  # the newest is too young
    # A stream that just started has no keyframe that old: the newest it is.
    assert pick_start((1,), 1, 3, 0.33, 3.0) == 1
    assert pick_start((), 5, 7, 0.33, 3.0) == 5  # an edge that lists none
