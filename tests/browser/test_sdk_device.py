"""The JavaScript SDK's device functions in Chromium over WebRTC: a download checked byte for
byte (sha256 computed in the page), playback steered by commands, and their callbacks."""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.browser.chromium import Chromium
from tests.browser.sdk_site import SdkSite, open_site, start
from tests.support.recordings import frame_times, record, start_recording_device
from tests.support.stack import Stack
from xp2p.device.record_index import Segment
from xp2p.flv import FlvReader, FlvTag, starts_gop

pytestmark = pytest.mark.browser


@dataclass
class Recorded:
    t0: int  #: unix seconds; the recording runs [t0 + 0.5 s, t0 + 12.5 s) in 2 s segments
    segments: list[Segment]
    folder: Path


@pytest.fixture
async def recorded(sdk_stack: Stack, tmp_path: Path) -> Recorded:
    t0 = int(time.time()) - 7200
    folder = tmp_path / "rec" / "ch0"
    segments = record(folder, t0 * 1000 + 500, seconds=12.0)
    await start_recording_device(sdk_stack, tmp_path / "rec")
    return Recorded(t0, segments, folder)


COMMAND = """async (arg) => window.site.p2p.sendCommand('cam', arg)"""

#: A download through the seed's callbacks; the page hashes what arrived.
DOWNLOAD = """async (arg) => {
  const p2p = window.site.p2p;
  const calls = [];
  const chunks = [];
  const done = new Promise((resolve) => {
    p2p.startLocalDownload('cam', { urlParams: arg.urlParams, keepLink: arg.keepLink }, {
      onHeadersReceived: (r) => calls.push(['headers', r.status, r.headers]),
      onChunkReceived: (chunk) => { chunks.push(new Uint8Array(chunk)); },
      onSuccess: (r) => calls.push(['success', r.status, r.bytesReceived, r.errcode]),
      onFailure: (r) => calls.push(['failure', r.status, r.errcode, r.errmsg,
                                    new TextDecoder().decode(r.data)]),
      onError: (r) => calls.push(['error', r.errmsg]),
      onComplete: () => { calls.push(['complete']); resolve(); },
    }).catch((err) => { calls.push(['threw', err.code]); resolve(); });
  });
  await done;
  const blob = new Blob(chunks);
  const digest = await crypto.subtle.digest('SHA-256', await blob.arrayBuffer());
  const hex = (b) => b.toString(16).padStart(2, '0');
  const sha256 = Array.from(new Uint8Array(digest), hex).join('');
  return { calls, size: blob.size, chunks: chunks.length, sha256 };
}"""


async def test_a_download_is_byte_exact(
    chromium: Chromium, sdk_site: SdkSite, sdk_stack: Stack, recorded: Recorded
) -> None:
    page = await open_site(chromium, sdk_site)
    assert (await start(chromium, page, sdk_stack))["ok"]
    listed = await chromium.eval(
        page,
        COMMAND,
        f"action=inner_define&channel=0&cmd=get_file_list&start_time={recorded.t0}"
        f"&end_time={recorded.t0 + 20}&file_type=0",
    )
    assert listed["type"] == "success", listed
    files = listed["data"]["file_list"]
    assert [f["file_name"] for f in files] == [s.file_name for s in recorded.segments]
    name = files[2]["file_name"]
    expected = (recorded.folder / name).read_bytes()
    whole = {"urlParams": f"channel=0&file_name={name}&offset=0", "keepLink": True}
    got = await chromium.eval(page, DOWNLOAD, whole)
    kinds = [c[0] for c in got["calls"]]
    assert kinds == ["headers", "success", "complete"], got["calls"]
    headers = got["calls"][0][2]
    assert headers["x-content-sha256"] == hashlib.sha256(expected).hexdigest()
    assert got["calls"][1] == ["success", 200, len(expected), 0]
    assert (got["size"], got["sha256"]) == (len(expected), hashlib.sha256(expected).hexdigest())

    # Resumed from an offset: the rest, byte for byte.
    offset = len(expected) // 3
    rest = await chromium.eval(
        page,
        DOWNLOAD,
        {"urlParams": f"channel=0&file_name={name}&offset={offset}", "keepLink": True},
    )
    assert rest["sha256"] == hashlib.sha256(expected[offset:]).hexdigest()

    # A missing file: onFailure with the device's 404 and reason, then onComplete.
    missing = await chromium.eval(
        page, DOWNLOAD, {"urlParams": "channel=0&file_name=nope.flv", "keepLink": True}
    )
    assert [c[0] for c in missing["calls"]] == ["headers", "failure", "complete"]
    _, status, errcode, errmsg, data = missing["calls"][1]
    assert (status, errcode) == (404, -2701) and "no such file" in errmsg and data == errmsg
    # urlParams that cannot name a download are refused before anything is sent.
    bad = await chromium.eval(page, DOWNLOAD, {"urlParams": "channel=0&action=live"})
    assert bad["calls"] == [["threw", -2000]]
    # Without keepLink the link closes once onComplete has run, as the guide says.
    last = await chromium.eval(page, DOWNLOAD, {"urlParams": f"channel=0&file_name={name}"})
    assert [c[0] for c in last["calls"]] == ["headers", "success", "complete"]
    after = await chromium.eval(page, COMMAND, "action=inner_define&channel=0&cmd=get_device_st")
    assert after["type"] == "error" and "no link" in after["errmsg"], after


#: A playback pull whose bytes the page keeps; `mark()` returns how many arrived so far.
PLAYBACK = """async (arg) => {
  const p2p = window.site.p2p;
  const parts = [];
  let size = 0;
  window.site.playback = {
    mark: () => size,
    bytes: () => {
      const all = new Uint8Array(size);
      let at = 0;
      for (const p of parts) { all.set(p, at); at += p.length; }
      let text = '';
      for (let i = 0; i < all.length; i += 0x8000) {
        text += String.fromCharCode(...all.subarray(i, i + 0x8000));
      }
      return btoa(text);
    },
  };
  await p2p.startStream('cam', {
    flv: { filename: 'ipc.flv', params: arg.params },
    dataCallback: (data) => { parts.push(new Uint8Array(data)); size += data.byteLength; },
  });
  return 0;
}"""

#: Waits until `arg.bytes` more bytes than `arg.mark` arrived.
WAIT_BYTES = """async (arg) => {
  const deadline = performance.now() + 15000;
  while (window.site.playback.mark() < arg.mark + arg.bytes) {
    if (performance.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
}"""


def video(data: bytes) -> list[FlvTag]:
    items = FlvReader().feed(data)
    return [i for i in items if isinstance(i, FlvTag) and i.is_video and not i.is_sequence_header]


async def test_playback_seek_lands_on_the_keyframe_at_or_before(
    chromium: Chromium, sdk_site: SdkSite, sdk_stack: Stack, recorded: Recorded
) -> None:
    page = await open_site(chromium, sdk_site)
    assert (await start(chromium, page, sdk_stack))["ok"]
    start_s, end_s = recorded.t0 + 1, recorded.t0 + 12
    await chromium.eval(
        page,
        PLAYBACK,
        {"params": f"action=playback&channel=0&start_time={start_s}&end_time={end_s}"},
    )
    assert await chromium.eval(page, WAIT_BYTES, {"mark": 0, "bytes": 20_000})
    paused = await chromium.eval(page, COMMAND, "action=inner_define&channel=0&cmd=playback_pause")
    assert (paused["type"], paused["data"]) == ("success", {"status": "0"})
    # What was in flight when the pause landed: wait until the bytes stop growing.
    mark = await settled_mark(chromium, page)
    target = (recorded.t0 + 8) * 1000
    sought = await chromium.eval(
        page, COMMAND, f"action=inner_define&channel=0&cmd=playback_seek&time={target // 1000}"
    )
    assert (sought["type"], sought["data"]) == ("success", {"status": "0"}), sought
    progress = await chromium.eval(
        page, COMMAND, "action=inner_define&channel=0&cmd=playback_progress"
    )
    assert progress["data"]["progress"] == str(target - start_s * 1000)
    await chromium.eval(page, COMMAND, "action=inner_define&channel=0&cmd=playback_resume")
    assert await chromium.eval(page, WAIT_BYTES, {"mark": mark, "bytes": 20_000})
    data = base64.b64decode(await chromium.eval(page, "() => window.site.playback.bytes()"))
    frames = frame_times(recorded.folder, recorded.segments)
    after = video(data)[len(video(data[:mark])) :]
    assert after and starts_gop(after[0])
    landed = frames[after[0].data]
    assert landed == recorded.t0 * 1000 + 7500  # the keyframe at or before t0 + 8 s
    assert all(frames[f.data] >= landed for f in after)


async def settled_mark(chromium: Chromium, page: int) -> int:
    """The byte count once no byte arrived for 300 ms (the pause's in-flight data landed)."""
    result = await chromium.eval(
        page,
        """async () => {
          let last = -1;
          for (;;) {
            const now = window.site.playback.mark();
            if (now === last) return now;
            last = now;
            await new Promise((r) => setTimeout(r, 300));
          }
        }""",
    )
    return int(result)
