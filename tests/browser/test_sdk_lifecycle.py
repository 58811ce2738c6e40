"""The JavaScript SDK's service lifecycle in Chromium: the seed's rules on ids and callbacks,
a lost device notified as `disconnect`, a Python viewer and a browser on one camera at once,
FLV talk-back through startVoiceData's writer, and the grant renewed on a long link."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from tests.browser.chromium import Chromium
from tests.browser.sdk_site import PLAY, SdkSite, open_site, start
from tests.support.procs import free_port
from tests.support.stack import PATTERN, Stack
from tests.support.voice import dominant_hz, read_wav, wav_files
from tests.support.waiting import wait_until
from xp2p.device import DeviceAgent
from xp2p.device.voice_sink import VoiceFiles
from xp2p.media.audio import encode_aac_flv, tone_pcm
from xp2p.viewer import P2PModule, StreamInfo

pytestmark = pytest.mark.browser

CALL = """async (arg) => {
  const p2p = window.site.p2p;
  try {
    return { value: await p2p[arg.method](...arg.args) };
  } catch (err) {
    return { code: err.code, errcode: err.errcode, errmsg: err.errmsg };
  }
}"""


async def call(chromium: Chromium, page: int, method: str, *args: Any) -> dict[str, Any]:
    result: dict[str, Any] = await chromium.eval(page, CALL, {"method": method, "args": args})
    return result


async def notifies(chromium: Chromium, page: int) -> list[str]:
    events = await chromium.eval(page, "() => window.site.events")
    return [e[1] for e in events if e[0] == "notify"]


async def test_the_seeds_rules_on_ids_and_calls(
    chromium: Chromium, sdk_site: SdkSite, sdk_stack: Stack
) -> None:
    page = await open_site(chromium, sdk_site)
    assert (await start(chromium, page, sdk_stack))["ok"]
    device = {"productId": "DEMO", "deviceName": "cam1"}
    again = await call(chromium, page, "startP2PService", "cam", device)
    assert again["code"] == -2401 and "already running" in again["errmsg"]
    assert (await call(chromium, page, "sendCommand", "nope", "action=x"))["code"] == -2403
    assert (await call(chromium, page, "startStream", "cam", {}))["code"] == -2000
    assert (await call(chromium, page, "startP2PService", "x", {}))["code"] == -2000
    assert (await call(chromium, page, "getUUID"))["value"]
    # updateServiceCallbacks returns its code, as the seed's does.
    swapped = await chromium.eval(
        page,
        """() => {
          const p2p = window.site.p2p;
          window.site.second = [];
          const bad = p2p.updateServiceCallbacks('cam', {});
          const ok = p2p.updateServiceCallbacks('cam', {
            msgCallback: (e, s, d) => window.site.second.push(s) });
          p2p.stopStream('cam');
          return [bad, ok];
        }""",
    )
    assert swapped == [-2000, 0]
    inited = await chromium.eval(
        page,
        """async () => {
          try { await window.site.p2p.init({ appParams: { cloudUrl: 'http://x',
            getViewerToken: async () => 't' } }); return null; }
          catch (err) { return err.code; }
        }""",
    )
    assert inited == -2003


async def test_a_refused_automatic_pull_leaves_no_service(
    chromium: Chromium, sdk_site: SdkSite, sdk_stack: Stack
) -> None:
    await sdk_stack.device.close()
    sdk_stack.device = DeviceAgent(sdk_stack.device_config(max_viewers=1))
    await sdk_stack.device.start()
    await sdk_stack.device.wait_signed_in(10)
    # Another viewer pulls, so the camera (one viewer at most) refuses the page's pull.
    other = P2PModule()
    await other.init(sdk_stack.app_params)
    await other.start_p2p_service("other", StreamInfo(product_id="DEMO", device_name="cam1"))
    await other.start_stream("other", lambda _b: None)
    page = await open_site(chromium, sdk_site)
    try:
        assert (await start(chromium, page, sdk_stack))["ok"]
        refused = await _refused_automatic_pull(chromium, page)
    finally:
        await other.destroy()
    assert refused["code"] == -2402 and "(503)" in refused["message"], refused
    assert refused["again"] == "started"


async def _refused_automatic_pull(chromium: Chromium, page: int) -> dict[str, Any]:
    refused: dict[str, Any] = await chromium.eval(
        page,
        """async () => {
          const p2p = window.site.p2p;
          p2p.stopP2PService('cam');  // one link per device: 'auto' is this page's only one
          const info = { productId: 'DEMO', deviceName: 'cam1' };
          try {
            await p2p.startP2PService('auto', info, { dataCallback: () => {} });
            return null;
          } catch (err) {
            // The device was full (503): the id is free again, nothing was left running.
            const again = await p2p.startP2PService('auto', info).then(() => 'started');
            return { code: err.code, message: err.message, again };
          }
        }""",
    )
    return refused


async def test_a_device_that_vanishes_is_a_disconnect(
    chromium: Chromium, sdk_site: SdkSite, sdk_stack: Stack
) -> None:
    page = await open_site(chromium, sdk_site)
    assert (await start(chromium, page, sdk_stack))["ok"]
    stats = await chromium.eval(page, PLAY, {"frames": 5, "flv": None})
    assert not stats.get("timedOut"), stats
    await sdk_stack.device.close()  # the camera goes away: its links close
    await wait_until(
        lambda: _has(chromium, page, "disconnect"), timeout=15, what="a disconnect notify"
    )
    assert (await call(chromium, page, "sendCommand", "cam", "action=inner_define&cmd=x"))["value"][
        "type"
    ] == "error"


async def _has(chromium: Chromium, page: int, subtype: str) -> bool:
    return subtype in await notifies(chromium, page)


async def test_a_python_viewer_and_a_browser_watch_one_camera(
    chromium: Chromium, sdk_site: SdkSite, sdk_stack: Stack
) -> None:
    python = P2PModule()
    await python.init(sdk_stack.app_params)
    received = bytearray()
    try:
        await python.start_p2p_service(
            "cam", StreamInfo(product_id="DEMO", device_name="cam1"), data_callback=received.extend
        )
        page = await open_site(chromium, sdk_site)
        assert (await start(chromium, page, sdk_stack))["ok"]
        stats = await chromium.eval(page, PLAY, {"frames": 25, "flv": None})
        assert not stats.get("timedOut"), stats
        assert (stats["width"], stats["height"]) == (PATTERN.width, PATTERN.height)
        before = len(received)
        await wait_until(lambda: len(received) > before + 10_000, timeout=10, what="QUIC bytes")
        assert (len(sdk_stack.device.links), len(sdk_stack.device.webrtc_links)) == (1, 1)
    finally:
        await python.destroy()


@pytest.fixture
async def talk_device(sdk_stack: Stack, tmp_path: Path) -> DeviceAgent:
    await sdk_stack.device.close()
    device = DeviceAgent(sdk_stack.device_config(voice_sink=VoiceFiles(tmp_path / "voice")))
    sdk_stack.device = device
    await device.start()
    await device.wait_signed_in(10)
    return device


VOICE_DATA = """async (arg) => {
  const p2p = window.site.p2p;
  const calls = [];
  const flv = Uint8Array.from(atob(arg.flv), (c) => c.charCodeAt(0));
  const done = new Promise((resolve) => {
    p2p.startVoiceData('cam', { urlParams: 'channel=0&calltype=audio' }, {
      onStop: () => calls.push(['stop']),
      onSuccess: (r) => calls.push(['success', r.status]),
      onFailure: (r) => calls.push(['failure', r.status, r.errmsg]),
      onError: (r) => calls.push(['error', r.errmsg]),
      onComplete: () => { calls.push(['complete']); resolve(); },
    }).then((writer) => {
      // Split anywhere, as the seed's pusher hands it over.
      for (let i = 0; i < flv.length; i += 777) writer.addChunk(flv.slice(i, i + 777).buffer);
      p2p.stopVoice('cam');
    }, (err) => { calls.push(['threw', err.code]); resolve(); });
  });
  await done;
  return calls;
}"""


async def test_flv_talk_back_through_the_writer(
    chromium: Chromium,
    sdk_site: SdkSite,
    sdk_stack: Stack,
    talk_device: DeviceAgent,
    tmp_path: Path,
) -> None:
    flv = encode_aac_flv(tone_pcm(1000, 2.0))
    page = await open_site(chromium, sdk_site)
    assert (await start(chromium, page, sdk_stack))["ok"]
    calls = await chromium.eval(page, VOICE_DATA, {"flv": base64.b64encode(flv).decode()})
    assert calls == [["stop"], ["success", 200], ["complete"]], calls
    (path,) = wav_files(tmp_path / "voice")
    fmt, pcm = read_wav(path)
    assert fmt.seconds(len(pcm)) >= 1.5
    assert abs(dominant_hz(pcm, fmt.sample_rate) - 1000) <= 20


NAT_INIT = """async (arg) => {
  const { sdk, tokenOf } = window.site;
  const p2p = new sdk.XP2PModule();
  window.site.p2p = p2p;
  window.site.nat = [];
  try {
    await p2p.init({ appParams: { cloudUrl: arg.cloudUrl, getViewerToken: () => tokenOf({}) },
                     eventHandler: (event, detail) => window.site.nat.push([event, detail]) });
    return { ok: true };
  } catch (err) {
    return { ok: false, code: err.code, errmsg: err.errmsg };
  }
}"""


async def test_init_against_an_unreachable_cloud_is_2006(
    chromium: Chromium, sdk_site: SdkSite, sdk_stack: Stack
) -> None:
    page = await open_site(chromium, sdk_site)
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens
    closed = await chromium.eval(page, NAT_INIT, {"cloudUrl": url})
    assert closed["code"] == -2006 and "cannot reach the cloud" in closed["errmsg"], closed


async def test_a_network_change_is_checked_without_reset_p2p(
    chromium: Chromium, sdk_site: SdkSite, sdk_stack: Stack
) -> None:
    """The page's 'online' event (what a browser fires when it joins a network) makes the
    module check its network again by itself. Here the new network's STUN does not answer
    (the session's STUN address is pointed at one nobody serves), so the check reports
    natError, which no resetP2P asked for."""
    page = await open_site(chromium, sdk_site)
    assert (await chromium.eval(page, NAT_INIT, {"cloudUrl": sdk_stack.cloud.url}))["ok"]
    assert await chromium.eval(page, "() => window.site.nat") == []
    await chromium.eval(
        page,
        """() => {
          window.site.p2p._session.iceServers = [{ urls: 'stun:127.0.0.9:3478' }];
          window.dispatchEvent(new Event('online'));
        }""",
    )

    async def reported() -> bool:
        return bool(await chromium.eval(page, "() => window.site.nat.length"))

    await wait_until(reported, 15, 0.1, "natError after the 'online' event")
    ((event, detail),) = await chromium.eval(page, "() => window.site.nat")
    assert event == "natError" and detail["code"] == -2202
    # destroy removes the listener: another 'online' checks nothing.
    await chromium.eval(
        page,
        "() => { window.site.p2p.destroy(); window.dispatchEvent(new Event('online')); }",
    )
    assert await chromium.eval(page, "() => window.site.p2p._probing") is False


SWITCH = """async (arg) => {
  const p2p = window.site.p2p;
  const out = [];
  for (const domain of arg.domains) {
    const info = { productId: 'DEMO', deviceName: 'cam1', ...domain };
    try {
      await p2p.startP2PService('sw', info);
      const connected = window.site.events.filter((e) => e[1] === 'connected').pop();
      out.push({ ok: true, connected });
      p2p.stopP2PService('sw');
    } catch (err) {
      const left = p2p._services.has('sw');
      out.push({ code: err.code, reason: err.reason, message: err.detail, left });
    }
  }
  return out;
}"""


async def test_live_stream_domain_asks_the_camera_first(
    chromium: Chromium, sdk_site: SdkSite, sdk_stack: Stack
) -> None:
    """The seed's switch in the browser: a camera with room stays 1v1 (under either spelling
    of the option); a full one is -2004 `camera_full` (this SDK cannot join its swarm), with
    no service left; a domain that is no edge is -2000 before any link."""
    await sdk_stack.device.close()
    sdk_stack.device = DeviceAgent(sdk_stack.device_config(max_viewers=1))
    await sdk_stack.device.start()
    await sdk_stack.device.wait_signed_in(10)
    page = await open_site(chromium, sdk_site)
    assert (await start(chromium, page, sdk_stack))["ok"]
    await call(chromium, page, "stopP2PService", "cam")
    await chromium.eval(
        page,
        """() => { const p2p = window.site.p2p, events = window.site.events;
          const start = p2p.startP2PService.bind(p2p);
          p2p.startP2PService = (id, info, cb) => start(id, info, { ...cb,
            msgCallback: (e, s, d) => events.push([e, s, d]) }); }""",
    )
    domain = sdk_stack.cloud.url
    roomy = await chromium.eval(
        page, SWITCH, {"domains": [{"liveStreamDomain": domain}, {"streamLiveDomain": domain}]}
    )
    for result in roomy:
        assert result["ok"] and result["connected"][2]["mode"] == "1v1", roomy
    other = P2PModule()
    await other.init(sdk_stack.app_params)
    try:
        await other.start_p2p_service("o", StreamInfo(product_id="DEMO", device_name="cam1"))
        await other.start_stream("o", lambda _b: None)
        (full, bad) = await chromium.eval(
            page,
            SWITCH,
            {"domains": [{"liveStreamDomain": domain}, {"liveStreamDomain": "ftp://edge"}]},
        )
    finally:
        await other.destroy()
    assert (full["code"], full["reason"], full["left"]) == (-2004, "camera_full", False), full
    assert "is full (405)" in full["message"]
    assert bad["code"] == -2000 and "liveStreamDomain" in bad["message"], bad
