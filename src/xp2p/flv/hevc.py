"""H.265 in FLV: Enhanced RTMP ("hvc1") to the legacy codec id 12 that IoT players expect.

FFmpeg >= 6 muxes HEVC into FLV the Enhanced RTMP way (IsExHeader bit, FourCC "hvc1").
Cameras, CDNs and the players built for them use the older, unofficial codec id 12 with the
AVC tag layout (packet type, composition time, then an HEVCDecoderConfigurationRecord or
length-prefixed NAL units). The payloads are identical; only the few header bytes differ, so
converting is a header rewrite, not a re-mux.
"""

from __future__ import annotations

import struct

from .constants import AvcPacketType, ExVideoPacketType, VideoCodec
from .errors import FlvError
from .tag import FlvTag

_HVC1 = b"hvc1"
_HVC1_AS_NUMBER = struct.pack(">d", float(int.from_bytes(_HVC1, "big")))
_VIDEOCODECID_KEY = b"\x00\x0cvideocodecid\x00"  # AMF0 key "videocodecid" + number marker


def legacy_video_header(frame_type: int, packet_type: int, composition_time: int = 0) -> bytes:
    """The 5 bytes before the payload of a codec-id-12 tag (the same layout as AVC)."""
    return bytes(((frame_type << 4) | VideoCodec.HEVC, packet_type)) + (
        composition_time & 0xFFFFFF
    ).to_bytes(3, "big")


def to_legacy_hevc(tag: FlvTag) -> FlvTag | None:
    """Rewrite an Enhanced RTMP "hvc1" tag as codec id 12; other tags pass unchanged.

    Returns None for tags that legacy FLV cannot carry (HDR metadata, multitrack), which a
    legacy decoder would misread as frames. onMetaData gets its videocodecid patched too.
    """
    if tag.is_script:
        return _patch_metadata(tag)
    if not tag.is_enhanced or tag.data[1:5] != _HVC1:
        return tag
    data = tag.data
    frame_type = (data[0] >> 4) & 0x07
    packet_type = data[0] & 0x0F
    if packet_type == ExVideoPacketType.SEQUENCE_START:
        body = legacy_video_header(frame_type, AvcPacketType.SEQUENCE_HEADER) + data[5:]
    elif packet_type == ExVideoPacketType.CODED_FRAMES:
        if len(data) < 8:
            return None
        cts = int.from_bytes(data[5:8], "big", signed=True)
        body = legacy_video_header(frame_type, AvcPacketType.NALU, cts) + data[8:]
    elif packet_type == ExVideoPacketType.CODED_FRAMES_X:
        body = legacy_video_header(frame_type, AvcPacketType.NALU) + data[5:]
    elif packet_type == ExVideoPacketType.SEQUENCE_END:
        body = legacy_video_header(frame_type, AvcPacketType.END_OF_SEQUENCE)
    else:
        return None
    return FlvTag(tag.tag_type, tag.timestamp, body, tag.stream_id)


def _patch_metadata(tag: FlvTag) -> FlvTag:
    # A same-length byte patch rather than an AMF0 round trip: nothing else in the
    # metadata changes, and the record keeps every field the muxer wrote.
    at = tag.data.find(_VIDEOCODECID_KEY)
    if at < 0:
        return tag
    start = at + len(_VIDEOCODECID_KEY)
    if tag.data[start : start + 8] != _HVC1_AS_NUMBER:
        return tag
    data = tag.data[:start] + struct.pack(">d", float(VideoCodec.HEVC)) + tag.data[start + 8 :]
    return FlvTag(tag.tag_type, tag.timestamp, data, tag.stream_id)


def hvcc_nal_units(record: bytes) -> tuple[int, list[bytes]]:
    """Parse an HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 §8.3.3).

    Returns (NAL length size in bytes, the parameter-set NAL units: VPS, SPS, PPS, SEI...).
    Offsets in errors are relative to the record.
    """
    if len(record) < 23:
        raise FlvError(f"HEVCDecoderConfigurationRecord of {len(record)} bytes is too short", 0)
    if record[0] != 1:
        raise FlvError(f"HEVC configurationVersion {record[0]}, expected 1", 0)
    length_size = (record[21] & 0x03) + 1
    pos = 23
    nals: list[bytes] = []
    for _ in range(record[22]):
        if pos + 3 > len(record):
            raise FlvError("HEVC parameter set array truncated", pos)
        count = int.from_bytes(record[pos + 1 : pos + 3], "big")
        pos += 3
        for _ in range(count):
            if pos + 2 > len(record):
                raise FlvError("HEVC parameter set length truncated", pos)
            size = int.from_bytes(record[pos : pos + 2], "big")
            if pos + 2 + size > len(record):
                raise FlvError("HEVC parameter set truncated", pos)
            nals.append(record[pos + 2 : pos + 2 + size])
            pos += 2 + size
    return length_size, nals


def split_nal_units(payload: bytes, length_size: int = 4) -> list[bytes]:
    """Split length-prefixed NAL units (the AVCC/HVCC framing FLV uses)."""
    nals: list[bytes] = []
    pos = 0
    while pos < len(payload):
        if pos + length_size > len(payload):
            raise FlvError("NAL unit length truncated", pos)
        size = int.from_bytes(payload[pos : pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > len(payload):
            raise FlvError(f"NAL unit of {size} bytes does not fit", pos - length_size)
        nals.append(payload[pos : pos + size])
        pos += size
    return nals


def hevc_nal_type(nal: bytes) -> int:
    """nal_unit_type from the 2-byte HEVC NAL header (32 VPS, 33 SPS, 34 PPS, 16-21 IRAP)."""
    return (nal[0] >> 1) & 0x3F
