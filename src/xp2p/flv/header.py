"""The 9-byte FLV file header."""

from __future__ import annotations

from dataclasses import dataclass

from .constants import FILE_HEADER_SIZE

SIGNATURE = b"FLV"
VERSION = 1
FLAG_AUDIO = 0x04
FLAG_VIDEO = 0x01


@dataclass(frozen=True, slots=True)
class FlvHeader:
    has_audio: bool = True
    has_video: bool = True

    @property
    def flags(self) -> int:
        return (FLAG_AUDIO if self.has_audio else 0) | (FLAG_VIDEO if self.has_video else 0)

    def encode(self) -> bytes:
        """The header followed by PreviousTagSize0, i.e. everything before the first tag."""
        return (
            SIGNATURE
            + bytes((VERSION, self.flags))
            + FILE_HEADER_SIZE.to_bytes(4, "big")
            + b"\x00\x00\x00\x00"
        )

    @classmethod
    def from_flags(cls, flags: int) -> FlvHeader:
        return cls(has_audio=bool(flags & FLAG_AUDIO), has_video=bool(flags & FLAG_VIDEO))
