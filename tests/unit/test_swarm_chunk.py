"""Chunking a real FLV, the signed wire form, verification and reassembly."""

from __future__ import annotations

import dataclasses
import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xp2p.flv import FlvHeader, FlvReader, FlvTag, encode_tags, starts_gop
from xp2p.swarm import (
    Chunk,
    Chunker,
    ChunkFormatError,
    ChunkSigner,
    InitChunk,
    StreamAssembler,
    decode_item,
    encode_item,
    verify,
)
from xp2p.swarm import protocol as proto
from xp2p.swarm.wire import ChunkProof

STREAM = 0x1234_5678_9ABC


@functools.cache
def source_flv() -> bytes:
    from xp2p.media import TestPatternConfig, make_test_flv

    # GOP of 20 frames at 25 fps: a keyframe every 0.8 s, so GOP cuts and time cuts both occur.
    return make_test_flv(3.5, TestPatternConfig(width=160, height=120, gop=20))


def cut(data: bytes, step: int = 777, **kwargs: int) -> list[InitChunk | Chunk]:
    chunker = Chunker(STREAM, **kwargs)
    out: list[InitChunk | Chunk] = []
    for i in range(0, len(data), step):
        out += chunker.feed(data[i : i + step])
    return out + chunker.flush()


def source_tags(data: bytes) -> tuple[FlvHeader, list[FlvTag]]:
    items = FlvReader().feed(data)
    header = items[0]
    assert isinstance(header, FlvHeader)
    return header, [t for t in items[1:] if isinstance(t, FlvTag)]


def test_chunks_are_whole_tags_cut_before_every_keyframe() -> None:
    data = source_flv()
    items = cut(data)
    assert isinstance(items[0], InitChunk)
    chunks = [c for c in items if isinstance(c, Chunk)]
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    _, tags = source_tags(data)
    media = [t for t in tags if not (t.is_metadata or t.is_sequence_header)]
    # Every media tag lands in exactly one chunk, in order.
    assert [t for c in chunks for t in c.tags()] == media
    for c in chunks:
        first = c.tags()
        assert c.keyframe_start == starts_gop(first[0])
        assert not any(starts_gop(t) for t in first[1:])  # a keyframe always starts a chunk
        assert c.duration_ms <= 330 + 45  # the target plus at most one frame interval
    assert sum(c.keyframe_start for c in chunks) == sum(starts_gop(t) for t in media) >= 4
    init = items[0]
    assert [t.is_metadata or t.is_sequence_header for t in init.tags()] == [True] * 3


def test_any_split_gives_the_same_chunks() -> None:
    data = source_flv()
    assert cut(data, 1) == cut(data, 4096) == cut(data, len(data))


def test_a_new_sequence_header_makes_a_new_init_chunk() -> None:
    header, tags = source_tags(source_flv())
    video_sh = next(t for t in tags if t.is_video and t.is_sequence_header)
    changed = dataclasses.replace(video_sh, data=video_sh.data + b"\x00", timestamp=1000)
    at = next(i for i, t in enumerate(tags) if starts_gop(t) and t.timestamp >= 1000)
    stream = encode_tags(header, [*tags[:at], video_sh, changed, *tags[at:]])
    items = cut(stream)
    inits = [i for i in items if isinstance(i, InitChunk)]
    assert [i.init_id for i in inits] == [0, 1]  # the repeat of the old header changed nothing
    after = [c for c in items if isinstance(c, Chunk) and c.init_id == 1]
    assert after and after[0].keyframe_start


def test_reassembly_is_byte_exact_from_the_first_keyframe() -> None:
    data = source_flv()
    items = cut(data)
    assembler = StreamAssembler(STREAM)
    out = b""
    for item in items:
        if isinstance(item, InitChunk):
            assembler.add_init(item)
        else:
            out += assembler.push(item)
    assert out == data  # the test pattern starts with a keyframe after its headers
    assert assembler.stalls == assembler.skipped == 0


def test_joining_mid_stream_and_a_gap_resume_at_a_keyframe() -> None:
    data = source_flv()
    header, _ = source_tags(data)
    items = cut(data)
    init = items[0]
    assert isinstance(init, InitChunk)
    chunks = [c for c in items if isinstance(c, Chunk)]
    keys = [c.seq for c in chunks if c.keyframe_start]
    assembler = StreamAssembler(STREAM)
    assembler.add_init(init)
    start = keys[1]
    # Not a keyframe chunk: nothing decodable yet.
    assert assembler.push(chunks[start - 1]) == b""
    out = b"".join(assembler.push(c) for c in chunks[start : keys[2] + 1])
    expected_tags = init.tags() + [t for c in chunks[start : keys[2] + 1] for t in c.tags()]
    assert out == encode_tags(header, expected_tags)
    # A gap: chunks after it are held back until the next keyframe chunk.
    assert assembler.push(chunks[keys[2] + 2]) == b""
    assert assembler.push(chunks[keys[3]]) == chunks[keys[3]].payload
    assert assembler.stalls == 1 and assembler.skipped == keys[3] - keys[2] - 1
    # Replays and duplicates of old chunks are dropped.
    assert assembler.push(chunks[start]) == b""
    assert assembler.dropped == 1
    # The whole output is one valid FLV stream.
    reader = FlvReader(reject_unknown=True)
    reader.feed(out + chunks[keys[3]].payload)
    reader.close()


def test_signed_items_round_trip_and_verify() -> None:
    signer = ChunkSigner.generate()
    for item in cut(source_flv())[:6]:
        proof = signer.sign(item)
        wire = encode_item(item, proof)
        back, back_proof = decode_item(wire)
        assert back == item and back_proof == proof
        assert verify(back, back_proof, signer.public_key)


def test_tampered_moved_or_foreign_chunks_fail_verification() -> None:
    signer = ChunkSigner.generate()
    chunk = next(c for c in cut(source_flv()) if isinstance(c, Chunk) and c.seq == 3)
    proof = signer.sign(chunk)
    flipped = bytearray(chunk.payload)
    flipped[len(flipped) // 2] ^= 1
    for forged in (
        dataclasses.replace(chunk, payload=bytes(flipped)),
        dataclasses.replace(chunk, payload=chunk.payload[:-1]),  # truncated
        dataclasses.replace(chunk, seq=7),  # replayed as another chunk (reordered)
        dataclasses.replace(chunk, stream_id=STREAM + 1),  # replayed into another room
        dataclasses.replace(chunk, keyframe_start=not chunk.keyframe_start),
    ):
        assert not verify(forged, proof, signer.public_key)
    assert not verify(chunk, proof, ChunkSigner.generate().public_key)
    assert not verify(chunk, ChunkProof(b"\x00" * 64), signer.public_key)
    assert not verify(chunk, ChunkProof(proof.signature[:10]), signer.public_key)
    assert not verify(chunk, proof, b"not a key")


def test_wire_parser_names_what_is_wrong() -> None:
    signer = ChunkSigner.generate()
    chunk = Chunk(STREAM, 5, 0, 1000, 330, True, b"x" * 100)
    wire = encode_item(chunk, signer.sign(chunk))
    cases = {
        wire[:3]: "shorter than its prefix",
        b"XX" + wire[2:]: "bad magic",
        wire[:2] + b"\x02" + wire[3:]: "unsupported chunk format version",
        wire[:3] + b"\x09" + wire[4:]: "unknown item kind",
        wire[:20]: "truncated chunk header",
        wire[:-66]: "truncated proof header",
        wire[:-10]: "truncated proof",
        wire + b"\x00": "after the proof",
    }
    for data, message in cases.items():
        with pytest.raises(ChunkFormatError, match=message):
            decode_item(data)
    with pytest.raises(ChunkFormatError, match="over the limit"):
        decode_item(wire, max_payload=99)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 199), st.binary(max_size=8))
def test_wire_parser_fuzz(noise: bytes, at: int, insert: bytes) -> None:
    chunk = Chunk(STREAM, 5, 0, 1000, 330, True, b"payload")
    wire = encode_item(chunk, ChunkProof(b"s" * 64))
    for data in (noise, wire[:at] + insert + wire[at:], wire[:at] + noise):
        try:
            item, proof = decode_item(data)
        except ChunkFormatError:
            continue
        assert encode_item(item, proof) == data  # whatever parses is canonical


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_protocol_parser_fuzz(data: bytes) -> None:
    try:
        message = proto.decode(data)
    except proto.ProtocolError:
        return
    assert proto.encode(message) == data


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 50))
def test_message_reader_any_split(noise: bytes, step: int) -> None:
    messages: list[proto.Message] = [
        proto.Hello(STREAM, "peer-a", True),
        proto.Bitfield.of(100, {100, 101, 107, 400}),
        proto.Have(108),
        proto.Request(108),
        proto.Cancel(108),
        proto.ChunkData(108, b"wire bytes"),
        proto.Busy(108, 500),
        proto.Neighbours(("a", "bb", "ccc")),
    ]
    stream = b"".join(proto.frame(m) for m in messages)
    reader = proto.MessageReader()
    got: list[proto.Message] = []
    for i in range(0, len(stream), step):
        got += reader.feed(stream[i : i + step])
    assert got == messages
    assert proto.Bitfield.of(100, {100, 101, 107, 400}).seqs() == [100, 101, 107]
    try:
        proto.MessageReader().feed(noise)
    except proto.ProtocolError:
        pass


def test_protocol_refuses_oversize() -> None:
    with pytest.raises(proto.ProtocolError, match="frame of"):
        proto.MessageReader(max_frame=100).feed(b"\x00\x00\x01\x00")
    with pytest.raises(proto.ProtocolError, match="over 256 bits"):
        proto.decode(b"\x02" + (0).to_bytes(8, "big") + (33).to_bytes(2, "big") + b"\x00" * 33)
    with pytest.raises(proto.ProtocolError, match="at most 16"):
        proto.decode(b"\x08\x11")
    with pytest.raises(ValueError):
        proto.encode(proto.Neighbours(tuple(str(i) for i in range(17))))
