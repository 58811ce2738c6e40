"""A synthetic live FLV stream and a player's stall detector, for tests/test_lossy_live.py
and bench/lossy_link.py (which puts tests/ on its path).

The stream is valid FLV (header, AVC sequence header, then one video tag per frame at 25 fps
with real timestamps and a keyframe every 2 s), fixed-size so it runs at exactly the bitrate;
no encoder runs (CPU is scarce here). Its payloads come from a small seeded pool, so both
ends can build the same stream and compare digests without sending one.

The detector is a player with a ``buffer``-second jitter buffer: it starts playing media time
0 ``buffer`` after the first frame arrived, and stalls whenever the frame with media time
``t`` arrives later than ``first_arrival + t + buffer``; it then re-buffers, so its clock
moves on by the lateness.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from xp2p.flv import FlvHeader, FlvReader, FlvTag, TagType

FPS = 25
BITRATE = 4_000_000
GOP = 50
JITTER_BUFFER = 0.5
TAG_OVERHEAD = 15  #: tag header (11) + PreviousTagSize (4)


def stream_pieces(seconds: float, bitrate: int = BITRATE, seed: int = 0) -> list[bytes]:
    """Piece 0 is the FLV header with the sequence header; piece n >= 1 is frame n - 1, due
    at media time (n - 1) / FPS."""
    rng = random.Random(seed)
    frame_bytes = bitrate // 8 // FPS - TAG_OVERHEAD
    # A fixed pool of payloads: random enough that nothing compresses, cheap to make.
    pool = [rng.randbytes(frame_bytes) for _ in range(8)]
    avc_config = bytes((0x17, 0x00, 0, 0, 0)) + bytes((1, 0x64, 0, 0x1F, 0xFF, 0xE0, 0))
    pieces = [
        FlvHeader(has_audio=False, has_video=True).encode()
        + FlvTag(TagType.VIDEO, 0, avc_config).encode()
    ]
    for n in range(int(seconds * FPS)):
        # Video tag body: frame type + codec (AVC = 7), AVC NALU packet, composition time 0.
        head = bytes(((0x10 if n % GOP == 0 else 0x20) | 7, 1, 0, 0, 0))
        body = head + pool[n % len(pool)][len(head) :]
        pieces.append(FlvTag(TagType.VIDEO, n * 1000 // FPS, body).encode())
    return pieces


@dataclass
class StallDetector:
    """What a player with a ``buffer``-second jitter buffer would do with these arrivals."""

    buffer: float = JITTER_BUFFER
    base: float | None = None  #: arrival clock of media time 0 (moves on at each stall)
    frames: int = 0
    stalls: int = 0
    stalled_seconds: float = 0.0
    late_frames: list[tuple[int, float]] = field(default_factory=list)  #: (ms, late by s)

    def frame(self, media_ms: int, arrival: float) -> None:
        self.frames += 1
        if self.base is None:
            self.base = arrival - media_ms / 1000
        due = self.base + media_ms / 1000 + self.buffer
        if arrival > due:
            self.stalls += 1
            self.stalled_seconds += arrival - due
            self.late_frames.append((media_ms, arrival - due))
            self.base += arrival - due  # the player re-buffered: its clock is later now


class LiveWatch:
    """Feed it the bytes as they arrive, with the time; it parses and watches for stalls."""

    def __init__(self) -> None:
        self.reader = FlvReader()
        self.detector = StallDetector()
        self.bytes = 0
        self.sha256 = hashlib.sha256()

    def feed(self, data: bytes, now: float) -> None:
        self.bytes += len(data)
        self.sha256.update(data)
        for item in self.reader.feed(data):
            if isinstance(item, FlvTag) and item.is_video and len(item.data) > 100:
                self.detector.frame(item.timestamp, now)
