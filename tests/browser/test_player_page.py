"""The local player's page in real Chromium: the embedded player (web/src/player.js through
mpegts.js, both served by the player itself) plays the test-pattern camera live."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.chromium import Chromium
from tests.support.stack import PATTERN, Stack
from xp2p.player.server import PlayerServer
from xp2p.viewer import P2PModule

pytestmark = pytest.mark.browser

DEVICE = "DEMO/cam1"

#: Waits in the page (no polling from here): until the player of `arg.device` has decoded
#: more than `arg.frames` frames, or `arg.timeout` ms passed. Returns its stats.
WAIT_FRAMES = """async (arg) => {
  const deadline = performance.now() + arg.timeout;
  for (;;) {
    const player = window.xp2pPlayers?.[arg.device];
    const stats = player ? player.stats() : null;
    if (stats && stats.decodedFrames > arg.frames && stats.width > 0
        && stats.firstFrameAt !== null) return stats;
    if (performance.now() > deadline) return { timedOut: true, stats };
    await new Promise((r) => setTimeout(r, 20));
  }
}"""

#: sha256 of the picture now on the video element, drawn to a canvas at its own size.
PICTURE_HASH = """async () => {
  const video = document.querySelector('video.xp2p-live');
  const canvas = document.createElement('canvas');
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(video, 0, 0);
  const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  const digest = await crypto.subtle.digest('SHA-256', pixels);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}"""


@pytest.fixture
async def player(stack: Stack, module: P2PModule) -> AsyncIterator[PlayerServer]:
    server = PlayerServer(module, devices=[DEVICE])
    await server.start()
    yield server
    await server.stop()


async def wait_frames(chromium: Chromium, page: int, frames: int) -> dict[str, Any]:
    stats = await chromium.eval(
        page, WAIT_FRAMES, {"device": DEVICE, "frames": frames, "timeout": 15_000}
    )
    assert not stats.get("timedOut"), f"no frames past {frames} in 15 s: {stats}"
    assert stats["error"] is None, stats
    return dict(stats)


async def test_the_page_plays_live_video(chromium: Chromium, player: PlayerServer) -> None:
    assert player.sdk_available(), "web/ has no mpegts.js: run npm ci in web/"
    # Opened as localhost: the page's own stream fetch stays same-origin.
    page, status = await chromium.open(player.page_url.replace("127.0.0.1", "localhost"))
    try:
        assert status == 200
        first = await wait_frames(chromium, page, 0)
        links = await chromium.eval(
            page, "() => [...document.querySelectorAll('a')].map((a) => a.textContent)"
        )
        assert links == ["standard", "high", "super"]  # kept for ffplay/VLC users
        assert (first["width"], first["height"]) == (PATTERN.width, PATTERN.height)
        print(f"\nfirst frame {first['firstFrameAt']:.0f} ms after page load")
        before = await chromium.eval(page, PICTURE_HASH)
        # Frames keep coming: more than a second of the pattern's 25 fps after the first.
        later = await wait_frames(chromium, page, first["decodedFrames"] + PATTERN.fps)
        after = await chromium.eval(page, PICTURE_HASH)
        assert before != after, "the picture did not change: frozen video"
        assert later["latency"] < 1.5 + 0.5, later  # the player keeps to the live edge
        print(f"live latency {later['latency']:.2f} s, {later['decodedFrames']} frames decoded")
    finally:
        await chromium.close_page(page)


async def test_bytes_pushed_into_the_player_play(chromium: Chromium, player: PlayerServer) -> None:
    """Push mode, what a data-channel link will use: the page reads the FLV itself (fetch)
    and hands the player the bytes as they arrive."""
    page, status = await chromium.open(player.page_url)
    try:
        assert status == 200
        stats = await chromium.eval(
            page,
            """async (url) => {
              const { createLivePlayer } = await import(
                document.querySelector('script[data-player]').dataset.player);
              // The page's own player goes on: this fetch joins its pull (as a second
              // player, from the GOP cache's keyframe).
              const video = document.createElement('video');
              document.body.append(video);
              const player = createLivePlayer(video, { push: true });
              const response = await fetch(url);
              const reader = response.body.getReader();
              const deadline = performance.now() + 15000;
              let stats = player.stats();
              while (performance.now() < deadline) {
                const { value, done } = await reader.read();
                if (done) break;
                player.push(value);
                stats = player.stats();
                if (stats.decodedFrames > 25) break;
              }
              await reader.cancel();
              player.destroy();
              return { status: response.status, ...stats };
            }""",
            player.live_url(DEVICE),
        )
        assert stats["status"] == 200
        assert stats["decodedFrames"] > 25, stats
        assert (stats["width"], stats["height"]) == (PATTERN.width, PATTERN.height)
    finally:
        await chromium.close_page(page)


async def test_after_a_stall_the_player_jumps_back_to_the_live_edge(
    chromium: Chromium, player: PlayerServer
) -> None:
    """A link that stalls, then delivers seconds of media at once (what a lossy link does):
    the buffer runs seconds ahead of the playing time, and the player must jump back to the
    live edge instead of playing on seconds late."""
    page, status = await chromium.open(player.page_url)
    try:
        assert status == 200
        stats = await chromium.eval(
            page,
            """async (url) => {
              const { createLivePlayer } = await import(
                document.querySelector('script[data-player]').dataset.player);
              const video = document.createElement('video');
              document.body.append(video);
              const player = createLivePlayer(video, { push: true }, { maxLatency: 1.5 });
              const reader = (await fetch(url)).body.getReader();
              let deadline = performance.now() + 15000;
              while (player.stats().decodedFrames < 10 && performance.now() < deadline) {
                player.push((await reader.read()).value);
              }
              // The stall: 3 s of media held back, then handed over at once.
              const held = [];
              const until = performance.now() + 3000;
              while (performance.now() < until) held.push((await reader.read()).value);
              for (const chunk of held) player.push(chunk);
              let behind = 0;
              deadline = performance.now() + 8000;
              let stats = player.stats();
              while (performance.now() < deadline) {
                player.push((await reader.read()).value);  // live bytes go on arriving
                stats = player.stats();
                behind = Math.max(behind, stats.latency);
                if (stats.jumps > 0 && stats.latency < 1.0) break;
              }
              await reader.cancel();
              player.destroy();
              return { behind, ...stats };
            }""",
            player.live_url(DEVICE),
        )
        print(f"\nbehind {stats['behind']:.2f} s after the stall; then {stats['latency']:.2f} s")
        assert stats["behind"] > 1.5, stats  # the stall did put the buffer far ahead
        assert stats["jumps"] >= 1, stats
        assert stats["latency"] < 1.0, stats
        assert stats["error"] is None, stats
    finally:
        await chromium.close_page(page)


async def test_without_the_token_the_browser_gets_403(
    chromium: Chromium, player: PlayerServer
) -> None:
    page, status = await chromium.open(player.url + "/")
    try:
        assert status == 403
        text = await chromium.eval(page, "() => document.body.innerText")
        assert "missing or wrong token" in text
        # The page's scripts are behind the token too (every URL is).
        codes = await chromium.eval(
            page,
            """async (paths) => Promise.all(paths.map(
                 async (p) => (await fetch(p)).status))""",
            ["/sdk/player.js", "/sdk/mpegts.js", "/live/DEMO/cam1.flv"],
        )
        assert codes == [403, 403, 403]
    finally:
        await chromium.close_page(page)
    assert player.refused.get("token", 0) >= 4


async def test_without_the_sdk_the_page_keeps_the_links(
    chromium: Chromium, stack: Stack, module: P2PModule, tmp_path: Path
) -> None:
    """An installed wheel has no web/: the page says how to get the player and keeps the
    links for ffplay/VLC; the script routes answer 404 (with the token), never a file."""
    server = PlayerServer(module, devices=[DEVICE], web_dir=tmp_path)
    await server.start()
    try:
        page, status = await chromium.open(server.page_url)
        assert status == 200
        found = await chromium.eval(
            page,
            """async (paths) => ({
              videos: document.querySelectorAll('video').length,
              links: [...document.querySelectorAll('a')].map((a) => a.textContent),
              text: document.body.innerText,
              codes: await Promise.all(paths.map(async (p) => (await fetch(p)).status)),
            })""",
            [server.sdk_url("player.js"), server.sdk_url("../pyproject.toml")],
        )
        await chromium.close_page(page)
    finally:
        await server.stop()
    assert found["videos"] == 0
    assert found["links"] == ["standard", "high", "super"]
    assert "npm ci" in found["text"]
    assert found["codes"] == [404, 404]
