"""The cloud serves the web app and the SDK (``cloud.webapp``), lists the devices a caller may
see (``GET /api/v1/app/devices``) and signs the demo's page in (``POST
/api/v1/demo/viewer-token``): a real CloudServer over real HTTP, real devices signing in and
out. Paths that must not name a file are sent byte for byte on a raw socket, so no client
normalises them first."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from tests.support.stack import Stack
from tests.support.waiting import wait_until
from xp2p.auth import sign_request
from xp2p.cloud import AppConfig, CloudConfig, CloudServer, DeviceConfig
from xp2p.cloud.config import ConfigError
from xp2p.cloud.demo_login import DemoLogin, LoginBodyError, parse_login_body
from xp2p.device import DeviceAgent
from xp2p.viewer.cloud_client import CloudClient
from xp2p.web_assets import MPEGTS_JS, WEB_DIR

SECRET = "webapp-app-secret-0001"
OTHER_SECRET = "other-app-secret-0001"
APP_ORIGIN = "https://app.example"
DEVICES = "/api/v1/app/devices"
LOGIN = "/api/v1/demo/viewer-token"
CODE = "c0de-" + "x" * 40

INDEX = b"<!doctype html><title>xp2p</title><script type=module src=app.js></script>\n"
FILES = {
    "app/index.html": INDEX,
    "app/app.js": b"import { x } from '/sdk/index.js';\n",
    "app/app.css": b"body { margin: 0 }\n",
    "app/parts/live.js": b"export const live = 1;\n",
    "app/.secret": b"dot-file secret\n",
    "app/.hidden/x.js": b"hidden folder\n",
    "app/notes.bak": b"unknown type\n",
    "src/index.js": b"export * from './errors.js';\n",
    "src/errors.js": b"export const E = 1;\n",
    "src/.private.js": b"dot module\n",
    "src/README.md": b"not a module\n",
    MPEGTS_JS.as_posix(): b"/* mpegts.js */ globalThis.mpegts = {};\n",
}
OUTSIDE = b"outside-of-web-dir secret\n"


def _make_web(root: Path, *, mpegts: bool = True) -> Path:
    web = root / "web"
    for name, body in FILES.items():
        if not mpegts and name == MPEGTS_JS.as_posix():
            continue
        path = web / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    (root / "secret.txt").write_bytes(OUTSIDE)
    os.symlink(root / "secret.txt", web / "app" / "link.js")
    return web


def _config(**overrides: Any) -> CloudConfig:
    fields: dict[str, Any] = {
        "port": 0,
        "stun_port": 0,
        "connect_timeout": 1.0,
        "apps": (
            AppConfig("web-app", SECRET, cors_origins=(APP_ORIGIN,)),
            AppConfig("other-app", OTHER_SECRET, products=("OTHER",)),
        ),
        "devices": (
            DeviceConfig("DEMO", "cam1", "cam1-device-secret-0001"),
            DeviceConfig("DEMO", "cam2", "cam2-device-secret-0001"),
            DeviceConfig("OTHER", "cam9", "cam9-device-secret-0001"),
        ),
    }
    fields.update(overrides)
    return CloudConfig(**fields)


@pytest.fixture
async def web_cloud(tmp_path: Path) -> AsyncIterator[CloudServer]:
    server = CloudServer(
        _config(), web_dir=_make_web(tmp_path), demo_login=DemoLogin("web-app", CODE)
    )
    async with server:
        yield server


async def _get(
    url: str, headers: dict[str, str] | None = None
) -> tuple[int, CIMultiDict[str], bytes]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, headers=headers or {}, allow_redirects=False) as resp,
    ):
        return resp.status, resp.headers.copy(), await resp.read()


async def _json(
    server: CloudServer,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> tuple[int, CIMultiDict[str], dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, server.url + path, headers=headers or {}, data=body) as resp,
    ):
        raw = await resp.read()
        return resp.status, resp.headers.copy(), json.loads(raw) if raw else {}


async def _raw_get(server: CloudServer, target: str) -> tuple[int, bytes]:
    """GET ``target`` exactly as written (dots and percent-escapes untouched)."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


# --- static files ---------------------------------------------------------------------------


async def test_the_app_and_the_sdk_are_served_with_their_types_and_headers(
    web_cloud: CloudServer,
) -> None:
    base = web_cloud.url
    want = {
        "/app/": (FILES["app/index.html"], "text/html; charset=utf-8"),
        "/app/index.html": (FILES["app/index.html"], "text/html; charset=utf-8"),
        "/app/app.js": (FILES["app/app.js"], "text/javascript; charset=utf-8"),
        "/app/app.css": (FILES["app/app.css"], "text/css; charset=utf-8"),
        "/app/parts/live.js": (FILES["app/parts/live.js"], "text/javascript; charset=utf-8"),
        "/sdk/index.js": (FILES["src/index.js"], "text/javascript; charset=utf-8"),
        "/sdk/errors.js": (FILES["src/errors.js"], "text/javascript; charset=utf-8"),
        "/sdk/mpegts.js": (FILES[MPEGTS_JS.as_posix()], "text/javascript; charset=utf-8"),
    }
    for path, (body, content_type) in want.items():
        status, headers, got = await _get(base + path)
        assert (status, got, headers["Content-Type"]) == (200, body, content_type), path
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert headers["Cache-Control"] == "no-cache"
        csp = {
            part.split()[0]: part.split()[1:]
            for part in headers["Content-Security-Policy"].split("; ")
        }
        assert csp["default-src"] == ["'self'"] and csp["script-src"] == ["'self'"]
        assert csp["connect-src"] == ["'self'"]
        assert csp["media-src"] == ["'self'", "blob:"] and csp["worker-src"] == ["'self'", "blob:"]
        assert "unsafe-inline" not in headers["Content-Security-Policy"]
        assert csp["frame-ancestors"] == ["'none'"]
        # An ETag, and a revalidation that finds the same file costs a 304 without a body.
        etag = headers["ETag"]
        status, headers, got = await _get(base + path, {"If-None-Match": etag})
        assert (status, got, headers["ETag"]) == (304, b"", etag), path
    # The page only: the microphone for talk-back, nothing else of the kind.
    _, headers, _ = await _get(base + "/app/")
    assert "microphone=(self)" in headers["Permissions-Policy"]
    # /app without its slash: the page's relative URLs need it.
    status, headers, _ = await _get(base + "/app")
    assert (status, headers["Location"]) == (308, "/app/")


@pytest.mark.parametrize(
    "target",
    [
        "/app/../secret.txt",
        "/app/%2e%2e/secret.txt",
        "/app/%2e%2e%2fsecret.txt",
        "/app/..%2f..%2fsecret.txt",
        "/app/parts/%2e%2e/%2e%2e/%2e%2e/secret.txt",
        "/sdk/%2e%2e%2fapp%2fapp.js",
        "/sdk/..%2f..%2fsecret.txt",
        "/app/link.js",  # a symlink out of the folder
        "/app/.secret",
        "/app/.hidden/x.js",
        "/app/%2esecret",
        "/sdk/.private.js",
        "/app/notes.bak",  # a type the app does not serve
        "/sdk/README.md",
        "/sdk/app.js",  # the app's files are not the SDK's
        "/app/parts/",  # no directory listings
        "/app/parts",
        "/sdk/",
        "/app/nope.js",
        "/app/index.html%00",
        "/app//etc/passwd",
        "/app/%2fetc%2fpasswd",
    ],
)
async def test_names_outside_the_listing_are_404(web_cloud: CloudServer, target: str) -> None:
    status, body = await _raw_get(web_cloud, target)
    assert status == 404, target
    assert OUTSIDE not in body and b"dot-file secret" not in body and b"hidden" not in body
    assert json.loads(body)["error"]["code"] == "not_found"


async def test_an_absolute_path_is_a_name_like_any_other(
    web_cloud: CloudServer, tmp_path: Path
) -> None:
    for target in (f"/app/{tmp_path}/secret.txt", f"/app/{tmp_path}/web/app/app.js"):
        status, body = await _raw_get(web_cloud, target)
        assert status == 404 and OUTSIDE not in body, target


async def test_without_mpegts_the_page_serves_and_the_script_says_npm_ci(tmp_path: Path) -> None:
    async with CloudServer(_config(), web_dir=_make_web(tmp_path, mpegts=False)) as server:
        status, _, body = await _get(server.url + "/app/")
        assert (status, body) == (200, INDEX)
        status, doc = await _raw_get(server, "/sdk/mpegts.js")
        error = json.loads(doc)["error"]
        assert (status, error["code"]) == (404, "not_found")
        assert "npm ci" in error["message"]
        assert server.webapp is not None and not server.webapp.sdk_complete()


async def test_web_dir_none_turns_the_app_off(tmp_path: Path) -> None:
    async with CloudServer(_config(), web_dir=None) as server:
        assert server.webapp is None
        for target in ("/app/", "/app/app.js", "/sdk/index.js", "/sdk/mpegts.js"):
            status, body = await _raw_get(server, target)
            assert status == 404 and json.loads(body)["error"]["code"] == "not_found"


async def test_by_default_the_checkouts_web_folder_is_served() -> None:
    async with CloudServer(_config()) as server:
        assert server.webapp is not None and server.webapp.web_dir == WEB_DIR
        status, headers, body = await _get(server.url + "/sdk/player.js")
        assert (status, body) == (200, (WEB_DIR / "src" / "player.js").read_bytes())
        assert headers["Content-Type"] == "text/javascript; charset=utf-8"
        if (WEB_DIR / MPEGTS_JS).is_file():
            status, _, body = await _get(server.url + "/sdk/mpegts.js")
            assert (status, body) == (200, (WEB_DIR / MPEGTS_JS).read_bytes())


# --- GET /api/v1/app/devices ---------------------------------------------------------------


async def _token(server: CloudServer, **scope: Any) -> str:
    async with CloudClient(server.url, "web-app", SECRET, timeout=5) as backend:
        return (await backend.mint_viewer_token(**scope)).token


async def _devices(
    server: CloudServer, token: str, origin: str | None = None
) -> tuple[list[tuple[str, str, bool]], bool]:
    headers = {"Authorization": f"Bearer {token}"}
    if origin is not None:
        headers["Origin"] = origin
    status, _, doc = await _json(server, "GET", DEVICES, headers)
    assert status == 200, doc
    assert set(doc) == {"devices", "truncated"}
    listed = [(d["product_id"], d["device_name"], d["online"]) for d in doc["devices"]]
    return listed, doc["truncated"]


@pytest.fixture
async def stack3(tmp_path: Path) -> AsyncIterator[Stack]:
    """Three configured devices, DEMO/cam1 signed in."""
    config = _config()
    async with CloudServer(config) as server:
        partial = Stack(server, config, device=None)  # type: ignore[arg-type]
        device = DeviceAgent(partial.device_config())
        await device.start()
        await device.wait_signed_in(timeout=10)
        partial.device = device
        try:
            yield partial
        finally:
            await partial.device.close()


async def test_devices_honour_the_tokens_scope_and_follow_sign_ins(stack3: Stack) -> None:
    server = stack3.cloud
    cam2 = await _token(server, devices=[("DEMO", "cam2")])
    assert await _devices(server, cam2) == ([("DEMO", "cam2", False)], False)
    demo = await _token(server, products=["DEMO"])
    assert await _devices(server, demo) == (
        [("DEMO", "cam1", True), ("DEMO", "cam2", False)],
        False,
    )
    both = await _token(server, devices=[("OTHER", "cam9")], products=["DEMO"])
    listed, _ = await _devices(server, both, origin=APP_ORIGIN)
    assert listed == [("DEMO", "cam1", True), ("DEMO", "cam2", False), ("OTHER", "cam9", False)]

    # The camera signs out: the list says so; a new agent signs in: online again.
    await stack3.device.close()

    async def cam1_online() -> bool:
        return (await _devices(server, demo))[0][0][2]

    await wait_until(lambda: _not(cam1_online), timeout=10, what="cam1 offline")
    stack3.device = DeviceAgent(stack3.device_config())
    await stack3.device.start()
    await stack3.device.wait_signed_in(timeout=10)
    await wait_until(cam1_online, timeout=10, what="cam1 online")


async def _not(condition: Any) -> bool:
    return not await condition()


async def test_devices_for_a_signed_app_are_every_device_of_its_products(stack3: Stack) -> None:
    server = stack3.cloud
    for key, secret, want in (
        (
            "web-app",
            SECRET,
            [["DEMO", "cam1", True], ["DEMO", "cam2", False], ["OTHER", "cam9", False]],
        ),
        ("other-app", OTHER_SECRET, [["OTHER", "cam9", False]]),
    ):
        status, headers, doc = await _json(
            server, "GET", DEVICES, sign_request(key, secret, "GET", DEVICES, b"")
        )
        assert status == 200, doc
        got = [[d["product_id"], d["device_name"], d["online"]] for d in doc["devices"]]
        assert (got, doc["truncated"]) == (want, False)
        assert "Access-Control-Allow-Origin" not in headers


async def test_devices_without_a_token_and_cors(web_cloud: CloudServer) -> None:
    status, headers, doc = await _json(web_cloud, "GET", DEVICES, {"Origin": APP_ORIGIN})
    assert (status, doc["error"]["code"]) == (401, "token_missing")
    assert headers["Access-Control-Allow-Origin"] == APP_ORIGIN  # the page can read the code
    status, _, doc = await _json(web_cloud, "GET", DEVICES)
    assert (status, doc["error"]["code"]) == (401, "missing_auth")
    status, _, doc = await _json(
        web_cloud, "GET", DEVICES, {"Authorization": "Bearer xvt1.AAAA.BBBB"}
    )
    assert (status, doc["error"]["code"]) == (401, "token_invalid")

    preflight = {
        "Origin": APP_ORIGIN,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    status, headers, _ = await _json(web_cloud, "OPTIONS", DEVICES, preflight)
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert headers["Access-Control-Allow-Methods"] == "GET"
    assert "Authorization" in headers["Access-Control-Allow-Headers"]
    status, headers, doc = await _json(
        web_cloud, "OPTIONS", DEVICES, {**preflight, "Origin": "https://evil.example"}
    )
    assert (status, doc["error"]["code"]) == (403, "origin_not_allowed")
    assert "Access-Control-Allow-Origin" not in headers
    status, _, _ = await _json(
        web_cloud, "OPTIONS", DEVICES, {**preflight, "Access-Control-Request-Method": "POST"}
    )
    assert status == 403
    token = await _token(web_cloud, products=["DEMO"])
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            web_cloud.url + DEVICES,
            headers={"Authorization": f"Bearer {token}", "Origin": APP_ORIGIN},
        ) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
        assert "Origin" in resp.headers["Vary"]


async def test_devices_list_at_most_a_thousand() -> None:
    bulk = tuple(DeviceConfig("BULK", f"cam{n:04d}", "bulk-device-secret-01") for n in range(1001))
    config = _config(devices=bulk)
    async with CloudServer(config, web_dir=None) as server:
        token = await _token(server, products=["BULK"])
        listed, truncated = await _devices(server, token)
        assert truncated and len(listed) == 1000
        assert listed[0][1] == "cam0000" and listed[-1][1] == "cam0999"


# --- the demo sign-in ----------------------------------------------------------------------


def _login_body(code: Any) -> bytes:
    return json.dumps({"code": code}).encode()


async def test_the_right_code_gets_a_token_for_the_demo_apps_devices(
    web_cloud: CloudServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert web_cloud.app_url == f"{web_cloud.url}/app/#login={CODE}"
    status, _, doc = await _json(
        web_cloud, "POST", LOGIN, {"Origin": web_cloud.url}, _login_body(CODE)
    )
    assert status == 200, doc
    assert set(doc) == {"token", "token_id", "expires_at", "permissions"}
    assert doc["token"].startswith("xvt1.")
    assert doc["permissions"] == ["command", "download", "live", "playback", "voice"]
    # The token sees every device of the demo app (all products: DEMO and OTHER).
    listed, _ = await _devices(web_cloud, doc["token"], origin=web_cloud.url)
    assert [(p, d) for p, d, _ in listed] == [("DEMO", "cam1"), ("DEMO", "cam2"), ("OTHER", "cam9")]
    # ... and opens a session like any viewer token.
    status, _, session = await _json(
        web_cloud, "POST", "/api/v1/app/session", {"Authorization": f"Bearer {doc['token']}"}
    )
    assert status == 200 and session["session_id"]
    # A page opened as localhost is the cloud's own too; a script with no Origin needs the code.
    port = web_cloud.url.rsplit(":", 1)[1]
    for headers in ({"Origin": f"http://localhost:{port}"}, {}):
        status, _, doc = await _json(web_cloud, "POST", LOGIN, headers, _login_body(CODE))
        assert status == 200, doc
    assert doc["token_id"] in caplog.text
    for record in caplog.records:
        assert CODE not in record.getMessage()


async def test_wrong_codes_and_other_origins_are_refused(
    web_cloud: CloudServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    status, _, doc = await _json(web_cloud, "POST", LOGIN, {}, _login_body(CODE[:-1] + "y"))
    assert (status, doc["error"]["code"]) == (401, "bad_login_code")
    assert "xp2p demo" in doc["error"]["message"]
    port = web_cloud.url.rsplit(":", 1)[1]
    for origin in (
        "https://evil.example",
        "null",
        f"http://127.0.0.1:{int(port) + 1}",
        f"http://evil.example:{port}",
    ):
        status, headers, doc = await _json(
            web_cloud, "POST", LOGIN, {"Origin": origin}, _login_body(CODE)
        )
        assert (status, doc["error"]["code"]) == (403, "origin_not_allowed"), origin
        assert "token" not in doc and "Access-Control-Allow-Origin" not in headers
    for record in caplog.records:
        assert CODE not in record.getMessage() and CODE[:-1] not in record.getMessage()


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'"code"',
        b"1",
        b"null",
        b"{}",
        b'{"code": 123}',
        b'{"code": null}',
        b'{"code": ["x"]}',
        b'{"code": {"code": "x"}}',
        b'{"code": ""}',
        b'{"code": "x", "app": "web-app"}',
        b'{"login": "x"}',
        b'{"code": "' + b"x" * 300 + b'"}',
        b"\xff\xfe",
    ],
)
async def test_the_login_body_must_be_a_code_object(web_cloud: CloudServer, body: bytes) -> None:
    status, _, doc = await _json(web_cloud, "POST", LOGIN, {}, body)
    assert (status, doc["error"]["code"]) == (400, "bad_request"), body
    assert "Traceback" not in doc["error"]["message"]


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(
    st.one_of(
        st.binary(max_size=64),
        _JSON.map(lambda doc: json.dumps(doc).encode()),
        _JSON.map(lambda code: json.dumps({"code": code}).encode()),
    )
)
def test_the_login_body_parser_takes_a_code_object_or_says_why(body: bytes) -> None:
    try:
        code = parse_login_body(body)
    except LoginBodyError as exc:
        assert str(exc)
        return
    doc = json.loads(body)
    assert doc == {"code": code} and isinstance(code, str) and 0 < len(code) <= 256
    DemoLogin("web-app", CODE).matches(code)  # any string compares, none raises


async def test_a_code_that_is_no_text_is_just_wrong(web_cloud: CloudServer) -> None:
    # JSON may carry a lone surrogate, which no UTF-8 encoder takes: a wrong code, no 500.
    status, _, doc = await _json(
        web_cloud, "POST", LOGIN, {}, b'{"code": "\\ud800' + b"x" * 40 + b'"}'
    )
    assert (status, doc["error"]["code"]) == (401, "bad_login_code")


async def test_wrong_codes_are_throttled_per_source(tmp_path: Path) -> None:
    now = 1_800_000_000.0  # a clock that stands still: the refusal period cannot run out
    server = CloudServer(
        _config(), web_dir=None, demo_login=DemoLogin("web-app", CODE), clock=lambda: now
    )
    async with server:
        wrong = _login_body("w" * 43)
        for _ in range(6):  # five free failures, the sixth starts a refusal period
            status, _, doc = await _json(server, "POST", LOGIN, {}, wrong)
            assert (status, doc["error"]["code"]) == (401, "bad_login_code")
        status, headers, doc = await _json(server, "POST", LOGIN, {}, _login_body(CODE))
        assert (status, doc["error"]["code"]) == (429, "too_many_failures")
        assert int(headers["Retry-After"]) >= 1 and doc["error"]["retry_after"] > 0


async def test_without_a_demo_login_the_route_is_absent(tmp_path: Path) -> None:
    async with CloudServer(_config(), web_dir=None) as server:
        assert server.demo_login is None and server.app_url == f"{server.url}/app/"
        status, _, doc = await _json(server, "POST", LOGIN, {}, _login_body(CODE))
        assert (status, doc["error"]["code"]) == (404, "not_found")


def test_a_demo_login_needs_a_strong_code_and_a_configured_app() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        DemoLogin("web-app", "short")
    assert len(DemoLogin("web-app").code) >= 43 and "code" not in repr(DemoLogin("web-app"))
    with pytest.raises(ConfigError, match="no app 'ghost'"):
        CloudServer(_config(), demo_login=DemoLogin("ghost"))
    with pytest.raises(ConfigError, match="token_ttl"):
        CloudServer(_config(), demo_login=DemoLogin("web-app", token_ttl=10**6))
