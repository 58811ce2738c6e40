"""Viewer tokens, the negatives: each refusal by status, code and message, against a real
CloudServer (its clock injected, so expiry needs no sleeping), and CORS by origin."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.support.waiting import wait_until
from xp2p.auth import sign_request
from xp2p.cloud import AppConfig, CloudConfig, CloudServer, DeviceConfig, TurnServerConfig
from xp2p.viewer.cloud_client import CloudClient, CloudError, ViewerTokenClient

APP_ORIGIN = "https://app.example"
OTHER_ORIGIN = "https://other.example"
SECRET = "demo-app-secret-0001"
OTHER_SECRET = "other-app-secret-001"
GRANT = "/api/v1/devices/DEMO/cam1/grant"


class Clock:
    """The cloud's clock, movable forward: expiry without sleeping."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def _config(**overrides: Any) -> CloudConfig:
    fields: dict[str, Any] = {
        "port": 0,
        "stun_port": 0,
        "connect_timeout": 0.5,
        "apps": (
            AppConfig("demo-app", SECRET, cors_origins=(APP_ORIGIN,)),
            AppConfig(
                "other-app",
                OTHER_SECRET,
                products=("OTHER",),
                permissions=("live",),
                cors_origins=(OTHER_ORIGIN,),
            ),
        ),
        "devices": (
            DeviceConfig("DEMO", "cam1", "cam1-device-secret"),
            DeviceConfig("DEMO", "cam2", "cam2-device-secret"),
            DeviceConfig("OTHER", "cam9", "cam9-device-secret"),
        ),
        "turn": (TurnServerConfig(("turn:127.0.0.1:3478",), "turn-shared-secret", ttl=600),),
    }
    fields.update(overrides)
    return CloudConfig(**fields)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def server(clock: Clock) -> AsyncIterator[CloudServer]:
    async with CloudServer(_config(), clock=clock) as cloud:
        yield cloud


async def _mint(server: CloudServer, app: str = "demo-app", **body: Any) -> str:
    secret = SECRET if app == "demo-app" else OTHER_SECRET
    async with CloudClient(server.url, app, secret, timeout=5) as backend:
        return (await backend.mint_viewer_token(**body)).token


async def _error(server: CloudServer, token: str, call: str, *args: Any) -> CloudError:
    async with ViewerTokenClient(server.url, token, timeout=5) as viewer:
        with pytest.raises(CloudError) as err:
            await getattr(viewer, call)(*args)
    return err.value


async def _raw(
    server: CloudServer, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, dict[str, str], dict[str, Any] | None]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, server.url + path, headers=headers, data=body) as resp,
    ):
        raw = await resp.read()
        doc = await resp.json(content_type=None) if raw else None
        return resp.status, dict(resp.headers), doc


async def test_no_token(server: CloudServer) -> None:
    # A browser (Origin, no signature) that sends nothing, or another scheme.
    for headers in (
        {"Origin": APP_ORIGIN},
        {"Authorization": "Basic dTpw"},
        {"Authorization": "Bearer "},
    ):
        status, _, doc = await _raw(server, "POST", GRANT, headers)
        assert doc is not None
        assert (status, doc["error"]["code"]) == (401, "token_missing")
        assert "Authorization: Bearer" in doc["error"]["message"]
    # Without an Origin, no credentials at all is still the app API's missing_auth.
    status, _, doc = await _raw(server, "POST", GRANT, {})
    assert doc is not None and (status, doc["error"]["code"]) == (401, "missing_auth")


async def test_malformed_tampered_and_foreign_tokens(server: CloudServer) -> None:
    token = await _mint(server, devices=[("DEMO", "cam1")])
    prefix, payload, mac = token.split(".")
    flipped = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    async with CloudServer(_config()) as other_cloud:  # another grant key
        foreign = await _mint(other_cloud, devices=[("DEMO", "cam1")])
    cases = {
        "garbage": ("not-a-token", "not a viewer token"),
        "no mac": (f"{prefix}.{payload}", "not a viewer token"),
        "bad base64": (f"{prefix}.{payload}.{mac}!", "not base64url"),
        "tampered payload": (f"{prefix}.{flipped}.{mac}", "signature does not match"),
        "other cloud": (foreign, "signature does not match"),
        "v2 prefix": (f"xvt2.{payload}.{mac}", "not a viewer token"),
    }
    for name, (bad, message) in cases.items():
        err = await _error(server, bad, "get_grant", "DEMO", "cam1")
        assert (err.status, err.code) == (401, "token_invalid"), name
        assert message in err.message, name
        assert bad not in str(err) and payload not in err.message


async def test_expired_token(server: CloudServer, clock: Clock) -> None:
    token = await _mint(server, devices=[("DEMO", "cam1")], ttl=60)
    async with ViewerTokenClient(server.url, token, timeout=5) as viewer:
        await viewer.get_grant("DEMO", "cam1")  # valid now
    clock.offset = 61.0
    for call, args in (
        ("get_grant", ("DEMO", "cam1")),
        ("get_p2p_info", ("DEMO", "cam1")),
        ("create_session", ()),
        ("connect", ("DEMO", "cam1", {"type": "offer"})),
    ):
        err = await _error(server, token, call, *args)
        assert (err.status, err.code, err.message) == (401, "token_expired", "viewer token expired")
    # The page can read why (its app's origin), an unrelated page cannot.
    status, headers, _ = await _raw(
        server, "POST", GRANT, {"Authorization": f"Bearer {token}", "Origin": APP_ORIGIN}
    )
    assert status == 401 and headers.get("Access-Control-Allow-Origin") == APP_ORIGIN
    status, headers, _ = await _raw(
        server, "POST", GRANT, {"Authorization": f"Bearer {token}", "Origin": OTHER_ORIGIN}
    )
    assert status == 401 and "Access-Control-Allow-Origin" not in headers


async def test_a_token_for_device_a_gets_nothing_of_device_b(server: CloudServer) -> None:
    token = await _mint(server, devices=[("DEMO", "cam1")])
    for call, args in (
        ("get_grant", ("DEMO", "cam2")),
        ("get_p2p_info", ("DEMO", "cam2")),
        ("connect", ("DEMO", "cam2", {"type": "offer"})),
        # An unknown device is out of scope too: a token does not learn what exists.
        ("get_grant", ("DEMO", "nosuch")),
    ):
        err = await _error(server, token, call, *args)
        assert (err.status, err.code) == (403, "token_scope"), (call, args)
        assert err.message == "this viewer token does not cover that device"
    # A product-wide token covers that product's devices, and no other product's.
    product = await _mint(server, products=["DEMO"])
    async with ViewerTokenClient(server.url, product, timeout=5) as viewer:
        await viewer.get_grant("DEMO", "cam2")
    err = await _error(server, product, "get_grant", "OTHER", "cam9")
    assert (err.status, err.code) == (403, "token_scope")


async def test_minting_refusals(server: CloudServer) -> None:
    async with CloudClient(server.url, "other-app", OTHER_SECRET, timeout=5) as backend:
        with pytest.raises(CloudError) as err:
            await backend.mint_viewer_token(products=["OTHER"], permissions=["live", "voice"])
        assert (err.value.status, err.value.code) == (403, "permission_not_allowed")
        assert err.value.message == "this app may not be granted: voice"
        with pytest.raises(CloudError) as err:
            await backend.mint_viewer_token(devices=[("DEMO", "cam1")])
        assert (err.value.status, err.value.code) == (403, "forbidden")
        with pytest.raises(CloudError) as err:
            await backend.mint_viewer_token(products=["OTHER"], ttl=3601)
        assert (err.value.status, err.value.code) == (400, "bad_request")
        assert "ttl must be an integer in [1, 3600]" in err.value.message
        with pytest.raises(CloudError) as err:
            await backend.mint_viewer_token()
        assert err.value.code == "bad_request" and "devices or products" in err.value.message
        minted = await backend.mint_viewer_token(products=["OTHER"])
        assert minted.permissions == ("live",)  # no list: the app's own ceiling
    async with CloudClient(server.url, "demo-app", SECRET, timeout=5) as backend:
        with pytest.raises(CloudError) as err:
            await backend.mint_viewer_token(devices=[("DEMO", "nosuch")])
        assert (err.value.status, err.value.code) == (404, "unknown_device")
    # A token cannot mint tokens: minting takes the app's signature.
    token = await _mint(server, devices=[("DEMO", "cam1")])
    status, _, doc = await _raw(
        server, "POST", "/api/v1/app/viewer-token", {"Authorization": f"Bearer {token}"}, b"{}"
    )
    assert doc is not None and (status, doc["error"]["code"]) == (401, "missing_auth")


async def test_grants_and_turn_credentials_never_outlive_the_token(
    server: CloudServer, clock: Clock
) -> None:
    token = await _mint(server, devices=[("DEMO", "cam1")], ttl=30)
    async with ViewerTokenClient(server.url, token, timeout=5) as viewer:
        _, grant_expiry = await viewer.get_grant("DEMO", "cam1")
        session = await viewer.create_session()
    now = int(clock())
    assert now + 28 <= grant_expiry <= now + 31  # grant_ttl is 300, the token 30
    turn = [s for s in session.ice_servers if s.username]
    assert turn and all((s.expires_at or 0) <= grant_expiry for s in turn)


async def test_token_in_query_is_refused_and_never_logged(
    server: CloudServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # Its own level too: an in-process CLI test (setup_logging) may have quieted it.
    caplog.set_level(logging.DEBUG, logger="aiohttp.access")
    token = await _mint(server, devices=[("DEMO", "cam1")])
    for query in (f"token={token}", f"access_token={token}", f"x={token}"):
        status, _, doc = await _raw(
            server, "GET", f"/api/v1/devices/DEMO/cam1/p2p-info?{query}", {}
        )
        assert doc is not None
        assert (status, doc["error"]["code"]) == (400, "token_in_query")
        assert "Authorization header" in doc["error"]["message"]
    # The access log writes its line once the answer is sent, which may be after we read it.
    await wait_until(lambda: caplog.text.count("p2p-info") >= 3, 5, what="the access log lines")
    payload = token.split(".")[1]
    assert caplog.records and all(payload not in r.getMessage() for r in caplog.records)


async def test_cors_preflight_and_answers(server: CloudServer) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    status, headers, _ = await _raw(server, "OPTIONS", GRANT, {"Origin": APP_ORIGIN, **preflight})
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert headers["Access-Control-Allow-Methods"] == "POST"
    assert "Authorization" in headers["Access-Control-Allow-Headers"]
    assert "Origin" in headers["Vary"] and "Access-Control-Allow-Credentials" not in headers
    for bad in ("https://evil.example", "null", APP_ORIGIN + "/", "*"):
        status, headers, doc = await _raw(server, "OPTIONS", GRANT, {"Origin": bad, **preflight})
        assert doc is not None and (status, doc["error"]["code"]) == (403, "origin_not_allowed")
        assert "Access-Control-Allow-Origin" not in headers and "Origin" in headers["Vary"]
    # An allowed origin asking a method or header the route does not take.
    status, _, doc = await _raw(
        server,
        "OPTIONS",
        GRANT,
        {"Origin": APP_ORIGIN, "Access-Control-Request-Method": "DELETE"},
    )
    assert doc is not None and (status, doc["error"]["code"]) == (403, "origin_not_allowed")

    # The answer is readable only by the token's own app's origins.
    token = await _mint(server, devices=[("DEMO", "cam1")])
    bearer = {"Authorization": f"Bearer {token}"}
    status, headers, _ = await _raw(server, "POST", GRANT, {**bearer, "Origin": APP_ORIGIN})
    assert status == 200 and headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "Origin" in headers["Vary"]
    status, headers, _ = await _raw(server, "POST", GRANT, {**bearer, "Origin": OTHER_ORIGIN})
    assert status == 200 and "Access-Control-Allow-Origin" not in headers
    # An app-signed answer is never handed to a page.
    signed = sign_request("demo-app", SECRET, "POST", GRANT, b"")
    status, headers, _ = await _raw(server, "POST", GRANT, {**signed, "Origin": APP_ORIGIN})
    assert status == 200 and "Access-Control-Allow-Origin" not in headers
    # The minting route is for backends: no CORS at all.
    status, headers, _ = await _raw(
        server, "OPTIONS", "/api/v1/app/viewer-token", {"Origin": APP_ORIGIN, **preflight}
    )
    assert status == 405 and "Access-Control-Allow-Origin" not in headers


async def test_token_requests_spend_the_apps_rate() -> None:
    config = _config(request_rate=0.01, request_burst=3)
    async with CloudServer(config) as server:
        token = await _mint(server, devices=[("DEMO", "cam1")])  # 1 of 3
        async with ViewerTokenClient(server.url, token, timeout=5) as viewer:
            await viewer.get_grant("DEMO", "cam1")
            await viewer.get_p2p_info("DEMO", "cam1")
            with pytest.raises(CloudError) as err:
                await viewer.get_grant("DEMO", "cam1")
        assert (err.value.status, err.value.code) == (429, "rate_limited")
        assert err.value.details["retry_after"] > 0
        # Shared with the app's signed requests: its backend is throttled too.
        async with CloudClient(server.url, "demo-app", SECRET, timeout=5) as backend:
            with pytest.raises(CloudError) as err:
                await backend.create_session()
        assert err.value.code == "rate_limited"
