"""The camera's own limits against an authorised but hostile app (issue 10 items 5, 8, 11,
14, 15), through the real in-process stack: a real cloud, a real device, real ICE + QUIC
links on loopback. A process would add nothing here: every attack goes through the cloud's
HTTP API and the link, as it would from another machine.

* item 5: one app's share of links and pending links, idle links closing, links closing
  when their grant expires unless renewed (``POST /grant``);
* item 11: a grant works only for the app it was issued to, and opens a bounded number of
  links;
* item 14: one offer makes the device send a bounded number of ICE checks, to addresses it
  may probe;
* item 8: talk-back bounded in speed and size, its folder pruned under a budget;
* item 15: the recordings' dot-files are never served.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from tests.support.devices import IdleSource
from tests.support.stack import Stack
from tests.support.waiting import wait_until
from xp2p import XP2PError
from xp2p.cloud.app import CloudServer
from xp2p.cloud.config import AppConfig, CloudConfig
from xp2p.device import ChannelConfig, DeviceAgent
from xp2p.link import Link, LinkConfig, Xp2pInfo, open_link
from xp2p.link.ice import MAX_CANDIDATES_PER_HOST, MAX_UNPROVEN_CHECKS
from xp2p.viewer import AppParams, P2PModule, StreamInfo
from xp2p.viewer.cloud_client import CloudClient, CloudError

DEVICE = StreamInfo(product_id="DEMO", device_name="cam1")
#: A check is sent once and retried six times (aioice's RETRY_MAX).
TRIES_PER_PAIR = 7


@dataclass
class TwoApps:
    """A cloud with two apps, A and B, and the device under test."""

    stack: Stack
    b: AppConfig
    devices: list[DeviceAgent]

    async def device(self, **overrides: Any) -> DeviceAgent:
        device = DeviceAgent(self.stack.device_config(**overrides))
        self.devices.append(device)
        self.stack.device = device
        await device.start()
        await device.wait_signed_in(10)
        return device

    def params(self, app: AppConfig | None = None) -> AppParams:
        if app is None:
            return self.stack.app_params
        return AppParams(self.stack.cloud.url, app.key, app.secret)

    def client(self, app: AppConfig | None = None) -> CloudClient:
        app = app or self.stack.config.apps[0]
        return CloudClient(self.stack.cloud.url, app.key, app.secret, timeout=10)


async def start_cloud(**overrides: Any) -> TwoApps:
    b = AppConfig("app-b", secrets.token_urlsafe(24))
    config = CloudConfig.demo(port=0, stun_port=0, connect_timeout=3.0, **overrides)
    config = replace(config, apps=(*config.apps, b))
    server = CloudServer(config)
    await server.start()
    return TwoApps(Stack(server, config, device=None), b, [])  # type: ignore[arg-type]


@pytest.fixture
async def apps() -> AsyncIterator[TwoApps]:
    two = await start_cloud()
    yield two
    for device in two.devices:
        await device.close()
    await two.stack.cloud.stop()


@pytest.fixture
async def short_grants() -> AsyncIterator[TwoApps]:
    two = await start_cloud(grant_ttl=3)
    yield two
    for device in two.devices:
        await device.close()
    await two.stack.cloud.stop()


async def raw_link(two: TwoApps, client: CloudClient, grant: str | None = None) -> Link:
    """A link opened with a grant of our choosing (a P2PModule always fetches its own)."""
    info = Xp2pInfo.parse((await client.get_p2p_info("DEMO", "cam1")).xp2p_info or "")
    if grant is None:
        grant, _ = await client.get_grant("DEMO", "cam1")

    async def signal(offer: dict[str, Any]) -> dict[str, Any]:
        return await client.connect("DEMO", "cam1", offer)

    return await open_link(
        two.stack.device.config.link,
        signal,
        fingerprint=info.fingerprint,
        grant=grant,
        peer_label="attacker",
    )


# ---- item 5: one app cannot keep the camera busy ------------------------------------------------


async def test_one_app_holds_only_its_share_and_its_idle_links_close(apps: TwoApps) -> None:
    """App A opens every link it can and sits idle; app B still connects and pulls; A's idle
    links close after link_idle_timeout, B's pulling link stays."""
    device = await apps.device(max_links=4, max_pending_links=4, link_idle_timeout=3.0)
    a_modules = [P2PModule() for _ in range(4)]
    b_module = P2PModule()
    try:
        opened, refused = 0, []
        for module in a_modules:
            await module.init(apps.params())
            try:
                await module.start_p2p_service("cam", DEVICE)
                opened += 1
            except XP2PError as exc:
                refused.append(exc.message)
        assert opened == 2  # half of max_links
        assert len(refused) == 2
        assert all("this app holds 2 links" in reason for reason in refused), refused

        await b_module.init(apps.params(apps.b))
        await b_module.start_p2p_service("cam", DEVICE)  # B is not locked out
        got = bytearray()
        await b_module.start_stream("cam", got.extend)
        assert len(device.links) == 3

        # A's two links served no request: the device closes them; B's pull keeps its own.
        started = time.monotonic()
        await wait_until(lambda: len(device.links) == 1, timeout=10, what="A's idle links closed")
        assert time.monotonic() - started < 8
        a_links = [m._services["cam"].link for m in a_modules[:2]]  # type: ignore[union-attr]
        await wait_until(lambda: all(link.closed for link in a_links), timeout=5)
        assert {link.close_reason for link in a_links} == {"idle for 3 s"}
        before = len(got)
        await wait_until(lambda: len(got) > before + 10_000, timeout=5, what="B still pulls")
        # The room is back: A connects again.
        await a_modules[2].start_p2p_service("cam", DEVICE)
    finally:
        for module in (*a_modules, b_module):
            await module.destroy()


def dead_offer(
    grant: str, host: str = "127.0.0.1", port: int = 9, count: int = 1
) -> dict[str, Any]:
    """An offer with a valid grant whose candidates never answer."""
    candidates = [f"{n} 1 udp 2130706431 {host} {port} typ host" for n in range(count)]
    ice = {"ufrag": "deadbeef", "pwd": "0123456789abcdef012345", "candidates": candidates}
    return {"v": 1, "ice": ice, "grant": grant}


async def test_dead_offers_hold_only_the_apps_pending_share_and_are_freed(apps: TwoApps) -> None:
    """Offers with valid grants and dead candidates fill at most A's share of the pending
    slots, B connects meanwhile, and the slots free within the link's connect timeout."""
    device = await apps.device(
        max_pending_links=4, link=LinkConfig(host_addresses=("127.0.0.1",), connect_timeout=2.0)
    )
    b_module = P2PModule()
    async with apps.client() as client:
        grant, _ = await client.get_grant("DEMO", "cam1")
        answered, refused = 0, []
        for _ in range(4):
            try:
                await client.connect("DEMO", "cam1", dead_offer(grant))
                answered += 1
            except CloudError as exc:
                refused.append(exc.message)
        assert answered == 2 and device.admission.pending == 2
        assert all("this app has 2 connections being set up" in r for r in refused), refused
        try:
            await b_module.init(apps.params(apps.b))
            await b_module.start_p2p_service("cam", DEVICE)
        finally:
            await b_module.destroy()
        await wait_until(lambda: device.admission.pending == 0, timeout=6, what="dead offers freed")


# ---- item 5: grants end links --------------------------------------------------------------------


async def renew(link: Link, token: str) -> tuple[int, str]:
    response = await link.request("POST", "/grant", body=token.encode())
    return response.status, (await response.read()).decode()


async def test_a_link_closes_when_its_grant_expires_unless_renewed(short_grants: TwoApps) -> None:
    """Grants last 3 s here. Link 1 is closed when its grant expires; link 2 got a newer
    grant of its app on the link and lives on until that one expires; another app's grant
    or a forged one renews nothing."""
    two = short_grants
    device = await two.device()
    async with two.client() as client, two.client(two.b) as other:
        first = await raw_link(two, client)
        second = await raw_link(two, client)
        status, text = await renew(second, "not-a-grant")
        assert status == 401 and "access grant refused" in text
        b_grant, _ = await other.get_grant("DEMO", "cam1")
        assert await renew(second, b_grant) == (
            403,
            "access grant refused: it was issued to another app",
        )
        await asyncio.sleep(1.0)  # so that the renewed grant expires visibly later
        fresh, fresh_expiry = await client.get_grant("DEMO", "cam1")
        status, text = await renew(second, fresh)
        assert status == 200 and json.loads(text) == {"expires_at": fresh_expiry}

        await wait_until(lambda: first.closed, timeout=6, what="link 1 closed at its expiry")
        assert first.close_reason == "access grant expired"
        assert not second.closed  # renewed
        await wait_until(lambda: second.closed, timeout=4, what="link 2 closed at its expiry")
        assert second.close_reason == "access grant expired"
        assert time.time() >= fresh_expiry - 0.5
        await wait_until(lambda: not device.links, timeout=3)


async def test_the_viewer_renews_its_grant_so_a_watch_outlives_it(short_grants: TwoApps) -> None:
    """A P2PModule presents a fresh grant before its grant expires: its link survives
    several grant lifetimes."""
    two = short_grants
    device = await two.device()
    module = P2PModule()
    try:
        await module.init(two.params())
        await module.start_p2p_service("cam", DEVICE)
        link = module._services["cam"].link  # type: ignore[union-attr]
        await asyncio.sleep(7.0)  # more than two 3 s grants: only renewal keeps it
        assert not link.closed, link.close_reason
        assert len(device.links) == 1
    finally:
        await module.destroy()


# ---- item 11: grants bound to their app, and to a few links -----------------------------------


async def test_a_grant_of_another_app_is_refused(apps: TwoApps) -> None:
    await apps.device()
    async with apps.client() as a, apps.client(apps.b) as b:
        a_grant, _ = await a.get_grant("DEMO", "cam1")
        with pytest.raises(CloudError) as e:
            await raw_link(apps, b, a_grant)  # B's connect request, A's grant
        assert "access grant refused: it was issued to another app" in e.value.message
        link = await raw_link(apps, a, a_grant)  # the grant still works for its own app
        await link.close()


async def test_one_grant_opens_at_most_max_links_per_grant(apps: TwoApps) -> None:
    device = await apps.device(max_links_per_grant=2)
    async with apps.client() as client:
        grant, _ = await client.get_grant("DEMO", "cam1")
        links = [await raw_link(apps, client, grant) for _ in range(2)]
        with pytest.raises(CloudError) as e:
            await raw_link(apps, client, grant)
        assert "access grant refused: it already opened 2 links" in e.value.message
        assert len(device.links) == 2
        other = await raw_link(apps, client)  # a new grant is a new allowance
        for link in (*links, other):
            await link.close()


# ---- item 14: an offer is not a packet cannon -------------------------------------------------


class Victim(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.packets = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.packets += 1


async def victims(hosts: list[str]) -> list[tuple[asyncio.DatagramTransport, Victim]]:
    loop = asyncio.get_running_loop()
    out = []
    for host in hosts:
        transport, victim = await loop.create_datagram_endpoint(Victim, local_addr=(host, 0))
        out.append((transport, victim))
    return out


async def test_one_offer_sends_a_bounded_number_of_checks(apps: TwoApps) -> None:
    """Offers aimed at victims on loopback: 1,000 candidates are refused unread; 32 at one
    address are cut to MAX_CANDIDATES_PER_HOST; 32 over eight addresses stop at
    MAX_UNPROVEN_CHECKS; multicast, broadcast and unspecified addresses get nothing."""
    device = await apps.device(link=LinkConfig(host_addresses=("127.0.0.1",), connect_timeout=2.5))
    # 32 sockets on one address, and 4 on each of eight more: every check is counted.
    one_host = await victims(["127.0.0.2"] * 32)
    spread_hosts = await victims([f"127.0.0.{n}" for n in range(3, 11) for _ in range(4)])
    targets = one_host + spread_hosts
    try:
        async with apps.client() as client:

            async def offer(candidates: list[str]) -> str | None:
                grant, _ = await client.get_grant("DEMO", "cam1")
                ice = {"ufrag": "abcd", "pwd": "0123456789abcdef012345", "candidates": candidates}
                try:
                    await client.connect("DEMO", "cam1", {"v": 1, "ice": ice, "grant": grant})
                except CloudError as exc:
                    return exc.message
                await wait_until(lambda: device.admission.pending == 0, timeout=8)
                return None

            def line(host: str, port: int, n: int = 0) -> str:
                return f"{n} 1 udp 2130706431 {host} {port} typ host"

            first_host, first_port = one_host[0][0].get_extra_info("sockname")[:2]
            # 1,000 candidates: the cloud refuses the size; 100 (within it): the device
            # refuses the count, before any is read.
            refusal = await offer([line(first_host, first_port, n) for n in range(1000)])
            assert refusal is not None and "offer exceeds" in refusal
            refusal = await offer([line(first_host, first_port, n) for n in range(100)])
            assert refusal is not None and "too long" in refusal
            assert sum(v.packets for _t, v in targets) == 0

            # 32 at one victim: only MAX_CANDIDATES_PER_HOST of them are checked.
            on_one = [t.get_extra_info("sockname") for t, _v in one_host]
            assert (
                await offer([line(host, port, n) for n, (host, port) in enumerate(on_one)]) is None
            )
            one = sum(v.packets for _t, v in one_host)
            assert 0 < one <= MAX_CANDIDATES_PER_HOST * TRIES_PER_PAIR

            # 4 at each of eight victims: the unproven-check budget stops the lot.
            addresses = [t.get_extra_info("sockname") for t, _v in spread_hosts]
            spread = [line(host, port, n) for n, (host, port) in enumerate(addresses)]
            assert await offer(spread) is None
            total = sum(v.packets for _t, v in spread_hosts)
            # 32 pairs: without the budget 5 tries each in the 2.5 s (7 in aioice's time).
            assert 32 <= total <= MAX_UNPROVEN_CHECKS

            # Addresses a device must never probe.
            bad = [
                line(h, 40000, n)
                for n, h in enumerate(
                    ("224.0.0.1", "255.255.255.255", "0.0.0.0", "240.0.0.1", "ff02::1")
                )
            ]
            refusal = await offer(bad)
            assert refusal is not None and "no usable ICE candidates" in refusal
        print(
            f"\nICE checks at the victims: 1000 or 100 candidates -> 0, "
            f"32 on one address -> {one}, 32 on eight -> {total}"
        )
    finally:
        for transport, _v in targets:
            transport.close()


# ---- item 8: talk-back bounded ---------------------------------------------------------------

PCM_HEADERS = [("content-type", "audio/pcm;rate=8000;channels=1")]
PCM_RATE = 16000  #: bytes per second of 8 kHz mono s16le


def wav_pcm_bytes(folder: Path, pattern: str = "voice-ch*.wav") -> list[int]:
    sizes = []
    for path in sorted(folder.glob(pattern)):
        with wave.open(str(path), "rb") as wav:
            sizes.append(wav.getnframes() * wav.getsampwidth() * wav.getnchannels())
    return sizes


async def talk(link: Link, body: AsyncIterator[bytes]) -> dict[str, Any]:
    response = await link.request("POST", "/voice?channel=0", PCM_HEADERS, body=body)
    assert response.status == 200
    reply: dict[str, Any] = json.loads(await response.read())
    return reply


async def test_talk_back_pushed_ten_times_faster_than_real_time_is_cut_off(
    apps: TwoApps, tmp_path: Path
) -> None:
    recordings = tmp_path / "recordings"
    device = await apps.device(recordings_dir=recordings)
    sent = 0
    started = time.monotonic()

    async def ten_x() -> AsyncIterator[bytes]:
        nonlocal sent
        chunk = b"\x01\x02" * 800  # 0.1 s of audio...
        for _ in range(600):  # ...every 10 ms, for at most 60 s of audio
            sent += len(chunk)
            yield chunk
            await asyncio.sleep(0.01)

    async with apps.client() as client:
        link = await raw_link(apps, client)
        reply = await talk(link, ten_x())
        elapsed = time.monotonic() - started
        await link.close()
    assert reply["result"] == "error" and reply["status"] == 429, reply
    assert "faster than real time" in reply["reason"]
    (written,) = wav_pcm_bytes(recordings / "voice")
    config = device.config
    allowed = (config.voice_rate_grace + config.voice_max_speed * elapsed) * PCM_RATE
    assert written <= allowed and written < 600 * 1600
    print(f"\ntalk-back at 10x: {sent} bytes sent in {elapsed:.1f} s, {written} written, 429")


async def test_a_talk_session_is_capped_and_the_voice_folder_pruned(
    apps: TwoApps, tmp_path: Path
) -> None:
    recordings = tmp_path / "recordings"
    voice = recordings / "voice"
    voice.mkdir(parents=True)
    old = time.time() - 30 * 86400
    for n in range(10):  # what earlier sessions left: 10 x 50 kB, the first one a month old
        path = voice / f"voice-ch0-20260101-0000{n:02d}-000.wav"
        path.write_bytes(os.urandom(50_000))
        os.utime(
            path,
            (old + n * 60, old + n * 60)
            if n == 0
            else (time.time() - 600 + n, time.time() - 600 + n),
        )
    device = await apps.device(
        recordings_dir=recordings,
        voice_max_bytes=32_000,  # 2 s of 8 kHz mono
        voice_max_speed=1e6,  # this test is about the size, not the speed
        voice_retention_bytes=200_000,
        retention_days=7.0,
    )

    async def four_seconds() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"\x00\x01" * 800
            await asyncio.sleep(0)

    async with apps.client() as client:
        link = await raw_link(apps, client)
        reply = await talk(link, four_seconds())
        await link.close()
    assert reply["result"] == "error" and reply["status"] == 413, reply
    assert reply["reason"] == "talk session too long: more than 32000 bytes"
    files = sorted(voice.glob("voice-ch*.wav"))
    sizes = [p.stat().st_size for p in files]
    assert sum(sizes) <= device.config.voice_retention_bytes, sizes
    assert not (voice / "voice-ch0-20260101-000000-000.wav").exists()  # older than retention
    (session,) = [p for p in files if not p.name.startswith("voice-ch0-20260101")]
    newest = wav_pcm_bytes(voice, session.name)[0]
    assert 0 < newest <= 32_000
    print(f"\nvoice folder: 11 files -> {len(files)}, {sum(sizes)} bytes; session WAV {newest}")


# ---- item 15: the device's own dot-files ------------------------------------------------------


async def test_dot_files_are_never_downloadable(apps: TwoApps, tmp_path: Path) -> None:
    recordings = tmp_path / "recordings"
    folder = recordings / "ch0"
    folder.mkdir(parents=True)
    (folder / ".xp2p-index.json").write_text('{"v": 1, "segments": []}')
    (folder / ".hidden.flv").write_bytes(b"FLV")
    (folder / "alias.flv").symlink_to(".xp2p-index.json")
    (folder / "ok.flv").write_bytes(b"FLV-ok")
    await apps.device(recordings_dir=recordings, channels={0: ChannelConfig(default=IdleSource)})
    async with apps.client() as client:
        link = await raw_link(apps, client)
        try:
            for name in (".xp2p-index.json", ".hidden.flv", "alias.flv", "%2Exp2p-index.json"):
                target = f"/ipc.flv?action=download&channel=0&file_name={name}"
                response = await link.request("GET", target)
                text = (await response.read()).decode()
                assert response.status == 404, (name, text)
                assert text.startswith("no such file: ") and "segments" not in text
            response = await link.request(
                "GET", "/ipc.flv?action=download&channel=0&file_name=ok.flv"
            )
            assert response.status == 200 and await response.read() == b"FLV-ok"
        finally:
            await link.close()
