"""The FLV reader, fed a stream split anywhere: FlvError is the only way it may refuse.

Also what a relay does with each tag it got (the media properties, the GOP cache, the HEVC
rewrite) and the edge's Chunker over the same bytes (the edge pulls any http(s) FLV URL a
viewer names), and two of the reader's promises: what it parsed re-encodes to the bytes it
consumed, and it never holds more than one item's worth of input.
"""

from __future__ import annotations

import atheris
import harness

with atheris.instrument_imports(include=["xp2p.flv", "xp2p.swarm.chunk"]):
    from xp2p.flv import FlvError, FlvHeader, FlvReader, FlvTag, GopCache, to_legacy_hevc
    from xp2p.flv.hevc import hvcc_nal_units, split_nal_units
    from xp2p.swarm.chunk import Chunker

#: Small enough that the size limit is reached, big enough for real tags.
_MAX_TAG = 4096


def _read(stream: list[bytes], *, expect_header: bool) -> list[FlvHeader | FlvTag]:
    reader = FlvReader(expect_header=expect_header, max_tag_size=_MAX_TAG)
    items: list[FlvHeader | FlvTag] = []
    consumed = b""
    try:
        for piece in stream:
            try:
                got = reader.feed(piece)
            finally:
                consumed += piece
            items += got
            assert reader.buffered <= _MAX_TAG + 15, reader.buffered
        reader.close()
    except FlvError as exc:
        items += exc.items
        assert reader.failed
        try:
            reader.feed(b"")
        except FlvError as again:
            assert again.message == exc.message, (again, exc)
        else:
            raise AssertionError("a failed reader accepted more input") from exc
        return items
    if not expect_header:
        # A bare run of tags has nothing to skip: it is exactly its tags, re-encoded.
        encoded = b"".join(i.encode() for i in items)
        assert encoded == consumed[: reader.offset], "tags do not re-encode to their bytes"
    return items


def _relay(items: list[FlvHeader | FlvTag]) -> None:
    cache = GopCache(max_bytes=16 * 1024)
    for item in items:
        if not isinstance(item, FlvTag):
            continue
        media = (item.is_keyframe, item.video_codec, item.sound_format, item.is_sequence_header)
        assert item.is_keyframe == (item.frame_type == 1), media
        cache.add(item)
        to_legacy_hevc(item)
        try:
            if item.is_sequence_header:
                hvcc_nal_units(item.data[5:])
            elif item.is_video and len(item.data) > 5:
                split_nal_units(item.data[5:])
        except FlvError:
            pass
    cache.snapshot()


def _chunk(stream: list[bytes]) -> None:
    chunker = Chunker(1, target_ms=100, max_chunk_bytes=8 * 1024)
    try:
        for piece in stream:
            chunker.feed(piece)
        chunker.flush()
    except FlvError:
        pass


def TestOneInput(data: bytes) -> None:
    stream = harness.pieces(data)
    expect_header = not data[:1] or data[0] < 0x80  # the bound byte's top bit: bare tags
    items = _read(stream, expect_header=expect_header)
    _relay(items)
    if expect_header:
        _chunk(stream)


if __name__ == "__main__":
    harness.main(TestOneInput)
