"""A lab viewer: connect to each device in turn, pull a little live video, report as JSON.

Runs inside a lab host's namespace (``ip netns exec``), started by the NAT-lab tests and by
``bench/nat_matrix.py``. One JSON object per line on stdout, one per connection attempt::

    {"device": "DEMO/cam-1", "run": 0, "ok": true, "mode": "direct", "connect_ms": 412.3,
     "first_keyframe_ms": 35.1, "bytes": 81234, "nat_type": "port-restricted", "error": null}

With ``--out DIR`` each stream is kept as ``DIR/<device>-<run>.flv`` for ffprobe. The app
secret comes from ``$XP2P_APP_SECRET`` (never argv).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from xp2p import XP2PError
from xp2p.flv import FlvReader, FlvTag
from xp2p.link import LinkConfig
from xp2p.link.config import Conditions
from xp2p.trust import CloudTrust
from xp2p.viewer import AppParams, P2PModule, StreamInfo
from xp2p.watchdog import watch_running_loop


async def probe_device(
    module: P2PModule, device: str, run: int, seconds: float, out: Path | None
) -> dict[str, Any]:
    product, _, name = device.partition("/")
    result: dict[str, Any] = {"device": device, "run": run, "ok": False, "mode": None}
    result.update(connect_ms=None, first_keyframe_ms=None, bytes=0, error=None)
    reader = FlvReader()
    data = bytearray()
    keyframe = asyncio.Event()
    video_start: list[int] = []
    enough = asyncio.Event()

    def on_data(chunk: bytes) -> None:
        data.extend(chunk)
        for item in reader.feed(chunk):
            if isinstance(item, FlvTag) and item.is_video:
                if item.is_keyframe and not keyframe.is_set():
                    keyframe.set()
                    result["first_keyframe_ms"] = (time.perf_counter() - pulled) * 1000
                video_start.append(item.timestamp)
                if item.timestamp - video_start[0] >= seconds * 1000:
                    enough.set()

    service = f"s{run}-{name}"
    start = time.perf_counter()
    pulled = start
    try:
        await module.start_p2p_service(service, StreamInfo(product_id=product, device_name=name))
        result["connect_ms"] = (time.perf_counter() - start) * 1000
        result["mode"] = module.link_mode(service)
        pulled = time.perf_counter()
        await module.start_stream(service, on_data)
        await asyncio.wait_for(enough.wait(), seconds + 10)
        result["ok"] = True
    except (XP2PError, TimeoutError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if module.has_service(service):
            await module.stop_p2p_service(service)
    result["bytes"] = len(data)
    if out is not None and data:
        (out / f"{name}-{run}.flv").write_bytes(bytes(data))
    return result


async def main_async(args: argparse.Namespace) -> int:
    conditions = Conditions(rtt_ms=args.rtt_ms) if args.rtt_ms else Conditions()
    module = P2PModule(LinkConfig(conditions=conditions))
    secret = os.environ["XP2P_APP_SECRET"]
    trust = CloudTrust(ca_file=args.cloud_ca)
    await module.init(AppParams(args.cloud, args.app_key, secret, cloud_trust=trust))
    out = Path(args.out) if args.out else None
    watchdog = watch_running_loop()
    try:
        for run in range(args.runs):
            for device in args.devices:
                result = await probe_device(module, device, run, args.seconds, out)
                result["nat_type"] = module.nat_type
                print(json.dumps(result), flush=True)
    finally:
        watchdog.stop()
        await module.destroy()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("devices", nargs="+", help="PRODUCT/DEVICE, one or more")
    parser.add_argument("--cloud", required=True)
    parser.add_argument(
        "--cloud-ca", type=Path, help="the lab cloud's self-signed certificate (https cloud)"
    )
    parser.add_argument("--app-key", required=True)
    parser.add_argument("--seconds", type=float, default=1.5, help="video to pull per device")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--rtt-ms", type=float, default=0.0, help="added RTT on the P2P path")
    parser.add_argument("--out", help="keep each stream as an FLV file here")
    parser.add_argument("--log", default="WARNING", help="log level on stderr (WARNING)")
    args = parser.parse_args()
    logging.basicConfig(
        level=args.log, stream=sys.stderr, format="%(relativeCreated)7.0f %(name)s %(message)s"
    )
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
