"""The cloud's app API end to end: a real CloudServer on 127.0.0.1, the real CloudClient and a
real DeviceCloudSession."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from tests.support.waiting import wait_until
from xp2p.auth import GrantVerifier, sign_request, turn_credentials
from xp2p.cloud import AppConfig, CloudConfig, CloudServer, DeviceConfig, TurnServerConfig
from xp2p.device.cloud_session import DeviceCloudSession, OfferRejected, OfferRequest
from xp2p.viewer.cloud_client import CloudClient, CloudError

INFO = "XP2Ptest-info%2.4.0"


def _config(**overrides: Any) -> CloudConfig:
    fields: dict[str, Any] = {
        "port": 0,
        "stun_port": 0,
        "connect_timeout": 0.5,
        "apps": (
            AppConfig("demo-app", "demo-app-secret-0001"),
            AppConfig("limited", "limited-secret-0001", products=("OTHER",)),
        ),
        "devices": (
            DeviceConfig("DEMO", "cam1", "cam1-device-secret"),
            DeviceConfig("OTHER", "cam9", "cam9-device-secret"),
        ),
        "turn": (TurnServerConfig(("turn:127.0.0.1:3478",), "turn-shared-secret", ttl=600),),
    }
    fields.update(overrides)
    return CloudConfig(**fields)


@pytest.fixture
async def server() -> AsyncIterator[CloudServer]:
    cloud = CloudServer(_config())
    await cloud.start()
    yield cloud
    await cloud.stop()


@pytest.fixture
async def client(server: CloudServer) -> AsyncIterator[CloudClient]:
    async with CloudClient(server.url, "demo-app", "demo-app-secret-0001", timeout=5.0) as c:
        yield c


OfferHandler = Callable[[OfferRequest], Awaitable[dict[str, Any]]]


async def _echo(request: OfferRequest) -> dict[str, Any]:
    return {"echo": request.offer, "app": request.app_key}


async def _device(server: CloudServer, on_offer: OfferHandler = _echo) -> DeviceCloudSession:
    session = DeviceCloudSession(
        server.url,
        "DEMO",
        "cam1",
        "cam1-device-secret",
        on_offer=on_offer,
        xp2p_info_factory=lambda info: INFO,
        grant_public_key=server.grant_public_key,
    )
    await session.start()
    await session.wait_signed_in(5.0)
    return session


async def _raw(
    server: CloudServer,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    secret: str = "demo-app-secret-0001",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """One request signed by hand, for what CloudClient would never send."""
    signed = (
        headers if headers is not None else sign_request("demo-app", secret, method, path, body)
    )
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, server.url + path, data=body, headers=signed) as resp,
    ):
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


async def _error(coro: Awaitable[object]) -> CloudError:
    with pytest.raises(CloudError) as info:
        await coro
    return info.value


async def test_health_and_version(server: CloudServer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(server.url + "/healthz") as resp:
            assert await resp.json() == {"status": "ok"}
        async with http.get(server.url + "/version") as resp:
            doc = await resp.json()
    assert doc["name"] == "xp2p" and isinstance(doc["version"], str)


async def test_session_hands_out_stun_and_turn(server: CloudServer, client: CloudClient) -> None:
    session = await client.create_session()
    host, port = server.stun_address
    assert session.stun.host == host and session.stun.port == port
    assert session.stun.alt_port is None
    assert abs(session.server_time - time.time()) < 5
    stun, turn = session.ice_servers
    assert stun.urls == (f"stun:{host}:{port}",) and stun.username is None
    assert turn.urls == ("turn:127.0.0.1:3478",)
    assert turn.username is not None and turn.credential is not None
    expiry, user = turn.username.split(":", 1)
    assert user == session.session_id and int(expiry) > time.time() + 500
    expected = turn_credentials("turn-shared-secret", user, 0, now=int(expiry))
    assert (turn.username, turn.credential) == expected
    assert "turn-shared-secret" not in repr(session) and turn.credential not in repr(session)


async def test_p2p_info_follows_the_device(server: CloudServer, client: CloudClient) -> None:
    info = await client.get_p2p_info("DEMO", "cam1")
    assert (info.xp2p_info, info.online, info.report_time) == (None, False, None)
    device = await _device(server)
    info = await client.get_p2p_info("DEMO", "cam1")
    assert info.online and info.xp2p_info == INFO
    assert info.report_time is not None and abs(info.report_time - time.time()) < 5
    await device.close()

    async def offline() -> bool:
        return not (await client.get_p2p_info("DEMO", "cam1")).online

    await wait_until(offline, what="the device reported offline")
    info = await client.get_p2p_info("DEMO", "cam1")
    assert not info.online and info.xp2p_info == INFO  # offline keeps the last xp2pInfo


async def test_unknown_device(client: CloudClient) -> None:
    for coro in (
        client.get_p2p_info("DEMO", "nope"),
        client.get_grant("DEMO", "nope"),
        client.connect("DEMO", "nope", {}),
        client.get_p2p_info("DEMO", "bad name!"),
    ):
        err = await _error(coro)
        assert (err.status, err.code) == (404, "unknown_device")


async def test_grant(server: CloudServer, client: CloudClient) -> None:
    token, expires_at = await client.get_grant("DEMO", "cam1", ["live", "command"])
    grant = GrantVerifier(server.grant_public_key).verify(token, "DEMO", "cam1", time.time())
    assert grant.permissions == {"live", "command"} and grant.app_key == "demo-app"
    assert grant.expires_at == expires_at and expires_at - grant.issued_at == 300
    token, _ = await client.get_grant("DEMO", "cam1")
    grant = GrantVerifier(server.grant_public_key).verify(token, "DEMO", "cam1", time.time())
    assert len(grant.permissions) == 5
    for bad in (["root"], []):
        err = await _error(client.get_grant("DEMO", "cam1", bad))
        assert (err.status, err.code) == (400, "bad_request")
    status, doc = await _raw(
        server, "POST", "/api/v1/devices/DEMO/cam1/grant", b'{"permissions":"live"}'
    )
    assert (status, doc["error"]["code"]) == (400, "bad_request")


async def test_connect_round_trip(server: CloudServer, client: CloudClient) -> None:
    device = await _device(server)
    try:
        offers = [{"n": i, "ice": {"ufrag": "x" * 10}} for i in range(5)]
        answers = await asyncio.gather(*(client.connect("DEMO", "cam1", o) for o in offers))
        assert answers == [{"echo": o, "app": "demo-app"} for o in offers]
    finally:
        await device.close()


async def test_connect_to_offline_device(client: CloudClient) -> None:
    err = await _error(client.connect("DEMO", "cam1", {"a": 1}))
    assert (err.status, err.code) == (404, "device_offline")


async def test_an_app_flooding_a_device_with_offers_is_rate_limited() -> None:
    cloud = CloudServer(_config(offer_burst=3, offer_rate=0.5))
    await cloud.start()
    try:
        device = await _device(cloud)
        async with CloudClient(cloud.url, "demo-app", "demo-app-secret-0001") as app:
            for n in range(3):  # the burst goes through
                assert await app.connect("DEMO", "cam1", {"n": n}) == {
                    "echo": {"n": n},
                    "app": "demo-app",
                }
            err = await _error(app.connect("DEMO", "cam1", {"n": 3}))
            assert (err.status, err.code) == (429, "rate_limited")
            assert "too many connection attempts to this device; retry in" in err.message
            assert 0 < err.details["retry_after"] <= 2.0
            # Over plain HTTP: the standard header says when to come back.
            body = json.dumps({"offer": {"n": 4}}).encode()
            path = "/api/v1/devices/DEMO/cam1/connect"
            headers = sign_request("demo-app", "demo-app-secret-0001", "POST", path, body)
            async with (
                aiohttp.ClientSession() as http,
                http.post(cloud.url + path, data=body, headers=headers) as resp,
            ):
                assert resp.status == 429
                assert resp.headers["Retry-After"] in ("1", "2")
            # Each device has its own budget (per app: tests/test_cloud_limits.py).
            err = await _error(app.connect("OTHER", "cam9", {"n": 0}))
            assert err.code == "device_offline"  # not rate_limited
        await device.close()
    finally:
        await cloud.stop()


async def test_connect_device_timeout(server: CloudServer, client: CloudClient) -> None:
    async def silent(request: OfferRequest) -> dict[str, Any]:
        await asyncio.sleep(30)
        return {}

    device = await _device(server, silent)
    try:
        started = time.monotonic()
        err = await _error(client.connect("DEMO", "cam1", {"a": 1}))
        assert (err.status, err.code) == (504, "device_timeout")
        assert time.monotonic() - started < 3
    finally:
        await device.close()


async def test_connect_device_refuses(server: CloudServer, client: CloudClient) -> None:
    async def refuse(request: OfferRequest) -> dict[str, Any]:
        if request.offer.get("crash"):
            raise RuntimeError("bug in the device")
        raise OfferRejected(401, "grant refused")

    device = await _device(server, refuse)
    try:
        err = await _error(client.connect("DEMO", "cam1", {"a": 1}))
        assert (err.status, err.code) == (502, "device_refused")
        assert err.details == {"device_code": 401, "device_reason": "grant refused"}
        assert "grant refused" in err.message
        err = await _error(client.connect("DEMO", "cam1", {"crash": True}))
        assert (err.status, err.code, err.details["device_code"]) == (502, "device_refused", 500)
        assert "bug in the device" not in err.message  # internals stay on the device
    finally:
        await device.close()


async def test_connect_bad_offers(server: CloudServer) -> None:
    path = "/api/v1/devices/DEMO/cam1/connect"
    for body in (b'{"offer": [1]}', b"{}", b'{"offer": "x"}', b"[1, 2]"):
        status, doc = await _raw(server, "POST", path, body)
        assert (status, doc["error"]["code"]) == (400, "bad_request"), body
    big = json.dumps({"offer": {"pad": "x" * 17_000}}).encode()
    status, doc = await _raw(server, "POST", path, big)
    assert (status, doc["error"]["code"]) == (400, "bad_request")


async def test_malformed_json(server: CloudServer) -> None:
    for body in (b"{not json", b"\xff\xfe", b"[" * 5000):
        status, doc = await _raw(server, "POST", "/api/v1/app/session", body)
        assert (status, doc["error"]["code"]) == (400, "bad_request")


async def test_oversize_body(server: CloudServer) -> None:
    body = json.dumps({"offer": {"pad": "x" * 100_000}}).encode()
    status, doc = await _raw(server, "POST", "/api/v1/devices/DEMO/cam1/connect", body)
    assert status == 413 and doc["error"]["code"] == "payload_too_large"
    status, doc = await _raw(server, "GET", "/healthz")
    assert status == 200


async def test_wrong_app_secret(server: CloudServer) -> None:
    async with CloudClient(server.url, "demo-app", "not-the-secret") as bad:
        err = await _error(bad.create_session())
    assert (err.status, err.code) == (401, "bad_signature")
    assert "not-the-secret" not in str(err)
    async with CloudClient(server.url, "who", "whatever-secret") as unknown:
        err = await _error(unknown.create_session())
    assert (err.status, err.code) == (401, "unknown_app")


async def test_auth_header_failures(server: CloudServer) -> None:
    path = "/api/v1/app/session"
    headers = sign_request("demo-app", "demo-app-secret-0001", "POST", path, b"")
    assert (await _raw(server, "POST", path, headers=headers))[0] == 200
    status, doc = await _raw(server, "POST", path, headers=headers)
    assert (status, doc["error"]["code"]) == (401, "replayed_nonce")
    then = int(time.time()) - 1000
    old = sign_request("demo-app", "demo-app-secret-0001", "POST", path, b"", timestamp=then)
    status, doc = await _raw(server, "POST", path, headers=old)
    assert (status, doc["error"]["code"]) == (401, "stale_timestamp")
    status, doc = await _raw(server, "POST", path, headers={})
    assert (status, doc["error"]["code"]) == (401, "missing_auth")
    # The signature covers the path: a signed request replayed to another path fails.
    signed_path = "/api/v1/devices/DEMO/cam1/p2p-info"
    other = sign_request("demo-app", "demo-app-secret-0001", "GET", signed_path, b"")
    status, doc = await _raw(server, "GET", "/api/v1/devices/OTHER/cam9/p2p-info", headers=other)
    assert (status, doc["error"]["code"]) == (401, "bad_signature")


async def test_forbidden_product(server: CloudServer) -> None:
    async with CloudClient(server.url, "limited", "limited-secret-0001") as limited:
        err = await _error(limited.get_p2p_info("DEMO", "cam1"))
        assert (err.status, err.code) == (403, "forbidden")
        err = await _error(limited.get_grant("DEMO", "nope"))  # no hint whether it exists
        assert (err.status, err.code) == (403, "forbidden")
        info = await limited.get_p2p_info("OTHER", "cam9")
        assert not info.online


async def test_unknown_route_and_method(server: CloudServer) -> None:
    status, doc = await _raw(server, "GET", "/api/v1/nothing")
    assert (status, doc["error"]["code"]) == (404, "not_found")
    status, doc = await _raw(server, "DELETE", "/api/v1/app/session")
    assert (status, doc["error"]["code"]) == (405, "method_not_allowed")


async def test_client_network_failures() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)
        writer.close()

    hang = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = hang.sockets[0].getsockname()[1]
    try:
        async with CloudClient(f"http://127.0.0.1:{port}", "a", "b", timeout=0.3) as c:
            err = await _error(c.create_session())
        assert (err.status, err.code) == (0, "timeout")
    finally:
        hang.close()
    async with CloudClient(f"http://127.0.0.1:{port}", "a", "b", timeout=2.0) as c:
        err = await _error(c.create_session())
    assert (err.status, err.code) == (0, "unreachable")
    assert "'b'" not in repr(CloudClient("http://x", "a", "my-app-secret"))
    assert "my-app-secret" not in repr(CloudClient("http://x", "a", "my-app-secret"))


async def test_secrets_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    config = _config()
    async with CloudServer(config) as server:
        device = await _device(server)
        async with CloudClient(server.url, "demo-app", "demo-app-secret-0001") as client:
            await client.create_session()
            token, _ = await client.get_grant("DEMO", "cam1")
            await client.connect("DEMO", "cam1", {"grant": token})
        async with CloudClient(server.url, "demo-app", "wrong-app-secret") as bad:
            await _error(bad.create_session())
        await device.close()
    text = caplog.text + repr(config) + repr(server)
    assert "signed in" in text and "offer from app demo-app" in text
    for secret in (
        "demo-app-secret-0001",
        "limited-secret-0001",
        "cam1-device-secret",
        "turn-shared-secret",
        "wrong-app-secret",
        token,
    ):
        assert secret not in text


async def test_offers_are_served_concurrently(server: CloudServer, client: CloudClient) -> None:
    async def slow(request: OfferRequest) -> dict[str, Any]:
        await asyncio.sleep(0.3)
        return {"n": request.offer["n"]}

    device = await _device(server, slow)
    try:
        # connect_timeout is 0.5 s: served one after the other, all but the first would time out.
        answers = await asyncio.gather(
            *(client.connect("DEMO", "cam1", {"n": i}) for i in range(4))
        )
        assert answers == [{"n": i} for i in range(4)]
    finally:
        await device.close()


async def test_large_answer_arrives_whole(server: CloudServer, client: CloudClient) -> None:
    async def big(request: OfferRequest) -> dict[str, Any]:
        return {"candidates": ["c" * 100] * 500}  # ~50 KiB: several TCP reads

    device = await _device(server, big)
    try:
        answer = await client.connect("DEMO", "cam1", {})
        assert answer == {"candidates": ["c" * 100] * 500}
    finally:
        await device.close()
