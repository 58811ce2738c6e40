"""``xp2p talk`` as a real subprocess, against a cloud and device running in the test's loop."""

from __future__ import annotations

import asyncio
import os
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.support.stack import Stack
from tests.support.voice import dominant_hz, read_wav, wait_free, wav_files
from xp2p.device import DeviceAgent
from xp2p.device.voice_sink import VoiceFiles
from xp2p.viewer import P2PModule, StreamInfo

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(120)]


@pytest.fixture
async def talk_device(stack: Stack, tmp_path: Path) -> DeviceAgent:
    await stack.device.close()
    device = DeviceAgent(stack.device_config(voice_sink=VoiceFiles(tmp_path / "voice")))
    stack.device = device
    await device.start()
    await device.wait_signed_in(10)
    return device


async def talk(stack: Stack, *args: str) -> tuple[int, str, str]:
    app = stack.config.apps[0]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "xp2p",
        "talk",
        "DEMO/cam1",
        "--cloud",
        stack.cloud.url,
        "--app-key",
        app.key,
        *args,
        env={**os.environ, "XP2P_APP_SECRET": app.secret},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 90)
    text_out, text_err = out.decode(), err.decode()
    assert app.secret not in text_out + text_err
    assert "Traceback" not in text_err, text_err
    assert process.returncode is not None
    return process.returncode, text_out, text_err


async def test_talk_tone_as_aac(talk_device: DeviceAgent, stack: Stack, tmp_path: Path) -> None:
    code, out, err = await talk(stack, "--tone", "1000", "--seconds", "2")
    assert code == 0, out + err
    assert "as AAC in FLV" in out
    assert "sent 1.0/2.0 s" in out and "sent 2.0/2.0 s" in out  # progress, in real time
    assert "device took all audio" in out
    await wait_free(talk_device, 2)
    (path,) = wav_files(tmp_path / "voice")
    fmt, pcm = read_wav(path)
    assert (fmt.sample_rate, fmt.channels) == (8000, 1)
    assert abs(fmt.seconds(len(pcm)) - 2.0) <= 0.5
    assert abs(dominant_hz(pcm) - 1000) <= 20


def write_stereo_wav(path: Path, hz: float, seconds: float, rate: int = 44100) -> None:
    t = np.arange(int(rate * seconds)) / rate
    wave_ = (np.sin(2 * np.pi * hz * t) * 8000).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.column_stack([wave_, wave_]).tobytes())


async def test_talk_file_as_pcm(talk_device: DeviceAgent, stack: Stack, tmp_path: Path) -> None:
    hello = tmp_path / "hello.wav"
    await asyncio.to_thread(write_stereo_wav, hello, 700, 1.5)
    code, out, err = await talk(stack, "--file", str(hello), "--pcm")
    assert code == 0, out + err
    assert "as PCM s16le 8000 Hz mono" in out and "device took all audio: 24000 bytes" in out
    await wait_free(talk_device, 2)
    (path,) = wav_files(tmp_path / "voice")
    fmt, pcm = read_wav(path)
    assert (fmt.sample_rate, fmt.channels, len(pcm)) == (8000, 1, 24000)  # resampled by PyAV
    assert abs(dominant_hz(pcm) - 700) <= 20


async def test_talk_to_a_busy_device_exits_1(talk_device: DeviceAgent, stack: Stack) -> None:
    module = P2PModule()
    await module.init(stack.app_params)
    try:
        await module.start_p2p_service("cam", StreamInfo(product_id="DEMO", device_name="cam1"))
        writer = await module.start_voice_data("cam")
        code, out, err = await talk(stack, "--tone", "440", "--seconds", "1")
        assert code == 1, out + err
        assert "device busy: a talk session is already open (-2601)" in err
        await writer.close()
    finally:
        await module.destroy()
    code, _out, err = await talk(stack, "--file", "/nonexistent/hello.wav")
    assert code == 1 and "cannot open /nonexistent/hello.wav" in err
