"""The WebRTC link's pure parts: data-channel request framing, the bounds on an offer's SDP,
the viewer's check of the answer's DTLS fingerprint (the rule the JS SDK mirrors), and the
xp2pInfo field that carries that fingerprint."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Callable

import pytest

from xp2p.errors import XP2PError
from xp2p.link import datachannel_framing as framing
from xp2p.link.errors import LinkError
from xp2p.link.ice import MAX_CANDIDATES
from xp2p.link.webrtc_sdp import (
    check_answer_fingerprint,
    keep_sha256_fingerprints,
    parse_webrtc_offer,
    sdp_fingerprint,
)
from xp2p.link.xp2pinfo import Xp2pInfo

DIGEST = hashlib.sha256(b"a device certificate").digest()
PIN = base64.urlsafe_b64encode(DIGEST).rstrip(b"=").decode()
HEX = ":".join(f"{b:02X}" for b in DIGEST)
QUIC_PIN = base64.urlsafe_b64encode(hashlib.sha256(b"quic").digest()).rstrip(b"=").decode()


def sdp(*extra: str, candidates: int = 1) -> str:
    lines = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0"]
    lines += ["m=application 9 UDP/DTLS/SCTP webrtc-datachannel", *extra]
    lines += [
        f"a=candidate:{i} 1 udp 1 192.0.2.{i % 250} {5000 + i} typ host" for i in range(candidates)
    ]
    return "\r\n".join(lines) + "\r\n"


def framing_error(call: object, *args: object) -> str:
    with pytest.raises(framing.FramingError) as caught:
        call(*args)  # type: ignore[operator]
    return caught.value.code


def test_heads_round_trip() -> None:
    head = framing.RequestHead("GET", "/ipc.flv?action=live&channel=0", {"x-a": "b"})
    assert framing.parse_request_head(head.encode()) == head
    response = framing.ResponseHead(206, {"content-type": "video/x-flv"})
    assert framing.parse_response_head(response.encode()) == response
    assert framing.is_end(framing.END)


def test_header_names_are_lower_cased() -> None:
    head = framing.parse_request_head('{"method":"GET","target":"/x","headers":{"X-A":"1"}}')
    assert head.headers == {"x-a": "1"}


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (b'{"method":"GET","target":"/"}', "bad_framing"),  # a head is text
        ("not json", "bad_framing"),
        ("[1]", "bad_framing"),
        ('{"method":"BREW","target":"/"}', "bad_method"),
        ('{"method":"GET","target":"x"}', "bad_target"),
        ('{"method":"GET","target":"/a b"}', "bad_target"),
        ('{"method":"GET","target":"/\\ud800"}', "bad_target"),
        ('{"method":"GET","target":5}', "bad_target"),
        ('{"method":"GET","target":"/","headers":[]}', "bad_headers"),
        ('{"method":"GET","target":"/","headers":{":path":"/"}}', "bad_headers"),
        ('{"method":"GET","target":"/","headers":{"a b":"1"}}', "bad_headers"),
        ('{"method":"GET","target":"/","headers":{"a":"1\\r\\nb: 2"}}', "bad_headers"),
        ('{"method":"GET","target":"/","headers":{"a":1}}', "bad_headers"),
        ('{"method":"GET","target":"/' + "a" * framing.MAX_HEAD_BYTES + '"}', "head_too_large"),
        ("[" * 100_000, "head_too_large"),
    ],
)
def test_bad_request_heads_have_codes(message: str | bytes, code: str) -> None:
    assert framing_error(framing.parse_request_head, message) == code


def test_many_headers_are_refused() -> None:
    headers = ",".join(f'"h{i}":"v"' for i in range(framing.MAX_HEADERS + 1))
    message = '{"method":"GET","target":"/","headers":{' + headers + "}}"
    assert framing_error(framing.parse_request_head, message) == "bad_headers"


def test_response_status_and_control_messages() -> None:
    assert framing_error(framing.parse_response_head, '{"status":"200"}') == "bad_status"
    assert framing_error(framing.parse_response_head, '{"status":700}') == "bad_status"
    assert framing_error(framing.parse_response_head, '{"status":true}') == "bad_status"
    assert framing_error(framing.is_end, '{"end":false}') == "bad_framing"
    assert framing_error(framing.is_end, '{"method":"GET","target":"/"}') == "bad_framing"
    big = bytes(framing.MAX_MESSAGE_BYTES + 1)
    assert framing_error(framing.check_body, big) == "message_too_large"


def test_bodies_split_into_bounded_messages() -> None:
    data = bytes(range(256)) * 200
    pieces = framing.split_body(data)
    assert b"".join(pieces) == data
    assert max(map(len, pieces)) == framing.BODY_MESSAGE_BYTES
    assert framing.split_body(b"") == []


def test_an_offer_is_bounded() -> None:
    offer = {"v": 1, "transport": "webrtc", "grant": "g", "sdp": sdp()}
    assert parse_webrtc_offer(offer) == (offer["sdp"], "g")
    cases = [
        ({**offer, "grant": ""}, "no access grant"),
        ({**offer, "sdp": "hello"}, "no SDP"),
        ({**offer, "transport": "quic"}, "malformed"),
        ({**offer, "sdp": sdp().replace("m=application", "m=audio")}, "no data channel"),
        ({**offer, "sdp": sdp(candidates=MAX_CANDIDATES + 1)}, "more than 32 ICE candidates"),
        ({**offer, "sdp": sdp("a=x:" + "y" * 13_000)}, "over"),
    ]
    for bad, reason in cases:
        with pytest.raises(LinkError) as caught:
            parse_webrtc_offer(bad)
        assert caught.value.reason == "bad_signal" and reason in str(caught.value), reason
    assert parse_webrtc_offer({**offer, "sdp": sdp(candidates=MAX_CANDIDATES)})


def test_the_answer_must_name_the_published_certificate() -> None:
    assert sdp_fingerprint(PIN) == HEX
    check_answer_fingerprint(sdp(f"a=fingerprint:sha-256 {HEX}"), PIN)
    check_answer_fingerprint(sdp(f"a=fingerprint:SHA-256 {HEX.lower()}"), PIN)
    tampered = HEX.replace(HEX[:2], "00" if HEX[:2] != "00" else "11", 1)
    cases = [
        sdp(f"a=fingerprint:sha-256 {tampered}"),  # a relay's own certificate
        sdp(f"a=fingerprint:sha-256 {HEX}", f"a=fingerprint:sha-256 {tampered}"),
        sdp(f"a=fingerprint:sha-256 {HEX}", "a=fingerprint:sha-512 AB:CD"),
        sdp(),  # none at all
        sdp("a=fingerprint:sha-256"),  # malformed
        # A fuzz finding: a malformed line and a CR-prefixed good one balanced the count.
        sdp(f"a=fingerprint:sha-256 {tampered} x", f"\ra=fingerprint:sha-256 {HEX}"),
        sdp(f"a=fingerprint:sha-256 {HEX}\x85a=fingerprint:sha-256 {tampered}"),
        sdp(f" a=fingerprint:sha-256 {tampered}", f"a=fingerprint:sha-256 {HEX}"),
        sdp(f"\ta=fingerprint:sha-256 {HEX}"),  # no parser reads this one: no pin at all
    ]
    for answer in cases:
        with pytest.raises(LinkError) as caught:
            check_answer_fingerprint(answer, PIN)
        assert caught.value.reason == "bad_identity"
    with pytest.raises(LinkError, match="names no DTLS certificate"):
        check_answer_fingerprint(sdp(f"a=fingerprint:sha-256 {HEX}"), "")


def test_the_device_answers_with_sha256_only() -> None:
    answer = sdp(f"a=fingerprint:sha-256 {HEX}", "a=fingerprint:sha-384 AB", "a=setup:active")
    kept = keep_sha256_fingerprints(answer)
    assert "sha-384" not in kept and f"a=fingerprint:sha-256 {HEX}" in kept
    check_answer_fingerprint(kept, PIN)


def test_xp2p_info_carries_the_dtls_fingerprint_and_stays_compatible() -> None:
    info = Xp2pInfo("DEMO", "cam1", QUIC_PIN, "s1", "2.4.1", dtls_fingerprint=PIN)
    assert Xp2pInfo.parse(info.encode()) == info
    old = Xp2pInfo("DEMO", "cam1", QUIC_PIN, "s1", "2.4.1")  # a device without WebRTC
    assert Xp2pInfo.parse(old.encode()).dtls_fingerprint == ""
    assert '"w"' not in base64.urlsafe_b64decode(old.encode()[4:].split("%")[0] + "==").decode()
    bad = Xp2pInfo("DEMO", "cam1", QUIC_PIN, "s1", "2.4.1", dtls_fingerprint="short")
    with pytest.raises(XP2PError, match="DTLS fingerprint is malformed"):
        Xp2pInfo.parse(bad.encode())


class SlowChannel:
    """An open data channel whose queue the test drains by hand (aiortc's ``bufferedAmount``
    and ``bufferedamountlow`` contract, as ``RTCDataChannel`` keeps it)."""

    def __init__(self) -> None:
        self.readyState = "open"
        self.bufferedAmount = 0
        self.bufferedAmountLowThreshold = 0
        self.sent: list[str | bytes] = []
        self.handlers: dict[str, Callable[..., object]] = {}

    def on(self, event: str, handler: Callable[..., object]) -> None:
        self.handlers[event] = handler

    def send(self, data: str | bytes) -> None:
        self.sent.append(data)
        self.bufferedAmount += len(data)

    def drain(self) -> None:
        self.bufferedAmount = 0
        self.handlers["bufferedamountlow"]()

    def close(self) -> None:
        self.readyState = "closed"
        self.handlers["close"]()


async def test_a_writer_waits_while_its_channel_is_above_the_high_water_mark() -> None:
    """Back-pressure on a WebRTC link is the channel's queue: the live route's writer blocks
    there (and so falls behind and skips to a keyframe) as it does on a slow QUIC stream."""
    from aiortc import RTCPeerConnection

    from xp2p.link import webrtc
    from xp2p.link.transport import StreamState

    async def never(request: object) -> None:
        raise AssertionError("no request expected")

    pc = RTCPeerConnection()
    link = webrtc.WebRtcLink(pc, peer_label="test", handler=never)
    channel = SlowChannel()
    state = StreamState(0)
    link._track(channel, state)  # type: ignore[arg-type]
    data = bytes(2 * webrtc.HIGH_WATER)
    writer = asyncio.ensure_future(link.write(0, data, end=True))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not writer.done()
    queued = sum(len(m) for m in channel.sent)
    assert webrtc.HIGH_WATER < queued <= webrtc.HIGH_WATER + framing.BODY_MESSAGE_BYTES
    assert link.backlog(0) == queued
    while not writer.done():
        channel.drain()
        await asyncio.sleep(0)
    await writer
    assert b"".join(m for m in channel.sent if isinstance(m, bytes)) == data
    assert channel.sent[-1] == framing.END and channel.readyState == "closed"
    await link.close()


def test_an_offer_keeps_only_candidates_the_device_may_probe() -> None:
    lines = [
        "a=candidate:1 1 udp 1 192.0.2.7 5000 typ host",
        "a=candidate:2 1 udp 1 224.0.0.1 5000 typ host",  # multicast
        "a=candidate:3 1 udp 1 0.0.0.0 5000 typ host",  # unspecified
        "a=candidate:4 1 udp 1 victim.example.com 5000 typ host",  # a name to resolve
        "a=candidate:5 1 udp 1 192.0.2.8 0 typ host",  # bad port
        "a=candidate:6 1 udp 1 192.0.2.8 5000",  # no type
        "a=candidate:6 1 udp 1 192.0.2.8 6030\u00b23 typ host",  # a non-ASCII digit
        "a=candidate:6 1 udp 1 192.0.2.8 0000000000000005000 typ host",
        *(f"a=candidate:{7 + i} 1 udp 1 198.51.100.1 {6000 + i} typ host" for i in range(6)),
        *(f"a=candidate:{20 + i} 1 udp 1 {i}-ab.local 5000 typ host" for i in range(4)),
    ]
    offer = {"v": 1, "transport": "webrtc", "grant": "g", "sdp": sdp(*lines, candidates=0)}
    kept, _ = parse_webrtc_offer(offer)
    hosts = [line.split()[4] for line in kept.split("\r\n") if line.startswith("a=candidate:")]
    assert hosts == ["192.0.2.7"] + ["198.51.100.1"] * 4 + ["0-ab.local", "1-ab.local"]
    assert "m=application" in kept and "a=fingerprint" not in kept
    only_bad = {**offer, "sdp": sdp(lines[1], lines[3], candidates=0)}
    with pytest.raises(LinkError, match="no usable ICE candidates"):
        parse_webrtc_offer(only_bad)


def test_mdns_candidates_are_split_off_the_offer() -> None:
    """The device resolves a browser's mDNS names beside the checks, not inside
    setRemoteDescription (which waits up to a second for each name that never answers)."""
    from xp2p.link.webrtc_sdp import split_mdns_candidates

    mdns = "1 1 udp 2122260223 3f2a9c1e-0b4d-4e7e-9a1b-2c3d4e5f6a7b.local 50000 typ host"
    srflx = "2 1 udp 1686052607 198.51.100.7 40000 typ srflx raddr 0.0.0.0 rport 0"
    sdp = f"v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=candidate:{mdns}\r\n"
    sdp += f"a=candidate:{srflx}\r\na=end-of-candidates\r\n"
    rest, names = split_mdns_candidates(sdp)
    assert names == [mdns]
    assert rest == sdp.replace(f"a=candidate:{mdns}\r\n", "")
