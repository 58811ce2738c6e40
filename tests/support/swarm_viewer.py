"""Several 1vN viewers (or the control viewer) in one process: for the multi-process swarm
tests and bench/swarm.py.

Each viewer is its own ``P2PModule`` (own link identity, own NAT probe) watching ``--url``
through the edge at ``--cloud``; a player model turns its byte stream into stalls. The control
viewer pulls every chunk straight from the edge as soon as it is cut (no swarm, no playout
lag): its arrival time per media timestamp is the reference for the swarm viewers' latency.
At the end one JSON object per viewer is written to ``--out``. The app secret comes from
``$XP2P_APP_SECRET``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xp2p.flv import FlvReader, FlvTag
from xp2p.swarm.edge_routes import room_id
from xp2p.trust import CloudTrust
from xp2p.viewer import AppParams, P2PModule, StreamInfo
from xp2p.viewer.cloud_client import CloudError
from xp2p.viewer.swarm import SwarmService
from xp2p.viewer.swarm.edge_client import EdgeClient

#: The player model's start-up buffer: it starts playing this long after the first keyframe.
JITTER_BUFFER = 0.5


@dataclass
class PlayerModel:
    """Plays video tags at their timestamps from the first keyframe (plus a jitter buffer);
    a tag that arrives after it is due stalls the player for the difference."""

    joined: float
    first_keyframe: float | None = None
    ts0: int = 0
    stalled: float = 0.0
    stalls: int = 0
    arrivals: dict[int, float] = field(default_factory=dict)  #: keyframe ts -> wall time
    last_ts: int = 0

    def video(self, tag: FlvTag, now: float) -> None:
        if self.first_keyframe is None:
            if not tag.is_keyframe:
                return
            self.first_keyframe, self.ts0 = now, tag.timestamp
        if tag.is_keyframe:
            self.arrivals[tag.timestamp] = now
        self.last_ts = max(self.last_ts, tag.timestamp)
        due = self.first_keyframe + JITTER_BUFFER + (tag.timestamp - self.ts0) / 1000 + self.stalled
        if now > due:
            self.stalled += now - due
            self.stalls += 1


Files = dict[Path, bytes]  #: written once the event loop is done


async def swarm_viewer(
    args: argparse.Namespace,
    index: int,
    upload: bool,
    secret: str,
    results: list[dict[str, Any]],
    files: Files,
) -> None:
    module = P2PModule()
    trust = CloudTrust(ca_file=args.cloud_ca)
    await module.init(AppParams(args.cloud, args.app_key, secret, cloud_trust=trust))
    reader = FlvReader()
    player = PlayerModel(joined=time.time())
    total = [0]

    kept = bytearray()  # the stream, when --flv-dir asks for it

    def on_data(chunk: bytes) -> None:
        total[0] += len(chunk)
        if args.flv_dir is not None:
            kept.extend(chunk)
        now = time.time()
        for item in reader.feed(chunk):
            if isinstance(item, FlvTag) and item.is_video:
                player.video(item, now)

    info = StreamInfo(
        url=args.url,
        upload=upload,
        upload_rate_cap=args.upload_cap if upload else 0,
        playout_delay=args.playout_delay,
    )
    service = f"v{index}"
    result: dict[str, Any] = {"viewer": f"{args.name}-{index}", "upload": upload}
    try:
        await module.start_p2p_service(service, info, data_callback=on_data)
        await asyncio.sleep(max(0.0, args.until - time.time()))
        stats = module.get_swarm_stats(service)
        result.update(stats.to_json())
        # Why chunks went to the edge, and the refusals both ways: what --raw is read for.
        swarm = module._services[service]
        assert isinstance(swarm, SwarmService)
        counters = swarm.counters
        result.update(
            edge_requests=dict(counters.edge_requests),
            refused=counters.refused,
            refusing=counters.refusing,
        )
    except Exception as exc:  # a failed viewer is a result, not a crash of the others
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        await module.destroy()
        if args.flv_dir is not None:
            files[Path(args.flv_dir, f"{args.name}-{index}.flv")] = bytes(kept)
    watched = time.time() - player.joined
    result.update(
        joined=player.joined,
        startup=None if player.first_keyframe is None else player.first_keyframe - player.joined,
        watched=watched,
        rebuffer_s=player.stalled,
        player_stalls=player.stalls,
        bytes=total[0],
        arrivals=player.arrivals,
    )
    results.append(result)


async def control_viewer(
    args: argparse.Namespace, secret: str, results: list[dict[str, Any]]
) -> None:
    """Every chunk from the edge as soon as it is cut: the latency reference."""
    edge = EdgeClient(args.cloud, args.app_key, secret, trust=CloudTrust(ca_file=args.cloud_ca))
    room = room_id(args.url)
    arrivals: dict[int, float] = {}
    try:
        while True:  # the room exists once the first swarm viewer joined
            try:
                live = await edge.live(room)
            except CloudError as exc:
                if exc.status != 404 or time.time() > args.until:
                    raise
                await asyncio.sleep(0.5)
                continue
            if live.live_seq is not None:
                break
            await asyncio.sleep(0.2)
        seq = live.live_seq
        while time.time() < args.until:
            try:
                chunk, _proof, _raw = await edge.chunk(room, seq, wait=3.0)
            except CloudError as exc:
                if exc.status == 404:
                    continue
                if exc.status == 410:  # fell behind: jump to the live edge
                    latest = (await edge.live(room)).live_seq
                    seq = seq + 1 if latest is None else latest
                    continue
                raise
            now = time.time()
            for tag in chunk.tags():
                if tag.is_video and tag.is_keyframe:
                    arrivals[tag.timestamp] = now
            seq += 1
    finally:
        await edge.close()
    results.append({"viewer": "control", "arrivals": arrivals})


async def main_async(args: argparse.Namespace, files: Files) -> None:
    secret = os.environ["XP2P_APP_SECRET"]
    results: list[dict[str, Any]] = []
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    if args.control:
        await control_viewer(args, secret, results)
    else:
        tasks = []
        for i in range(args.viewers):
            upload = i >= args.download_only
            tasks.append(asyncio.create_task(swarm_viewer(args, i, upload, secret, results, files)))
            await asyncio.sleep(args.spread)  # joins spread out, not all in one instant
        await asyncio.gather(*tasks)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    files[Path(args.out)] = json.dumps({"cpu_s": cpu, "viewers": results}).encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cloud", required=True)
    parser.add_argument(
        "--cloud-ca", type=Path, help="the lab cloud's self-signed certificate (https cloud)"
    )
    parser.add_argument("--app-key", required=True)
    parser.add_argument("--url", required=True, help="the source URL (the room)")
    parser.add_argument("--name", default="p")
    parser.add_argument("--viewers", type=int, default=5)
    parser.add_argument("--download-only", type=int, default=0, help="how many of them")
    parser.add_argument("--upload-cap", type=int, default=0, help="bytes/s per uploader")
    parser.add_argument("--until", type=float, required=True, help="wall time to stop at")
    parser.add_argument("--spread", type=float, default=0.2, help="seconds between joins")
    parser.add_argument("--playout-delay", type=float, default=0.0, help="0 = the default")
    parser.add_argument("--control", action="store_true")
    parser.add_argument("--out", required=True)
    parser.add_argument("--flv-dir", help="keep each viewer's stream as NAME-I.flv here")
    files: Files = {}
    asyncio.run(main_async(parser.parse_args(), files))
    for path, data in files.items():
        path.write_bytes(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
