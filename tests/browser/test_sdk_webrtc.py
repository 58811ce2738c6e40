"""The JavaScript SDK (web/src) in real Chromium against a real cloud and device: the seed's
calls over WebRTC, with a viewer token from the app's backend and never the app secret."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest

from tests.browser.chromium import Chromium
from tests.browser.sdk_site import (
    DEVICE,
    MORE_FRAMES,
    PICTURE_HASH,
    PLAY,
    SdkSite,
    events,
    open_site,
    start,
)
from tests.support.stack import PATTERN, Stack
from tests.support.waiting import wait_until
from xp2p.link import Xp2pInfo
from xp2p.viewer.cloud_client import CloudClient, ViewerTokenGrant

pytestmark = pytest.mark.browser


async def test_live_video_plays_over_webrtc(
    chromium: Chromium, sdk_site: SdkSite, sdk_stack: Stack
) -> None:
    page = await open_site(chromium, sdk_site)
    started = await start(chromium, page, sdk_stack)
    assert started["ok"], started
    assert started["mode"] == 62  # direct: one host
    stats = await chromium.eval(page, PLAY, {"frames": 0, "flv": None})
    assert not stats.get("timedOut"), stats
    assert stats["error"] is None
    assert (stats["width"], stats["height"]) == (PATTERN.width, PATTERN.height)
    print(
        f"\nconnect {started['connectMs']:.0f} ms, first frame "
        f"{stats['firstFrameAfterStart']:.0f} ms after startStream"
    )
    before = await chromium.eval(page, PICTURE_HASH)
    later = await chromium.eval(page, MORE_FRAMES, {"frames": stats["decodedFrames"] + 25})
    assert not later.get("timedOut"), later
    assert await chromium.eval(page, PICTURE_HASH) != before  # the picture moves
    notified = [e[1] for e in await events(chromium, page) if e[0] == "notify"]
    assert notified[:3] == ["connected", "request", "parsed"], notified
    assert sdk_site.tokens_minted >= 1


COMMAND = """async (arg) => window.site.p2p.sendCommand('cam', arg.command, arg.options)"""


async def test_commands_get_their_replies(
    chromium: Chromium, sdk_site: SdkSite, sdk_stack: Stack
) -> None:
    page = await open_site(chromium, sdk_site)
    started = await start(chromium, page, sdk_stack)
    assert started["ok"], started["message"]
    ptz = 'action=user_define&channel=0&cmd={"topic":"ptz","data":{"cmd":"ptz_up_press"}}'
    reply = await chromium.eval(page, COMMAND, {"command": ptz})
    assert reply == {
        "type": "success", "status": 200, "data": {"apex": "no"}, "errcode": 0, "errmsg": "",
    }  # fmt: skip
    state = await chromium.eval(
        page, COMMAND, {"command": "action=inner_define&channel=0&cmd=get_device_st&type=live"}
    )
    assert state["type"] == "success" and isinstance(state["data"], list), state
    unknown = 'action=user_define&channel=0&cmd={"topic":"ptz","data":{"cmd":"ptz_spin"}}'
    refused = await chromium.eval(page, COMMAND, {"command": unknown})
    assert (refused["type"], refused["status"], refused["errcode"]) == ("failure", 406, 406)
    assert "unknown ptz command" in refused["errmsg"]
    # A command that cannot be sent is refused by the SDK itself, as in Python.
    bad = await chromium.eval(
        page,
        """async () => {
          try { await window.site.p2p.sendCommand('cam', ''); return null; }
          catch (err) { return { code: err.code, message: err.message }; }
        }""",
    )
    assert bad["code"] == -2000


START_ERROR = """async (arg) => {
  const { sdk } = window.site;
  const p2p = new sdk.XP2PModule();
  try {
    const getViewerToken = async () => arg.token;
    await p2p.init({ appParams: { cloudUrl: arg.cloudUrl, getViewerToken } });
  } catch (err) {
    return { step: 'init', code: err.code, reason: err.reason, message: err.message };
  }
  try {
    await p2p.startP2PService('cam', arg.device);
    return { step: 'started' };
  } catch (err) {
    return { step: 'start', code: err.code, reason: err.reason, message: err.message };
  } finally {
    p2p.destroy();
  }
}"""


async def mint(stack: Stack, **kwargs: Any) -> ViewerTokenGrant:
    """What the app's backend does (with the app secret, outside the browser)."""
    app = stack.config.apps[0]
    async with CloudClient(stack.cloud.url, app.key, app.secret) as backend:
        return await backend.mint_viewer_token(**kwargs)


async def test_tokens_that_do_not_fit_fail_with_their_codes(
    chromium: Chromium, sdk_site: SdkSite, sdk_stack: Stack
) -> None:
    page = await open_site(chromium, sdk_site)
    arg = {"cloudUrl": sdk_stack.cloud.url, "device": DEVICE}

    missing = await chromium.eval(page, START_ERROR, {**arg, "token": ""})
    assert (missing["step"], missing["code"], missing["reason"]) == ("init", -2000, "token_missing")
    # And at the cloud: a browser request without any token.
    raw = await chromium.eval(
        page,
        """async (url) => {
          const r = await fetch(url + '/api/v1/app/session', { method: 'POST', body: '{}' });
          return { status: r.status, body: await r.json() };
        }""",
        sdk_stack.cloud.url,
    )
    assert raw["status"] == 401 and raw["body"]["error"]["code"] == "token_missing"

    expired = await mint(sdk_stack, devices=[("DEMO", "cam1")], ttl=1)
    await wait_until(lambda: time.time() >= expired.expires_at, timeout=5, what="token expiry")
    out = await chromium.eval(page, START_ERROR, {**arg, "token": expired.token})
    assert (out["step"], out["code"], out["reason"]) == ("init", -2000, "token_expired")

    other = await mint(sdk_stack, devices=[("DEMO", "cam2")])
    out = await chromium.eval(page, START_ERROR, {**arg, "token": other.token})
    assert (out["step"], out["code"], out["reason"]) == ("start", -2402, "token_scope"), out

    no_live = await mint(sdk_stack, devices=[("DEMO", "cam1")], permissions=["command"])
    page2 = await open_site(chromium, sdk_site)
    assert (await start(chromium, page2, sdk_stack, token=no_live.token))["ok"]
    refused = await chromium.eval(
        page2,
        """async () => {
          try { await window.site.p2p.startStream('cam', { dataCallback: () => {} }); return null; }
          catch (err) { return { code: err.code, message: err.message }; }
        }""",
    )
    assert refused["code"] == -2402 and "(403)" in refused["message"], refused


#: A cloud in the middle: the page's fetch rewrites the device's answer to name another DTLS
#: certificate (one hex digit of its fingerprint changed) before the SDK sees it.
TAMPER = """() => {
  const realFetch = window.fetch;
  window.fetch = async (url, init) => {
    const response = await realFetch(url, init);
    if (!String(url).endsWith('/connect')) return response;
    const doc = await response.json();
    doc.answer.sdp = doc.answer.sdp.replace(/(a=fingerprint:sha-256 )(.)/,
      (_, head, c) => head + (c === 'A' ? 'B' : 'A'));
    return new Response(JSON.stringify(doc), { status: response.status,
      headers: { 'content-type': 'application/json' } });
  };
}"""


async def test_an_answer_with_another_fingerprint_is_refused(
    chromium: Chromium, sdk_site: SdkSite, sdk_stack: Stack
) -> None:
    page = await open_site(chromium, sdk_site)
    await chromium.eval(page, TAMPER)
    out = await start(chromium, page, sdk_stack)
    assert (out["ok"], out["code"], out["reason"]) == (False, -2001, "bad_identity"), out
    assert "does not match xp2pInfo" in out["message"]
    # xp2pInfo naming another certificate (a stale or forged one) is refused the same way.
    info = Xp2pInfo.parse(sdk_stack.device.xp2p_info)
    forged = replace(info, dtls_fingerprint="A" + info.dtls_fingerprint[1:]).encode()
    assert forged != info.encode()
    page2 = await open_site(chromium, sdk_site)
    out = await start(chromium, page2, sdk_stack, device={**DEVICE, "xp2pInfo": forged})
    assert (out["ok"], out["code"], out["reason"]) == (False, -2001, "bad_identity"), out
    # The camera was not left holding anything: a clean page connects.
    page3 = await open_site(chromium, sdk_site)
    assert (await start(chromium, page3, sdk_stack))["ok"]
