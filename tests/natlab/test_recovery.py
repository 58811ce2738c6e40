"""Recovery through the lab's NATs: keep-alives outlive the routers' 30 s UDP timeout, a
device restarted mid-stream and a viewer that moves to another network both recover."""

from __future__ import annotations

import signal
import sys

import pytest

from .lab import UDP_TIMEOUT, NatKind, NatLab
from .world import APP_KEY, CLOUD_URL, HERE, PRODUCT, LabWorld

pytestmark = pytest.mark.natlab


@pytest.mark.timeout(180)
def test_keepalives_hold_nat_bindings_past_the_udp_timeout(lab: NatLab, world: LabWorld) -> None:
    """Both ends behind port-restricted NATs that forget a mapping after 30 s of silence; the
    link idles (no request) for longer, then a command still gets through."""
    world.start_device(lab.add_site(NatKind.PORT_RESTRICTED), "cam5")
    viewer = world.start_scenario(
        lab.add_site(NatKind.PORT_RESTRICTED), "idle", "cam5", UDP_TIMEOUT + 10
    )
    assert viewer.wait_event("connected", 30)["mode"] == "direct"
    result = viewer.wait_event("command", UDP_TIMEOUT + 40)
    assert (result["type"], result["status"]) == ("success", 200)


@pytest.mark.timeout(180)
def test_device_restarted_mid_stream_is_noticed_and_recovered(lab: NatLab, world: LabWorld) -> None:
    camera = lab.add_site(NatKind.RESTRICTED_CONE)
    device = world.start_device(camera, "cam6")
    viewer = world.start_scenario(lab.add_site(NatKind.FULL_CONE), "follow", "cam6", 60)
    viewer.wait_event("streaming", 30)
    device.popen.send_signal(signal.SIGKILL)  # vanishes without a goodbye
    device.popen.wait()
    disconnect = viewer.wait_event("disconnect", 15)
    assert disconnect["after_last_byte"] <= 10.0
    world.devices.pop("cam6")
    world.start_device(camera, "cam6")  # a new run: new link key, new xp2pInfo
    assert viewer.wait_event("recovered", 60)["mode"] == "direct"


@pytest.mark.timeout(180)
def test_viewer_moving_to_another_network_gets_nat_changed_and_recovers(
    lab: NatLab, world: LabWorld
) -> None:
    world.start_device(lab.add_site(NatKind.FULL_CONE), "cam7")
    home = lab.add_site(NatKind.PORT_RESTRICTED)
    elsewhere = lab.add_site(NatKind.SYMMETRIC)
    # A link that cannot move (as when its handover fails; test_handover.py moves them):
    # the link is lost, and the viewer learns its new NAT and reconnects.
    argv = [sys.executable, str(HERE / "scenario.py"), "follow", f"{PRODUCT}/cam7"]
    argv += ["--cloud", CLOUD_URL, "--app-key", APP_KEY, "--seconds", "60", "--no-handover"]
    argv += ["--cloud-ca", str(world.cloud_ca)]
    env = {"XP2P_APP_SECRET": world.app_secret}
    viewer = world.start_process(home.host, "scenario-follow-cam7", argv, env)
    assert viewer.wait_event("init", 30)["nat_type"] == "port-restricted"
    viewer.wait_event("streaming", 30)
    lab.move(home, elsewhere)
    disconnect = viewer.wait_event("disconnect", 15)
    assert disconnect["after_last_byte"] <= 10.0
    changed = viewer.wait_event("natChanged", 30)
    assert changed["detail"]["nat_type"] == "symmetric"
    assert changed["detail"]["previous"] == "port-restricted"
    viewer.wait_event("recovered", 60)
    events = [e["event"] for e in viewer.events()]
    assert events.index("natChanged") < events.index("recovered")


@pytest.mark.timeout(120)
def test_a_viewer_without_links_notices_its_own_new_network(lab: NatLab, world: LabWorld) -> None:
    """natChanged with no link to lose and no reset_p2p: the module watches this machine's
    addresses (issue 12 item 5)."""
    home = lab.add_site(NatKind.FULL_CONE)
    elsewhere = lab.add_site(NatKind.SYMMETRIC)
    viewer = world.start_scenario(home, "nat", "none", 60)
    assert viewer.wait_event("init", 30)["nat_type"] == "full-cone"
    lab.move(home, elsewhere)
    changed = viewer.wait_event("natChanged", 20)["detail"]
    assert (changed["nat_type"], changed["previous"]) == ("symmetric", "full-cone")
    assert changed["mapped"].split(":")[0] != changed["previous_mapped"].split(":")[0]
    assert [e["event"] for e in viewer.events()].count("natChanged") == 1
