"""One FLV tag: its header fields, its body, and what its first bytes say about the media."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from .constants import (
    FOURCC_TO_CODEC,
    MAX_DATA_SIZE,
    MAX_TIMESTAMP,
    TAG_HEADER_SIZE,
    ExVideoPacketType,
    SoundFormat,
    TagType,
    VideoCodec,
    VideoFrameType,
)
from .header import FlvHeader

_EX_HEADER = 0x80
_ON_METADATA = b"\x02\x00\x0aonMetaData"


@dataclass(frozen=True, slots=True)
class FlvTag:
    """A tag as it travels: ``tag_type`` is kept as an int so unknown types survive a relay."""

    tag_type: int
    timestamp: int
    data: bytes
    stream_id: int = 0

    def __post_init__(self) -> None:
        # Checked here, not in encode(), so a bad tag fails where it was made.
        if not 0 <= self.tag_type <= 0x1F:
            raise ValueError(f"tag type {self.tag_type} does not fit in 5 bits")
        if not 0 <= self.timestamp <= MAX_TIMESTAMP:
            raise ValueError(f"timestamp {self.timestamp} does not fit in 32 bits")
        if len(self.data) > MAX_DATA_SIZE:
            raise ValueError(f"tag body of {len(self.data)} bytes does not fit in 24 bits")
        if not 0 <= self.stream_id <= 0xFFFFFF:
            raise ValueError(f"stream id {self.stream_id} does not fit in 24 bits")

    @property
    def is_video(self) -> bool:
        return self.tag_type == TagType.VIDEO

    @property
    def is_audio(self) -> bool:
        return self.tag_type == TagType.AUDIO

    @property
    def is_script(self) -> bool:
        return self.tag_type == TagType.SCRIPT

    @property
    def is_enhanced(self) -> bool:
        """An Enhanced RTMP video tag (FourCC instead of a codec id)."""
        return self.is_video and bool(self.data) and bool(self.data[0] & _EX_HEADER)

    @property
    def video_codec(self) -> int | None:
        """The legacy codec id; for Enhanced RTMP tags the id of the same codec, if it has one."""
        if not self.is_video or not self.data:
            return None
        if self.data[0] & _EX_HEADER:
            codec = FOURCC_TO_CODEC.get(self.data[1:5])
            return None if codec is None else int(codec)
        return self.data[0] & 0x0F

    @property
    def frame_type(self) -> int | None:
        if not self.is_video or not self.data:
            return None
        if self.data[0] & _EX_HEADER:
            return (self.data[0] >> 4) & 0x07
        return self.data[0] >> 4

    @property
    def is_keyframe(self) -> bool:
        """Video frame type 1. True for AVC/HEVC sequence headers too, as the spec marks them."""
        return self.frame_type == VideoFrameType.KEY

    @property
    def sound_format(self) -> int | None:
        if not self.is_audio or not self.data:
            return None
        return self.data[0] >> 4

    @property
    def is_sequence_header(self) -> bool:
        data = self.data
        if self.is_video and data:
            if data[0] & _EX_HEADER:
                return (data[0] & 0x0F) == ExVideoPacketType.SEQUENCE_START
            return (
                (data[0] & 0x0F) in (VideoCodec.AVC, VideoCodec.HEVC)
                and len(data) >= 2
                and data[1] == 0
            )
        if self.is_audio and data:
            return (data[0] >> 4) == SoundFormat.AAC and len(data) >= 2 and data[1] == 0
        return False

    @property
    def is_metadata(self) -> bool:
        """A script tag carrying onMetaData (AMF0 string marker, length 10, the name)."""
        return self.is_script and self.data.startswith(_ON_METADATA)

    @property
    def size(self) -> int:
        """Bytes this tag takes in a stream, PreviousTagSize included."""
        return TAG_HEADER_SIZE + len(self.data) + 4

    def encode(self) -> bytes:
        ts = self.timestamp
        header = (
            bytes((self.tag_type,))
            + len(self.data).to_bytes(3, "big")
            + (ts & 0xFFFFFF).to_bytes(3, "big")
            + bytes((ts >> 24,))
            + self.stream_id.to_bytes(3, "big")
        )
        return header + self.data + (TAG_HEADER_SIZE + len(self.data)).to_bytes(4, "big")

    def with_timestamp(self, ts: int) -> FlvTag:
        return replace(self, timestamp=ts)


def encode_tags(header: FlvHeader | None, tags: Iterable[FlvTag]) -> bytes:
    """A whole FLV stream (``header`` None: a bare run of tags, as cut from mid-stream)."""
    parts = [] if header is None else [header.encode()]
    parts.extend(tag.encode() for tag in tags)
    return b"".join(parts)
