"""PyAV's FLV muxer writing to memory, read back with our FlvReader.

Letting FFmpeg mux means the tags are exactly what ffmpeg would write (sequence headers from
extradata, composition times, onMetaData); reading them back with FlvReader turns its bytes
into FlvTag objects without a second FLV writer to keep in step.
"""

from __future__ import annotations

from typing import Any

import av

from xp2p.flv import FlvHeader, FlvReader, FlvTag, starts_gop, to_legacy_hevc

# No seeking back to patch duration/filesize (the output is a stream), flush after every
# packet so tags leave as soon as they are muxed, and cap how long the interleaver waits for
# a quiet stream (1 s) so one silent track cannot hold the other back for the default 10 s.
_CONTAINER_OPTIONS = {
    "flvflags": "no_duration_filesize",
    "flush_packets": "1",
    "max_interleave_delta": "1000000",
}


class _ByteSink:
    """A write-only file object: PyAV sees no seek/tell and treats the output as a stream."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._chunks.append(chunk)
        return len(chunk)

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


class FlvCapture:
    """An in-memory FLV output container whose output comes back as headers and tags.

    Tags are normalised for live use: HEVC leaves as legacy codec id 12, and audio or video
    frames before the first video keyframe are dropped (an AAC priming frame muxed ahead of
    the keyframe would otherwise be the first media tag), so every consumer starts with
    onMetaData, the sequence headers and a keyframe.
    """

    def __init__(self) -> None:
        self._sink = _ByteSink()
        self.container: Any = av.open(
            self._sink, mode="w", format="flv", container_options=_CONTAINER_OPTIONS
        )
        self._reader = FlvReader()
        self._has_video = True
        self._seen_keyframe = False
        self._closed = False

    def mux(self, packet: Any) -> list[FlvHeader | FlvTag]:
        self.container.mux(packet)
        return self._drain()

    def close(self) -> list[FlvHeader | FlvTag]:
        """Flush the muxer (trailer included) and return the last items."""
        if not self._closed:
            self._closed = True
            self.container.close()
        return self._drain()

    def abort(self) -> None:
        """Release the container without caring about its output (error or stop paths)."""
        if not self._closed:
            self._closed = True
            try:
                self.container.close()
            except Exception:  # a half-written muxer may refuse its trailer; nothing to save
                pass

    def _drain(self) -> list[FlvHeader | FlvTag]:
        out: list[FlvHeader | FlvTag] = []
        for item in self._reader.feed(self._sink.take()):
            if isinstance(item, FlvHeader):
                self._has_video = item.has_video
                out.append(item)
                continue
            tag = to_legacy_hevc(item)
            if tag is None:
                continue
            if not self._seen_keyframe and self._has_video:
                if starts_gop(tag):
                    self._seen_keyframe = True
                elif (tag.is_video or tag.is_audio) and not tag.is_sequence_header:
                    continue
            out.append(tag)
        return out
