"""An app maker's web site for the browser tests (not tests): a page, the SDK's modules, and
the app's backend that mints viewer tokens with the app secret, on its own origin. The page
reaches the cloud cross-origin, as a real app's page does, so CORS is exercised too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.browser.chromium import Chromium
from tests.support.stack import Stack
from xp2p.viewer.cloud_client import CloudClient

WEB = Path(__file__).resolve().parents[2] / "web"
MPEGTS = WEB / "node_modules" / "mpegts.js" / "dist" / "mpegts.js"

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>xp2p SDK test site</title></head>
<body><video class="xp2p-live" muted playsinline></video>
<script src="/sdk/mpegts.js"></script></body></html>
"""

#: In the page: `window.site` = the SDK plus helpers the tests share (a module per page).
BOOT = """async (arg) => {
  const sdk = await import('/sdk/index.js');
  const tokenOf = async (body) => {
    const r = await fetch('/token', { method: 'POST', body: JSON.stringify(body ?? {}) });
    if (!r.ok) throw new Error(`the app backend answered ${r.status}`);
    return r.json();
  };
  window.site = { sdk, tokenOf, events: [] };
  return Object.keys(sdk).sort();
}"""


DEVICE = {"productId": "DEMO", "deviceName": "cam1"}

#: Starts a module and a service in the page; every notify is kept in site.events.
START = """async (arg) => {
  const { sdk, tokenOf, events } = window.site;
  const p2p = new sdk.XP2PModule();
  window.site.p2p = p2p;
  const getViewerToken = arg.token ? async () => arg.token : () => tokenOf(arg.tokenRequest);
  try {
    await p2p.init({ appParams: { cloudUrl: arg.cloudUrl, getViewerToken } });
    const started = performance.now();
    await p2p.startP2PService('cam', arg.device, {
      msgCallback: (event, subtype, detail) => events.push([event, subtype, detail]),
    });
    return { ok: true, connectMs: performance.now() - started, mode: p2p.getStreamLinkMode('cam') };
  } catch (err) {
    const { code, errcode, reason, message } = err;
    return { ok: false, code, errcode, reason, message };
  }
}"""

#: Live video through the SDK into the player helper; waits for `arg.frames` decoded frames.
PLAY = """async (arg) => {
  const { sdk, p2p } = window.site;
  const video = document.querySelector('video');
  const player = sdk.createLivePlayer(video, { push: true });
  window.site.player = player;
  const asked = performance.now();
  let bytes = 0;
  await p2p.startStream('cam', {
    flv: arg.flv,
    dataCallback: (data) => { bytes += data.byteLength; player.push(data); },
  });
  const deadline = performance.now() + 15000;
  for (;;) {
    const stats = player.stats();
    if (stats.decodedFrames > arg.frames && stats.firstFrameAt !== null && stats.width > 0) {
      return { ...stats, bytes, firstFrameAfterStart: stats.firstFrameAt - asked };
    }
    if (performance.now() > deadline) return { timedOut: true, stats, bytes };
    await new Promise((r) => setTimeout(r, 20));
  }
}"""

#: Waits until the player has decoded more than `arg.frames` frames.
MORE_FRAMES = """async (arg) => {
  const player = window.site.player;
  const deadline = performance.now() + 15000;
  for (;;) {
    const stats = player.stats();
    if (stats.decodedFrames > arg.frames) return stats;
    if (performance.now() > deadline) return { timedOut: true, stats };
    await new Promise((r) => setTimeout(r, 20));
  }
}"""

#: sha256 of the picture now on the video element.
PICTURE_HASH = """async () => {
  const video = document.querySelector('video');
  const canvas = document.createElement('canvas');
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(video, 0, 0);
  const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  const digest = await crypto.subtle.digest('SHA-256', pixels);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}"""


class SdkSite:
    """``url`` serves ``/`` (the page), ``/sdk/<file>`` (web/src and mpegts.js) and
    ``POST /token`` (a viewer token for the body's devices/permissions/ttl)."""

    def __init__(self) -> None:
        self._backend: CloudClient | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.tokens_minted = 0

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/sdk/{name}", self._sdk)
        app.router.add_post("/token", self._token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        sockets = site._server.sockets  # type: ignore[union-attr]
        self.url = f"http://localhost:{sockets[0].getsockname()[1]}"

    def attach(self, cloud_url: str, app_key: str, app_secret: str) -> None:
        """The backend's account (the site starts first: the cloud must know its origin)."""
        self._backend = CloudClient(cloud_url, app_key, app_secret)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._backend is not None:
            await self._backend.close()

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(body=PAGE, content_type="text/html")

    async def _sdk(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = MPEGTS if name == "mpegts.js" else WEB / "src" / name
        if path.parent not in (WEB / "src", MPEGTS.parent) or not path.is_file():
            raise web.HTTPNotFound()
        return web.Response(body=path.read_bytes(), content_type="text/javascript")

    async def _token(self, request: web.Request) -> web.Response:
        assert self._backend is not None, "attach() the app's account first"
        body: dict[str, Any] = json.loads(await request.read() or b"{}")
        devices = [tuple(d) for d in body.get("devices", [["DEMO", "cam1"]])]
        grant = await self._backend.mint_viewer_token(
            devices=devices,  # type: ignore[arg-type]
            permissions=body.get("permissions"),
            ttl=body.get("ttl"),
        )
        self.tokens_minted += 1
        return web.json_response({"token": grant.token, "expiresAt": grant.expires_at})


async def open_site(chromium: Chromium, site: SdkSite) -> int:
    page, status = await chromium.open(site.url + "/")
    assert status == 200
    exports = await chromium.eval(page, BOOT)
    assert "XP2PModule" in exports
    return page


async def start(chromium: Chromium, page: int, stack: Stack, **arg: Any) -> dict[str, Any]:
    arg.setdefault("device", DEVICE)
    result: dict[str, Any] = await chromium.eval(page, START, {"cloudUrl": stack.cloud.url, **arg})
    return result


async def events(chromium: Chromium, page: int) -> list[list[Any]]:
    return list(await chromium.eval(page, "() => window.site.events"))
