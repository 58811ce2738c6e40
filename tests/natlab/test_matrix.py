"""The connection matrix: camera x viewer over every pair of NAT kinds, plus a viewer on a
network that blocks UDP. Every pair connects and streams video ffprobe decodes; the pairs that
can connect directly in theory do (no relay)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.ffprobe import FFPROBE, decodes_h264

from .lab import NAT_KINDS, NatKind, NatLab, direct_possible
from .world import LabWorld

pytestmark = [
    pytest.mark.natlab,
    pytest.mark.skipif(FFPROBE is None, reason="ffprobe missing: scripts/setup.sh installs it"),
]

VIEWER_KINDS = (*NAT_KINDS, NatKind.UDP_BLOCKED)


@pytest.mark.timeout(600)
def test_every_nat_pair_connects_and_theoretically_direct_pairs_go_direct(
    lab: NatLab, world: LabWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cameras = {}
    for i, kind in enumerate(NAT_KINDS, start=1):
        site = lab.add_site(kind)
        world.start_device(site, f"cam{i}")
        cameras[f"cam{i}"] = kind
    results: dict[tuple[NatKind, NatKind], dict[str, object]] = {}
    for viewer_kind in VIEWER_KINDS:
        site = lab.add_site(viewer_kind)
        out = tmp_path / viewer_kind.value
        out.mkdir()
        for result in world.run_viewer(site, list(cameras), out=out, seconds=1.5):
            name = str(result["device"]).split("/")[1]
            result["decoded"] = decodes_h264(out / f"{name}-0.flv") if result["ok"] else False
            results[(cameras[name], viewer_kind)] = result

    with capsys.disabled():
        print("\nconnection matrix (camera NAT x viewer NAT): mode, connect ms")
        corner = "camera / viewer"
        print(f"{corner:18}" + "".join(f"{k.value:>20}" for k in VIEWER_KINDS))
        for camera in NAT_KINDS:
            cells = []
            for viewer in VIEWER_KINDS:
                r = results[(camera, viewer)]
                cell = f"{r['mode']} {r['connect_ms']:.0f}" if r["ok"] else "FAILED"
                cells.append(f"{cell:>20}")
            print(f"{camera.value:18}" + "".join(cells))

    failures = [f"{c}->{v}: {r['error']}" for (c, v), r in results.items() if not r["ok"]]
    assert not failures, failures
    undecoded = [f"{c}->{v}" for (c, v), r in results.items() if not r["decoded"]]
    assert not undecoded, f"ffprobe found no H.264 frames for {undecoded}"
    wrong_mode = [
        f"{c}->{v}: {r['mode']}"
        for (c, v), r in results.items()
        if (r["mode"] == "direct") != direct_possible(c, v)
    ]
    assert not wrong_mode, f"expected direct exactly where theory allows it: {wrong_mode}"


@pytest.mark.timeout(300)
def test_live_video_keeps_flowing_through_a_router_that_drops_five_percent(
    lab: NatLab, world: LabWorld, tmp_path: Path
) -> None:
    """iptables drops 5 % of the viewer router's WAN datagrams each way: the link still comes
    up and live video still arrives and decodes."""
    world.start_device(lab.add_site(NatKind.PORT_RESTRICTED), "cam8")
    viewer = lab.add_site(NatKind.FULL_CONE, loss=0.05)
    (result,) = world.run_viewer(viewer, ["cam8"], out=tmp_path, seconds=4)
    assert result["ok"], result["error"]
    assert decodes_h264(tmp_path / "cam8-0.flv")
