"""FLV reader, writer and GOP cache: round trips, chunking, corruption, and a real FFmpeg FLV."""

from __future__ import annotations

import io
import itertools
import struct

import av
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xp2p.flv import (
    FlvError,
    FlvHeader,
    FlvReader,
    FlvTag,
    GopCache,
    SoundFormat,
    TagType,
    VideoCodec,
    encode_tags,
    starts_gop,
    to_legacy_hevc,
)

HEADER_BYTES = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00"


# -- strategies ------------------------------------------------------------------------


@st.composite
def tags(draw: st.DrawFn, max_size: int = 64) -> FlvTag:
    tag_type = draw(st.one_of(st.sampled_from(list(TagType)), st.integers(0, 31)))
    # Audio and video tags need a body; the reader rejects empty ones.
    min_size = 1 if tag_type in (TagType.AUDIO, TagType.VIDEO) else 0
    return FlvTag(
        tag_type=int(tag_type),
        timestamp=draw(st.integers(0, 0xFFFFFFFF)),
        data=draw(st.binary(min_size=min_size, max_size=max_size)),
        stream_id=draw(st.integers(0, 0xFFFFFF)),
    )


headers = st.builds(FlvHeader, has_audio=st.booleans(), has_video=st.booleans())


@st.composite
def streams(draw: st.DrawFn) -> tuple[FlvHeader | None, list[FlvTag]]:
    return draw(st.one_of(st.none(), headers)), draw(st.lists(tags(), max_size=12))


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def read_all(data: bytes, chunks: list[bytes] | None = None, **kwargs: int | bool) -> list[object]:
    reader = FlvReader(**kwargs)  # type: ignore[arg-type]
    items: list[object] = []
    for chunk in chunks if chunks is not None else [data]:
        items.extend(reader.feed(chunk))
    return items


# -- round trips and chunking ------------------------------------------------------------


def test_header_encoding() -> None:
    assert FlvHeader().encode() == HEADER_BYTES
    assert FlvHeader(has_audio=False).encode()[4] == 0x01
    assert FlvHeader(has_video=False).encode()[4] == 0x04


def test_tag_encoding_uses_extended_timestamp_byte() -> None:
    raw = FlvTag(TagType.VIDEO, 0x12345678, b"\x17\x01", stream_id=0).encode()
    assert raw[:11] == bytes([9, 0, 0, 2, 0x34, 0x56, 0x78, 0x12, 0, 0, 0])
    assert raw[11:13] == b"\x17\x01"
    assert raw[13:] == (13).to_bytes(4, "big")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tag_type": 32},
        {"timestamp": -1},
        {"timestamp": 1 << 32},
        {"stream_id": 1 << 24},
        {"data": bytes(1 << 24)},
    ],
)
def test_tag_rejects_fields_that_do_not_fit(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {"tag_type": 9, "timestamp": 0, "data": b"\x17"}
    fields.update(kwargs)
    with pytest.raises(ValueError):
        FlvTag(**fields)  # type: ignore[arg-type]


@given(streams())
def test_round_trip(stream: tuple[FlvHeader | None, list[FlvTag]]) -> None:
    header, tag_list = stream
    data = encode_tags(header, tag_list)
    reader = FlvReader(expect_header=header is not None)
    items = reader.feed(data)
    assert items == ([header] if header else []) + tag_list
    assert reader.offset == len(data)
    assert reader.buffered == 0
    reader.close()


@given(streams(), st.lists(st.integers(min_value=0), max_size=20))
def test_any_chunking_gives_the_same_items(
    stream: tuple[FlvHeader | None, list[FlvTag]], cuts: list[int]
) -> None:
    header, tag_list = stream
    data = encode_tags(header, tag_list)
    expect_header = header is not None
    whole = read_all(data, expect_header=expect_header)
    assert read_all(data, split(data, cuts), expect_header=expect_header) == whole


def test_byte_at_a_time() -> None:
    tag_list = [FlvTag(9, 40 * i, b"\x27\x01\x00\x00\x00" + bytes(i)) for i in range(5)]
    data = encode_tags(FlvHeader(), tag_list)
    reader = FlvReader()
    items: list[object] = []
    for i in range(len(data)):
        items.extend(reader.feed(data[i : i + 1]))
        assert reader.offset + reader.buffered == i + 1
    assert items == [FlvHeader(), *tag_list]


def test_unknown_tag_types_are_kept_by_default() -> None:
    vendor = FlvTag(7, 0, b"private")
    assert FlvReader(expect_header=False).feed(vendor.encode()) == [vendor]


def test_with_timestamp() -> None:
    tag = FlvTag(8, 5, b"\xaf\x01x")
    assert tag.with_timestamp(99) == FlvTag(8, 99, b"\xaf\x01x")


# -- malformed input ---------------------------------------------------------------------

VIDEO = FlvTag(9, 0, b"\x17\x01\x00\x00\x00abc")
TAG_BYTES = VIDEO.encode()


@pytest.mark.parametrize(
    ("data", "kwargs", "message", "offset"),
    [
        (b"FLX\x01\x05\x00\x00\x00\x09", {}, "bad signature", 0),
        (b"GIF89a", {}, "bad signature", 0),
        (b"FLV\x02\x05\x00\x00\x00\x09", {}, "unsupported FLV version 2", 3),
        (b"FLV\x01\x05\x00\x00\x00\x05", {}, "header data offset 5 is less than 9", 5),
        (b"FLV\x01\x05\x7f\x00\x00\x00", {}, "implausibly large", 5),
        (HEADER_BYTES[:9] + b"\x00\x00\x00\x01", {}, "PreviousTagSize0 is 1", 9),
        (HEADER_BYTES + b"\x49" + TAG_BYTES[1:], {}, "reserved bits set", 13),
        (HEADER_BYTES + b"\x29" + TAG_BYTES[1:], {}, "filtered (encrypted)", 13),
        (HEADER_BYTES + b"\x09\x00\x10\x01", {"max_tag_size": 4096}, "exceeds max_tag_size", 14),
        (HEADER_BYTES + b"\x09\x00\x00\x00" + bytes(7) + b"\x00\x00\x00\x0b", {}, "video tag", 13),
        (HEADER_BYTES + b"\x08\x00\x00\x00" + bytes(7), {}, "audio tag with an empty body", 13),
        (
            HEADER_BYTES + TAG_BYTES[:-4] + b"\x00\x00\x00\x00",
            {},
            "PreviousTagSize 0 does not match tag size 19",
            13 + 19,
        ),
        (TAG_BYTES + b"\x88", {"expect_header": False}, "reserved bits set", len(TAG_BYTES)),
        (
            TAG_BYTES + FlvTag(7, 0, b"x").encode(),
            {"expect_header": False, "reject_unknown": True},
            "unknown tag type 7",
            len(TAG_BYTES),
        ),
        (
            TAG_BYTES[:-1] + b"\x14",
            {"expect_header": False},
            "PreviousTagSize 20 does not match",
            19,
        ),
    ],
)
def test_malformed(data: bytes, kwargs: dict[str, int], message: str, offset: int) -> None:
    reader = FlvReader(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(FlvError) as info:
        reader.feed(data)
    assert message in info.value.message
    assert info.value.offset == offset
    assert str(offset) in str(info.value)
    # The reader stays failed, with the same diagnosis.
    with pytest.raises(FlvError) as again:
        reader.feed(b"")
    assert (again.value.message, again.value.offset) == (info.value.message, offset)


def test_error_keeps_items_parsed_before_it() -> None:
    good = FlvTag(8, 0, b"\xaf\x01abc")
    with pytest.raises(FlvError) as info:
        FlvReader().feed(encode_tags(FlvHeader(), [good]) + b"\xff")
    assert info.value.items == [FlvHeader(), good]
    assert info.value.offset == 13 + good.size


def test_error_offsets_are_absolute_across_feeds() -> None:
    reader = FlvReader()
    reader.feed(HEADER_BYTES + TAG_BYTES)
    reader.feed(TAG_BYTES[:5])
    with pytest.raises(FlvError) as info:
        reader.feed(TAG_BYTES[5:-1] + b"\x00")
    assert info.value.offset == 13 + len(TAG_BYTES) + 19


def test_close_reports_truncation() -> None:
    reader = FlvReader()
    reader.feed(HEADER_BYTES + TAG_BYTES[:-2])
    with pytest.raises(FlvError, match="stream ends inside the tag") as info:
        reader.close()
    assert info.value.offset == 13
    complete = FlvReader()
    complete.feed(HEADER_BYTES + TAG_BYTES)
    complete.close()


def test_header_with_extra_bytes_is_skipped_without_buffering() -> None:
    header = b"FLV\x01\x05" + (9 + 1000).to_bytes(4, "big")
    reader = FlvReader()
    assert reader.feed(header) == [FlvHeader()]
    reader.feed(bytes(600))
    assert reader.buffered == 0
    assert reader.feed(bytes(400) + b"\x00\x00\x00\x00" + TAG_BYTES) == [VIDEO]


MUTATIONS = st.one_of(
    st.tuples(st.just("flip"), st.integers(0), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(0), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(0), st.integers(1, 8)),
)


def mutate(data: bytearray, mutation: tuple[str, int, int | bytes]) -> None:
    kind, where, arg = mutation
    if not data:
        return
    at = where % len(data)
    if isinstance(arg, bytes):
        data[at:at] = arg  # insert
    elif kind == "flip":
        data[at] ^= 1 << arg
    elif kind == "truncate":
        del data[at:]
    else:
        del data[at : at + arg]


def check_garbage(data: bytes, chunks: list[bytes], expect_header: bool) -> None:
    max_tag_size = 256
    reader = FlvReader(expect_header=expect_header, max_tag_size=max_tag_size)
    try:
        for chunk in chunks:
            reader.feed(chunk)
            assert reader.buffered <= max_tag_size + 15
        reader.close()
    except FlvError as exc:
        assert 0 <= exc.offset <= len(data)
        assert reader.failed
        with pytest.raises(FlvError):
            reader.feed(b"x")


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    streams(),
    st.lists(MUTATIONS, min_size=1, max_size=4),
    st.lists(st.integers(min_value=0), max_size=10),
)
def test_corruption_parses_or_raises_flv_error(
    stream: tuple[FlvHeader | None, list[FlvTag]],
    mutations: list[tuple[str, int, int | bytes]],
    cuts: list[int],
) -> None:
    header, tag_list = stream
    data = bytearray(encode_tags(header, tag_list))
    for mutation in mutations:
        mutate(data, mutation)
    check_garbage(bytes(data), split(bytes(data), cuts), header is not None)


@given(st.binary(max_size=2000), st.booleans(), st.lists(st.integers(min_value=0), max_size=10))
def test_random_bytes_parse_or_raise_flv_error(
    data: bytes, expect_header: bool, cuts: list[int]
) -> None:
    check_garbage(data, split(data, cuts), expect_header)


def test_buffering_is_bounded_by_max_tag_size() -> None:
    reader = FlvReader(expect_header=False, max_tag_size=1000)
    huge = FlvTag(9, 0, b"\x17" + bytes(999)).encode()
    for i in range(0, len(huge) - 1, 7):
        reader.feed(huge[i : i + 7])
        assert reader.buffered <= 1015
    with pytest.raises(FlvError, match="exceeds max_tag_size"):
        reader.feed(FlvTag(9, 0, bytes(1001)).encode())


# -- what a tag's first bytes say -----------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "codec", "key", "seq"),
    [
        (FlvTag(9, 0, b"\x17\x00\x00\x00\x00\x01"), VideoCodec.AVC, True, True),
        (FlvTag(9, 0, b"\x17\x01\x00\x00\x00"), VideoCodec.AVC, True, False),
        (FlvTag(9, 0, b"\x27\x01\x00\x00\x00"), VideoCodec.AVC, False, False),
        (FlvTag(9, 0, b"\x1c\x00\x00\x00\x00"), VideoCodec.HEVC, True, True),
        (FlvTag(9, 0, b"\x2c\x01\x00\x00\x00"), VideoCodec.HEVC, False, False),
        (FlvTag(9, 0, b"\x12"), 2, True, False),  # Sorenson H.263 has no sequence header
        (FlvTag(9, 0, b"\x90hvc1\x01"), VideoCodec.HEVC, True, True),  # Enhanced RTMP
        (FlvTag(9, 0, b"\xa1hvc1\x00\x00\x00"), VideoCodec.HEVC, False, False),
        (FlvTag(9, 0, b"\x90av01"), None, True, True),
        (FlvTag(8, 0, b"\xaf\x00\x12\x10"), None, False, True),
        (FlvTag(8, 0, b"\xaf\x01"), None, False, False),
        (FlvTag(8, 0, b"\x2f"), None, False, False),
        (FlvTag(18, 0, b"\x02\x00\x0aonMetaData"), None, False, False),
        (FlvTag(9, 0, b""), None, False, False),
    ],
)
def test_tag_properties(tag: FlvTag, codec: int | None, key: bool, seq: bool) -> None:
    assert tag.video_codec == codec
    assert tag.is_keyframe is key
    assert tag.is_sequence_header is seq


def test_kind_properties() -> None:
    audio, video, script = FlvTag(8, 0, b"\xaf\x01"), FlvTag(9, 0, b"\x27"), FlvTag(18, 0, b"")
    assert (audio.is_audio, audio.is_video, audio.is_script) == (True, False, False)
    assert (video.is_audio, video.is_video, video.is_script) == (False, True, False)
    assert (script.is_audio, script.is_video, script.is_script) == (False, False, True)
    assert audio.sound_format == SoundFormat.AAC
    assert not FlvTag(9, 0, b"\x17\x02\x00\x00\x00").is_sequence_header  # end of sequence
    assert not starts_gop(FlvTag(9, 0, b"\x17\x02\x00\x00\x00"))
    assert starts_gop(FlvTag(9, 0, b"\x17\x01\x00\x00\x00"))
    assert FlvTag(18, 0, b"\x02\x00\x0aonMetaData\x08").is_metadata


# -- Enhanced RTMP HEVC to codec id 12 ----------------------------------------------------


def test_enhanced_hevc_to_legacy() -> None:
    record = b"\x01" + bytes(22)
    seq = to_legacy_hevc(FlvTag(9, 0, b"\x90hvc1" + record))
    assert seq == FlvTag(9, 0, b"\x1c\x00\x00\x00\x00" + record)
    frame = to_legacy_hevc(FlvTag(9, 40, b"\xa1hvc1\xff\xff\xf6NAL"))
    assert frame == FlvTag(9, 40, b"\x2c\x01\xff\xff\xf6NAL")  # cts -10 kept
    framex = to_legacy_hevc(FlvTag(9, 80, b"\x93hvc1NAL"))
    assert framex == FlvTag(9, 80, b"\x1c\x01\x00\x00\x00NAL")
    assert to_legacy_hevc(FlvTag(9, 0, b"\x92hvc1")) == FlvTag(9, 0, b"\x1c\x02\x00\x00\x00")
    assert to_legacy_hevc(FlvTag(9, 0, b"\xd4hvc1\x02")) is None  # HDR metadata
    assert to_legacy_hevc(FlvTag(9, 0, b"\xa1hvc1\x00")) is None  # truncated
    untouched = [
        FlvTag(9, 0, b"\x17\x01\x00\x00\x00"),
        FlvTag(9, 0, b"\x90av01"),
        FlvTag(8, 0, b"x"),
    ]
    for tag in untouched:
        assert to_legacy_hevc(tag) is tag


def test_hevc_metadata_codec_id_is_patched() -> None:
    key = b"\x00\x0cvideocodecid\x00"
    fourcc = struct.pack(">d", float(int.from_bytes(b"hvc1", "big")))
    meta = FlvTag(
        18, 0, b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x01" + key + fourcc + b"\x00\x00\x09"
    )
    patched = to_legacy_hevc(meta)
    assert patched is not None
    assert patched.data == meta.data.replace(fourcc, struct.pack(">d", 12.0))
    plain = FlvTag(18, 0, meta.data.replace(fourcc, struct.pack(">d", 7.0)))
    assert to_legacy_hevc(plain) is plain


# -- GOP cache -------------------------------------------------------------------------------

META = FlvTag(18, 0, b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x00\x00\x00\x09")
AVC_SEQ = FlvTag(9, 0, b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f")
AAC_SEQ = FlvTag(8, 0, b"\xaf\x00\x12\x10")


def key(ts: int, size: int = 10) -> FlvTag:
    return FlvTag(9, ts, b"\x17\x01\x00\x00\x00" + bytes(size))


def inter(ts: int, size: int = 10) -> FlvTag:
    return FlvTag(9, ts, b"\x27\x01\x00\x00\x00" + bytes(size))


def audio(ts: int, size: int = 10) -> FlvTag:
    return FlvTag(8, ts, b"\xaf\x01" + bytes(size))


def test_gop_cache_snapshot_order() -> None:
    cache = GopCache()
    assert cache.snapshot() == [] and not cache.has_keyframe
    assert cache.header == FlvHeader(has_audio=False, has_video=False)
    for tag in (META, AVC_SEQ, AAC_SEQ, audio(0), inter(0), key(40), audio(41), inter(80)):
        cache.add(tag)
    assert cache.snapshot() == [META, AVC_SEQ, AAC_SEQ, key(40), audio(41), inter(80)]
    assert cache.sequence_headers() == [AVC_SEQ, AAC_SEQ]
    assert cache.header == FlvHeader()
    assert cache.has_keyframe
    cache.add(key(120))
    assert cache.snapshot() == [META, AVC_SEQ, AAC_SEQ, key(120)]


def test_gop_cache_drops_an_oversized_gop_until_the_next_keyframe() -> None:
    cache = GopCache(max_bytes=200)
    cache.add(AVC_SEQ)
    cache.add(key(0, 50))
    cache.add(inter(40, 50))
    assert cache.has_keyframe
    cache.add(inter(80, 100))  # now over 200 bytes
    assert not cache.has_keyframe
    cache.add(inter(120))
    assert cache.snapshot() == [AVC_SEQ]
    cache.add(key(160))
    assert cache.snapshot() == [AVC_SEQ, key(160)]


def test_gop_cache_new_sequence_header_invalidates_the_gop() -> None:
    cache = GopCache()
    for tag in (AVC_SEQ, key(0), inter(40)):
        cache.add(tag)
    cache.add(AVC_SEQ)  # an identical repeat keeps the GOP
    assert cache.has_keyframe
    changed = FlvTag(9, 80, AVC_SEQ.data + b"\x00")
    cache.add(changed)
    assert cache.snapshot() == [changed]


GOP_EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["key", "inter", "audio", "vseq", "aseq", "meta"]),
        st.integers(1, 120),
    ),
    max_size=60,
)


@given(GOP_EVENTS, st.integers(50, 600))
def test_gop_cache_invariants(events: list[tuple[str, int]], max_bytes: int) -> None:
    cache = GopCache(max_bytes=max_bytes)
    added: list[FlvTag] = []
    for ts, (kind, size) in enumerate(events):
        tag = {
            "key": key(ts, size),
            "inter": inter(ts, size),
            "audio": audio(ts, size),
            "vseq": FlvTag(9, ts, b"\x17\x00\x00\x00\x00" + bytes([size % 2])),
            "aseq": FlvTag(8, ts, b"\xaf\x00" + bytes([size % 2])),
            "meta": FlvTag(18, ts, META.data + bytes(size)),
        }[kind]
        cache.add(tag)
        added.append(tag)

    snap = cache.snapshot()
    headers_seen = [t for t in added if t.is_sequence_header]
    expected_head = [t for t in added if t.is_metadata][-1:]
    expected_head += [t for t in headers_seen if t.is_video][-1:]
    expected_head += [t for t in headers_seen if t.is_audio][-1:]
    assert snap[: len(expected_head)] == expected_head
    gop = snap[len(expected_head) :]
    assert sum(t.size for t in gop) <= max_bytes
    media = [t for t in added if not (t.is_sequence_header or t.is_metadata)]
    if gop:
        assert starts_gop(gop[0])
        assert not any(starts_gop(t) for t in gop[1:])
        assert media[-len(gop) :] == gop  # the tail of the stream, nothing skipped
    else:
        keys = [i for i, t in enumerate(media) if starts_gop(t)]
        if keys:
            tail = media[keys[-1] :]
            last_key = added.index(media[keys[-1]])
            # Empty only because it outgrew the limit or a header changed under it.
            changed = any(t.is_sequence_header for t in added[last_key:])
            assert changed or sum(t.size for t in tail) > max_bytes


# -- a real FLV from FFmpeg ---------------------------------------------------------------


def test_parse_real_ffmpeg_flv_and_decode_gop_snapshot() -> None:
    from xp2p.media import TestPatternConfig, make_test_flv

    config = TestPatternConfig(width=320, height=240, gop=10)
    data = make_test_flv(1.0, config)
    items = read_all(data, split(data, list(range(0, len(data), 997))))
    assert items[0] == FlvHeader(has_audio=True, has_video=True)
    tag_list = [t for t in items[1:] if isinstance(t, FlvTag)]
    assert len(tag_list) == len(items) - 1
    assert tag_list[0].is_metadata
    assert tag_list[1].video_codec == VideoCodec.AVC and tag_list[1].is_sequence_header
    assert tag_list[2].sound_format == SoundFormat.AAC and tag_list[2].is_sequence_header
    assert starts_gop(tag_list[3])
    video = [t for t in tag_list if t.is_video and not t.is_sequence_header]
    assert 24 <= len(video) <= 26
    assert sum(starts_gop(t) for t in video) in (3, 4)  # one every 10 frames

    cache = GopCache()
    for tag in tag_list[: len(tag_list) * 2 // 3]:
        cache.add(tag)
    snap = cache.snapshot()
    # A viewer given only the snapshot decodes every picture in it, starting with the first.
    with av.open(io.BytesIO(encode_tags(cache.header, snap)), format="flv") as container:
        frames = list(container.decode(video=0))
    gop_video = [t for t in snap if t.is_video and not t.is_sequence_header]
    assert len(frames) == len(gop_video)
    assert frames[0].key_frame
    assert (frames[0].width, frames[0].height) == (320, 240)
