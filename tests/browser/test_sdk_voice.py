"""Talk-back from Chromium's microphone through the JavaScript SDK: a fake microphone playing
a WAV tone, captured with echo cancellation on, resampled to 8 kHz s16le by the SDK's
AudioWorklet, arrives at the device's sink at the tone's frequency."""

from __future__ import annotations

import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.browser.chromium import Chromium
from tests.browser.sdk_site import SdkSite, open_site, start
from tests.support.stack import Stack
from tests.support.voice import dominant_hz, read_wav, wait_heard, wav_files
from tests.support.waiting import wait_until
from xp2p.device import DeviceAgent
from xp2p.device.voice_sink import VoiceFiles
from xp2p.media.audio import PcmFormat

pytestmark = pytest.mark.browser

TONE_HZ = 1000
WAV_RATE = 48_000


def write_tone(path: Path, seconds: float = 4.0) -> None:
    t = np.arange(int(WAV_RATE * seconds)) / WAV_RATE
    samples = (0.5 * 32767 * np.sin(2 * np.pi * TONE_HZ * t)).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(WAV_RATE)
        wav.writeframes(samples.tobytes())


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    """A Chromium whose microphone plays the tone (it loops the file)."""
    tone = tmp_path_factory.mktemp("mic") / "tone.wav"
    write_tone(tone)
    browser = Chromium(
        args=[
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={tone}",
        ]
    )
    yield browser
    browser.close()


@pytest.fixture
async def talk_device(sdk_stack: Stack, tmp_path: Path) -> DeviceAgent:
    await sdk_stack.device.close()
    device = DeviceAgent(sdk_stack.device_config(voice_sink=VoiceFiles(tmp_path / "voice")))
    sdk_stack.device = device
    await device.start()
    await device.wait_signed_in(10)
    return device


TALK = """async () => {
  const { p2p } = window.site;
  const calls = [];
  window.site.voiceCalls = calls;
  await p2p.startVoice('cam', null, { sampleRate: 8000 }, {
    onStart: () => calls.push(['start']),
    onPause: (r) => calls.push(['pause', r]),
    onResume: () => calls.push(['resume']),
    onStop: (r) => calls.push(['stop', r]),
  });
  return calls;
}"""


async def test_microphone_tone_arrives_at_the_device(
    chromium: Chromium,
    sdk_site: SdkSite,
    sdk_stack: Stack,
    talk_device: DeviceAgent,
    tmp_path: Path,
) -> None:
    page = await open_site(chromium, sdk_site)
    assert (await start(chromium, page, sdk_stack))["ok"]
    calls = await chromium.eval(page, TALK)
    assert calls == [["start"]]
    await wait_heard(talk_device, pcm_bytes=3 * 16_000, timeout=15)  # 3 s of 8 kHz s16le
    await chromium.eval(page, "() => window.site.p2p.stopVoice('cam')")

    async def closed() -> bool:
        events = await chromium.eval(page, "() => window.site.events")
        return any(e[1] == "voice_close" and (e[2] or {}).get("kind") == "voice" for e in events)

    await wait_until(closed, timeout=15, interval=0.05, what="the talk session's close notify")
    events = await chromium.eval(page, "() => window.site.events")
    (close,) = [
        e[2] for e in events if e[1] == "voice_close" and (e[2] or {}).get("kind") == "voice"
    ]
    assert close["ok"], close  # the device took every byte the page sent
    # Voice has subtypes of its own: nothing a seed-style msgCallback ends the video on.
    assert not {"request", "parsed", "close", "eof", "fail"} & {e[1] for e in events}
    assert await chromium.eval(page, "() => window.site.voiceCalls") == [
        ["start"],
        ["stop", {"willRestart": False}],
    ]
    (path,) = wav_files(tmp_path / "voice")
    fmt, pcm = read_wav(path)
    assert fmt == PcmFormat(8000, 1)
    assert len(pcm) == close["device_bytes"] and fmt.seconds(len(pcm)) >= 3.0
    # Skip the first half second (the capture and the echo canceller settling).
    heard = dominant_hz(pcm[8000:])
    assert abs(heard - TONE_HZ) <= 20, heard
