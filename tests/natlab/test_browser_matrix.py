"""The browser connection matrix (issue 11 item 5): headless Chromium inside a lab host's
namespace, behind each NAT kind (and on a network that blocks UDP), reaches a camera behind
each NAT kind through the JavaScript SDK over WebRTC: live video decodes at the camera's size,
and the link is direct exactly where theory allows (``lab.direct_possible``, the same theory
``test_matrix.py`` holds the Python viewer to) and through the cloud's TURN otherwise.

One Chromium per viewer site (it must run in that site's namespace), one page per pair. The
page is the cloud's own origin (``/sdk/index.js`` opened as a document, which then loads the
SDK and mpegts.js from ``/sdk/``), so no CORS is involved; the viewer token is minted by an
"app backend" on the public network with the app secret (``LabWorld.mint_viewer_token``) and
handed to the page, which never sees the secret.

"Direct" is where the camera's video flows: Chromium's selected pair is direct and carries
the camera's bytes (``bytesReceived``), polled for a few seconds after the first frames.

Where a path must be hole-punched, Chromium (the controlling agent, nominating at once) often
opens the link on the relay, which needs no punching, and selects the direct pair when it
answers 50-500 ms later. Two known gaps follow; a pair that theory calls direct and that opened
on the relay (getStreamLinkMode 63) is reported as xfail with the gap it shows, so the test
passes as they are fixed; any other mismatch fails:

* ``STALE_MODE`` (web/src/module.js ``_connect``): the SDK fixes ``getStreamLinkMode`` (and
  ``connected``'s ``link_mode``) from the pair selected when the data channel opens, so a link
  that moved to the direct pair keeps reporting 63.
* ``CAMERA_ON_RELAY`` (the device's ICE agent, aioice as the controlled side): at the first
  nomination it completes and cancels its checks in flight, leaving those pairs "in progress";
  Chromium's later USE-CANDIDATE on such a pair is honoured only for a succeeded pair and
  starts no triggered check, so the camera keeps sending on the relay: Chromium sends direct,
  the video comes through TURN ("half"). Where only the camera's checks can open the path
  (a symmetric camera, a restricted-cone Chromium) the direct pair never forms ("relay").
  The Python viewer waits ``relay_grace`` before nominating a relay, so ``test_matrix.py``
  does not meet this.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.browser.chromium import BrowserError, Chromium
from tests.browser.sdk_site import PLAY, START

from .lab import NAT_KINDS, NatKind, NatLab, direct_possible
from .world import CLOUD_URL, PATTERN_ARGS, PRODUCT, LabWorld, Site

pytestmark = pytest.mark.natlab

VIEWER_KINDS = (*NAT_KINDS, NatKind.UDP_BLOCKED)
LINK_MODE = {True: 62, False: 63}  # getStreamLinkMode: direct, relay
WIDTH, HEIGHT = (int(n) for n in PATTERN_ARGS[PATTERN_ARGS.index("--size") + 1].split("x"))

#: The page: `/sdk/index.js` opened as a document shows the module's text; replace it with the
#: <video> the player needs, load mpegts.js (a classic script, as the web app does) and the SDK.
#: `window.site` is what sdk_site's START and PLAY expect.
BOOT = """async () => {
  document.body.replaceChildren();
  const video = document.createElement('video');
  video.muted = true;
  video.playsInline = true;
  document.body.append(video);
  await new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = '/sdk/mpegts.js';
    script.onload = resolve;
    script.onerror = () => reject(new Error('/sdk/mpegts.js did not load'));
    document.head.append(script);
  });
  let sdk;
  try {
    sdk = await import('/sdk/index.js');
  } catch (err) {
    // Which of the module graph's files failed, and how (the import error names only the root).
    const files = performance.getEntriesByType('resource').map(
      (e) => `${e.name} ${e.responseStatus} ${Math.round(e.duration)}ms`);
    throw new Error(`${err}; files: ${files.join(', ')}`);
  }
  window.site = { sdk, events: [] };
  return Object.keys(sdk).sort();
}"""

#: After PLAY (video still flowing): the mode the SDK reports, and the selected pair once it
#: settled: for a pair theory says is direct, polled until Chromium's selected pair is direct
#: and carries bytes, or ``arg.settleMs`` passed. ``trail``: [ms, mode, local, remote] per
#: change of the selected pair. Then everything is closed.
LINK = """async (arg) => {
  const { p2p } = window.site;
  const mode = p2p.getStreamLinkMode('cam');
  const t0 = performance.now();
  const pairOf = (s) => [s.mode, s.localCandidateType, s.remoteCandidateType];
  let stats = await p2p.getLinkStats('cam');
  const trail = [[0, ...pairOf(stats)]];
  const settled = (s) => !arg.expectDirect || (s.mode === 'direct' && s.bytesReceived > 0);
  while (!settled(stats) && performance.now() - t0 < arg.settleMs) {
    await new Promise((r) => setTimeout(r, 50));
    const now = await p2p.getLinkStats('cam');
    if (pairOf(now).join() !== pairOf(stats).join()) {
      trail.push([Math.round(performance.now() - t0), ...pairOf(now)]);
    }
    stats = now;
  }
  p2p.stopStream('cam');
  p2p.stopP2PService('cam');
  p2p.destroy();
  return { mode, stats, trail, settleMs: Math.round(performance.now() - t0) };
}"""
#: How long a pair theory calls direct may take to move off the relay (50-500 ms seen).
SETTLE_MS = 3000

STALE_MODE = (
    "the SDK reports the mode of the pair selected when the link opened (the relay), not the "
    "direct pair the video moved to (web/src/module.js _connect)"
)
CAMERA_ON_RELAY = (
    "the camera keeps sending on the relay Chromium nominated first: its ICE agent (aioice, "
    "controlled) cancelled its checks in flight at that nomination and ignores USE-CANDIDATE "
    "on those pairs"
)

PAIRS = [(viewer, camera) for viewer in VIEWER_KINDS for camera in NAT_KINDS]


def chromium_flags(world: LabWorld) -> list[str]:
    return [
        # The lab cloud's certificate is self-signed: let exactly that one through (pinned
        # by its public key) rather than every certificate. The page is then a secure
        # context, so no --unsafely-treat-insecure-origin-as-secure is needed.
        f"--ignore-certificate-errors-spki-list={world.cloud_spki_sha256}",
        # Chromium hides its host address behind an mDNS name by default. Across the lab's
        # sites a host candidate is useless either way (every private network is its own
        # link; the sink drops packets for them), but the device cannot resolve the name
        # (mDNS is link-local) and aioice spends its 1 s resolution timeout per name while
        # applying the offer, before it answers: connect times would measure that, not NAT
        # traversal. With plain host addresses the device pairs them and their checks die
        # at the sink, at no cost, as a Python viewer's do.
        "--disable-features=WebRtcHideLocalIpsWithMdns",
    ]


@dataclass
class Viewer:
    """The Chromium of one viewer site, with a viewer token for every camera."""

    kind: NatKind
    site: Site
    chromium: Chromium
    token: dict[str, Any]


@pytest.fixture(scope="module")
def cameras(lab: NatLab, world: LabWorld) -> dict[NatKind, str]:
    """One camera behind each NAT kind: kind -> device name."""
    found = {}
    for i, kind in enumerate(NAT_KINDS, start=1):
        name = f"cam{i}"
        world.start_device(lab.add_site(kind), name)
        found[kind] = name
    return found


@pytest.fixture(scope="module")
def viewers(
    lab: NatLab, world: LabWorld, cameras: dict[NatKind, str]
) -> Iterator[Callable[[NatKind], Viewer]]:
    """The viewer behind a NAT kind: its site and Chromium, made at its first pair. One
    Chromium at a time (the pairs come viewer by viewer): the last one closes then."""
    current: list[Viewer] = []

    def viewer(kind: NatKind) -> Viewer:
        if current and current[0].kind == kind:
            return current[0]
        if current:
            current.pop().chromium.close()
        site = lab.add_site(kind)
        token = world.mint_viewer_token([f"{PRODUCT}/{name}" for name in cameras.values()])
        prefix = ["ip", "netns", "exec", site.host]
        chromium = Chromium(timeout=45.0, args=chromium_flags(world), command_prefix=prefix)
        current.append(Viewer(kind, site, chromium, token))
        return current[0]

    yield viewer
    if current:
        current.pop().chromium.close()


@pytest.fixture(scope="module")
def results(
    pytestconfig: pytest.Config,
) -> Iterator[dict[tuple[NatKind, NatKind], dict[str, Any]]]:
    """(viewer kind, camera kind) -> what the pair measured; the table is printed at the end
    (to the terminal, never captured: the figures are the point of a lab run)."""
    table: dict[tuple[NatKind, NatKind], dict[str, Any]] = {}
    yield table
    terminal = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    if table and terminal is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            for line in table_lines(table):
                terminal.write_line(line)


def table_lines(table: dict[tuple[NatKind, NatKind], dict[str, Any]]) -> list[str]:
    lines = ["", "browser matrix, Chromium's NAT -> camera's NAT: expected link, the SDK's mode"]
    lines.append("(62/63), the settled pair (ms after the first frames), startP2PService ms,")
    lines.append("first frame ms after startStream")
    for (viewer, camera), r in table.items():
        if "error" in r:
            got = f"FAILED {r['error']}"
        else:
            settled = f"{r['got']} ({r['stats']['localCandidateType']}, {r['settle_ms']} ms)"
            got = (
                f"sdk {r['sdk_mode']} settled {settled:24} connect {r['connect_ms']:4.0f}"
                f" first frame {r['first_frame_ms']:4.0f}"
            )
        lines.append(f"  {viewer.value:>15} -> {camera.value:<15} {r['expected']:6} {got}")
    return lines


async def boot_page(chromium: Chromium) -> tuple[int, list[str]]:
    """A page with the SDK loaded. Seen in 1 clean-clone run of 3: a fresh Chromium's first
    page behind a lab NAT gets a few of the module graph's fetches failed at once (status 0,
    ~35 ms), and a failed module import stays failed in that page.
    One new page is tried, and said; a second failure fails the test. The lab's TCP path
    (not the SDK, which a real page loads on an ordinary network) is where to look."""
    for attempt in (1, 2):
        page, status = await chromium.open(f"{CLOUD_URL}/sdk/index.js")
        assert status == 200, f"the cloud served /sdk/index.js with {status}"
        try:
            return page, list(await chromium.eval(page, BOOT))
        except BrowserError as exc:
            await chromium.close_page(page)
            if attempt == 2 or "Failed to fetch dynamically imported module" not in str(exc):
                raise
            print(f"\nthe SDK did not load in a fresh page, once more: {exc}")
    raise AssertionError("unreachable")


async def play_pair(
    chromium: Chromium, token: dict[str, Any], camera: str, direct: bool
) -> dict[str, Any]:
    """One page: the SDK reaches ``camera`` and plays it; what it measured."""
    page, exports = await boot_page(chromium)
    try:
        assert "XP2PModule" in exports, exports
        device = {"productId": PRODUCT, "deviceName": camera}
        started = await chromium.eval(
            page, START, {"cloudUrl": CLOUD_URL, "device": device, "token": token}
        )
        if not started["ok"]:
            return {"error": f"startP2PService: {started}"}
        played = await chromium.eval(page, PLAY, {"frames": 5, "flv": None})
        if played.get("timedOut") or played.get("error") is not None:
            return {"error": f"no video: {played}", "connect_ms": started["connectMs"]}
        link = await chromium.eval(page, LINK, {"expectDirect": direct, "settleMs": SETTLE_MS})
    finally:
        await chromium.close_page(page)
    return {
        "connect_ms": started["connectMs"],
        "first_frame_ms": played["firstFrameAfterStart"],
        "size": (played["width"], played["height"]),
        "sdk_mode": link["mode"],
        "stats": link["stats"],
        "trail": link["trail"],
        "settle_ms": link["settleMs"],
        "got": path_of(link["stats"]),
    }


def path_of(stats: dict[str, Any]) -> str:
    """Where the video flows: ``direct``, ``relay``, or ``half`` (Chromium's selected pair is
    direct but none of the camera's bytes arrive on it: the camera still sends via TURN)."""
    if stats["mode"] == "direct" and stats["bytesReceived"] == 0:
        return "half"
    return str(stats["mode"])


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("viewer_kind", "camera_kind"), PAIRS, ids=[f"{v.value}-to-{c.value}" for v, c in PAIRS]
)
async def test_chromium_plays_the_camera_direct_where_theory_allows_else_through_turn(
    viewers: Callable[[NatKind], Viewer],
    cameras: dict[NatKind, str],
    results: dict[tuple[NatKind, NatKind], dict[str, Any]],
    viewer_kind: NatKind,
    camera_kind: NatKind,
) -> None:
    viewer = viewers(viewer_kind)
    direct = direct_possible(camera_kind, viewer_kind)
    expected = "direct" if direct else "relay"
    results[(viewer_kind, camera_kind)] = {"expected": expected, "error": "did not finish"}
    measured = await play_pair(viewer.chromium, viewer.token, cameras[camera_kind], direct)
    results[(viewer_kind, camera_kind)] = {"expected": expected, **measured}

    assert "error" not in measured, measured["error"]
    assert measured["size"] == (WIDTH, HEIGHT), f"decoded at {measured['size']}"
    detail = f"SDK mode {measured['sdk_mode']}, selected pairs {measured['trail']}"
    if direct and measured["sdk_mode"] == LINK_MODE[False]:  # opened on the relay
        known = STALE_MODE if measured["got"] == "direct" else CAMERA_ON_RELAY
        pytest.xfail(f"{known}; settled {measured['got']} ({detail})")
    assert measured["got"] == expected, f"theory says {expected}, got {measured['got']}: {detail}"
    assert measured["sdk_mode"] == LINK_MODE[direct], f"getStreamLinkMode: {detail}"
