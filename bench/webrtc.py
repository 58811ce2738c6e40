"""WebRTC links (what a browser gets) beside QUIC links (the Python viewer), same device, same run.

One process, one event loop: the cloud, a ``DeviceAgent`` (test pattern 640x360@25,
800 kbit/s, GOP 50; a file of random bytes in its channel folder) and the viewers. A WebRTC
viewer is aiortc (``xp2p.link.webrtc.open_webrtc``, the Python stand-in for a browser), a QUIC
viewer is ``xp2p.link.open_link``; both fetch xp2pInfo and a grant from the cloud and signal
through it. Cases alternate run by run, on loopback, RTT 0 (the conditioner works under
aioice only for QUIC, so there is no RTT sweep here). Because everything shares one loop and
the machine's cores, absolute figures are pessimistic for both; the ratio is the point.

* **connect**: from the offer's start (gathering included) to a link that carries requests;
* **live first keyframe**: from the ``GET /ipc.flv?action=live`` to the first complete video
  keyframe tag (incremental ``FlvReader``) on an open link;
* **download**: MB/s (10^6 bytes) of ``GET /ipc.flv?action=download`` of the whole file on an
  open link, its sha256 checked against the file.

    python -m bench.webrtc [--quick] [--json PATH] [--runs N] [--mb N]
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import Row, log, median, print_rows, standard_arguments, write_json
from xp2p.cloud.app import CloudServer
from xp2p.cloud.config import CloudConfig
from xp2p.device import ChannelConfig, DeviceAgent, DeviceConfig
from xp2p.flv import FlvReader, FlvTag
from xp2p.link import Link, LinkConfig, Xp2pInfo, open_link
from xp2p.link.requests import ResponseStream
from xp2p.link.webrtc import WebRtcLink, open_webrtc
from xp2p.media import TestPatternConfig, TestPatternSource
from xp2p.viewer.cloud_client import CloudClient

PATTERN = TestPatternConfig(width=640, height=360, fps=25, bitrate=800_000, gop=50)
LIVE = "/ipc.flv?action=live&channel=0&quality=high"
FILE = "bench.bin"


async def first_keyframe(response: ResponseStream) -> None:
    reader = FlvReader()
    async for chunk in response:
        for item in reader.feed(chunk):
            if isinstance(item, FlvTag) and item.is_keyframe and not item.is_sequence_header:
                return
    raise RuntimeError("live stream ended before a keyframe")


class Bench:
    def __init__(self, cloud: CloudServer, client: CloudClient, digest: str, size: int) -> None:
        self.cloud, self.client, self.digest, self.size = cloud, client, digest, size

    async def connect(self, kind: str) -> Link | WebRtcLink:
        info = Xp2pInfo.parse((await self.client.get_p2p_info("DEMO", "cam1")).xp2p_info or "")
        grant, _ = await self.client.get_grant("DEMO", "cam1")

        async def signal(offer: dict[str, Any]) -> dict[str, Any]:
            return await self.client.connect("DEMO", "cam1", offer)

        if kind == "webrtc":
            return await open_webrtc(
                (), signal, fingerprint=info.dtls_fingerprint, grant=grant, peer_label="bench"
            )
        return await open_link(
            LinkConfig(), signal, fingerprint=info.fingerprint, grant=grant, peer_label="bench"
        )

    async def run(self, kind: str) -> dict[str, float]:
        started = time.perf_counter()
        link = await self.connect(kind)
        try:
            connected = time.perf_counter()
            response = await link.request("GET", LIVE)
            await first_keyframe(response)
            keyframe = time.perf_counter()
            response.cancel()
            fetch = time.perf_counter()
            body = await (
                await link.request("GET", f"/ipc.flv?action=download&channel=0&file_name={FILE}")
            ).read(limit=self.size + 1)
            done = time.perf_counter()
            if hashlib.sha256(body).hexdigest() != self.digest:
                raise RuntimeError(f"{kind}: the download differs from the file")
        finally:
            await link.close()
        return {
            "connect": (connected - started) * 1000,
            "keyframe": (keyframe - connected) * 1000,
            "mbps": self.size / 1e6 / (done - fetch),
        }


async def main_async(runs: int, megabytes: int) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ch0"
        folder.mkdir()
        data = os.urandom(megabytes * 1_000_000)
        (folder / FILE).write_bytes(data)
        config = CloudConfig.demo(port=0, stun_port=0)
        cloud = CloudServer(config)
        await cloud.start()
        account, app = config.devices[0], config.apps[0]
        device = DeviceAgent(
            DeviceConfig(
                cloud_url=cloud.url,
                product_id=account.product_id,
                device_name=account.device_name,
                device_secret=account.secret,
                grant_public_key=cloud.grant_public_key,
                channels={0: ChannelConfig(default=lambda: TestPatternSource(PATTERN))},
                recordings_dir=Path(tmp),
            )
        )
        await device.start()
        try:
            await device.wait_signed_in(10)
            async with CloudClient(cloud.url, app.key, app.secret, timeout=20) as client:
                bench = Bench(cloud, client, hashlib.sha256(data).hexdigest(), len(data))
                results: dict[str, list[dict[str, float]]] = {"quic": [], "webrtc": []}
                for kind in ("quic", "webrtc"):  # warm-up: imports, the GOP cache filling
                    await bench.run(kind)
                for n in range(runs):
                    for kind in ("quic", "webrtc") if n % 2 == 0 else ("webrtc", "quic"):
                        results[kind].append(await bench.run(kind))
                        log(f"{kind} run {n + 1}: {results[kind][-1]}")
        finally:
            await device.close()
            await cloud.stop()

    def m(kind: str, key: str) -> float:
        return median([r[key] for r in results[kind]])

    return [
        Row("connect (webrtc; baseline quic)", m("webrtc", "connect"), "ms", m("quic", "connect")),
        Row(
            "live first keyframe (webrtc; baseline quic)",
            m("webrtc", "keyframe"),
            "ms",
            m("quic", "keyframe"),
        ),
        Row("download (webrtc; baseline quic)", m("webrtc", "mbps"), "MB/s", m("quic", "mbps")),
    ]


def main() -> None:
    parser = standard_arguments(__doc__ or "")
    parser.add_argument("--runs", type=int, default=10, help="runs per transport (default 10)")
    parser.add_argument("--mb", type=int, default=32, help="download size in MB (default 32)")
    args = parser.parse_args()
    runs, megabytes = (3, 8) if args.quick else (args.runs, args.mb)
    logging.basicConfig(level=logging.WARNING)
    rows = asyncio.run(main_async(runs, megabytes))
    print_rows(rows, f"WebRTC beside QUIC, loopback, medians of {runs} runs, {megabytes} MB file")
    if args.json:
        write_json(args.json, "webrtc", rows, runs=runs, megabytes=megabytes)


if __name__ == "__main__":
    main()
