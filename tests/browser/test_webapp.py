"""The web app (web/app/, served by the cloud at /app/) in real Chromium against a real cloud
and a real recording camera: signed in with the demo's address, it lists the camera online,
plays it live over WebRTC, steers its PTZ head, talks to it from the microphone, shows its
recordings in a calendar, plays one back with pause, seek and progress, and downloads a file
byte-exact."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import sys
import time
import wave
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.browser.chromium import Chromium
from tests.support.coturn import TURNSERVER, Coturn, start_coturn
from tests.support.procs import Proc
from tests.support.recordings import record
from tests.support.stack import PATTERN, Stack
from tests.support.voice import dominant_hz, read_wav, wait_free, wait_heard, wav_files
from xp2p.cloud.app import CloudServer
from xp2p.cloud.config import CloudConfig, TurnServerConfig
from xp2p.cloud.demo_login import DemoLogin
from xp2p.device import DeviceAgent
from xp2p.device.record_index import Segment
from xp2p.device.voice_sink import VoiceFiles
from xp2p.media.audio import PcmFormat

pytestmark = pytest.mark.browser

DEVICE = "DEMO/cam1"
#: A picture the camera holds, named with what a query must escape (space, &, =, non-ASCII).
PICTURE = "door cam & 1=ü.jpg"
#: What the fake microphone plays.
TONE_HZ = 1000
#: Waits in the page (no polling from here) until `arg.check` (function source) returns
#: something truthy, or `arg.timeout` ms passed; then what the page says, to explain why.
WAIT = """async (arg) => {
  const check = (0, eval)(arg.check);
  const deadline = performance.now() + arg.timeout;
  for (;;) {
    let value = null;
    try { value = await check(arg.arg); } catch (err) { value = null; }
    if (value) return { value };
    if (performance.now() > deadline) {
      return { timedOut: true, notice: document.getElementById('notice')?.textContent ?? null,
               page: document.body.innerText.slice(0, 1500) };
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}"""
#: The app's player's stats once it decoded more than `frames` frames of a sized picture.
FRAMES_PAST = """(frames) => {
  const stats = window.xp2pApp?.stream.player?.stats();
  return stats && stats.decodedFrames > frames && stats.width > 0 ? stats : null;
}"""
#: sha256 of the picture now on the app's <video>, drawn to a canvas at its own size.
PICTURE_HASH = """async () => {
  const video = document.getElementById('video');
  const canvas = document.createElement('canvas');
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(video, 0, 0);
  const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  const digest = await crypto.subtle.digest('SHA-256', pixels);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}"""
#: The text of the element `arg` (a selector), when it has some.
TEXT_OF = "(selector) => document.querySelector(selector)?.textContent || null"
#: True once the element `arg[0]` (a selector) says `arg[1]`.
SAYS = "([selector, text]) => document.querySelector(selector)?.textContent === text"
#: The PTZ reply once the device answered the command `arg` (its text then).
PTZ_REPLY = """(cmd) => {
  const reply = document.getElementById('ptz-reply');
  const done = reply.dataset.state === 'success' && reply.textContent.startsWith(cmd);
  return done ? reply.textContent : null;
}"""


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    """This module's Chromium: its microphone plays a tone (looped), for the talk button."""
    rate = 48_000
    t = np.arange(rate * 4) / rate
    tone = tmp_path_factory.mktemp("mic") / "tone.wav"
    with wave.open(str(tone), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes((0.5 * 32767 * np.sin(2 * np.pi * TONE_HZ * t)).astype("<i2").tobytes())
    browser = Chromium(
        args=[
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={tone}",
        ]
    )
    yield browser
    browser.close()


@dataclass
class AppStack:
    cloud: CloudServer
    device: DeviceAgent
    #: unix seconds; 12 s recorded from t0 + 0.5 (one span [t0, t0 + 13) in the index)
    t0: int
    folder: Path
    segments: list[Segment]
    voice: Path  #: where the camera's talk-back sink writes


@pytest.fixture
async def app_stack(tmp_path: Path) -> AsyncIterator[AppStack]:
    async with running_app_stack(tmp_path) as app:
        yield app


@asynccontextmanager
async def running_app_stack(
    tmp_path: Path, turn: tuple[TurnServerConfig, ...] = ()
) -> AsyncIterator[AppStack]:
    """A cloud with the demo sign-in (as `xp2p demo` runs it) and a camera with recordings."""
    config = CloudConfig.demo(port=0, stun_port=0, connect_timeout=3.0, turn=turn)
    cloud = CloudServer(config, demo_login=DemoLogin(config.apps[0].key))
    await cloud.start()
    t0 = int(time.time()) - 7200
    # The recordings and the picture (200 s later) must fall on one UTC day, the one the
    # tests pick in the calendar: never within 400 s before midnight.
    if t0 % 86400 > 86400 - 400:
        t0 -= 600
    folder = tmp_path / "rec" / "ch0"
    segments = record(folder, t0 * 1000 + 500, seconds=12.0)
    (folder / PICTURE).write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(70_000))
    os.utime(folder / PICTURE, (t0 + 200, t0 + 200))
    stack = Stack(cloud, config, device=None)  # type: ignore[arg-type]
    voice = tmp_path / "voice"
    device = DeviceAgent(
        stack.device_config(
            recordings_dir=tmp_path / "rec", segment_seconds=2, voice_sink=VoiceFiles(voice)
        )
    )
    await device.start()
    await device.wait_signed_in(timeout=10)
    try:
        yield AppStack(cloud, device, t0, folder, segments, voice)
    finally:
        await device.close()
        await cloud.stop()


async def wait_for(
    chromium: Chromium, page: int, check: str, arg: Any = None, timeout: float = 15.0
) -> Any:
    """What ``check`` (JS function source, run in the page) returned once it was truthy."""
    found = await chromium.eval(
        page, WAIT, {"check": check, "arg": arg, "timeout": int(timeout * 1000)}
    )
    assert not found.get("timedOut"), f"{check} not true in {timeout} s: {found}"
    return found["value"]


async def says(
    chromium: Chromium, page: int, selector: str, text: str, timeout: float = 15.0
) -> None:
    """Waits until the element ``selector`` finds says ``text``."""
    await wait_for(chromium, page, SAYS, [selector, text], timeout)


async def open_app(chromium: Chromium, app: AppStack) -> int:
    """The page at the address `xp2p demo` prints, playing the camera live."""
    page, status = await chromium.open(app.cloud.app_url)
    assert status == 200
    await wait_for(chromium, page, FRAMES_PAST, 0)
    return page


async def test_the_app_lists_the_camera_online_and_plays_it_live(
    chromium: Chromium, app_stack: AppStack
) -> None:
    page, status = await chromium.open(app_stack.cloud.app_url)
    try:
        assert status == 200
        row = await wait_for(
            chromium,
            page,
            """(id) => {
              const row = document.querySelector(`#device-list li[data-device="${id}"]`);
              return row?.dataset.online === 'true' ? row.textContent : null;
            }""",
            DEVICE,
        )
        assert row == f"{DEVICE}online"
        # The sign-in code left the address bar (history, bookmarks) for this tab's storage.
        where = await chromium.eval(
            page,
            "() => ({hash: location.hash, path: location.pathname,"
            " stored: sessionStorage.getItem('xp2p-login-code')})",
        )
        assert where["hash"] == "" and where["path"] == "/app/"
        assert app_stack.cloud.demo_login is not None
        assert where["stored"] == app_stack.cloud.demo_login.code

        # With no other step, the camera plays: the first online camera is chosen.
        first = await wait_for(chromium, page, FRAMES_PAST, 0)
        assert (first["width"], first["height"]) == (PATTERN.width, PATTERN.height)
        assert first["error"] is None, first
        shown_at = await wait_for(
            chromium, page, "() => window.xp2pApp.stream.player?.stats().firstFrameAt"
        )
        print(f"\nfirst frame {shown_at:.0f} ms after the page's navigation began")
        before = await chromium.eval(page, PICTURE_HASH)
        later = await wait_for(chromium, page, FRAMES_PAST, first["decodedFrames"] + PATTERN.fps)
        after = await chromium.eval(page, PICTURE_HASH)
        assert before != after, "the picture did not change: frozen video"
        assert later["latency"] < 2.0, later

        # The link's figures: direct on one machine, with a measured round trip.
        shown = await wait_for(
            chromium,
            page,
            """() => {
              const s = window.xp2pApp.stream.shown;
              return s.rtt && s.rtt !== '-' && s.size !== '-' ? s : null;
            }""",
        )
        assert shown["mode"] == "direct", shown
        assert shown["size"] == f"{PATTERN.width}x{PATTERN.height}"
        assert await chromium.eval(page, TEXT_OF, "#link-badge") == "direct"
        assert await chromium.eval(page, TEXT_OF, "#stream-kind") == "live · high"

        # The quality switch: a new pull at that quality, playing again.
        await chromium.click(page, '#quality button[data-quality="standard"]')
        await says(chromium, page, "#stream-kind", "live · standard")
        switched = await wait_for(chromium, page, FRAMES_PAST, 5)
        assert (switched["width"], switched["height"]) == (PATTERN.width, PATTERN.height)
        pressed = await chromium.eval(
            page,
            "() => [...document.querySelectorAll('#quality button[aria-pressed=true]')]"
            ".map((b) => b.dataset.quality)",
        )
        assert pressed == ["standard"]
        assert await chromium.eval(page, "() => document.getElementById('notice').hidden")
        # Nothing went wrong unseen: no CSP refusal, failed load or uncaught exception.
        assert await asyncio.to_thread(chromium.call, "console", page=page) == []
    finally:
        await chromium.close_page(page)


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[Coturn]:
    if TURNSERVER is None:
        pytest.fail("coturn missing: run scripts/setup.sh (it installs coturn)", pytrace=False)
    while True:  # coturn listens on UDP and TCP: a port free in both
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port: int = tcp.getsockname()[1]
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            break
    server = start_coturn(tmp_path / "coturn", port=port, loopback_peers=True)
    yield server
    server.stop()


async def test_relay_only_plays_through_turn_and_says_relay(
    chromium: Chromium, coturn: Coturn, tmp_path: Path
) -> None:
    """`#relay=only` sends the link through the cloud's TURN (coturn): the indicator and the
    figures say relay, and the picture plays."""
    turn = TurnServerConfig(coturn.urls("udp"), coturn.secret, ttl=3600)
    async with running_app_stack(tmp_path, turn=(turn,)) as app:
        page, status = await chromium.open(app.cloud.app_url + "&relay=only")
        try:
            assert status == 200
            stats = await wait_for(chromium, page, FRAMES_PAST, 5, timeout=30)
            assert (stats["width"], stats["height"]) == (PATTERN.width, PATTERN.height)
            await says(chromium, page, "#link-badge", "relay")
            shown = await chromium.eval(page, "() => window.xp2pApp.stream.shown")
            assert shown["mode"] == "relay" and "relay" in shown["candidates"], shown
            note = await chromium.eval(page, TEXT_OF, "#net-status")
            assert note.startswith("Relay only: links go through the TURN server."), note
            # The rest of the fragment stays; only the sign-in code left the address.
            assert await chromium.eval(page, "() => location.hash") == "#relay=only"
        finally:
            await chromium.close_page(page)
    assert coturn.allocations() >= 1


async def test_the_ptz_pad_shows_the_cameras_reply(chromium: Chromium, app_stack: AppStack) -> None:
    page = await open_app(chromium, app_stack)
    try:
        # Held down: the head turns; let go: it stops. Each reply is shown as it came.
        await chromium.mouse(page, '#ptz button[data-ptz="up"]', "down")
        pressed = await wait_for(chromium, page, PTZ_REPLY, "ptz_up_press")
        assert pressed == 'ptz_up_press: {"apex":"no"}'
        simulator = app_stack.device.routes.state.ptz  # the camera's own view of its head
        assert simulator is not None and simulator.heads[0].moving == "up"
        await chromium.mouse(page, '#ptz button[data-ptz="up"]', "up")
        released = await wait_for(chromium, page, PTZ_REPLY, "ptz_release_pre")
        assert released == 'ptz_release_pre: {"apex":"no"}'
        head = simulator.heads[0]
        assert head.moving is None and head.position(time.monotonic())[1] > 0  # turned up
        # A quick tap: press and release reach the camera in that order, so the head stops.
        await chromium.eval(page, "() => { window.xp2pApp.ptz.reply.textContent = ''; }")
        await chromium.mouse(page, '#ptz button[data-ptz="left"]', "down")
        await chromium.mouse(page, '#ptz button[data-ptz="left"]', "up")
        await wait_for(chromium, page, PTZ_REPLY, "ptz_release_pre")
        assert head.moving is None and head.position(time.monotonic())[0] < 0  # turned left
    finally:
        await chromium.close_page(page)


async def test_the_talk_button_sends_the_microphone_to_the_camera(
    chromium: Chromium, app_stack: AppStack
) -> None:
    page = await open_app(chromium, app_stack)
    try:
        await chromium.click(page, "#talk")
        await says(chromium, page, "#talk-status", "talking: the camera hears you")
        assert await chromium.eval(page, TEXT_OF, "#talk") == "Stop talking"
        await wait_heard(app_stack.device, pcm_bytes=3 * 16_000, timeout=15)  # 3 s at 8 kHz
        await chromium.click(page, "#talk")
        await says(chromium, page, "#talk-status", "stopped")
        await wait_free(app_stack.device, timeout=15)
    finally:
        await chromium.close_page(page)
    (path,) = wav_files(app_stack.voice)
    fmt, pcm = read_wav(path)
    assert fmt == PcmFormat(8000, 1) and fmt.seconds(len(pcm)) >= 3.0
    heard = dominant_hz(pcm[8000:])  # past the capture and echo canceller settling
    assert abs(heard - TONE_HZ) <= 20, heard


async def show_recorded_day(chromium: Chromium, page: int, t0: int) -> None:
    """The calendar at t0's month (it opens at this one), t0's day chosen."""
    day = datetime.fromtimestamp(t0, UTC)
    now = datetime.now(UTC)
    if (now.year, now.month) != (day.year, day.month):
        await chromium.click(page, "#calendar-prev")
    await wait_for(
        chromium,
        page,
        "(day) => document.querySelector(`#calendar-grid button.recorded[data-day='${day}']`)",
        day.day,
    )
    await chromium.click(page, f"#calendar-grid button.recorded[data-day='{day.day}']")


async def test_the_calendar_lists_the_recorded_day_and_plays_a_span_back(
    chromium: Chromium, app_stack: AppStack
) -> None:
    t0 = app_stack.t0
    page = await open_app(chromium, app_stack)
    try:
        day = datetime.fromtimestamp(t0, UTC)
        now = datetime.now(UTC)
        await show_recorded_day(chromium, page, t0)
        recorded = await chromium.eval(
            page,
            "() => [...document.querySelectorAll('#calendar-grid button.recorded')]"
            ".map((b) => Number(b.dataset.day))",
        )
        # t0's day, and today when the camera's live recording falls in the same month.
        same_month = (now.year, now.month) == (day.year, day.month)
        expected = {day.day} | ({now.day} if same_month else set())
        assert set(recorded) == expected

        spans = await wait_for(
            chromium,
            page,
            """() => {
              const found = [...document.querySelectorAll('#day-spans button.span')];
              const spans = found.map((b) => [Number(b.dataset.start), Number(b.dataset.end)]);
              return spans.length ? spans : null;
            }""",
        )
        assert [t0, t0 + 13] in spans

        # Playback instead of live (one pull per service), with its own controls.
        await chromium.click(page, f"#day-spans button.span[data-start='{t0}']")
        await says(chromium, page, "#stream-kind", "recording")
        # Its controls show once the device answered the playback request.
        await wait_for(chromium, page, "() => !document.getElementById('playback').hidden")
        played = await wait_for(chromium, page, FRAMES_PAST, 10)
        assert (played["width"], played["height"]) == (PATTERN.width, PATTERN.height)
        # Progress comes from the device (playback_progress) and moves.
        await wait_for(
            chromium, page, "() => Number(document.getElementById('playback-progress').value) > 0"
        )
        await chromium.click(page, "#playback-pause")
        await says(chromium, page, "#playback-status", "paused")
        # Seek (the bar moved to 8 s): the device's progress lands there, at or before.
        await chromium.eval(
            page,
            """() => {
              const bar = document.getElementById('playback-progress');
              bar.value = '8000';
              bar.dispatchEvent(new Event('input'));
              bar.dispatchEvent(new Event('change'));
            }""",
        )
        progress = await wait_for(
            chromium,
            page,
            """async () => {
              const result = await window.xp2pApp.p2p.sendCommand(
                'DEMO/cam1', 'action=inner_define&channel=0&cmd=playback_progress');
              const ms = Number(result.data?.progress);
              return ms >= 6000 && ms <= 8000 ? ms : null;
            }""",
        )
        assert 6000 <= progress <= 8000
        await chromium.click(page, "#playback-pause")  # resume: it plays to the span's end
        await says(chromium, page, "#playback-status", "end of the recording", timeout=20.0)
        # Back to live.
        await chromium.click(page, "#back-to-live")
        await says(chromium, page, "#stream-kind", "live · high")
        await wait_for(chromium, page, FRAMES_PAST, 5)
        assert await chromium.eval(page, "() => document.getElementById('playback').hidden")
    finally:
        await chromium.close_page(page)


async def download(chromium: Chromium, page: int, path: Path) -> None:
    """Downloads ``path``'s file with its row's button: saved, and byte-exact."""
    name = path.name
    await chromium.click(page, f"#file-list li[data-file='{name}'] button.download")
    result = await wait_for(
        chromium, page, "(name) => window.xp2pApp.files.results[name] ?? null", name
    )
    body = await asyncio.to_thread(path.read_bytes)
    digest = hashlib.sha256(body).hexdigest()
    assert result == {
        "name": name,
        "size": len(body),
        "sha256": digest,  # computed in the page, from the Blob it saved
        "expected": digest,
        "verified": True,
    }
    row = await chromium.eval(
        page,
        """(name) => {
          const row = document.querySelector(`#file-list li[data-file='${name}']`);
          return { state: row.dataset.state, text: row.querySelector('.state').textContent,
                   progress: row.querySelector('progress').value };
        }""",
        name,
    )
    assert row["state"] == "saved"
    assert row["progress"] == len(body)
    assert "verified" in row["text"]


async def test_a_download_is_saved_byte_exact(chromium: Chromium, app_stack: AppStack) -> None:
    page = await open_app(chromium, app_stack)
    try:
        await show_recorded_day(chromium, page, app_stack.t0)
        names = await wait_for(
            chromium,
            page,
            """() => {
              const rows = [...document.querySelectorAll('#file-list li')];
              return rows.length ? rows.map((r) => r.dataset.file) : null;
            }""",
        )
        for wanted in (app_stack.segments[1].file_name, PICTURE):
            assert wanted in names
            await download(chromium, page, app_stack.folder / wanted)
    finally:
        await chromium.close_page(page)


async def test_a_camera_that_goes_away_is_said_so_and_plays_again_when_back(
    chromium: Chromium, app_stack: AppStack
) -> None:
    page = await open_app(chromium, app_stack)
    try:
        await app_stack.device.close()
        text = await wait_for(chromium, page, TEXT_OF, "#notice[data-kind='error']", timeout=20)
        assert text.startswith(f"Error watching {DEVICE}: the link was lost ("), text
        assert text.endswith("reconnecting when the camera is back online"), text
        await wait_for(
            chromium,
            page,
            "(id) => document.querySelector(`#device-list li[data-device='${id}']`)"
            "?.dataset.online === 'false'",
            DEVICE,
        )
        assert await chromium.eval(page, "() => window.xp2pApp.current") is None
        # The camera restarts (a new DTLS certificate, so a new xp2pInfo): the page plays it
        # again by itself, with no stale notice left.
        config = app_stack.device.config
        app_stack.device = DeviceAgent(config)
        await app_stack.device.start()
        await app_stack.device.wait_signed_in(timeout=10)
        await wait_for(chromium, page, FRAMES_PAST, 5, timeout=20)
        assert await chromium.eval(page, "() => window.xp2pApp.current") == DEVICE
        assert await chromium.eval(page, "() => document.getElementById('notice').hidden")
    finally:
        await chromium.close_page(page)


async def test_without_the_sign_in_code_the_page_says_where_to_get_one(
    chromium: Chromium, app_stack: AppStack
) -> None:
    page, status = await chromium.open(app_stack.cloud.url + "/app/")
    try:
        assert status == 200
        text = await wait_for(chromium, page, TEXT_OF, "#notice[data-kind='info']")
        assert "open the address `xp2p demo` printed" in text
        assert not await chromium.eval(page, "() => document.getElementById('signin-help').hidden")
    finally:
        await chromium.close_page(page)
    # A wrong code: the cloud's refusal, with its code, on screen (and the code forgotten).
    page, status = await chromium.open(app_stack.cloud.url + "/app/#login=" + "x" * 43)
    try:
        text = await wait_for(chromium, page, TEXT_OF, "#notice[data-kind='error']")
        assert "401 bad_login_code" in text, text
        stored = await chromium.eval(page, "() => sessionStorage.getItem('xp2p-login-code')")
        assert stored is None
        assert json.dumps(text).count("x" * 43) == 0  # the code is never echoed
    finally:
        await chromium.close_page(page)


@pytest.mark.timeout(120)
async def test_the_address_xp2p_demo_prints_plays_the_camera(
    chromium: Chromium, procs: list[Proc], tmp_path: Path
) -> None:
    """What a newcomer does: run `xp2p demo`, open the one address it prints, see the camera."""
    size = f"{PATTERN.width}x{PATTERN.height}"
    command = [sys.executable, "-m", "xp2p", "demo", "--cloud-port", "0", "--port", "0"]
    demo = Proc.start("demo", [*command, "--size", size], tmp_path / "demo.log")
    procs.append(demo)
    address = demo.wait_line(r"\nOpen (http://\S+)\n", timeout=60).group(1)
    page, status = await chromium.open(address)
    try:
        assert status == 200
        stats = await wait_for(chromium, page, FRAMES_PAST, PATTERN.fps, timeout=30)
        assert (stats["width"], stats["height"]) == (PATTERN.width, PATTERN.height)
        await says(chromium, page, "#link-badge", "direct")
        assert await chromium.eval(page, "() => document.getElementById('notice').hidden")
    finally:
        await chromium.close_page(page)
    assert demo.stop() == 0
    assert "Traceback" not in demo.text()
