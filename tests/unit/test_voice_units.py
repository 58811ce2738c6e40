"""Talk-back pieces without a link: the body rule, the intake, AAC, the queue, the sinks."""

from __future__ import annotations

import itertools
import logging
import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.voice import dominant_hz
from tests.support.waiting import wait_until
from xp2p.device.request import BadRequest
from xp2p.device.voice import TalkError, TalkFormat, TalkIntake, talk_format
from xp2p.device.voice_sink import DiscardSink, VoiceFiles, WavSink, wait_players
from xp2p.flv import FlvHeader, FlvTag, TagType
from xp2p.media.audio import (
    AacDecoder,
    AacEncoder,
    AudioError,
    PcmFormat,
    encode_aac_flv,
    file_pcm,
    tone_pcm,
)
from xp2p.viewer.voice import _Upload

MONO8K = PcmFormat(8000, 1)
TONE = tone_pcm(1000, 0.6)
TONE_FLV = encode_aac_flv(TONE)


# ---- the body rule -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "headers", "expected"),
    [
        ({}, {}, TalkFormat("", MONO8K)),
        ({"channel": "0"}, {"content-type": "application/octet-stream"}, TalkFormat("", MONO8K)),
        (
            {},
            {"content-type": "audio/pcm;rate=16000;channels=2"},
            TalkFormat("", PcmFormat(16000, 2)),
        ),
        ({}, {"content-type": "Audio/PCM; rate=48000"}, TalkFormat("", PcmFormat(48000, 1))),
        ({"calltype": "audio"}, {"content-type": "audio/pcm"}, TalkFormat("audio", None)),
        ({"calltype": "video"}, {}, TalkFormat("video", None)),
    ],
)
def test_talk_format_rule(
    params: dict[str, str], headers: dict[str, str], expected: TalkFormat
) -> None:
    assert talk_format(params, headers) == expected


@pytest.mark.parametrize(
    ("params", "headers", "word"),
    [
        ({"calltype": "pcm"}, {}, "calltype"),
        ({}, {"content-type": "audio/L16;rate=8000;channels=1"}, "s16le"),
        ({}, {"content-type": "audio/pcm;rate=4000"}, "sample rate"),
        ({}, {"content-type": "audio/pcm;channels=6"}, "channels"),
        ({}, {"content-type": "audio/pcm;rate=fast"}, "format"),
    ],
)
def test_talk_format_refusals(params: dict[str, str], headers: dict[str, str], word: str) -> None:
    with pytest.raises(BadRequest) as e:
        talk_format(params, headers)
    assert e.value.status == 400 and word in e.value.reason


# ---- intake ---------------------------------------------------------------------------------


def test_pcm_intake_passes_whole_samples_only() -> None:
    intake = TalkIntake(TalkFormat("", PcmFormat(8000, 2)))
    data = bytes(range(256)) * 4
    out = b"".join(intake.feed(data[i : i + 7]) for i in range(0, len(data), 7))
    assert out == data  # 1024 bytes = whole stereo frames
    assert intake.feed(b"\1\2\3") == b"" and intake.feed(b"\4") == b"\1\2\3\4"
    intake.finish()


def flv_pcm(pieces: list[bytes], calltype: str = "audio") -> bytes:
    intake = TalkIntake(TalkFormat(calltype, None))
    out = b"".join(intake.feed(piece) for piece in pieces)
    intake.finish()
    assert intake.format == MONO8K
    return out


WHOLE = flv_pcm([TONE_FLV])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(1, len(TONE_FLV) - 1), max_size=12))
def test_flv_intake_is_independent_of_chunking(cuts: list[int]) -> None:
    bounds = [0, *sorted(set(cuts)), len(TONE_FLV)]
    pieces = [TONE_FLV[a:b] for a, b in itertools.pairwise(bounds)]
    assert flv_pcm(pieces) == WHOLE


def test_flv_intake_decodes_the_tone() -> None:
    assert abs(MONO8K.seconds(len(WHOLE)) - 0.6) < 0.3
    assert abs(dominant_hz(WHOLE) - 1000) <= 20


def test_video_call_skips_video_and_script_tags() -> None:
    encoder = AacEncoder()
    audio = encoder.encode(TONE) + encoder.flush()
    video = FlvTag(TagType.VIDEO, 0, b"\x17\x01\x00\x00\x00" + b"\x00" * 100_000)
    script = FlvTag(TagType.SCRIPT, 0, b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x00")
    tags = [script, encoder.sequence_header, video, *audio]
    stream = FlvHeader(True, True).encode() + b"".join(t.encode() for t in tags)
    assert flv_pcm([stream], "video") == WHOLE
    with pytest.raises(TalkError):  # an audio call does not expect 100 kB tags
        flv_pcm([stream], "audio")


def tag_stream(*tags: FlvTag) -> bytes:
    return FlvHeader(True, False).encode() + b"".join(t.encode() for t in tags)


@pytest.mark.parametrize(
    ("stream", "word"),
    [
        (tag_stream(FlvTag(TagType.AUDIO, 0, b"\x2f\xff\xfb")), "sound format 2"),
        (tag_stream(FlvTag(TagType.AUDIO, 0, b"\xaf\x01\x21\x10")), "before the AAC sequence"),
        (tag_stream(FlvTag(TagType.AUDIO, 0, b"\xaf\x07")), "packet type"),
        (tag_stream(FlvTag(TagType.AUDIO, 0, b"\xaf")), "packet type"),
        (TONE_FLV[:-5], "ends inside"),
        (b"RIFF" + TONE_FLV, "signature"),
    ],
    ids=["mp3", "frame-first", "packet-type", "no-packet-type", "truncated", "not-flv"],
)
def test_flv_intake_errors_are_talk_errors_400(stream: bytes, word: str) -> None:
    intake = TalkIntake(TalkFormat("audio", None))
    with pytest.raises(TalkError) as e:
        intake.feed(stream)
        intake.finish()
    assert e.value.status == 400 and word in e.value.reason, e.value.reason


def test_undecodable_aac_frame_is_an_audio_error() -> None:
    decoder = AacDecoder()
    encoder = AacEncoder()
    assert decoder.decode(encoder.sequence_header) == b""
    assert decoder.decode(encoder.sequence_header) == b""  # a repeat changes nothing
    with pytest.raises(AudioError, match="undecodable"):
        decoder.decode(FlvTag(TagType.AUDIO, 0, b"\xaf\x01" + bytes(range(200))))


# ---- AAC ------------------------------------------------------------------------------------


def test_aac_encoder_tags_are_timed_by_frame_and_independent_of_chunking() -> None:
    whole = AacEncoder()
    tags = whole.encode(TONE) + whole.flush()
    assert [t.timestamp for t in tags] == [i * 128 for i in range(len(tags))]  # 1024 @ 8 kHz
    assert all(t.data[:2] == b"\xaf\x01" for t in tags)
    assert whole.sequence_header.is_sequence_header and whole.sequence_header.data[0] == 0xAF
    chunked = AacEncoder()
    pieces = [TONE[i : i + 333] for i in range(0, len(TONE), 333)]
    again = [t for piece in pieces for t in chunked.encode(piece)] + chunked.flush()
    assert again == tags


def test_file_pcm_resamples_any_file_to_8k_mono(tmp_path: Path) -> None:
    rate = 44100
    t = np.arange(int(rate * 1.5)) / rate
    left = (np.sin(2 * np.pi * 1000 * t) * 8000).astype("<i2")
    path = tmp_path / "stereo.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.column_stack([left, left]).tobytes())
    pcm = b"".join(file_pcm(str(path), MONO8K))
    assert abs(MONO8K.seconds(len(pcm)) - 1.5) < 0.05
    assert abs(dominant_hz(pcm) - 1000) <= 20
    with pytest.raises(AudioError, match="cannot open"):
        list(file_pcm(str(tmp_path / "missing.mp3")))
    silent_video = tmp_path / "nothing.txt"
    silent_video.write_text("not media")
    with pytest.raises(AudioError):
        list(file_pcm(str(silent_video)))


# ---- the viewer's queue ---------------------------------------------------------------------


async def test_upload_drops_oldest_frames_only_and_coalesces() -> None:
    upload = _Upload()
    upload.put(b"H" * 13)  # header: never dropped
    for i in range(10):
        upload.put(bytes([i]) * 100, timestamp=i * 500)
    assert upload.lag_ms() == 4500
    while upload.full(10_000, 2000):
        assert upload.drop_oldest()
    assert upload.lag_ms() == 2000 and upload.queued_bytes == 13 + 5 * 100
    upload.end()
    body = [chunk async for chunk in upload.body()]
    assert b"".join(body) == b"H" * 13 + b"".join(bytes([i]) * 100 for i in range(5, 10))
    assert len(body) == 1 and upload.sent == 513 and upload.queued_bytes == 0


# ---- sinks ----------------------------------------------------------------------------------


def wav_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.wav"))


def read_wav(path: Path) -> tuple[int, int, bytes]:
    with wave.open(str(path), "rb") as wav:
        return wav.getframerate(), wav.getnchannels(), wav.readframes(wav.getnframes())


def test_wav_sink_writes_a_playable_file(tmp_path: Path) -> None:
    sink = WavSink(tmp_path / "a.wav", 16000, 2)
    sink.write(b"\1\0\2\0" * 100)
    sink.close()
    sink.close()
    assert read_wav(tmp_path / "a.wav") == (16000, 2, b"\1\0\2\0" * 100)


def test_voice_files_names_one_file_per_session(tmp_path: Path) -> None:
    factory = VoiceFiles(tmp_path / "voice")
    sinks = [factory(3, 8000, 1) for _ in range(3)]
    for sink in sinks:
        sink.write(b"\0\0")
        sink.close()
    names = sorted(p.name for p in (tmp_path / "voice").iterdir())
    assert len(names) == 3 and all(n.startswith("voice-ch3-") and n.endswith(".wav") for n in names)
    assert isinstance(VoiceFiles(None)(0, 8000, 1), DiscardSink)
    keep_two = VoiceFiles(tmp_path / "voice", keep=2)
    keep_two(4, 8000, 1).close()
    assert len(wav_files(tmp_path / "voice")) == 2  # the newest two
    assert any(p.name.startswith("voice-ch4-") for p in wav_files(tmp_path / "voice"))


async def test_player_command_gets_the_pcm(tmp_path: Path) -> None:
    out = tmp_path / "played.raw"
    factory = VoiceFiles(
        tmp_path / "voice", player=("dd", "of=" + str(out), "status=none", "bs={rate}")
    )
    sink = factory(0, 8000, 1)
    sink.write(TONE[:8000])
    sink.write(TONE[8000:])
    sink.close()
    await wait_players(10)
    assert out.read_bytes() == TONE
    (wav,) = wav_files(tmp_path / "voice")
    assert read_wav(wav) == (8000, 1, TONE)


async def test_missing_player_is_logged_and_the_wav_still_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    factory = VoiceFiles(tmp_path, player=("/nonexistent/player", "-"))
    with caplog.at_level(logging.WARNING, "xp2p.device"):
        sink = factory(0, 8000, 1)
        # Written after the player failed to start: the pipe drops it, the WAV keeps it.
        await wait_until(lambda: "cannot start talk-back player" in caplog.text, what="log")
        sink.write(TONE)
        sink.close()
        await wait_players(10)
    assert "cannot start talk-back player /nonexistent/player" in caplog.text
    (wav,) = wav_files(tmp_path)
    assert read_wav(wav)[2] == TONE


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from([8, 8, 8, 9, 18]),
            st.one_of(  # raw AAC frames of random bytes reach FFmpeg's decoder
                st.binary(min_size=1, max_size=300),
                st.binary(max_size=300).map(lambda data: b"\xaf\x01" + data),
            ),
        ),
        max_size=8,
    ),
    st.booleans(),
)
def test_flv_intake_survives_random_tags(tags: list[tuple[int, bytes]], configured: bool) -> None:
    """Whatever a viewer sends inside well-formed FLV, the device gets PCM or a TalkError."""
    encoder = AacEncoder()
    first = [encoder.sequence_header] if configured else []
    body = [FlvTag(kind, 40 * i, data) for i, (kind, data) in enumerate(tags)]
    intake = TalkIntake(TalkFormat("audio", None))
    try:
        pcm = intake.feed(tag_stream(*first, *body))
        intake.finish()
    except TalkError as exc:
        assert exc.status == 400 and exc.reason.startswith("malformed talk-back")
    else:
        assert len(pcm) % 2 == 0


# ---- a session's bounds and the folder's budget (issue 10 item 8) ----------------------------


def test_session_budget_bounds_bytes_seconds_and_speed() -> None:
    from xp2p.device.voice import SessionBudget

    budget = SessionBudget(max_bytes=1000, max_seconds=10.0, max_speed=2.0, grace_seconds=1.0)
    budget.check_body(1000)
    with pytest.raises(TalkError) as e:
        budget.check_body(1001)
    assert (e.value.status, e.value.reason) == (413, "talk session too long: more than 1000 bytes")
    budget.check_audio(1.0, 0.0)  # the grace: a short burst is fine
    budget.check_audio(5.0, 2.0)  # 1 + 2 * 2 = 5 s allowed after 2 s
    with pytest.raises(TalkError) as e:
        budget.check_audio(5.1, 2.0)
    assert e.value.status == 429 and "faster than real time" in e.value.reason
    with pytest.raises(TalkError) as e:
        budget.check_audio(10.5, 100.0)
    assert e.value.status == 413 and "10 s of audio" in e.value.reason


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("voice_max_bytes", {"max_bytes": 0}),
        ("voice_max_seconds", {"max_seconds": 0.0}),
        ("voice_max_speed", {"max_speed": 0.5}),
        ("voice_rate_grace", {"grace_seconds": -1.0}),
    ],
)
def test_session_budget_names_the_bad_field(field: str, kwargs: dict[str, float]) -> None:
    from xp2p.device.voice import SessionBudget

    fields: dict[str, float] = {
        "max_bytes": 10,
        "max_seconds": 1.0,
        "max_speed": 2.0,
        "grace_seconds": 1.0,
    }
    fields.update(kwargs)
    with pytest.raises(ValueError, match=field):
        SessionBudget(int(fields["max_bytes"]), *list(fields.values())[1:])


def test_voice_files_prune_by_count_age_and_bytes(tmp_path: Path) -> None:
    import os
    import time

    folder = tmp_path / "voice"
    folder.mkdir()
    now = time.time()
    for n in range(6):
        path = folder / f"voice-ch0-2026010{n}-000000-000.wav"
        path.write_bytes(b"x" * 100)
        age = 10 * 86400 if n == 0 else 600 - n  # the first is ten days old
        os.utime(path, (now - age, now - age))
    (folder / "notes.txt").write_bytes(b"y" * 10_000)  # not ours: left alone
    # A 600 B budget less 250 B for the next session: the oldest go until 350 B remain.
    sink = VoiceFiles(folder, max_bytes=600, session_bytes=250, max_age=7 * 86400)
    sink(0, 8000, 1).close()
    left = sorted(p.name for p in folder.glob("voice-ch0-202601*.wav"))
    assert left == [f"voice-ch0-2026010{n}-000000-000.wav" for n in (3, 4, 5)]
    assert (folder / "notes.txt").exists()
