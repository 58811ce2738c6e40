"""TURN with a real coturn on loopback: relayed links over UDP, TCP and TLS, credentials from
the cloud, and relays used only when no direct pair works."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support.coturn import TURNSERVER, Coturn, make_certificate, start_coturn
from tests.support.stack import PATTERN
from xp2p.cloud.app import CloudServer
from xp2p.cloud.config import CloudConfig, TurnServerConfig
from xp2p.device import ChannelConfig, DeviceAgent, DeviceConfig
from xp2p.errors import ErrorCode, XP2PError
from xp2p.flv import FlvReader, FlvTag
from xp2p.link import LinkConfig
from xp2p.link.config import Conditions, IceServer
from xp2p.link.errors import LinkError
from xp2p.link.ice import create_ice
from xp2p.media import TestPatternSource
from xp2p.viewer import AppParams, P2PModule, StreamInfo

pytestmark = pytest.mark.skipif(
    TURNSERVER is None, reason="coturn missing: scripts/setup.sh installs it"
)

DEVICE = StreamInfo(product_id="DEMO", device_name="cam1")


def _free_port() -> int:
    # coturn listens on UDP and TCP: find a port free in both.
    while True:
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port: int = tcp.getsockname()[1]
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coturn]:
    port = _free_port()
    tls_port = next(p for p in iter(_free_port, None) if p != port)
    server = start_coturn(
        tmp_path_factory.mktemp("coturn"), port=port, tls_port=tls_port, loopback_peers=True
    )
    yield server
    server.stop()


async def _stack(
    coturn: Coturn, *, urls: tuple[str, ...], secret: str | None = None
) -> tuple[CloudServer, CloudConfig, DeviceAgent]:
    # Longer than the viewer's renewal margin: a renewal before each connect would bring back
    # the TURN URLs that the relay-only tests leave out.
    turn = TurnServerConfig(urls, secret or coturn.secret, ttl=3600)
    config = CloudConfig.demo(port=0, stun_port=0, connect_timeout=3.0, turn=(turn,))
    cloud = CloudServer(config)
    await cloud.start()
    account = config.devices[0]
    device = DeviceAgent(
        DeviceConfig(
            cloud_url=cloud.url,
            product_id=account.product_id,
            device_name=account.device_name,
            device_secret=account.secret,
            grant_public_key=cloud.grant_public_key,
            channels={0: ChannelConfig(default=lambda: TestPatternSource(PATTERN))},
        )
    )
    await device.start()
    await device.wait_signed_in(timeout=10)
    return cloud, config, device


@pytest.fixture
async def udp_and_tcp(coturn: Coturn) -> AsyncIterator[tuple[CloudServer, CloudConfig]]:
    cloud, config, device = await _stack(coturn, urls=coturn.urls("udp", "tcp"))
    yield cloud, config
    await device.close()
    await cloud.stop()


@pytest.fixture
async def with_tls(coturn: Coturn) -> AsyncIterator[tuple[CloudServer, CloudConfig]]:
    """The cloud also hands out ``turns:``; the device, which has no ``turn_tls_ca``, gets no
    relay from it (its certificate is from a private CA) and keeps its UDP and TCP ones."""
    cloud, config, device = await _stack(coturn, urls=coturn.urls("udp", "tcp", "tls"))
    yield cloud, config
    await device.close()
    await cloud.stop()


async def _watch(module: P2PModule, seconds_of_video: int = 2) -> list[FlvTag]:
    """Stream until ``seconds_of_video`` of video tags arrived; return the tags."""
    reader = FlvReader()
    tags: list[FlvTag] = []
    done = asyncio.Event()

    def on_data(chunk: bytes) -> None:
        for item in reader.feed(chunk):
            if isinstance(item, FlvTag):
                tags.append(item)
                video = [t for t in tags if t.is_video]
                if video and video[-1].timestamp - video[0].timestamp >= seconds_of_video * 1000:
                    done.set()

    await module.start_stream("cam", on_data)
    await asyncio.wait_for(done.wait(), 20)
    await module.stop_stream("cam")
    return tags


def _app(cloud: CloudServer, config: CloudConfig) -> AppParams:
    app = config.apps[0]
    return AppParams(cloud.url, app.key, app.secret)


def _keep_turn_urls(module: P2PModule, keep: Callable[[str], bool]) -> None:
    """Keep only the session's TURN URLs that ``keep`` accepts, as a network that blocks
    the others would."""
    only = tuple(
        replace(s, urls=tuple(u for u in s.urls if keep(u)))
        for s in module._link_config.ice_servers
        if any(u.startswith(("turn:", "turns:")) and keep(u) for u in s.urls)
    )
    module._link_config = replace(module._link_config, ice_servers=only)


@pytest.mark.parametrize(("transport", "rtt_ms"), [("udp", 0.0), ("tcp", 0.0), ("tcp", 40.0)])
async def test_relay_only_viewer_streams_through_coturn(
    coturn: Coturn, udp_and_tcp: tuple[CloudServer, CloudConfig], transport: str, rtt_ms: float
) -> None:
    """A viewer that may use nothing but a relay (UDP, or TCP as on a UDP-blocked network)
    gets its video through coturn, still end-to-end encrypted and pinned; also with the
    user-space conditioner delaying the relayed datagrams (it once broke on aioice's TURN
    transport, which has no is_closing())."""
    cloud, config = udp_and_tcp
    before = coturn.allocations()
    module = P2PModule(LinkConfig(relay_only=True, conditions=Conditions(rtt_ms=rtt_ms)))
    await module.init(_app(cloud, config))
    # Keep only this transport's TURN URL, as a network that blocks UDP leaves only TCP.
    _keep_turn_urls(
        module, lambda u: u.startswith("turn:") and u.endswith(f"transport={transport}")
    )
    events: list[tuple[str, object]] = []
    try:
        await module.start_p2p_service(
            "cam", DEVICE, msg_callback=lambda e, s, d: events.append((s, d))
        )
        assert module.link_mode("cam") == "relay"
        assert module.get_stream_link_mode("cam") == 63
        assert ("connected", {"mode": "1v1", "link_mode": "relay"}) in events
        tags = await _watch(module)
        assert next(t for t in tags if t.is_video).is_keyframe
    finally:
        await module.destroy()
    assert coturn.allocations() > before, "coturn allocated nothing: the link did not relay"


async def test_relay_only_viewer_streams_through_turn_over_tls(
    coturn: Coturn, with_tls: tuple[CloudServer, CloudConfig]
) -> None:
    """A network that lets only TLS out: the viewer's one relay is TURN over TLS (RFC 7065),
    its certificate checked against the operator's CA (``turn_tls_ca``) and the IP."""
    cloud, config = with_tls
    before = coturn.allocations()
    module = P2PModule(LinkConfig(relay_only=True, turn_tls_ca=coturn.ca_pem))
    await module.init(_app(cloud, config))
    _keep_turn_urls(module, lambda u: u.startswith("turns:"))
    assert [u for s in module._link_config.ice_servers for u in s.urls] == [coturn.urls("tls")[0]]
    events: list[tuple[str, object]] = []
    try:
        await module.start_p2p_service(
            "cam", DEVICE, msg_callback=lambda e, s, d: events.append((s, d))
        )
        assert module.link_mode("cam") == "relay"
        assert ("connected", {"mode": "1v1", "link_mode": "relay"}) in events
        assert [u for s in module._link_config.ice_servers for u in s.urls] == [
            coturn.urls("tls")[0]
        ], "the session was renewed with every TURN URL: not a TLS-only test"
        tags = await _watch(module)
        assert next(t for t in tags if t.is_video).is_keyframe
    finally:
        await module.destroy()
    assert coturn.allocations() > before, "coturn allocated nothing: the link did not relay"


@pytest.mark.parametrize("ca", ["system", "other"])
async def test_turn_over_tls_with_an_unverifiable_certificate_gives_no_relay(
    coturn: Coturn,
    with_tls: tuple[CloudServer, CloudConfig],
    caplog: pytest.LogCaptureFixture,
    ca: str,
) -> None:
    """Without the operator's CA (the system trust store, or another CA) coturn's certificate
    does not verify: no relay, and a relay-only viewer fails at once with -2402 and says why."""
    cloud, config = with_tls
    other_ca = make_certificate("127.0.0.1")[0] if ca == "other" else None
    link_config = LinkConfig(relay_only=True, turn_tls_ca=other_ca)
    module = P2PModule(link_config)
    await module.init(_app(cloud, config))
    _keep_turn_urls(module, lambda u: u.startswith("turns:"))
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    try:
        with pytest.raises(XP2PError) as info:
            await module.start_p2p_service("cam", DEVICE)
    finally:
        await module.destroy()
    assert time.monotonic() - started < link_config.connect_timeout
    assert info.value.code == ErrorCode.START_STREAM_FAILED == -2402
    message = str(info.value)
    assert "no ICE candidates to offer" in message, message
    assert f"TURN 127.0.0.1:{coturn.tls_port}/tls" in message, message
    assert "certificate verify failed" in message, message
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


def test_turn_tls_ca_replaces_the_trust_store_and_never_loosens_it() -> None:
    """``turn_tls_ca`` gives ``turns:`` servers a context with that CA alone, verifying and
    checking the hostname; ``turn:`` servers are left alone, and a bad CA is an error."""
    ca_pem = make_certificate("127.0.0.1")[0]
    servers = (IceServer(("turns:turn.example:5349?transport=tcp", "turn:turn.example:3478")),)
    ice = create_ice(LinkConfig(ice_servers=servers), controlling=True)
    assert [t.ssl for t in ice._xp2p_turn] == [True, False]  # system store, asyncio's default
    ice = create_ice(LinkConfig(ice_servers=servers, turn_tls_ca=ca_pem), controlling=True)
    tls, plain = ice._xp2p_turn
    assert isinstance(tls.ssl, ssl.SSLContext) and plain.ssl is False
    assert tls.ssl.verify_mode == ssl.CERT_REQUIRED and tls.ssl.check_hostname
    assert tls.ssl.cert_store_stats()["x509_ca"] == 1
    for bad in ("", "not a certificate"):
        with pytest.raises(LinkError) as info:
            create_ice(LinkConfig(ice_servers=servers, turn_tls_ca=bad), controlling=True)
        assert info.value.reason == "bad_config"


async def test_direct_path_wins_over_a_working_relay(
    coturn: Coturn, udp_and_tcp: tuple[CloudServer, CloudConfig]
) -> None:
    """Both ends have relay candidates that work, and a direct path: the direct one is used."""
    cloud, config = udp_and_tcp
    module = P2PModule()
    await module.init(_app(cloud, config))
    try:
        assert any(u.startswith("turn:") for s in module._link_config.ice_servers for u in s.urls)
        for _ in range(3):
            await module.start_p2p_service("cam", DEVICE)
            assert module.link_mode("cam") == "direct"
            assert module.get_stream_link_mode("cam") == 62
            await module.stop_p2p_service("cam")
    finally:
        await module.destroy()


async def test_wrong_turn_secret_leaves_direct_links_working(coturn: Coturn) -> None:
    """The cloud's TURN secret does not match coturn's: allocations are refused, and links
    that need no relay still come up (and within the connect timeout)."""
    cloud, config, device = await _stack(
        coturn, urls=coturn.urls("udp"), secret="not-the-coturn-secret"
    )
    module = P2PModule()
    try:
        await module.init(_app(cloud, config))
        await module.start_p2p_service("cam", DEVICE)
        assert module.link_mode("cam") == "direct"
        tags = await _watch(module, 1)
        assert tags
    finally:
        await module.destroy()
        await device.close()
        await cloud.stop()


def test_coturn_credentials_are_the_rest_api_scheme(tmp_path: Path) -> None:
    """What the cloud hands out is what coturn checks: ``expiry:user`` and
    base64(HMAC-SHA1(secret, username)). (The relay tests above prove coturn accepts them.)"""
    import base64
    import hashlib
    import hmac

    from xp2p.auth import turn_credentials

    username, password = turn_credentials("s3cret-shared", "alice", 600, now=1_000_000)
    assert username == "1000600:alice"
    digest = hmac.new(b"s3cret-shared", username.encode(), hashlib.sha1).digest()
    assert password == base64.b64encode(digest).decode()


async def test_viewer_renews_turn_credentials_before_they_expire(coturn: Coturn) -> None:
    """Credentials that expire within the refresh margin are renewed before a connect."""
    cloud, config, device = await _stack(coturn, urls=coturn.urls("udp"))
    cloud.config = replace(cloud.config, turn=(replace(cloud.config.turn[0], ttl=60),))
    module = P2PModule()
    try:
        await module.init(_app(cloud, config))
        assert module._session is not None
        first = module._session.session_id
        await module.start_p2p_service("cam", DEVICE)
        assert module._session.session_id != first
        await module.stop_p2p_service("cam")
    finally:
        await module.destroy()
        await device.close()
        await cloud.stop()


def test_offer_frames_carry_ice_servers_and_tolerate_bad_ones() -> None:
    from xp2p.device.cloud_session import _parse_offer

    good = {"urls": ["turn:203.0.113.3:3478"], "username": "1:x", "credential": "c"}
    base = {"request_id": "r", "app_key": "a", "offer": {}}
    request = _parse_offer({**base, "ice_servers": [good]})
    assert request is not None and request.ice_servers[0].urls == ("turn:203.0.113.3:3478",)
    assert request.ice_servers[0].expires_at == 1
    request = _parse_offer({**base, "ice_servers": "garbage"})
    assert request is not None and request.ice_servers == ()


@pytest.mark.parametrize(
    ("local", "remote", "grace"),
    [
        ("port-restricted", "port-restricted", "wait"),
        ("symmetric", "full-cone", "wait"),
        ("restricted-cone", "symmetric", "wait"),
        ("open", "symmetric", "wait"),
        ("symmetric", "port-restricted", "none"),
        ("symmetric", "symmetric", "none"),
        ("udp-blocked", "full-cone", "none"),
        ("full-cone", "udp-blocked", "none"),
        ("unknown", "full-cone", "guess"),
        ("port-restricted", None, "guess"),  # an answer from an older device says nothing
    ],
)
def test_relay_grace_follows_what_the_two_nats_allow(
    local: str, remote: str | None, grace: str
) -> None:
    from xp2p.link.connect import DIRECT_WAIT, relay_grace
    from xp2p.link.ice import RELAY_GRACE

    expected = {"wait": DIRECT_WAIT, "none": 0.0, "guess": RELAY_GRACE}[grace]
    assert relay_grace(local, remote) == expected
