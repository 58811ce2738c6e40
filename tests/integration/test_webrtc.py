"""The device answers WebRTC peers (issue 11 item 1): a real aiortc peer standing in for a
browser, through the real cloud's signalling to a real device, on loopback. Requests travel
over data channels and are served by the same routes, grants and status codes as on QUIC."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest

from tests.support.coturn import TURNSERVER, Coturn, start_coturn
from tests.support.ffprobe import decodes_h264
from tests.support.recordings import record
from tests.support.stack import PATTERN, Stack
from tests.support.voice import RATE, dominant_hz, read_wav, wait_free, wav_files
from tests.support.waiting import wait_until
from xp2p import XP2PError
from xp2p.auth import PERMISSIONS, AccessGrant
from xp2p.cloud.app import CloudServer
from xp2p.cloud.config import CloudConfig, TurnServerConfig
from xp2p.device import ChannelConfig, DeviceAgent
from xp2p.device.voice_sink import VoiceFiles
from xp2p.flv import FlvReader, FlvTag
from xp2p.flv.gop import starts_gop
from xp2p.link import Link, LinkError, ResponseStream, Xp2pInfo, webrtc
from xp2p.link.webrtc import WebRtcLink, open_webrtc
from xp2p.media import TestPatternSource
from xp2p.viewer import P2PModule, StreamInfo
from xp2p.viewer.cloud_client import CloudClient, CloudError

pytestmark = pytest.mark.timeout(60)

DEVICE = StreamInfo(product_id="DEMO", device_name="cam1")
LIVE = "/ipc.flv?action=live&channel=0&quality=high"


@dataclass
class Rtc:
    stack: Stack
    client: CloudClient
    folder: Path
    voice: Path

    async def info(self) -> Xp2pInfo:
        return Xp2pInfo.parse((await self.client.get_p2p_info("DEMO", "cam1")).xp2p_info or "")

    async def link(self, grant: str | None = None, tamper: bool = False) -> WebRtcLink:
        """What the browser SDK does: fetch xp2pInfo and a grant, offer, check, connect."""
        info = await self.info()
        if grant is None:
            grant, _ = await self.client.get_grant("DEMO", "cam1")

        async def signal(offer: dict[str, Any]) -> dict[str, Any]:
            answer = await self.client.connect("DEMO", "cam1", offer)
            if tamper:  # a cloud in the middle swaps in its own certificate's fingerprint
                answer["sdp"] = _swap_fingerprint(answer["sdp"])
            return answer

        return await open_webrtc(
            (), signal, fingerprint=info.dtls_fingerprint, grant=grant, peer_label="browser"
        )


def _swap_fingerprint(sdp: str) -> str:
    lines = sdp.split("\r\n")
    for i, line in enumerate(lines):
        if line.startswith("a=fingerprint:sha-256 "):
            first = line[len("a=fingerprint:sha-256 ") :][:2]
            lines[i] = line.replace(first, "00" if first != "00" else "11", 1)
    return "\r\n".join(lines)


@pytest.fixture
async def rtc(cloud: tuple[CloudServer, CloudConfig], tmp_path: Path) -> AsyncIterator[Rtc]:
    server, config = cloud
    stack = Stack(server, config, device=None)  # type: ignore[arg-type]
    recordings = tmp_path / "recordings"
    (recordings / "ch0").mkdir(parents=True)
    device = DeviceAgent(
        stack.device_config(
            recordings_dir=recordings,
            voice_sink=VoiceFiles(tmp_path / "voice"),
            voice_max_speed=1e6,  # the test uploads faster than real time
            channels={0: ChannelConfig(default=lambda: TestPatternSource(PATTERN))},
        )
    )
    await device.start()
    await device.wait_signed_in(timeout=10)
    stack.device = device
    app = config.apps[0]
    async with CloudClient(server.url, app.key, app.secret, timeout=10) as client:
        yield Rtc(stack, client, recordings / "ch0", tmp_path / "voice")
    await device.close()


async def read_tags(response: ResponseStream, videos: int) -> list[FlvTag]:
    reader, tags = FlvReader(), []
    async for chunk in response:
        tags += [item for item in reader.feed(chunk) if isinstance(item, FlvTag)]
        if sum(tag.is_video and not tag.is_sequence_header for tag in tags) >= videos:
            break
    return tags


async def test_xp2p_info_publishes_the_dtls_fingerprint(rtc: Rtc) -> None:
    info = await rtc.info()
    assert info.dtls_fingerprint == rtc.stack.device.webrtc_identity.fingerprint
    assert info.dtls_fingerprint != info.fingerprint  # QUIC's pin is another certificate


async def test_a_command_gets_its_reply_and_the_link_counts(rtc: Rtc) -> None:
    link = await rtc.link()
    try:
        query = "action=inner_define&channel=0&cmd=get_device_st&type=live"
        response = await link.request("GET", f"/command?{query}")
        assert response.status == 200
        assert json.loads(await response.read()) == [{"status": "0", "appConnectNum": "0"}]
        assert rtc.stack.device.webrtc_links == {next(iter(rtc.stack.device.webrtc_links))}
        assert (rtc.stack.device.admission.total, rtc.stack.device.admission.pending) == (1, 0)
        ptz = quote(
            json.dumps({"topic": "ptz", "data": {"cmd": "ptz_left_press"}, "message_id": 7})
        )
        response = await link.request("GET", f"/command?action=user_define&channel=0&cmd={ptz}")
        assert response.status == 200
        assert json.loads(await response.read()) == {"apex": "no"}
    finally:
        await link.close()


async def test_live_pull_yields_flv_that_ffprobe_decodes(rtc: Rtc, tmp_path: Path) -> None:
    link = await rtc.link()
    try:
        response = await link.request("GET", LIVE)
        assert response.status == 200
        data = bytearray()
        reader, videos = FlvReader(), 0
        async for chunk in response:
            data += chunk
            items = reader.feed(chunk)
            videos += sum(isinstance(t, FlvTag) and t.is_video for t in items)
            if videos >= 30:
                break
        response.cancel()
        (tmp_path / "live.flv").write_bytes(data)
        assert decodes_h264(tmp_path / "live.flv")
        # The link serves the next request after a cancelled one.
        again = await link.request("GET", LIVE)
        tags = await read_tags(again, 3)
        first = next(t for t in tags if t.is_video and not t.is_sequence_header)
        assert first.is_keyframe
    finally:
        await link.close()


async def test_a_download_is_byte_exact(rtc: Rtc) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    (rtc.folder / "clip.flv").write_bytes(data)
    link = await rtc.link()
    try:
        response = await link.request(
            "GET", "/ipc.flv?action=download&channel=0&file_name=clip.flv"
        )
        assert response.status == 200
        body = await response.read(limit=8 * 1024 * 1024)
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()
        response = await link.request("GET", "/ipc.flv?action=download&channel=0&file_name=nope")
        assert (response.status, await response.read()) == (404, b"no such file: nope")
    finally:
        await link.close()


async def test_a_reader_that_falls_max_unread_behind_gets_its_request_reset(rtc: Rtc) -> None:
    """Data channels have no receive window: the requester holds at most MAX_UNREAD bytes
    its reader has not taken, then resets the request with a clear error (not a short body
    that looks whole); the link serves on."""
    data = os.urandom(webrtc.MAX_UNREAD + 2 * 1024 * 1024)
    (rtc.folder / "big.flv").write_bytes(data)
    target = "/ipc.flv?action=download&channel=0&file_name=big.flv"
    link = await rtc.link()
    try:
        response = await link.request("GET", target)
        assert response.status == 200
        # Nobody reads: the device keeps sending until the requester gives up on it.
        await wait_until(lambda: response.stream_id not in link._channels, what="reset")
        assert response._stream.body.qsize() <= 2  # the unread bytes were let go at once
        with pytest.raises(LinkError) as caught:
            await response.read(limit=len(data) * 2)
        assert caught.value.reason == "too_much_unread"
        assert str(caught.value) == (
            f"the reader fell over {webrtc.MAX_UNREAD} bytes behind: request reset"
        )
        (served,) = rtc.stack.device.webrtc_links  # the device dropped its side too
        await wait_until(lambda: not served._channels, what="device side reset")
        again = await link.request("GET", target)  # a reader that keeps up gets it all
        body = await again.read(limit=len(data) * 2)
        assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    finally:
        await link.close()


async def test_malformed_framing_is_a_400_with_a_code(rtc: Rtc) -> None:
    link = await rtc.link()
    try:
        channel = link._pc.createDataChannel("req")
        replies: asyncio.Queue[str | bytes] = asyncio.Queue()
        channel.on("message", replies.put_nowait)
        opened = asyncio.Event()
        channel.on("open", opened.set)
        await asyncio.wait_for(opened.wait(), 5)
        channel.send('{"method": "GET", "target": "no slash"}')
        head = json.loads(await asyncio.wait_for(replies.get(), 5))
        assert head["status"] == 400
        body = json.loads(await asyncio.wait_for(replies.get(), 5))
        assert body["error"]["code"] == "bad_target"
        # The link lives on.
        response = await link.request("GET", "/command?action=inner_define&channel=0&cmd=x")
        assert response.status == 406
    finally:
        await link.close()


async def test_no_grant_or_another_devices_grant_is_refused(rtc: Rtc) -> None:
    with pytest.raises(CloudError) as caught:
        await rtc.link(grant="")
    assert (caught.value.status, caught.value.code) == (502, "device_refused")
    assert caught.value.details["device_code"] == 400
    assert "no access grant" in caught.value.details["device_reason"]
    now = int(time.time())
    other = AccessGrant(rtc.client.app_key, "DEMO", "cam2", PERMISSIONS, now, now + 60)
    with pytest.raises(CloudError) as caught:
        await rtc.link(grant=rtc.stack.cloud._signer.sign(other))
    assert caught.value.details["device_code"] == 401
    assert "access grant refused" in caught.value.details["device_reason"]
    assert (rtc.stack.device.admission.total, rtc.stack.device.admission.pending) == (0, 0)
    # A grant without "live" gets the same 403 as on QUIC.
    token, _ = await rtc.client.get_grant("DEMO", "cam1", permissions=["command"])
    link = await rtc.link(grant=token)
    try:
        response = await link.request("GET", LIVE)
        assert response.status == 403
    finally:
        await link.close()


async def test_a_tampered_answer_fingerprint_is_refused(rtc: Rtc) -> None:
    with pytest.raises(LinkError) as caught:
        await rtc.link(tamper=True)
    assert caught.value.reason == "bad_identity"
    assert "does not match xp2pInfo" in str(caught.value)
    # The device's half-open link gives its pending slot back within its connect timeout.
    timeout = rtc.stack.device.config.link.connect_timeout + 2
    await wait_until(lambda: rtc.stack.device.admission.total == 0, timeout=timeout, what="freed")


async def test_a_quic_viewer_and_a_webrtc_peer_pull_at_once(rtc: Rtc) -> None:
    module = P2PModule()
    await module.init(rtc.stack.app_params)
    link = await rtc.link()
    try:
        await module.start_p2p_service("cam", DEVICE)
        quic = module._services["cam"].link  # type: ignore[union-attr]
        assert isinstance(quic, Link)
        quic_response = await quic.request("GET", LIVE)
        rtc_response = await link.request("GET", LIVE)
        quic_tags, rtc_tags = await asyncio.gather(
            read_tags(quic_response, 10), read_tags(rtc_response, 10)
        )
        for tags in (quic_tags, rtc_tags):
            assert next(t for t in tags if t.is_video and not t.is_sequence_header).is_keyframe
        assert len(rtc.stack.device.links) == 1 and len(rtc.stack.device.webrtc_links) == 1
        assert (rtc.stack.device.admission.total, rtc.stack.device.admission.pending) == (2, 0)
    finally:
        await link.close()
        await module.destroy()


async def test_talk_back_tone_arrives_at_the_device_sink(rtc: Rtc) -> None:
    t = np.arange(RATE * 2) / RATE
    tone = (np.sin(2 * np.pi * 1000 * t) * 8000).astype("<i2").tobytes()

    async def chunks() -> AsyncIterator[bytes]:
        for offset in range(0, len(tone), 1600):
            yield tone[offset : offset + 1600]
            await asyncio.sleep(0)

    link = await rtc.link()
    try:
        headers = [("content-type", f"audio/pcm;rate={RATE};channels=1")]
        response = await link.request("POST", "/voice?channel=0", headers, body=chunks())
        assert response.status == 200
        await response.read()
        await wait_free(rtc.stack.device, 5)
    finally:
        await link.close()
    (path,) = wav_files(rtc.voice)
    _fmt, pcm = read_wav(path)
    assert hashlib.sha256(pcm).digest() == hashlib.sha256(tone).digest()
    assert abs(dominant_hz(pcm) - 1000) <= 20


async def test_post_grant_renews_a_webrtc_link(rtc: Rtc) -> None:
    link = await rtc.link()
    try:
        fresh, expires_at = await rtc.client.get_grant("DEMO", "cam1")
        response = await link.request("POST", "/grant", body=fresh.encode())
        assert response.status == 200
        assert json.loads(await response.read()) == {"expires_at": expires_at}
        now = int(time.time())
        other = AccessGrant("another-app", "DEMO", "cam1", PERMISSIONS, now, now + 60)
        response = await link.request(
            "POST", "/grant", body=rtc.stack.cloud._signer.sign(other).encode()
        )
        assert (response.status, await response.read()) == (
            403,
            b"access grant refused: it was issued to another app",
        )
    finally:
        await link.close()


async def test_a_webrtc_link_counts_against_max_links_and_closes_when_idle(
    rtc: Rtc, tmp_path: Path
) -> None:
    old = rtc.stack.device
    await old.close()
    device = DeviceAgent(replace(old.config, max_links=1, link_idle_timeout=1.0))
    rtc.stack.device = device
    await device.start()
    await device.wait_signed_in(10)
    try:
        link = await rtc.link()
        with pytest.raises(CloudError) as caught:
            await rtc.link()
        assert caught.value.details["device_code"] == 503
        assert caught.value.details["device_reason"] == "busy: 1 links already open"
        module = P2PModule()  # nor may a QUIC viewer take a second link
        await module.init(rtc.stack.app_params)
        try:
            with pytest.raises(XP2PError):
                await module.start_p2p_service("cam", DEVICE)
        finally:
            await module.destroy()
        # Idle for link_idle_timeout: the device closes it, and the slot is free again.
        await asyncio.wait_for(link.wait_closed(), 10)
        await wait_until(lambda: device.admission.total == 0, timeout=5, what="slot freed")
        again = await rtc.link()
        await again.close()
    finally:
        await device.close()


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coturn]:
    if TURNSERVER is None:
        pytest.skip("coturn missing: scripts/setup.sh installs it")
    while True:  # coturn listens on UDP and TCP: a port free in both
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port: int = tcp.getsockname()[1]
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            break
    server = start_coturn(tmp_path_factory.mktemp("coturn"), port=port, loopback_peers=True)
    yield server
    server.stop()


async def test_a_relay_only_peer_reaches_the_device_through_the_clouds_turn(
    coturn: Coturn,
) -> None:
    """The device gathers with the cloud's TURN (REST credentials), as a browser behind a
    UDP-hostile network needs: the peer offers relayed candidates only."""
    turn = TurnServerConfig(coturn.urls("udp"), coturn.secret, ttl=3600)
    config = CloudConfig.demo(port=0, stun_port=0, connect_timeout=5.0, turn=(turn,))
    cloud = CloudServer(config)
    await cloud.start()
    stack = Stack(cloud, config, device=None)  # type: ignore[arg-type]
    device = DeviceAgent(stack.device_config())
    await device.start()
    app = config.apps[0]
    try:
        await device.wait_signed_in(10)
        async with CloudClient(cloud.url, app.key, app.secret, timeout=10) as client:
            session = await client.create_session()
            assert any(u.startswith("turn:") for s in session.ice_servers for u in s.urls)
            info = Xp2pInfo.parse((await client.get_p2p_info("DEMO", "cam1")).xp2p_info or "")
            grant, _ = await client.get_grant("DEMO", "cam1")
            before = coturn.allocations()

            async def signal(offer: dict[str, Any]) -> dict[str, Any]:
                assert "typ relay" in offer["sdp"] and "typ host" not in offer["sdp"]
                return await client.connect("DEMO", "cam1", offer)

            link = await open_webrtc(
                session.ice_servers,
                signal,
                fingerprint=info.dtls_fingerprint,
                grant=grant,
                peer_label="relayed browser",
                relay_only=True,
            )
            try:
                tags = await read_tags(await link.request("GET", LIVE), 5)
                assert next(t for t in tags if t.is_video and not t.is_sequence_header).is_keyframe
            finally:
                await link.close()
            assert coturn.allocations() >= before + 2  # the peer's and the device's
    finally:
        await device.close()
        await cloud.stop()


async def test_requests_at_once_are_bounded_per_link(
    rtc: Rtc, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webrtc, "MAX_REQUESTS", 1)
    link = await rtc.link()
    try:
        live = await link.request("GET", LIVE)  # holds the link's one request
        with pytest.raises(LinkError) as caught:
            await link.request("GET", "/command?action=inner_define&channel=0&cmd=get_device_st")
        assert caught.value.reason == "closed"
        live.cancel()
        (served,) = rtc.stack.device.webrtc_links
        await wait_until(lambda: not served._channels, timeout=5, what="live pull ended")
        response = await link.request("GET", "/command?action=inner_define&channel=0&cmd=x")
        assert response.status == 406
    finally:
        await link.close()


async def test_playback_streams_recordings_and_answers_its_commands(rtc: Rtc) -> None:
    t0 = int(time.time()) - 7200
    record(rtc.folder, t0 * 1000 + 500, seconds=6.0)
    old = rtc.stack.device
    await old.close()  # a camera that finds these recordings on its disk at start
    device = DeviceAgent(replace(old.config, segment_seconds=2))
    rtc.stack.device = device
    await device.start()
    await device.wait_signed_in(10)
    link = await rtc.link()
    try:
        query = f"action=playback&channel=0&start_time={t0 + 1}&end_time={t0 + 6}"
        response = await link.request("GET", f"/ipc.flv?{query}")
        assert response.status == 200
        tags = await read_tags(response, 10)
        assert starts_gop(next(t for t in tags if t.is_video and not t.is_sequence_header))
        base = "/command?action=inner_define&channel=0&cmd="
        reply = await link.request("GET", base + "playback_progress")
        assert reply.status == 200
        assert int(json.loads(await reply.read())["progress"]) >= 0
        reply = await link.request("GET", base + "playback_pause")
        assert json.loads(await reply.read()) == {"status": "0"}
        reply = await link.request("GET", base + f"playback_seek&time={t0 + 4}")
        assert json.loads(await reply.read()) == {"status": "0"}
        reply = await link.request("GET", base + "playback_progress")
        assert int(json.loads(await reply.read())["progress"]) == 3000
        response.cancel()
    finally:
        await link.close()
        await device.close()
