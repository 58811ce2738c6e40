"""The registry in a real database (issue 13 items 1 and 2), the same tests against SQLite and
against a real PostgreSQL server the tests start: migrations, the TOML seed, nothing secret at
rest, the admin API changing apps and devices while the cloud runs (a key-pair camera
provisioned, rotated, disabled; an app added and rotated), every change applied within a
second, on a second node sharing the database too, and a registry that survives restarts."""

from __future__ import annotations

import base64
import dataclasses
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.postgres import PostgresServer
from tests.support.stack import Stack
from tests.support.waiting import wait_until
from xp2p import ErrorCode, XP2PError
from xp2p.cloud import CloudConfig, CloudServer
from xp2p.cloud.account_db import AccountDatabase, engine_url
from xp2p.cloud.secret_box import SecretBox, SecretBoxError, new_key
from xp2p.device import DeviceAgent
from xp2p.device.cloud_session import CloudSignInError
from xp2p.viewer import AppParams, P2PModule, StreamInfo

ADMIN_TOKEN = "admin-token-0123456789abcdef"


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.new_database()


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(new_key())


@pytest.fixture
def config() -> CloudConfig:
    return CloudConfig.demo(port=0, stun_port=0, connect_timeout=3.0)


async def open_db(url: str, box: SecretBox, config: CloudConfig) -> AccountDatabase:
    db = AccountDatabase(url, box)
    await db.migrate()
    await db.seed(config)
    return db


@pytest.fixture
async def node(db_url: str, box: SecretBox, config: CloudConfig) -> AsyncIterator[CloudServer]:
    db = await open_db(db_url, box, config)
    cloud = CloudServer(
        config, accounts=await db.accounts(), registry_db=db, admin_token=ADMIN_TOKEN
    )
    await cloud.start()
    yield cloud
    await cloud.stop()
    await db.close()


async def admin(
    cloud: CloudServer, method: str, path: str, body: Any = None, token: str = ADMIN_TOKEN
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"{cloud.url}/api/v1/admin{path}", json=body, headers=headers) as resp,
    ):
        return resp.status, await resp.json()


def raw_public(key: Ed25519PrivateKey) -> str:
    return base64.urlsafe_b64encode(key.public_key().public_bytes_raw()).decode().rstrip("=")


def key_device(
    cloud: CloudServer, config: CloudConfig, name: str, key: Ed25519PrivateKey
) -> DeviceAgent:
    stack = Stack(cloud, config, device=None)  # type: ignore[arg-type]
    return DeviceAgent(stack.device_config(device_name=name, device_secret="", device_key=key))


async def test_migrations_seed_and_nothing_secret_at_rest(
    db_url: str, box: SecretBox, config: CloudConfig
) -> None:
    db = await open_db(db_url, box, config)
    try:
        await db.migrate()  # a second start: nothing to do
        assert await db.seed(config) == 0  # the registry's rows win over the TOML's
        apps, devices, revision = await db.load()
        assert [a.key for a in apps] == [a.key for a in config.apps] and revision == 1
        assert apps[0].secret == config.apps[0].secret
        assert devices[0].secret == config.devices[0].secret
        engine = sa.ext.asyncio.create_async_engine(engine_url(db_url))
        async with engine.connect() as conn:
            dump = repr((await conn.execute(sa.text("SELECT * FROM apps"))).all())
            dump += repr((await conn.execute(sa.text("SELECT * FROM devices"))).all())
        await engine.dispose()
        for secret in (config.apps[0].secret, config.devices[0].secret):
            assert secret not in dump
        assert "v1." in dump
    finally:
        await db.close()
    stranger = AccountDatabase(db_url, SecretBox(new_key()))
    try:
        with pytest.raises(SecretBoxError, match="another registry key"):
            await stranger.load()
    finally:
        await stranger.close()


async def test_provisioning_while_running(node: CloudServer, config: CloudConfig) -> None:
    # A new app: its secret is shown once and works at once.
    status, made = await admin(node, "POST", "/apps", {"key": "new-app", "products": ["DEMO"]})
    assert status == 201 and len(made["secret"]) >= 40
    status, listed = await admin(node, "GET", "/apps")
    assert "new-app" in {a["key"] for a in listed["apps"]}
    assert made["secret"] not in repr(listed)
    viewer = P2PModule()

    async def app_works() -> bool:
        try:
            await viewer.init(AppParams(node.url, "new-app", made["secret"]))
        except XP2PError:
            return False
        return True

    started = time.monotonic()
    await wait_until(app_works, 5, 0.05, "the new app signs in")
    assert time.monotonic() - started < 1.5
    try:
        # A camera with a key pair, provisioned: the cloud holds its public key only.
        key = Ed25519PrivateKey.generate()
        body = {"product_id": "DEMO", "device_name": "cam9", "public_key": raw_public(key)}
        status, device = await admin(node, "POST", "/devices", body)
        assert status == 201 and device["grant_public_key"]
        await wait_until(lambda: node.accounts.device("DEMO", "cam9") is not None, 5)
        camera = key_device(node, config, "cam9", key)
        await camera.start()
        await camera.wait_signed_in(10)
        data = bytearray()
        info = StreamInfo(product_id="DEMO", device_name="cam9")
        await viewer.start_p2p_service("cam9", info, data_callback=data.extend)
        await wait_until(lambda: len(data) > 20_000, 15, what="video from the new camera")
        await viewer.stop_p2p_service("cam9")

        # Its key rotated: the session signed in with the old key ends, the old key is
        # refused, the new one signs in.
        new_key_ = Ed25519PrivateKey.generate()
        status, _ = await admin(
            node, "POST", "/devices/DEMO/cam9/rotate", {"public_key": raw_public(new_key_)}
        )
        assert status == 200
        await wait_until(lambda: node.hub.link("DEMO", "cam9") is None, 5, what="disconnected")
        await camera.close()
        old = key_device(node, config, "cam9", key)
        with pytest.raises(CloudSignInError):
            await old.start()
            await old.wait_signed_in(10)
        await old.close()
        camera = key_device(node, config, "cam9", new_key_)
        await camera.start()
        await camera.wait_signed_in(10)
        # Disabled: off at once; enabled: back.
        assert (await admin(node, "POST", "/devices/DEMO/cam9/disable"))[0] == 200
        await wait_until(lambda: node.hub.link("DEMO", "cam9") is None, 5, what="disabled")
        with pytest.raises(XP2PError) as caught:
            await viewer.start_p2p_service("cam9", info)
        assert caught.value.code in (ErrorCode.BAD_XP2P_INFO, ErrorCode.START_STREAM_FAILED)
        await camera.close()

        # The app's secret rotated: the old one stops working, the new one works.
        status, rotated = await admin(node, "POST", "/apps/new-app/rotate")
        assert status == 200 and rotated["secret"] != made["secret"]

        async def old_secret_refused() -> bool:
            fresh = P2PModule()
            try:
                await fresh.init(AppParams(node.url, "new-app", made["secret"]))
            except XP2PError as exc:
                return exc.code == ErrorCode.BAD_PARAM
            await fresh.destroy()
            return False

        await wait_until(old_secret_refused, 5, 0.05, "the old secret refused")
        fresh = P2PModule()
        await fresh.init(AppParams(node.url, "new-app", rotated["secret"]))
        await fresh.destroy()
    finally:
        await viewer.destroy()


async def test_admin_negatives(node: CloudServer) -> None:
    assert (await admin(node, "GET", "/apps", token=""))[1]["error"]["code"] == "missing_auth"
    status, doc = await admin(node, "GET", "/apps", token="not-the-admin-token-at-all")
    assert (status, doc["error"]["code"]) == (403, "admin_token_invalid")
    app_secret = node.config.apps[0].secret
    status, doc = await admin(node, "GET", "/apps", token=app_secret)  # an app secret: no
    assert status == 403
    status, doc = await admin(node, "POST", "/devices/DEMO/nope/disable")
    assert (status, doc["error"]["code"]) == (404, "unknown_device")
    status, doc = await admin(node, "POST", "/apps/nope/rotate")
    assert (status, doc["error"]["code"]) == (404, "unknown_app")
    status, doc = await admin(node, "POST", "/apps", {"key": node.config.apps[0].key})
    assert (status, doc["error"]["code"]) == (409, "duplicate")
    key = raw_public(Ed25519PrivateKey.generate())
    status, doc = await admin(
        node, "POST", "/devices", {"product_id": "DEMO", "device_name": "cam1", "public_key": key}
    )
    assert (status, doc["error"]["code"]) == (409, "duplicate")
    for bad in (
        {"product_id": "DEMO", "device_name": "x", "public_key": "short"},
        {"product_id": "DE MO", "device_name": "x", "public_key": key},
        {"product_id": "DEMO"},
    ):
        status, doc = await admin(node, "POST", "/devices", bad)
        assert (status, doc["error"]["code"]) == (400, "bad_request"), bad
    status, doc = await admin(node, "POST", "/apps", {"key": "a", "permissions": ["root"]})
    assert (status, doc["error"]["code"]) == (400, "bad_request")


async def test_two_nodes_share_the_registry_and_it_survives_restarts(
    db_url: str, box: SecretBox, config: CloudConfig
) -> None:
    nodes: list[CloudServer] = []
    dbs: list[AccountDatabase] = []
    try:
        for _ in range(2):
            db = await open_db(db_url, box, config)
            dbs.append(db)
            nodes.append(
                CloudServer(
                    config, accounts=await db.accounts(), registry_db=db, admin_token=ADMIN_TOKEN
                )
            )
            await nodes[-1].start()
        a, b = nodes
        status, made = await admin(a, "POST", "/apps", {"key": "shared-app"})
        assert status == 201
        started = time.monotonic()
        await wait_until(lambda: b.accounts.app("shared-app") is not None, 5, what="on node B")
        assert time.monotonic() - started < 1.0
        assert (await admin(b, "POST", "/apps/shared-app/disable"))[0] == 200
        await wait_until(lambda: a.accounts.app("shared-app") is None, 5, what="disabled on A")
        assert (await admin(a, "POST", "/apps/shared-app/enable"))[0] == 200
    finally:
        for cloud in nodes:
            await cloud.stop()
        for db in dbs:
            await db.close()
    # Every node restarted: the app is still there, with the same secret.
    db = await open_db(db_url, box, dataclasses.replace(config, apps=()))
    cloud = CloudServer(config, accounts=await db.accounts(), registry_db=db)
    await cloud.start()
    viewer = P2PModule()
    try:
        await viewer.init(AppParams(cloud.url, "shared-app", made["secret"]))
    finally:
        await viewer.destroy()
        await cloud.stop()
        await db.close()
