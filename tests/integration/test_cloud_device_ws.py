"""The device WebSocket of the cloud: raw protocol checks and the DeviceCloudSession client."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from tests.support.waiting import wait_until
from xp2p.auth import device_proof, export_public_key
from xp2p.cloud import CloudConfig, CloudServer, DeviceConfig
from xp2p.cloud.device_ws import MAX_BAD_FRAMES, BadMessage, parse_device_frame
from xp2p.device.cloud_session import (
    CloudSignInError,
    DeviceCloudSession,
    OfferRequest,
    SignInInfo,
)
from xp2p.trust import CloudTrust, certificate_sha256, self_signed_certificate, verify_welcome_mac
from xp2p.viewer.cloud_client import CloudClient, CloudError

SECRET = "cam1-device-secret"


@pytest.fixture
def config() -> CloudConfig:
    return CloudConfig.demo(
        port=0,
        stun_port=0,
        connect_timeout=1.0,
        devices=(DeviceConfig("DEMO", "cam1", SECRET), DeviceConfig("DEMO", "cam2", SECRET * 2)),
    )


@pytest.fixture
async def server(config: CloudConfig) -> AsyncIterator[CloudServer]:
    cloud = CloudServer(config)
    await cloud.start()
    yield cloud
    await cloud.stop()


async def _json(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), 5)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    doc: dict[str, Any] = json.loads(msg.data)
    return doc


async def _sign_in(
    ws: aiohttp.ClientWebSocketResponse, device: str = "cam1", secret: str = SECRET
) -> dict[str, Any]:
    challenge = await _json(ws)
    assert challenge["type"] == "challenge" and len(challenge["nonce"]) == 32
    proof = device_proof(secret, bytes.fromhex(challenge["nonce"]), "DEMO", device)
    nonce = secrets.token_hex(16)
    await ws.send_json(
        {
            "type": "auth",
            "product_id": "DEMO",
            "device_name": device,
            "proof": proof,
            "nonce": nonce,
        }
    )
    reply = await _json(ws)
    if reply["type"] == "welcome":  # made for this sign-in, under this device's secret
        challenge_bytes, device_nonce = bytes.fromhex(challenge["nonce"]), bytes.fromhex(nonce)
        assert verify_welcome_mac(secret, challenge_bytes, device_nonce, "DEMO", device, reply)
        assert not verify_welcome_mac(secret, challenge_bytes, b"\0" * 16, "DEMO", device, reply)
    return reply


async def _closed(ws: aiohttp.ClientWebSocketResponse) -> bool:
    msg = await asyncio.wait_for(ws.receive(), 5)
    return msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


def _ws_url(server: CloudServer) -> str:
    return server.url + "/api/v1/device/ws"


async def test_welcome_and_presence(server: CloudServer, config: CloudConfig) -> None:
    app = config.apps[0]
    async with aiohttp.ClientSession() as http, http.ws_connect(_ws_url(server)) as ws:
        welcome = await _sign_in(ws)
        assert welcome["type"] == "welcome"
        assert welcome["grant_public_key"] == export_public_key(server.grant_public_key)
        assert welcome["stun"]["port"] == server.stun_address[1]
        assert welcome["ice_servers"][0]["urls"] == [f"stun:127.0.0.1:{server.stun_address[1]}"]
        await ws.send_json({"type": "xp2p_info", "xp2p_info": "XP2Pabc%1.0"})
        assert (await _json(ws))["type"] == "xp2p_info_ok"
        async with CloudClient(server.url, app.key, app.secret) as client:
            info = await client.get_p2p_info("DEMO", "cam1")
            assert info.online and info.xp2p_info == "XP2Pabc%1.0"


@pytest.mark.parametrize(("device", "secret"), [("cam1", "wrong-secret"), ("ghost", SECRET)])
async def test_auth_failed_does_not_reveal_the_device(
    server: CloudServer, device: str, secret: str
) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(_ws_url(server)) as ws:
        reply = await _sign_in(ws, device, secret)
        assert reply == {
            "type": "error",
            "code": "auth_failed",
            "message": "device authentication failed",
        }
        assert await _closed(ws)


async def test_garbage_frames(server: CloudServer, config: CloudConfig) -> None:
    garbage: list[str | bytes] = [
        "not json",
        "[1, 2]",
        '{"no": "type"}',
        '{"type": "dance"}',
        '{"type": "xp2p_info", "xp2p_info": "no prefix"}',
        '{"type": "xp2p_info", "xp2p_info": "XP2P' + "x" * 3000 + '"}',
        '{"type": "answer", "request_id": 5, "answer": {}}',
        '{"type": "reject", "request_id": "r", "code": "x"}',
        b"\x00\x01binary",
    ]
    async with aiohttp.ClientSession() as http, http.ws_connect(_ws_url(server)) as ws:
        assert (await _sign_in(ws))["type"] == "welcome"
        for frame in garbage:
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_str(frame)
            reply = await _json(ws)
            assert (reply["type"], reply["code"]) == ("error", "bad_message"), frame
        # An answer nobody waits for is ignored, not an error; the socket still works.
        await ws.send_json({"type": "answer", "request_id": "stale", "answer": {}})
        await ws.send_json({"type": "xp2p_info", "xp2p_info": "XP2Pok%1.0"})
        assert (await _json(ws))["type"] == "xp2p_info_ok"
        # Other users are unaffected.
        app = config.apps[0]
        async with CloudClient(server.url, app.key, app.secret) as client:
            assert (await client.get_p2p_info("DEMO", "cam1")).online
        for _ in range(MAX_BAD_FRAMES - len(garbage)):
            await ws.send_str("junk")
            assert (await _json(ws))["code"] == "bad_message"
        assert await _closed(ws)


async def test_bad_frames_before_sign_in(server: CloudServer) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(_ws_url(server)) as ws:
        await _json(ws)  # challenge
        await ws.send_str('{"type": "xp2p_info", "xp2p_info": "XP2Px"}')
        assert (await _json(ws))["code"] == "bad_message"
        for _ in range(MAX_BAD_FRAMES - 1):
            await ws.send_str("{")
            assert (await _json(ws))["code"] == "bad_message"
        assert await _closed(ws)
    async with aiohttp.ClientSession() as http, http.ws_connect(_ws_url(server)) as ws:
        assert (await _sign_in(ws))["type"] == "welcome"


async def test_oversize_frame_closes_only_that_socket(server: CloudServer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(_ws_url(server)) as ws:
            await _sign_in(ws)
            await ws.send_str("x" * 70_000)
            assert await _closed(ws)
        async with http.ws_connect(_ws_url(server)) as ws:
            assert (await _sign_in(ws))["type"] == "welcome"


async def test_second_sign_in_replaces_the_first(server: CloudServer, config: CloudConfig) -> None:
    app = config.apps[0]
    async with aiohttp.ClientSession() as http:
        first = await http.ws_connect(_ws_url(server))
        await _sign_in(first)
        second = await http.ws_connect(_ws_url(server))
        welcome = await _sign_in(second)
        assert welcome["type"] == "welcome"
        assert await _closed(first)
        await second.send_json({"type": "xp2p_info", "xp2p_info": "XP2Psecond%1.0"})
        assert (await _json(second))["type"] == "xp2p_info_ok"
        await asyncio.sleep(0.05)  # the old socket's sign-out must not take the new one down
        async with CloudClient(server.url, app.key, app.secret) as client:
            info = await client.get_p2p_info("DEMO", "cam1")
            assert info.online and info.xp2p_info == "XP2Psecond%1.0"
            # Offers go to the new socket.
            task = asyncio.create_task(client.connect("DEMO", "cam1", {"n": 1}))
            offer = await _json(second)
            assert offer["type"] == "offer" and offer["offer"] == {"n": 1}
            assert offer["app_key"] == app.key
            await second.send_json(
                {"type": "answer", "request_id": offer["request_id"], "answer": {"ok": 1}}
            )
            assert await task == {"ok": 1}
        await second.close()


async def test_device_cannot_answer_for_another(server: CloudServer, config: CloudConfig) -> None:
    app = config.apps[0]
    async with aiohttp.ClientSession() as http:
        cam1 = await http.ws_connect(_ws_url(server))
        await _sign_in(cam1)
        cam2 = await http.ws_connect(_ws_url(server))
        await _sign_in(cam2, "cam2", SECRET * 2)
        async with CloudClient(server.url, app.key, app.secret) as client:
            task = asyncio.create_task(client.connect("DEMO", "cam1", {}))
            offer = await _json(cam1)
            await cam2.send_json(
                {"type": "answer", "request_id": offer["request_id"], "answer": {"evil": 1}}
            )
            await asyncio.sleep(0.05)
            assert not task.done()
            await cam1.send_json(
                {"type": "answer", "request_id": offer["request_id"], "answer": {"good": 1}}
            )
            assert await task == {"good": 1}
        await cam1.close()
        await cam2.close()


async def test_session_with_wrong_secret_reports_and_retries(server: CloudServer) -> None:
    session = DeviceCloudSession(
        server.url,
        "DEMO",
        "cam1",
        "wrong-secret",
        grant_public_key=server.grant_public_key,
        on_offer=_never,
        xp2p_info_factory=lambda info: "XP2Px%1.0",
        backoff_initial=0.05,
    )
    await session.start()
    try:
        with pytest.raises(CloudSignInError, match="DEMO/cam1"):
            await session.wait_signed_in(5.0)
        assert "wrong-secret" not in repr(session)
    finally:
        await session.close()


async def _never(request: OfferRequest) -> dict[str, Any]:
    raise AssertionError("no offers expected")


async def test_session_reconnects_after_cloud_restart(config: CloudConfig, tmp_path: Path) -> None:
    # The grant key outlives the restart (grant_key_file): the device has it pinned.
    key_file = tmp_path / "grant.pem"
    key_file.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        )
    )
    config = replace(config, grant_key_file=key_file)
    first = CloudServer(config)
    await first.start()
    port = int(first.url.rsplit(":", 1)[1])
    published: list[SignInInfo] = []

    def factory(info: SignInInfo) -> str:
        published.append(info)
        return f"XP2Pgen{len(published)}%1.0"

    async def answer(request: OfferRequest) -> dict[str, Any]:
        return {"ok": request.offer["n"]}

    session = DeviceCloudSession(
        first.url,
        "DEMO",
        "cam1",
        SECRET,
        grant_public_key=first.grant_public_key,
        on_offer=answer,
        xp2p_info_factory=factory,
    )
    await session.start()
    second: CloudServer | None = None
    try:
        await session.wait_signed_in(5.0)
        await first.stop()
        await wait_until(lambda: not session.signed_in, what="the session noticed the cloud left")
        second = CloudServer(replace(config, port=port))
        await second.start()
        info = await session.wait_signed_in(10.0)
        assert len(published) == 2 and info is published[1]
        # The same (pinned) grant key, which the new welcome also names.
        assert export_public_key(info.grant_public_key) == export_public_key(
            second.grant_public_key
        )
        app = config.apps[0]
        async with CloudClient(second.url, app.key, app.secret) as client:
            p2p = await client.get_p2p_info("DEMO", "cam1")
            assert p2p.online and p2p.xp2p_info == "XP2Pgen2%1.0"
            assert await client.connect("DEMO", "cam1", {"n": 7}) == {"ok": 7}
    finally:
        await session.close()
        if second is not None:
            await second.stop()


async def test_session_close_signs_out(server: CloudServer, config: CloudConfig) -> None:
    session = DeviceCloudSession(
        server.url,
        "DEMO",
        "cam1",
        SECRET,
        grant_public_key=server.grant_public_key,
        on_offer=_never,
        xp2p_info_factory=lambda i: "XP2P%1",
    )
    await session.start()
    await session.wait_signed_in(5.0)
    await session.close()
    assert not session.signed_in

    async def signed_out() -> bool:
        presence = await server.registry.get("DEMO", "cam1")
        return presence is not None and not presence.online

    await wait_until(signed_out, what="the cloud marked the device offline")


def test_parse_device_frame_never_crashes() -> None:
    for text in ("", "null", "{" * 10_000, '{"type": 1}', '{"type": "auth"}'):
        with pytest.raises(BadMessage):
            parse_device_frame(text)


async def test_device_leaving_mid_offer(server: CloudServer, config: CloudConfig) -> None:
    app = config.apps[0]
    async with aiohttp.ClientSession() as http, CloudClient(server.url, app.key, app.secret) as c:
        ws = await http.ws_connect(_ws_url(server))
        await _sign_in(ws)
        task = asyncio.create_task(c.connect("DEMO", "cam1", {}))
        assert (await _json(ws))["type"] == "offer"
        await ws.close()
        with pytest.raises(CloudError) as info:
            await task
        assert (info.value.status, info.value.code) == (404, "device_offline")


async def test_auth_without_a_device_nonce_is_a_bad_message(server: CloudServer) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(_ws_url(server)) as ws:
        challenge = await _json(ws)
        proof = device_proof(SECRET, bytes.fromhex(challenge["nonce"]), "DEMO", "cam1")
        await ws.send_json(
            {"type": "auth", "product_id": "DEMO", "device_name": "cam1", "proof": proof}
        )
        reply = await _json(ws)
        assert (reply["code"], reply["message"]) == (
            "bad_message",
            "nonce must be 32 hex digits (the device's, for the welcome MAC)",
        )


async def test_a_device_pins_the_tls_cloud_by_fingerprint(
    config: CloudConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = self_signed_certificate(tmp_path, name="cloud")
    cloud = CloudServer(replace(config, tls_cert_file=cert, tls_key_file=key))
    await cloud.start()
    assert cloud.url.startswith("https://127.0.0.1:")
    good = certificate_sha256(cert.read_bytes())
    wrong = "00" * 32
    sessions = [
        DeviceCloudSession(
            cloud.url,
            "DEMO",
            name,
            secret,
            grant_public_key=cloud.grant_public_key,
            trust=CloudTrust(fingerprint=fingerprint),
            on_offer=_never,
            xp2p_info_factory=lambda i: "XP2P%1",
            backoff_initial=0.05,
        )
        for name, secret, fingerprint in (("cam1", SECRET, good), ("cam2", SECRET * 2, wrong))
    ]
    try:
        for session in sessions:
            await session.start()
        await sessions[0].wait_signed_in(5.0)
        await wait_until(
            lambda: "the TLS certificate of 127.0.0.1 is not trusted" in caplog.text,
            what="the wrong pin was refused, by name",
        )
        assert not sessions[1].signed_in
        presence = await cloud.registry.get("DEMO", "cam2")
        assert presence is None  # it never got as far as a sign-in
    finally:
        for session in sessions:
            await session.close()
        await cloud.stop()


async def test_link_up_counts_once_per_answered_offer_of_that_device(
    server: CloudServer, config: CloudConfig
) -> None:
    """``link_up`` feeds xp2p_links_total: only for an offer this device answered, once;
    a replay, a made-up id, another device's offer and a bad mode count nothing."""
    app = config.apps[0]

    def links(mode: str) -> float:
        return server.metrics.registry.get_sample_value("xp2p_links_total", {"mode": mode}) or 0

    async with aiohttp.ClientSession() as http:
        cam1 = await http.ws_connect(_ws_url(server))
        assert (await _sign_in(cam1))["reports"] == ["link_up"]
        cam2 = await http.ws_connect(_ws_url(server))
        await _sign_in(cam2, "cam2", SECRET * 2)
        async with CloudClient(server.url, app.key, app.secret) as client:
            task = asyncio.create_task(client.connect("DEMO", "cam1", {}))
            offer = await _json(cam1)
            request_id = offer["request_id"]
            await cam1.send_json({"type": "answer", "request_id": request_id, "answer": {}})
            await task
        up = {"type": "link_up", "request_id": request_id, "mode": "relay"}
        await cam2.send_json(up)  # not cam2's offer
        await cam1.send_json({**up, "request_id": "0123456789abcdef"})  # never sent
        await cam1.send_json({**up, "mode": "teleport"})
        assert (await _json(cam1))["code"] == "bad_message"
        await cam1.send_json(up)
        await cam1.send_json(up)  # a replay
        await wait_until(lambda: links("relay") >= 1, what="the report")
        await cam1.send_json({"type": "xp2p_info", "xp2p_info": "XP2Pz%1.0"})
        assert (await _json(cam1))["type"] == "xp2p_info_ok"  # every frame above was read
        assert (links("relay"), links("direct")) == (1, 0)
        await cam1.close()
        await cam2.close()
