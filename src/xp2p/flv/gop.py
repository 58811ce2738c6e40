"""What a viewer joining a live stream needs to show a picture at once."""

from __future__ import annotations

from .constants import AvcPacketType, ExVideoPacketType, VideoCodec
from .header import FlvHeader
from .tag import FlvTag

_CODED_FRAMES = (ExVideoPacketType.CODED_FRAMES, ExVideoPacketType.CODED_FRAMES_X)


def starts_gop(tag: FlvTag) -> bool:
    """A keyframe picture; not the sequence header or end-of-sequence marker that share its
    frame type."""
    if not (tag.is_video and tag.is_keyframe):
        return False
    data = tag.data
    if tag.is_enhanced:
        return (data[0] & 0x0F) in _CODED_FRAMES
    if tag.video_codec in (VideoCodec.AVC, VideoCodec.HEVC):
        return len(data) >= 2 and data[1] == AvcPacketType.NALU
    return True


class GopCache:
    """Keeps onMetaData, the sequence headers and the tags of the current group of pictures.

    ``snapshot()`` is always decodable from its first frame: the cached GOP starts with a
    video keyframe or is empty. A GOP that outgrows ``max_bytes`` (a camera with a very long
    keyframe interval) is dropped whole and caching restarts at the next keyframe, because a
    GOP with its head cut off cannot be decoded.
    """

    def __init__(self, max_bytes: int = 8 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._metadata: FlvTag | None = None
        self._video_header: FlvTag | None = None
        self._audio_header: FlvTag | None = None
        self._gop: list[FlvTag] = []
        self._gop_bytes = 0
        self._has_audio = False
        self._has_video = False

    @property
    def header(self) -> FlvHeader:
        return FlvHeader(has_audio=self._has_audio, has_video=self._has_video)

    @property
    def has_keyframe(self) -> bool:
        return bool(self._gop)

    def add(self, tag: FlvTag) -> None:
        if tag.is_video:
            self._has_video = True
        elif tag.is_audio:
            self._has_audio = True

        if tag.is_metadata:
            self._metadata = tag
            return
        if tag.is_sequence_header:
            previous = self._video_header if tag.is_video else self._audio_header
            # Frames already cached were coded against the old configuration; pairing them
            # with the new one would hand viewers undecodable data. Repeats are harmless.
            if previous is not None and previous.data != tag.data:
                self._drop_gop()
            if tag.is_video:
                self._video_header = tag
            else:
                self._audio_header = tag
            return
        if starts_gop(tag):
            self._gop = [tag]
            self._gop_bytes = tag.size
        elif self._gop:
            self._gop.append(tag)
            self._gop_bytes += tag.size
        else:
            return  # no keyframe yet: nothing a new viewer could decode
        if self._gop_bytes > self.max_bytes:
            self._drop_gop()

    def sequence_headers(self) -> list[FlvTag]:
        return [t for t in (self._video_header, self._audio_header) if t is not None]

    def snapshot(self) -> list[FlvTag]:
        head = [] if self._metadata is None else [self._metadata]
        return head + self.sequence_headers() + list(self._gop)

    def _drop_gop(self) -> None:
        self._gop = []
        self._gop_bytes = 0
