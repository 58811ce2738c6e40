"""A 1v1 stream that survives the viewer moving to another network, for every NAT pair.

One lab viewer per camera NAT kind streams from that camera and, mid-stream, is moved behind
a router of each NAT kind in turn (``NatLab.move``: its interface vanishes and another comes
up with another address, as a phone leaving one Wi-Fi for another). Each move must be a
handover: the same FLV request carries on (one header, timestamps never going back, at most
one GOP lost, no second request, no disconnect), within 2 s of the address going away.

Four moves per viewer, four viewers: all 16 (camera kind, new viewer kind) pairs, each move
also from a different previous kind. The lab's prefix is ``xh``: another lab (``xl``) may run
at the same time; namespaces, veth names and iptables rules (inside each router's namespace)
are all per prefix.

Run as ``python -m tests.natlab.test_handover DEVICE --moves N ...`` it is the viewer itself
(inside the lab host's namespace), printing JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOP_MS = 1000  # world.PATTERN_ARGS: gop 15 at 15 fps
FRAME_MS = 67
T0 = time.monotonic()


def emit(event: str, **detail: Any) -> None:
    print(json.dumps({"event": event, "t": round(time.monotonic() - T0, 3), **detail}), flush=True)


# ---- the viewer, inside the lab ---------------------------------------------------------


async def viewer(args: argparse.Namespace) -> None:
    import aioice

    from tests.support.live import parse
    from tests.support.waiting import wait_until
    from xp2p.trust import CloudTrust
    from xp2p.viewer import AppParams, P2PModule, StreamInfo

    module = P2PModule()
    trust = CloudTrust(ca_file=args.cloud_ca)
    await module.init(
        AppParams(args.cloud, args.app_key, os.environ["XP2P_APP_SECRET"], cloud_trust=trust)
    )
    data = bytearray()
    arrivals: list[float] = []
    notifies: list[str] = []

    def on_data(chunk: bytes) -> None:
        data.extend(chunk)
        arrivals.append(time.monotonic())

    def on_msg(event: str, subtype: str, detail: Any) -> None:
        if event == "notify":
            notifies.append(subtype)

    product, _, name = args.device.partition("/")
    info = StreamInfo(product_id=product, device_name=name)
    try:
        await module.start_p2p_service("cam", info, msg_callback=on_msg, data_callback=on_data)
        link = module._service("cam").link
        assert link.mover is not None
        await wait_until(lambda: len(data) >= 20_000, 30, what="video")
        emit("streaming", mode=link.link_mode, path=link.path)
        moves: list[dict[str, Any]] = []
        for n in range(1, args.moves + 1):
            # This machine's address going away is the change (the test moves us).
            before = set(aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False))

            def moved_away(before: set[str] = before) -> bool:
                return not set(aioice.ice.get_host_addresses(True, False)) >= before

            await wait_until(moved_away, 60, what="the move")
            changed = time.monotonic()
            await wait_until(
                lambda n=n: link.handovers >= n or link.closed, 15, what=f"handover {n}"
            )
            moved = time.monotonic()
            mark = len(arrivals)

            def flowing(mark: int = mark, moved: float = moved) -> bool:
                # Flowing again for a second (about 15 frames) before the next move.
                return link.closed or (
                    len(arrivals) - mark >= 10 and time.monotonic() - moved >= 1.0
                )

            await wait_until(flowing, 15, what="video after the move")
            after = [changed] + [t for t in arrivals if t > changed]
            gap = max((b - a for a, b in itertools.pairwise(after)), default=0.0)
            record = {
                "n": n,
                "handover_s": round(moved - changed, 3),
                "interruption_s": round(gap, 3),
                "mode": link.link_mode,
                "path": link.path,
                "alive": not link.closed,
                "history": link.mover.history[-1:],
            }
            moves.append(record)
            emit(f"moved{n}", **record)
            if link.closed:
                break
        headers, tags = parse(bytes(data))
        video = [t for t in tags if t.is_video and not t.is_sequence_header]
        stamps = [t.timestamp for t in tags if not t.is_script]
        emit(
            "report",
            moves=moves,
            headers=len(headers),
            backwards=sum(1 for a, b in itertools.pairwise(stamps) if b < a),
            max_video_gap_ms=max(
                (b.timestamp - a.timestamp for a, b in itertools.pairwise(video)), default=0
            ),
            requests=notifies.count("request"),
            disconnects=notifies.count("disconnect"),
        )
    finally:
        await module.destroy()


def main() -> int:
    import logging

    parser = argparse.ArgumentParser()
    parser.add_argument("device")
    parser.add_argument("--cloud", required=True)
    parser.add_argument("--cloud-ca", type=Path, required=True)
    parser.add_argument("--app-key", required=True)
    parser.add_argument("--moves", type=int, default=4)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    asyncio.run(viewer(parser.parse_args()))
    return 0


# ---- the test ----------------------------------------------------------------------------

if __name__ != "__main__":
    from .lab import NAT_KINDS, NatKind, NatLab
    from .world import APP_KEY, CLOUD_URL, PRODUCT, LabWorld, new_world

    pytestmark = pytest.mark.natlab

    @pytest.fixture(scope="module")
    def lab() -> Iterator[NatLab]:
        built = NatLab("xh").up()  # not the shared "xl": another lab may be running
        try:
            yield built
        finally:
            built.down()

    @pytest.fixture(scope="module")
    def world(lab: NatLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabWorld]:
        built = new_world(lab, Path(tmp_path_factory.mktemp("natlab-handover")))
        try:
            yield built
        finally:
            built.stop()

    @pytest.mark.timeout(420)
    def test_a_moving_viewer_keeps_its_stream_for_every_nat_pair(
        lab: NatLab, world: LabWorld, capsys: pytest.CaptureFixture[str]
    ) -> None:
        cameras = {}
        for i, kind in enumerate(NAT_KINDS, start=1):
            world.start_device(lab.add_site(kind), f"cam{i}")
            cameras[f"cam{i}"] = kind
        home = lab.add_site(NatKind.PORT_RESTRICTED)
        networks = {kind: lab.add_site(kind) for kind in NAT_KINDS}
        results: dict[tuple[NatKind, NatKind], dict[str, Any]] = {}
        reports = []
        for name, camera_kind in cameras.items():
            argv = [sys.executable, "-m", "tests.natlab.test_handover", f"{PRODUCT}/{name}"]
            argv += ["--cloud", CLOUD_URL, "--cloud-ca", str(world.cloud_ca)]
            argv += ["--app-key", APP_KEY, "--moves", str(len(NAT_KINDS))]
            env = {"XP2P_APP_SECRET": world.app_secret, "PYTHONPATH": str(ROOT)}
            proc = world.start_process(home.host, f"handover-{name}", argv, env)
            try:
                proc.wait_event("streaming", 40)
                for n, kind in enumerate(NAT_KINDS, start=1):
                    lab.move(home, networks[kind])
                    results[(camera_kind, kind)] = proc.wait_event(f"moved{n}", 20)
                reports.append(proc.wait_event("report", 20))
            finally:
                proc.stop()

        with capsys.disabled():
            print("\nhandover (camera NAT x the viewer's new NAT): mode, interruption ms")
            print(f"{'camera / viewer':18}" + "".join(f"{k.value:>20}" for k in NAT_KINDS))
            for camera in NAT_KINDS:
                cells = []
                for kind in NAT_KINDS:
                    r = results[(camera, kind)]
                    cell = f"{r['mode']} {r['interruption_s'] * 1000:.0f}"
                    cells.append(f"{(cell if r['alive'] else 'LOST'):>20}")
                print(f"{camera.value:18}" + "".join(cells))

        lost = [f"{c}->{v}" for (c, v), r in results.items() if not r["alive"]]
        assert not lost, f"links lost on a move: {lost}"
        slow = [
            f"{c}->{v}: {r['interruption_s']} s"
            for (c, v), r in results.items()
            if r["interruption_s"] >= 2.0
        ]
        assert not slow, f"interrupted for 2 s or more: {slow}"
        for report in reports:
            assert report["headers"] == 1, report  # the same FLV stream, never restarted
            assert report["backwards"] == 0, report
            assert report["max_video_gap_ms"] <= GOP_MS + FRAME_MS, report  # <= one GOP lost
            assert (report["requests"], report["disconnects"]) == (1, 0), report


if __name__ == "__main__":
    sys.exit(main())
