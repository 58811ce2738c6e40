"""The device's end of a WebRTC link runs on the ICE agent and the liveness rules of a QUIC
link: its configured host addresses, the bound on checks to unproven addresses, and a dead
peer noticed within QUIC's keepalive + idle timeout. A real aiortc peer (``open_webrtc``,
the Python stand-in for a browser) through the real cloud to a real device, on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiortc import RTCPeerConnection

from tests.integration.test_webrtc import LIVE, read_tags
from tests.security.test_device import victims
from tests.support.stack import Stack
from tests.support.waiting import wait_until
from xp2p.cloud.app import CloudServer
from xp2p.cloud.config import CloudConfig
from xp2p.device import DeviceAgent
from xp2p.link import LinkConfig, Xp2pInfo
from xp2p.link.ice import MAX_UNPROVEN_CHECKS
from xp2p.link.webrtc import WebRtcLink, open_webrtc
from xp2p.viewer.cloud_client import CloudClient, CloudError

pytestmark = pytest.mark.timeout(60)


@dataclass
class Camera:
    device: DeviceAgent
    client: CloudClient
    answers: list[str]  #: the answer SDP of every link opened through ``link``

    async def link(self, label: str = "browser") -> WebRtcLink:
        doc = await self.client.get_p2p_info("DEMO", "cam1")
        info = Xp2pInfo.parse(doc.xp2p_info or "")
        grant, _ = await self.client.get_grant("DEMO", "cam1")

        async def signal(offer: dict[str, Any]) -> dict[str, Any]:
            answer = await self.client.connect("DEMO", "cam1", offer)
            self.answers.append(answer["sdp"])
            return answer

        return await open_webrtc(
            (), signal, fingerprint=info.dtls_fingerprint, grant=grant, peer_label=label
        )


@pytest.fixture
def camera(
    cloud: tuple[CloudServer, CloudConfig],
) -> Callable[..., contextlib.AbstractAsyncContextManager[Camera]]:
    """A signed-in device built with the given ``DeviceConfig`` fields, and an app client."""
    server, config = cloud

    @contextlib.asynccontextmanager
    async def start(**fields: Any) -> AsyncIterator[Camera]:
        stack = Stack(server, config, device=None)  # type: ignore[arg-type]
        device = DeviceAgent(stack.device_config(**fields))
        await device.start()
        app = config.apps[0]
        try:
            await device.wait_signed_in(timeout=10)
            async with CloudClient(server.url, app.key, app.secret, timeout=10) as client:
                yield Camera(device, client, [])
        finally:
            await device.close()

    return start


def host_candidates(sdp: str) -> list[str]:
    """The address of every host candidate of an SDP."""
    lines = [line.split() for line in sdp.splitlines() if line.startswith("a=candidate:")]
    return [fields[4] for fields in lines if fields[6:8] == ["typ", "host"]]


async def test_the_answer_gathers_on_the_configured_host_addresses_only(
    camera: Callable[..., contextlib.AbstractAsyncContextManager[Camera]],
) -> None:
    # aiortc on its own never offers loopback: every candidate on 127.0.0.1, and none
    # elsewhere, is the device's LinkConfig at work.
    async with camera(link=LinkConfig(host_addresses=("127.0.0.1",))) as cam:
        link = await cam.link()
        try:
            (answer,) = cam.answers
            assert host_candidates(answer) and set(host_candidates(answer)) == {"127.0.0.1"}
            response = await link.request("GET", "/command?action=inner_define&channel=0&cmd=x")
            assert response.status == 406  # and the link carries requests
        finally:
            await link.close()


async def test_an_offer_with_media_sections_is_refused(
    camera: Callable[..., contextlib.AbstractAsyncContextManager[Camera]],
) -> None:
    """A media section would bring an ICE agent of aiortc's own, outside every bound."""
    async with camera() as cam:
        pc = RTCPeerConnection()
        try:
            pc.createDataChannel("xp2p")
            pc.addTransceiver("video", direction="recvonly")
            await pc.setLocalDescription(await pc.createOffer())
            grant, _ = await cam.client.get_grant("DEMO", "cam1")
            offer = {"v": 1, "transport": "webrtc", "sdp": pc.localDescription.sdp}
            with pytest.raises(CloudError) as caught:
                await cam.client.connect("DEMO", "cam1", {**offer, "grant": grant})
        finally:
            await pc.close()
        assert caught.value.details["device_code"] == 400
        assert "media sections" in caught.value.details["device_reason"]
        assert (cam.device.admission.total, cam.device.admission.pending) == (0, 0)


async def test_one_webrtc_offer_sends_a_bounded_number_of_checks(
    camera: Callable[..., contextlib.AbstractAsyncContextManager[Camera]],
) -> None:
    """The QUIC test's forged offer (tests/security/test_device.py), as SDP: 32 candidates,
    4 at each of eight victims. In 5 s aiortc's own agent sends 4 checks a pair (128); the
    device's stops at MAX_UNPROVEN_CHECKS."""
    link = LinkConfig(host_addresses=("127.0.0.1",), connect_timeout=5.0)
    targets = await victims([f"127.0.0.{n}" for n in range(3, 11) for _ in range(4)])
    pc = RTCPeerConnection()
    try:
        async with camera(link=link) as cam:
            pc.createDataChannel("xp2p")
            await pc.setLocalDescription(await pc.createOffer())
            lines = [x for x in pc.localDescription.sdp.splitlines() if "a=candidate:" not in x]
            at = next(i for i, x in enumerate(lines) if x.startswith("a=ice-ufrag:"))
            for n, (transport, _v) in enumerate(targets):
                host, port = transport.get_extra_info("sockname")[:2]
                lines.insert(at, f"a=candidate:{n} 1 udp 2130706431 {host} {port} typ host")
            grant, _ = await cam.client.get_grant("DEMO", "cam1")
            sdp = "\r\n".join(lines) + "\r\n"
            offer = {"v": 1, "transport": "webrtc", "sdp": sdp, "grant": grant}
            await cam.client.connect("DEMO", "cam1", offer)
            await wait_until(lambda: cam.device.admission.pending == 0, timeout=10, what="gave up")
        total = sum(v.packets for _t, v in targets)
        assert 32 <= total <= MAX_UNPROVEN_CHECKS  # every pair tried, the lot bounded
        print(f"\nICE checks at the victims of one WebRTC offer: {total}")
    finally:
        await pc.close()
        for transport, _v in targets:
            transport.close()


def drop_sockets(link: WebRtcLink) -> None:
    """The peer vanishes (a browser tab killed, a phone out of range): its UDP sockets close
    with no DTLS alert, SCTP ABORT or ICE goodbye, so nothing more reaches the device."""
    sctp = link._pc.sctp
    assert sctp is not None
    for protocol in sctp.transport.transport._connection._protocols:
        protocol.transport.close()


@pytest.mark.timeout(19)
async def test_a_vanished_peer_frees_its_slot_within_quics_dead_peer_time(
    camera: Callable[..., contextlib.AbstractAsyncContextManager[Camera]],
) -> None:
    config = LinkConfig()
    async with camera(max_links=1) as cam:
        gone = await cam.link("vanishing browser")
        try:
            await read_tags(await gone.request("GET", LIVE), 3)  # pulling when it vanishes
            (served,) = cam.device.webrtc_links
            drop_sockets(gone)
            # aiortc alone would hold the link ~30 s (six consent checks 5 s apart).
            dead_after = config.idle_timeout + config.keepalive_interval
            await asyncio.wait_for(served.wait_closed(), dead_after + 1.5)
            assert "no packet from the peer" in served.close_reason
        finally:
            await gone.close()
        await wait_until(lambda: cam.device.admission.total == 0, timeout=2, what="slot freed")
        again = await cam.link("next browser")  # max_links=1: the slot is really free
        try:
            tags = await read_tags(await again.request("GET", LIVE), 3)
            assert next(t for t in tags if t.is_video and not t.is_sequence_header).is_keyframe
        finally:
            await again.close()
