"""Talk-back end to end: a real cloud, device and viewers over real ICE + QUIC, real AAC.

The audio is a 1 kHz tone from FFmpeg's sine source; what the device's sink received is
checked independently (numpy FFT for the pitch, sample count for the duration, ffprobe for
the WAV file).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.stack import Stack
from tests.support.voice import dominant_hz, read_wav, wait_free, wait_heard, wav_files
from tests.support.waiting import wait_until
from xp2p import ErrorCode, XP2PError
from xp2p.device import DeviceAgent
from xp2p.device.voice_sink import VoiceFiles
from xp2p.link import Conditions, Link, Xp2pInfo, open_link
from xp2p.link.conditioner import attach
from xp2p.media.audio import AacEncoder, PcmFormat, encode_aac_flv, tone_pcm
from xp2p.viewer import P2PModule, StreamInfo
from xp2p.viewer import voice as viewer_voice
from xp2p.viewer.cloud_client import CloudClient
from xp2p.viewer.voice import VoicePause, VoiceRequestResult, VoiceResume

DEVICE = StreamInfo(product_id="DEMO", device_name="cam1")
FFPROBE = shutil.which("ffprobe")


class Events:
    def __init__(self) -> None:
        self.items: list[tuple[str, str, Any]] = []

    def __call__(self, event: str, subtype: str, detail: Any) -> None:
        self.items.append((event, subtype, detail))

    def voice(self, subtype: str) -> list[dict[str, Any]]:
        """The talk session's notifies of ``subtype`` (``close`` finds ``voice_close``)."""
        return [
            d
            for _e, s, d in self.items
            if s == f"voice_{subtype}" and isinstance(d, dict) and d.get("kind") == "voice"
        ]

    def subtypes(self) -> list[str]:
        return [s for e, s, _d in self.items if e == "notify"]

    def logs(self, level: str) -> list[str]:
        return [d for e, s, d in self.items if e == "log" and s == level]

    async def voice_closed(self, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not self.voice("close"):
            assert time.monotonic() < deadline, f"no voice close in {timeout} s: {self.items}"
            await asyncio.sleep(0.05)
        return self.voice("close")[0]


@pytest.fixture
async def talk_device(stack: Stack, tmp_path: Path) -> DeviceAgent:
    """The stack's device, restarted with the default WAV sink writing into tmp_path/voice."""
    await stack.device.close()
    device = DeviceAgent(stack.device_config(voice_sink=VoiceFiles(tmp_path / "voice")))
    stack.device = device
    await device.start()
    await device.wait_signed_in(10)
    return device


@pytest.fixture
async def fast_talk_device(stack: Stack, tmp_path: Path) -> DeviceAgent:
    """``talk_device`` that takes audio at any speed: for tests of the viewer's queue, which
    push faster than real time on purpose (the device's rate bound is in
    tests/security/test_device.py)."""
    await stack.device.close()
    device = DeviceAgent(
        stack.device_config(voice_sink=VoiceFiles(tmp_path / "voice"), voice_max_speed=1e6)
    )
    stack.device = device
    await device.start()
    await device.wait_signed_in(10)
    return device


async def pcm_chunks(pcm: bytes, size: int = 1600) -> AsyncIterator[bytes]:
    for offset in range(0, len(pcm), size):
        yield pcm[offset : offset + size]
        await asyncio.sleep(0)


def assert_tone(pcm: bytes, fmt: PcmFormat, seconds: float = 3.0) -> None:
    assert fmt == PcmFormat(8000, 1)
    assert abs(fmt.seconds(len(pcm)) - seconds) <= 0.5, fmt.seconds(len(pcm))
    assert abs(dominant_hz(pcm) - 1000) <= 20


# ---- the tone arrives ------------------------------------------------------------------------


async def test_pcm_tone_arrives_at_the_device_sink(
    talk_device: DeviceAgent, module: P2PModule, tmp_path: Path
) -> None:
    events = Events()
    await module.start_p2p_service("cam", DEVICE, msg_callback=events)
    tone = await asyncio.to_thread(tone_pcm, 1000, 3.0)
    await module.start_voice("cam", pcm_chunks(tone))
    assert talk_device.routes.state.talk is not None
    closed = await events.voice_closed()
    assert closed["ok"], closed
    assert closed["device_bytes"] == closed["bytes_sent"] == len(tone)
    assert [d["status"] for d in events.voice("parsed")] == [200]
    assert events.voice("success")
    # Voice has subtypes of its own: a seed-style msg_callback that ends the video on the
    # stream's close/eof/fail never takes the end of a talk for it.
    assert not {"request", "parsed", "close", "eof", "fail"} & set(events.subtypes())
    await wait_free(talk_device, 2)
    (path,) = wav_files(tmp_path / "voice")
    fmt, pcm = read_wav(path)
    assert pcm == tone  # raw PCM arrives byte for byte
    assert_tone(pcm, fmt)


async def test_aac_flv_tone_arrives_at_the_device_sink(
    talk_device: DeviceAgent, module: P2PModule, tmp_path: Path
) -> None:
    await module.start_p2p_service("cam", DEVICE)
    tone = await asyncio.to_thread(tone_pcm, 1000, 3.0)
    encoder = AacEncoder()
    tags = encoder.encode(tone) + encoder.flush()
    writer = await module.start_voice_data("cam")
    # As a pusher does: the header and sequence header, then one tag at a time, in real time.
    writer.add_chunk(encoder.header_bytes())
    started = time.monotonic()
    for tag in tags:
        await asyncio.sleep(max(0.0, started + tag.timestamp / 1000 - time.monotonic()))
        writer.add_chunk(tag.encode())
    result = await writer.close()
    assert result.ok, result
    assert result.dropped_tags == 0
    assert result.seconds is not None and abs(result.seconds - 3.0) <= 0.5
    await wait_free(talk_device, 2)
    (path,) = wav_files(tmp_path / "voice")
    fmt, pcm = read_wav(path)
    assert_tone(pcm, fmt)


@pytest.mark.skipif(FFPROBE is None, reason="ffprobe missing: scripts/setup.sh installs ffmpeg")
async def test_default_sink_is_a_wav_file_per_session_under_recordings(
    stack: Stack, tmp_path: Path
) -> None:
    await stack.device.close()
    stack.device = DeviceAgent(stack.device_config(recordings_dir=tmp_path))
    await stack.device.start()
    await stack.device.wait_signed_in(10)
    p2p = P2PModule()
    await p2p.init(stack.app_params)
    try:
        await p2p.start_p2p_service("cam", DEVICE)
        flv = await asyncio.to_thread(encode_aac_flv, await asyncio.to_thread(tone_pcm, 1000, 2))
        for _ in range(2):
            writer = await p2p.start_voice_data("cam", "channel=0&calltype=audio")
            await writer.write(flv)
            assert (await writer.close()).ok
    finally:
        await p2p.destroy()
    files = wav_files(tmp_path / "voice")
    assert len(files) == 2 and files[0].name.startswith("voice-ch0-")
    probe = await asyncio.to_thread(
        subprocess.run,
        [FFPROBE or "ffprobe", "-v", "error", "-show_streams", "-of", "json", str(files[0])],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    (stream,) = json.loads(probe.stdout)["streams"]
    assert stream["codec_name"] == "pcm_s16le"
    assert (stream["sample_rate"], stream["channels"]) == ("8000", 1)
    assert abs(float(stream["duration"]) - 2.0) <= 0.5
    _fmt, pcm = read_wav(files[1])
    assert abs(dominant_hz(pcm) - 1000) <= 20


async def test_custom_sink_factory_gets_channel_and_format(stack: Stack, module: P2PModule) -> None:
    calls: list[tuple[int, int, int]] = []
    received = bytearray()
    closed = asyncio.Event()

    class Sink:
        def write(self, pcm: bytes) -> None:
            received.extend(pcm)

        def close(self) -> None:
            closed.set()

    def factory(channel: int, sample_rate: int, channels: int) -> Sink:
        calls.append((channel, sample_rate, channels))
        return Sink()

    await stack.device.close()
    stack.device = DeviceAgent(stack.device_config(voice_sink=factory))
    await stack.device.start()
    await stack.device.wait_signed_in(10)
    events = Events()
    await module.start_p2p_service("cam", DEVICE, msg_callback=events)
    stereo = PcmFormat(16000, 2)
    tone = await asyncio.to_thread(tone_pcm, 500, 1.0, stereo)
    await module.start_voice("cam", pcm_chunks(tone, 999), sample_rate=16000, channels=2)
    assert (await events.voice_closed())["ok"]
    await asyncio.wait_for(closed.wait(), 2)
    assert calls == [(0, 16000, 2)]
    assert bytes(received) == tone


# ---- one session per device --------------------------------------------------------------------


async def test_second_session_is_busy_and_the_slot_frees_when_the_first_ends(
    talk_device: DeviceAgent, stack: Stack, module: P2PModule
) -> None:
    await module.start_p2p_service("cam", DEVICE)
    st_voice = "action=inner_define&channel=0&cmd=get_device_st&type=voice"
    assert (await module.send_command("cam", st_voice)).data[0]["status"] == "0"
    first = await module.start_voice_data("cam")
    assert talk_device.routes.state.talk is not None
    assert (await module.send_command("cam", st_voice)).data[0]["status"] == "1"  # busy
    with pytest.raises(XP2PError) as e:  # one per service
        await module.start_voice_data("cam")
    assert e.value.code == ErrorCode.VOICE_FAILED and "already" in e.value.message

    other = P2PModule()  # a second viewer (one link per device per module)
    await other.init(stack.app_params)
    try:
        await other.start_p2p_service("cam", DEVICE)
        with pytest.raises(XP2PError) as e:
            await other.start_voice_data("cam")
        assert e.value.code == ErrorCode.VOICE_FAILED
        assert e.value.message == "device busy: a talk session is already open"
        with pytest.raises(XP2PError) as e:
            await other.start_voice("cam", pcm_chunks(b"\0" * 1600))
        assert "busy" in e.value.message
        assert talk_device.routes.state.talk is not None

        first.add_chunk(await asyncio.to_thread(encode_aac_flv, tone_pcm(1000, 0.5)))
        result = await first.close()
        assert result.ok, result
        assert talk_device.routes.state.talk is None  # freed before the reply
        assert (await other.send_command("cam", st_voice)).data[0]["status"] == "0"
        with pytest.raises(XP2PError):
            first.add_chunk(b"more")  # closed

        await other.start_voice_data("cam")
        assert talk_device.routes.state.talk is not None
        await other.stop_voice("cam")  # stop_voice ends it cleanly too
        await wait_free(talk_device, 2)
    finally:
        await other.destroy()


@pytest.mark.timeout(60)
async def test_slot_frees_when_the_viewer_link_dies(
    talk_device: DeviceAgent, module: P2PModule, tmp_path: Path
) -> None:
    events = Events()
    await module.start_p2p_service("cam", DEVICE, msg_callback=events)
    link = module._service("cam").link
    # A link that dies for good (a handover moves a link whose path went silent to a new
    # one: tests/natlab/test_handover.py; a failed one ends here too).
    assert link.mover is not None
    await link.mover.close()
    writer = await module.start_voice_data("cam")
    writer.add_chunk(await asyncio.to_thread(encode_aac_flv, tone_pcm(1000, 1.0)))
    await wait_heard(talk_device)
    # The viewer's network vanishes: every datagram of its link is dropped, both ways.
    assert attach(link._ice, Conditions(loss=1.0, seed=1)) is not None
    idle = talk_device.config.link.idle_timeout
    elapsed = await wait_free(talk_device, idle + 4)
    assert elapsed > 1.0  # freed by the link's death, not by anything the viewer said
    # What arrived before is kept in a finished WAV file.
    (path,) = wav_files(tmp_path / "voice")
    _fmt, pcm = read_wav(path)
    assert len(pcm) > 0
    closed = await events.voice_closed(timeout=idle + 4)
    assert not closed["ok"] and "link" in closed["reason"]


async def test_stop_p2p_service_ends_the_talk_session_cleanly(
    talk_device: DeviceAgent, module: P2PModule, tmp_path: Path
) -> None:
    events = Events()
    await module.start_p2p_service("cam", DEVICE, msg_callback=events)
    tone = await asyncio.to_thread(tone_pcm, 1000, 1.0)

    async def endless() -> AsyncIterator[bytes]:
        yield tone
        await asyncio.Event().wait()  # a microphone that is still open
        yield b""

    await module.start_voice("cam", endless())
    await wait_heard(talk_device, len(tone))
    await module.stop_p2p_service("cam")
    await wait_free(talk_device, 3)
    closed = events.voice("close")
    assert closed and closed[0]["ok"] and closed[0]["device_bytes"] == len(tone)
    _fmt, pcm = read_wav(wav_files(tmp_path / "voice")[0])
    assert pcm == tone


# ---- the seed's callbacks --------------------------------------------------------------------


async def test_start_voice_callbacks_pause_and_renewal_at_max_seconds(
    fast_talk_device: DeviceAgent, module: P2PModule, tmp_path: Path
) -> None:
    """A recorder that stops at its maximum duration is renewed by the SDK: on_stop(True),
    on_start again, the same talk session (one WAV file, every byte in order)."""
    events = Events()
    await module.start_p2p_service("cam", DEVICE, msg_callback=events)
    tone = await asyncio.to_thread(tone_pcm, 1000, 2.5)
    calls: list[tuple[Any, ...]] = []
    offset = 0

    async def recorder() -> AsyncIterator[bytes | VoicePause | VoiceResume]:
        nonlocal offset
        while offset < len(tone):
            if offset == 8000:  # half a second in: an interruption (a phone call)
                yield VoicePause(in_interruption=True)
                yield VoiceResume()
            chunk = tone[offset : offset + 1600]
            offset += len(chunk)
            yield chunk

    stopped = asyncio.Event()

    def on_stop(will_restart: bool) -> None:
        calls.append(("stop", will_restart))
        if not will_restart:
            stopped.set()

    await module.start_voice(
        "cam",
        recorder,
        max_seconds=1.0,
        on_start=lambda: calls.append(("start",)),
        on_pause=lambda inside: calls.append(("pause", inside)),
        on_resume=lambda: calls.append(("resume",)),
        on_stop=on_stop,
    )
    await asyncio.wait_for(stopped.wait(), 15)
    assert calls == [
        ("start",),
        ("pause", True),
        ("resume",),
        ("stop", True),
        ("start",),
        ("stop", True),
        ("start",),
        ("stop", False),
    ]
    (closed,) = events.voice("close")
    assert closed["ok"] and closed["device_bytes"] == len(tone)
    await wait_free(fast_talk_device, 2)
    (path,) = wav_files(tmp_path / "voice")
    assert read_wav(path)[1] == tone


async def test_start_voice_data_callbacks_success_failure_and_error(
    talk_device: DeviceAgent, stack: Stack, module: P2PModule
) -> None:
    await module.start_p2p_service("cam", DEVICE)
    calls: list[tuple[Any, ...]] = []
    done = asyncio.Event()

    def recorder(name: str) -> Any:
        def record(result: VoiceRequestResult | None = None) -> None:
            calls.append((name, None if result is None else result.status))
            if name == "complete":
                done.set()

        return record

    callbacks = {
        f"on_{name}": recorder(name) for name in ("stop", "success", "failure", "error", "complete")
    }
    results: list[VoiceRequestResult] = []
    callbacks["on_success"] = lambda r: (results.append(r), calls.append(("success", r.status)))
    writer = await module.start_voice_data("cam", **callbacks)
    writer.add_chunk(await asyncio.to_thread(encode_aac_flv, tone_pcm(1000, 0.5)))
    await module.stop_voice("cam")
    await asyncio.wait_for(done.wait(), 10)
    assert calls == [("stop", None), ("success", 200), ("complete", None)]
    (success,) = results
    assert success.errcode == 0 and success.voice is not None and success.voice.ok
    assert success.data["result"] == "ok"  # the device's closing JSON

    # non-2xx: a second viewer while the first talks (409), refused at the start.
    first = await module.start_voice_data("cam")
    other = P2PModule()
    await other.init(stack.app_params)
    try:
        await other.start_p2p_service("cam", DEVICE)
        calls.clear()
        done.clear()
        failures: list[VoiceRequestResult] = []
        callbacks["on_failure"] = lambda r: (failures.append(r), calls.append(("failure", 409)))
        with pytest.raises(XP2PError) as e:
            await other.start_voice_data("cam", **callbacks)
        assert e.value.code == ErrorCode.VOICE_FAILED
        assert calls == [("failure", 409), ("complete", None)]
        assert failures[0].status == 409 and failures[0].errcode == ErrorCode.VOICE_FAILED
    finally:
        await other.destroy()
    await first.close()

    # no response: the link dies under the session.
    calls.clear()
    done.clear()
    writer = await module.start_voice_data("cam", **callbacks)
    writer.add_chunk(await asyncio.to_thread(encode_aac_flv, tone_pcm(1000, 0.3)))
    await wait_heard(talk_device)
    await module._service("cam").link.close("test: the link goes")
    await asyncio.wait_for(done.wait(), 15)
    assert calls == [("stop", None), ("error", 200), ("complete", None)]


async def test_voice_callbacks_are_checked(module: P2PModule) -> None:
    await module.start_p2p_service("cam", DEVICE)
    with pytest.raises(XP2PError) as e:
        await module.start_voice("cam", pcm_chunks(b"\0" * 16), max_seconds=1.0)
    assert e.value.code == ErrorCode.BAD_PARAM and "function to renew" in e.value.message
    with pytest.raises(XP2PError) as e:
        await module.start_voice("cam", pcm_chunks(b""), on_stop="no")  # type: ignore[arg-type]
    assert e.value.code == ErrorCode.BAD_PARAM and "on_stop must be callable" in e.value.message
    assert not module._service("cam").closers  # nothing was opened


# ---- queue policy ------------------------------------------------------------------------------


async def test_add_chunk_drops_the_oldest_audio_when_pushed_faster_than_the_link(
    talk_device: DeviceAgent, module: P2PModule
) -> None:
    events = Events()
    await module.start_p2p_service("cam", DEVICE, msg_callback=events)
    encoder = AacEncoder()
    tags = encoder.encode(await asyncio.to_thread(tone_pcm, 1000, 10.0)) + encoder.flush()
    writer = await module.start_voice_data("cam")
    # 10 s of audio in one go, without yielding: far more than MAX_QUEUE_LAG.
    writer.add_chunk(encoder.header_bytes())
    for tag in tags:
        writer.add_chunk(tag.encode())
    result = await writer.close()
    assert writer.dropped_tags > 0 and result.dropped_tags == writer.dropped_tags
    assert result.ok, result  # what was kept is a well-formed stream the device took whole
    assert result.seconds is not None
    assert viewer_voice.MAX_QUEUE_LAG - 0.5 <= result.seconds <= viewer_voice.MAX_QUEUE_LAG + 1
    assert any("dropped the oldest" in text for text in events.logs("warn"))


async def test_write_applies_back_pressure_and_drops_nothing(
    fast_talk_device: DeviceAgent, module: P2PModule, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(viewer_voice, "MAX_QUEUE_BYTES", 4096)
    await module.start_p2p_service("cam", DEVICE)
    encoder = AacEncoder()
    tags = encoder.encode(await asyncio.to_thread(tone_pcm, 1000, 10.0)) + encoder.flush()
    writer = await module.start_voice_data("cam")
    await writer.write(encoder.header_bytes())
    upload = writer._session.upload
    most = 0
    for tag in tags:
        await writer.write(tag.encode())
        most = max(most, upload.queued_bytes)
    assert most <= 4096 + max(len(tag.data) for tag in tags) + 64  # it waited, never piled up
    result = await writer.close()
    assert result.ok and result.dropped_tags == 0
    assert result.seconds is not None and abs(result.seconds - 10.0) <= 0.5


# ---- refusals and bad input --------------------------------------------------------------------


async def raw_link(stack: Stack, permissions: list[str] | None = None) -> Link:
    """A link with a grant of our choosing (the module always asks for every permission)."""
    app = stack.config.apps[0]
    client = CloudClient(stack.cloud.url, app.key, app.secret, timeout=5)
    try:
        info = Xp2pInfo.parse((await client.get_p2p_info("DEMO", "cam1")).xp2p_info or "")
        grant, _ = await client.get_grant("DEMO", "cam1", permissions)

        async def signal(offer: dict[str, Any]) -> dict[str, Any]:
            return await client.connect("DEMO", "cam1", offer)

        return await open_link(
            stack.device.config.link,
            signal,
            fingerprint=info.fingerprint,
            grant=grant,
            peer_label="test",
        )
    finally:
        await client.close()


async def test_talk_back_needs_the_voice_permission(stack: Stack) -> None:
    link = await raw_link(stack, ["live"])
    try:
        response = await link.request("POST", "/voice?channel=0", body=b"\0" * 1600)
        assert response.status == 403
        assert "voice" in (await response.read()).decode()
        assert stack.device.routes.state.talk is None
    finally:
        await link.close()


async def test_bad_talk_requests_get_status_codes(stack: Stack) -> None:
    link = await raw_link(stack)
    cases = [
        ("/voice?channel=0&calltype=speech", [], 400, "calltype"),
        ("/voice?channel=9", [], 404, "channel"),
        ("/voice?channel=0", [("content-type", "audio/L16;rate=8000")], 400, "s16le"),
        ("/voice?channel=0", [("content-type", "audio/pcm;rate=7")], 400, "sample rate"),
        ("/voice?channel=0", [("content-type", "audio/pcm;channels=x")], 400, "format"),
    ]
    try:
        for target, headers, status, word in cases:
            response = await link.request("POST", target, headers, body=b"\0" * 160)
            text = (await response.read()).decode()
            assert (response.status, word in text) == (status, True), (target, text)
        assert stack.device.routes.state.talk is None
    finally:
        await link.close()


@pytest.mark.parametrize(
    "body",
    [
        b"this is not FLV at all",
        b"FLV\x01\x04\x00\x00\x00\x09\x00\x00\x00\x00" + b"\xff" * 64,  # bad tag type
        # Well-formed FLV whose AAC config is garbage.
        b"FLV\x01\x04\x00\x00\x00\x09\x00\x00\x00\x00"
        + b"\x08\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\xaf\x00\xff\xff\xff\x00\x00\x00\x10",
    ],
    ids=["garbage", "bad-tag", "bad-aac-config"],
)
async def test_malformed_flv_ends_the_session_and_the_device_serves_on(
    talk_device: DeviceAgent, stack: Stack, module: P2PModule, body: bytes
) -> None:
    watched = bytearray()
    await module.start_p2p_service("cam", DEVICE, data_callback=watched.extend)
    link = await raw_link(stack)
    try:
        response = await link.request("POST", "/voice?channel=0&calltype=audio", body=body)
        assert response.status == 200  # the session opened; the body ends it
        reply = json.loads(await response.read())
        assert reply["result"] == "error" and reply["status"] == 400
        assert "malformed" in reply["reason"]
        await wait_free(talk_device, 3)
    finally:
        await link.close()
    # The device still serves: the live viewer kept getting video, and talk-back works again.
    seen = len(watched)
    await wait_until(lambda: len(watched) > seen, what="live video after the malformed talk")
    writer = await module.start_voice_data("cam")
    writer.add_chunk(await asyncio.to_thread(encode_aac_flv, tone_pcm(1000, 0.5)))
    assert (await writer.close()).ok


async def test_malformed_flv_from_the_app_is_refused_at_add_chunk(
    talk_device: DeviceAgent, module: P2PModule
) -> None:
    await module.start_p2p_service("cam", DEVICE)
    writer = await module.start_voice_data("cam")
    with pytest.raises(XP2PError) as e:
        writer.add_chunk(b"NOT FLV")
    assert e.value.code == ErrorCode.VOICE_FAILED and "malformed FLV" in e.value.message
    result = await writer.close()
    assert not result.ok and "malformed FLV" in result.reason
    await wait_free(talk_device, 3)


async def test_voice_api_errors(module: P2PModule) -> None:
    await module.start_p2p_service("cam", DEVICE)
    with pytest.raises(XP2PError) as e:
        await module.start_voice("cam", pcm_chunks(b""), sample_rate=7000)
    assert e.value.code == ErrorCode.BAD_PARAM
    with pytest.raises(XP2PError) as e:
        await module.start_voice("cam", pcm_chunks(b""), url_params="channel=0&calltype=audio")
    assert e.value.code == ErrorCode.BAD_PARAM
    with pytest.raises(XP2PError) as e:
        await module.start_voice("cam", b"not async")  # type: ignore[arg-type]
    assert e.value.code == ErrorCode.BAD_PARAM
    with pytest.raises(XP2PError) as e:
        await module.start_voice_data("nope")
    assert e.value.code == ErrorCode.SERVICE_NOT_STARTED
    await module.stop_voice("cam")  # nothing open: a no-op


# ---- the device ends a session -----------------------------------------------------------------


async def test_silent_session_times_out_and_frees_the_slot(
    talk_device: DeviceAgent, module: P2PModule, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xp2p.device import voice as device_voice

    monkeypatch.setattr(device_voice, "VOICE_IDLE_TIMEOUT", 1.0)
    events = Events()
    await module.start_p2p_service("cam", DEVICE, msg_callback=events)
    writer = await module.start_voice_data("cam")
    closed = await events.voice_closed(timeout=5)
    assert not closed["ok"] and "(408)" in closed["reason"], closed
    assert talk_device.routes.state.talk is None
    with pytest.raises(XP2PError) as e:
        writer.add_chunk(b"FLV")
    assert "closed" in e.value.message and "408" in e.value.message


async def test_sink_failures_end_the_session_with_500(stack: Stack, module: P2PModule) -> None:
    sessions = 0

    class FailingSink:
        def write(self, pcm: bytes) -> None:
            raise OSError("disk full")

        def close(self) -> None:
            pass

    def factory(channel: int, sample_rate: int, channels: int) -> FailingSink:
        nonlocal sessions
        sessions += 1
        if sessions == 1:
            raise PermissionError("no speaker here")
        return FailingSink()

    await stack.device.close()
    stack.device = DeviceAgent(stack.device_config(voice_sink=factory))
    await stack.device.start()
    await stack.device.wait_signed_in(10)
    events = Events()
    await module.start_p2p_service("cam", DEVICE, msg_callback=events)
    with pytest.raises(XP2PError) as e:  # PCM: the sink opens before the device answers
        await module.start_voice("cam", pcm_chunks(b"\0" * 3200))
    assert e.value.code == ErrorCode.VOICE_FAILED
    assert "(500)" in e.value.message and "no speaker here" in e.value.message
    await module.start_voice("cam", pcm_chunks(b"\0" * 3200))
    closed = await events.voice_closed()
    assert not closed["ok"] and "(500)" in closed["reason"] and "disk full" in closed["reason"]
    assert stack.device.routes.state.talk is None


async def test_device_shutdown_finishes_the_wav(
    talk_device: DeviceAgent, module: P2PModule, tmp_path: Path
) -> None:
    events = Events()
    await module.start_p2p_service("cam", DEVICE, msg_callback=events)
    tone = await asyncio.to_thread(tone_pcm, 1000, 1.0)

    async def then_silence() -> AsyncIterator[bytes]:
        yield tone
        await asyncio.Event().wait()
        yield b""

    await module.start_voice("cam", then_silence())
    await wait_heard(talk_device, len(tone))
    await talk_device.close()
    assert talk_device.routes.state.talk is None
    _fmt, pcm = read_wav(wav_files(tmp_path / "voice")[0])
    assert pcm == tone
    closed = await events.voice_closed(timeout=12)
    assert not closed["ok"]


async def test_close_hook_ends_an_open_session_for_good(
    talk_device: DeviceAgent, module: P2PModule, tmp_path: Path
) -> None:
    from xp2p.device import voice as device_voice

    events = Events()
    await module.start_p2p_service("cam", DEVICE, msg_callback=events)
    tone = await asyncio.to_thread(tone_pcm, 1000, 2.0)

    async def paced() -> AsyncIterator[bytes]:
        for offset in range(0, len(tone), 800):  # 50 ms pieces, in real time
            yield tone[offset : offset + 800]
            await asyncio.sleep(0.05)

    await module.start_voice("cam", paced())
    await wait_heard(talk_device)
    await device_voice.close(talk_device.routes.state)
    assert talk_device.routes.state.talk is None
    closed = await events.voice_closed()
    assert not closed["ok"] and "(503)" in closed["reason"], closed
    assert len(wav_files(tmp_path / "voice")) == 1  # no second file for the late audio
