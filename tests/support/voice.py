"""Test helpers (not tests): tones, WAV files, and waits on the device's talk session."""

from __future__ import annotations

import asyncio
import time
import wave
from pathlib import Path

import numpy as np

from tests.support.waiting import wait_until
from xp2p.device import DeviceAgent
from xp2p.media.audio import PcmFormat

RATE = 8000


def dominant_hz(pcm: bytes, rate: int = RATE) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def wav_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("voice-ch*.wav"))


def read_wav(path: Path) -> tuple[PcmFormat, bytes]:
    with wave.open(str(path), "rb") as wav:
        assert wav.getsampwidth() == 2
        return PcmFormat(wav.getframerate(), wav.getnchannels()), wav.readframes(wav.getnframes())


async def wait_free(device: DeviceAgent, timeout: float) -> float:
    """Seconds until the device's talk slot is free."""
    start = time.monotonic()
    while device.routes.state.talk is not None:
        assert time.monotonic() - start < timeout, "talk session still open"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def wait_heard(device: DeviceAgent, pcm_bytes: int = 1, timeout: float = 10.0) -> None:
    """Wait until the device's open talk session has handed ``pcm_bytes`` of PCM to its sink."""

    def heard() -> bool:
        talk = device.routes.state.talk
        return talk is not None and talk.pcm_bytes >= pcm_bytes

    await wait_until(heard, timeout=timeout, what=f"{pcm_bytes} PCM bytes at the device")
