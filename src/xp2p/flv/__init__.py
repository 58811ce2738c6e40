"""FLV: an incremental sans-IO reader, a writer, codec header helpers and a GOP cache.

No I/O and no clock here: bytes in, frozen dataclasses out (and back), so the parser can be
fuzzed and everything above it tested without sockets.
"""

from __future__ import annotations

from .constants import (
    AvcPacketType,
    ExVideoPacketType,
    SoundFormat,
    TagType,
    VideoCodec,
    VideoFrameType,
)
from .errors import FlvError
from .gop import GopCache, starts_gop
from .header import FlvHeader
from .hevc import hevc_nal_type, hvcc_nal_units, split_nal_units, to_legacy_hevc
from .reader import FlvReader
from .tag import FlvTag, encode_tags

__all__ = [
    "AvcPacketType",
    "ExVideoPacketType",
    "FlvError",
    "FlvHeader",
    "FlvReader",
    "FlvTag",
    "GopCache",
    "SoundFormat",
    "TagType",
    "VideoCodec",
    "VideoFrameType",
    "encode_tags",
    "hevc_nal_type",
    "hvcc_nal_units",
    "split_nal_units",
    "starts_gop",
    "to_legacy_hevc",
]
