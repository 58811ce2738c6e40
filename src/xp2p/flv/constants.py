"""Numbers from the FLV specification (Adobe FLV v10.1, annex E) and its extensions."""

from __future__ import annotations

from enum import IntEnum


class TagType(IntEnum):
    AUDIO = 8
    VIDEO = 9
    SCRIPT = 18


class VideoCodec(IntEnum):
    SORENSON_H263 = 2
    SCREEN_VIDEO = 3
    VP6 = 4
    VP6_ALPHA = 5
    SCREEN_VIDEO_2 = 6
    AVC = 7
    # Not in Adobe's spec: the id Chinese CDNs (and most IoT cameras) use for H.265 in
    # "legacy" FLV, as opposed to Enhanced RTMP's FourCC "hvc1".
    HEVC = 12


class SoundFormat(IntEnum):
    LINEAR_PCM_PLATFORM_ENDIAN = 0
    ADPCM = 1
    MP3 = 2
    LINEAR_PCM_LE = 3
    NELLYMOSER_16K_MONO = 4
    NELLYMOSER_8K_MONO = 5
    NELLYMOSER = 6
    G711_ALAW = 7
    G711_MULAW = 8
    EX_HEADER = 9  # Enhanced RTMP; reserved in the original spec
    AAC = 10
    SPEEX = 11
    MP3_8K = 14
    DEVICE_SPECIFIC = 15


class VideoFrameType(IntEnum):
    KEY = 1
    INTER = 2
    DISPOSABLE_INTER = 3
    GENERATED_KEY = 4
    COMMAND = 5


class AvcPacketType(IntEnum):
    """Second byte of an AVC or legacy-HEVC video tag (AACPacketType uses 0 and 1 alike)."""

    SEQUENCE_HEADER = 0
    NALU = 1
    END_OF_SEQUENCE = 2


class ExVideoPacketType(IntEnum):
    """Low nibble of the first byte of an Enhanced RTMP video tag (IsExHeader bit set)."""

    SEQUENCE_START = 0
    CODED_FRAMES = 1
    SEQUENCE_END = 2
    CODED_FRAMES_X = 3
    METADATA = 4
    MPEG2TS_SEQUENCE_START = 5
    MULTITRACK = 6


# FourCCs of Enhanced RTMP mapped to the legacy codec id that means the same codec.
FOURCC_TO_CODEC: dict[bytes, VideoCodec] = {b"avc1": VideoCodec.AVC, b"hvc1": VideoCodec.HEVC}

TAG_HEADER_SIZE = 11
PREVIOUS_TAG_SIZE = 4
FILE_HEADER_SIZE = 9
MAX_DATA_SIZE = 0xFFFFFF
MAX_TIMESTAMP = 0xFFFFFFFF
