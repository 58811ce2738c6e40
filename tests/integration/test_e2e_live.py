"""1v1 live video end to end: real cloud, device and viewer over real ICE + QUIC in one loop."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.live import Recorder, TeeSource, parse
from tests.support.stack import PATTERN, Stack
from tests.support.waiting import wait_until
from xp2p import ErrorCode, XP2PError
from xp2p.auth import GrantSigner
from xp2p.device import ChannelConfig, DeviceAgent
from xp2p.flv import FlvTag
from xp2p.link import LinkIdentity, Xp2pInfo
from xp2p.media import TestPatternSource
from xp2p.viewer import AppParams, FlvParams, P2PModule, StreamInfo
from xp2p.viewer.cloud_client import CloudClient, CloudError

DEVICE = StreamInfo(product_id="DEMO", device_name="cam1")


def media_tags(data: bytes | bytearray) -> int:
    """Audio and video tags (no sequence headers, no script) in ``data`` so far."""
    _headers, tags = parse(bytes(data))
    return sum(not t.is_sequence_header and not t.is_script for t in tags)


async def test_live_bytes_match_source_and_start_on_keyframe(stack: Stack) -> None:
    await stack.device.close()
    source_log: list[FlvTag] = []
    device = DeviceAgent(
        stack.device_config(
            channels={
                0: ChannelConfig(default=lambda: TeeSource(TestPatternSource(PATTERN), source_log))
            }
        )
    )
    stack.device = device
    await device.start()
    await device.wait_signed_in(10)
    module = P2PModule()
    await module.init(stack.app_params)
    rec = Recorder()
    try:
        await module.start_p2p_service(
            "cam", DEVICE, msg_callback=rec.on_msg, data_callback=rec.on_data
        )
        await rec.wait_bytes(60_000)
        await wait_until(lambda: media_tags(rec.data) > 40, timeout=15, what="40 media tags")
        await module.stop_stream("cam")
    finally:
        await module.destroy()
    assert rec.subtypes()[:3] == ["connected", "request", "parsed"]
    parsed = next(d for e, s, d in rec.events if s == "parsed")
    assert parsed["status"] == 200 and parsed["headers"]["content-type"] == "video/x-flv"
    assert "close" in rec.subtypes()

    headers, tags = parse(bytes(rec.data))
    assert len(headers) == 1 and headers[0].has_video and headers[0].has_audio
    assert rec.data.startswith(headers[0].encode())
    seq = [t for t in tags if t.is_sequence_header]
    assert {t.tag_type for t in seq} == {8, 9}, "AVC and AAC sequence headers come first"
    first_video = next(t for t in tags if t.is_video and not t.is_sequence_header)
    assert first_video.is_keyframe
    # Everything after the sequence headers is a contiguous run of the source's own tags.
    media = [t for t in tags if not t.is_sequence_header and not t.is_script]
    encoded_source = [t.encode() for t in source_log]
    start = encoded_source.index(media[0].encode())
    assert [t.encode() for t in media] == encoded_source[start : start + len(media)]
    assert len(media) > 40


async def test_stream_stop_and_restart_on_one_link(module: P2PModule) -> None:
    rec = Recorder()
    await module.start_p2p_service("cam", DEVICE, msg_callback=rec.on_msg)
    assert rec.subtypes() == ["connected"]
    for _ in range(2):
        rec.data.clear()
        await module.start_stream("cam", rec.on_data)
        with pytest.raises(XP2PError) as busy:
            await module.start_stream("cam", rec.on_data)
        assert busy.value.code == ErrorCode.START_STREAM_FAILED
        await rec.wait_bytes(20_000)
        await module.stop_stream("cam")
        assert parse(bytes(rec.data))[1][0].is_script or parse(bytes(rec.data))[1][0].is_video
    assert rec.subtypes().count("close") == 2


async def test_async_iterator_form(module: P2PModule) -> None:
    await module.start_p2p_service("cam", DEVICE)
    received = bytearray()
    async with module.stream("cam") as chunks:
        async for chunk in chunks:
            received += chunk
            if len(received) > 20_000:
                break
    assert received.startswith(b"FLV\x01")
    # leaving the block stopped the pull, so a new one may start
    await module.start_stream("cam", lambda _b: None)


async def test_a_bare_async_for_starts_the_pull(module: P2PModule) -> None:
    """The README's shortest form, ``async for chunk in p2p.stream(id)`` without ``async with``,
    starts the pull itself; after a ``break`` the pull runs on until ``stop_stream``."""
    await module.start_p2p_service("cam", DEVICE)
    received = bytearray()
    async for chunk in module.stream("cam"):
        received += chunk
        if len(received) > 20_000:
            break
    assert received.startswith(b"FLV\x01")
    with pytest.raises(XP2PError) as busy:  # still pulling: a second pull is refused
        await module.start_stream("cam", lambda _b: None)
    assert busy.value.code == ErrorCode.START_STREAM_FAILED
    await module.stop_stream("cam")
    await module.start_stream("cam", lambda _b: None)


async def test_api_errors_have_seed_codes(stack: Stack, module: P2PModule) -> None:
    fresh = P2PModule()
    with pytest.raises(XP2PError) as e:
        await fresh.start_p2p_service("x", DEVICE)
    assert e.value.code == ErrorCode.NOT_INITIALISED
    with pytest.raises(XP2PError) as e:
        await module.init(stack.app_params)
    assert e.value.code == ErrorCode.INIT_REPEATED
    with pytest.raises(XP2PError) as e:
        await module.start_stream("nope", lambda _b: None)
    assert e.value.code == ErrorCode.SERVICE_NOT_STARTED
    with pytest.raises(XP2PError) as e:
        await module.start_p2p_service("", DEVICE)
    assert e.value.code == ErrorCode.BAD_PARAM
    await module.start_p2p_service("cam", DEVICE)
    with pytest.raises(XP2PError) as e:
        await module.start_p2p_service("cam", DEVICE)
    assert e.value.code == ErrorCode.SERVICE_ALREADY_STARTED
    with pytest.raises(XP2PError) as e:
        await module.start_p2p_service("1vn", StreamInfo(url="https://example.invalid/x.flv"))
    # 1vN is supported; a source the edge cannot open fails the start with the seed's code.
    assert e.value.code == ErrorCode.START_STREAM_FAILED
    assert "source" in str(e.value)
    with pytest.raises(XP2PError) as e:
        await module.start_p2p_service(
            "1vn", StreamInfo(url="http://127.0.0.1:9/x.flv", playout_delay=0.5)
        )
    assert e.value.code == ErrorCode.BAD_PARAM
    assert "playout_delay" in str(e.value)
    # A bad start must not have disturbed the good service.
    rec = Recorder()
    await module.start_stream("cam", rec.on_data)
    await rec.wait_bytes(10_000)


@pytest.mark.parametrize(
    "xp2p_info",
    ["", "garbage", "XP2P", "XP2Pnot-base64!!%2.4.0", "XP2PeyJ2IjoxfQ%2.4.0", "XP2P" + "A" * 3000],
)
async def test_malformed_xp2p_info_is_2001(module: P2PModule, xp2p_info: str) -> None:
    info = StreamInfo(product_id="DEMO", device_name="cam1", xp2p_info=xp2p_info or "x")
    with pytest.raises(XP2PError) as e:
        await module.start_p2p_service("cam", info)
    assert e.value.code == ErrorCode.BAD_XP2P_INFO
    assert "xp2pInfo" in e.value.message


async def test_wrong_device_fingerprint_is_refused(stack: Stack, module: P2PModule) -> None:
    real = Xp2pInfo.parse(stack.device.xp2p_info or "")
    impostor = Xp2pInfo(
        real.product_id,
        real.device_name,
        LinkIdentity.generate().fingerprint,
        real.session,
        real.sdk_version,
    )
    info = StreamInfo(product_id="DEMO", device_name="cam1", xp2p_info=impostor.encode())
    with pytest.raises(XP2PError) as e:
        await module.start_p2p_service("cam", info)
    assert e.value.code == ErrorCode.BAD_XP2P_INFO
    assert "does not match" in e.value.message
    await module.start_p2p_service("cam", DEVICE)  # the device still serves others


async def test_wrong_app_secret_fails_init(stack: Stack) -> None:
    app = stack.config.apps[0]
    module = P2PModule()
    with pytest.raises(XP2PError) as e:
        await module.init(AppParams(stack.cloud.url, app.key, app.secret + "x"))
    assert e.value.code == ErrorCode.BAD_PARAM
    assert "bad_signature" in e.value.message and app.secret not in e.value.message


async def test_forged_and_expired_grants_are_refused(stack: Stack, module: P2PModule) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    app = stack.config.apps[0]
    client = CloudClient(stack.cloud.url, app.key, app.secret, timeout=5)
    try:
        offer = {"v": 1, "ice": {"ufrag": "abcd", "pwd": "p" * 22, "candidates": []}}
        forged = GrantSigner(Ed25519PrivateKey.generate()).issue(app.key, "DEMO", "cam1")
        real_signer = stack.cloud._signer
        now = time.time()
        expired = real_signer.issue(app.key, "DEMO", "cam1", now=now - 3600, ttl=60)
        other_device = real_signer.issue(app.key, "DEMO", "cam2")
        for grant in (forged, expired, other_device, "not-a-grant", ""):
            with pytest.raises(CloudError) as e:
                await client.connect("DEMO", "cam1", {**offer, "grant": grant})
            assert e.value.code == "device_refused", grant
    finally:
        await client.close()
    rec = Recorder()
    await module.start_p2p_service(
        "cam", DEVICE, msg_callback=rec.on_msg, data_callback=rec.on_data
    )
    await rec.wait_bytes(10_000)


async def test_bad_requests_get_device_status_codes(module: P2PModule) -> None:
    await module.start_p2p_service("cam", DEVICE)
    cases = {
        "action=live&channel=0&quality=ultra": "400",
        "action=live&channel=7": "404",
        "action=live&channel=-1": "400",
        "action=live&_secret=1": "400",
        "action=nothing": "400",
        "action=live&pad=" + "x" * 3100: "400",
    }
    for params, status in cases.items():
        with pytest.raises(XP2PError) as e:
            await module.start_stream("cam", lambda _b: None, FlvParams(params=params))
        assert e.value.code == ErrorCode.START_STREAM_FAILED
        assert f"({status})" in e.value.message, (params[:40], e.value.message)
    with pytest.raises(XP2PError) as e:
        await module.start_stream("cam", lambda _b: None, FlvParams(filename="nothing.flv"))
    assert "(404)" in e.value.message
    rec = Recorder()  # _crypto is accepted and changes nothing
    await module.start_stream("cam", rec.on_data, FlvParams(params="action=live&_crypto=off"))
    await rec.wait_bytes(10_000)


async def test_device_shutdown_is_a_disconnect_within_seconds(
    stack: Stack, module: P2PModule
) -> None:
    rec = Recorder()
    await module.start_p2p_service(
        "cam", DEVICE, msg_callback=rec.on_msg, data_callback=rec.on_data
    )
    await rec.wait_bytes(10_000)
    await stack.device.close()
    elapsed = await rec.wait_for("disconnect", timeout=10)
    assert elapsed < 10


async def test_vanished_device_is_a_disconnect_within_10_s(stack: Stack, module: P2PModule) -> None:
    rec = Recorder()
    await module.start_p2p_service(
        "cam", DEVICE, msg_callback=rec.on_msg, data_callback=rec.on_data
    )
    await rec.wait_bytes(10_000)
    # The device vanishes without a word: its sockets just stop answering, and so does its
    # cloud session (its socket is dead too; the cloud notices only at the next heartbeat),
    # so the viewer's re-offers to move the link (issue 12 item 6) go unanswered as well.
    for link in list(stack.device.links):
        for protocol in link._ice._protocols:
            protocol.transport.sendto = lambda *_a: None

    async def unanswered(_request: object) -> dict[str, object]:
        await asyncio.Event().wait()
        return {}

    stack.device._session._on_offer = unanswered
    await rec.wait_for("disconnect", timeout=12)


async def test_restarted_device_recovers_with_fresh_xp2p_info(
    stack: Stack, module: P2PModule
) -> None:
    rec = Recorder()
    await module.start_p2p_service("cam", DEVICE, msg_callback=rec.on_msg)
    old_info = stack.device.xp2p_info
    await stack.device.close()
    await rec.wait_for("disconnect", timeout=10)
    stack.device = DeviceAgent(stack.device_config())
    await stack.device.start()
    await stack.device.wait_signed_in(10)
    assert stack.device.xp2p_info != old_info
    await module.stop_p2p_service("cam")  # one link per device: the dead one goes first
    with pytest.raises(XP2PError) as e:  # the stale one names the old key
        await module.start_p2p_service(
            "stale", StreamInfo(product_id="DEMO", device_name="cam1", xp2p_info=old_info or "")
        )
    assert e.value.code == ErrorCode.BAD_XP2P_INFO
    rec2 = Recorder()
    await module.start_p2p_service("cam", DEVICE, data_callback=rec2.on_data)
    await rec2.wait_bytes(10_000)


async def test_offline_device_is_a_clear_error(stack: Stack, module: P2PModule) -> None:
    await stack.device.close()

    async def offline() -> bool:
        presence = await stack.cloud.registry.get("DEMO", "cam1")
        return presence is None or not presence.online

    await wait_until(offline, what="the cloud to see the device offline")
    with pytest.raises(XP2PError) as e:
        await module.start_p2p_service("cam", DEVICE)
    assert e.value.code == ErrorCode.BAD_XP2P_INFO
    assert "offline" in e.value.message


async def test_unencodable_flv_params_are_a_bad_param_and_the_link_survives(
    module: P2PModule,
) -> None:
    await module.start_p2p_service("cam", DEVICE)
    for params in ("action=live&x=a b", "action=live\r\nx: y", "action=live&x=\x00"):
        with pytest.raises(XP2PError) as e:
            await module.start_stream("cam", lambda _b: None, FlvParams(params=params))
        assert e.value.code == ErrorCode.BAD_PARAM
        assert "percent-encode" in e.value.message
    rec = Recorder()
    await module.start_stream("cam", rec.on_data)
    await rec.wait_bytes(10_000)
