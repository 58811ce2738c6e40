"""Write the seed corpora under fuzz/corpus/<target>/: a few valid inputs per target, made by
the real encoders (so a seed breaks, and shows it, if a format changes). Run from the repo
root after changing a format: ``python fuzz/make_corpus.py``; it replaces the seeds."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from aioice import stun
from aioice.candidate import Candidate
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from xp2p.auth import AccessGrant, GrantSigner, b64url_encode, export_public_key
from xp2p.flv import FlvHeader, FlvTag, encode_tags
from xp2p.link.ice import IceParameters
from xp2p.link.xp2pinfo import Xp2pInfo
from xp2p.swarm import protocol
from xp2p.swarm.chunk import Chunk, InitChunk
from xp2p.swarm.edge_messages import (
    JoinRequest,
    JoinResponse,
    LiveInfo,
    NeedNeighbours,
    Neighbour,
    NeighboursUpdate,
    PeerStats,
    Signal,
    StateUpdate,
)
from xp2p.swarm.peer_token import PeerToken, sign_peer_token
from xp2p.swarm.signing import ChunkSigner
from xp2p.swarm.wire import encode_item

CORPUS = Path(__file__).resolve().parent / "corpus"
FINGERPRINT = b64url_encode(hashlib.sha256(b"a device certificate").digest())

# Tags as a camera sends them: onMetaData, AVC and AAC sequence headers, a keyframe, frames.
METADATA = FlvTag(18, 0, b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x00\x00\x00\x09")
AVC_HEADER = FlvTag(9, 0, b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f\xff\xe1\x00\x04gd\x00\x1f")
AAC_HEADER = FlvTag(8, 0, b"\xaf\x00\x12\x10")
KEYFRAME = FlvTag(9, 0, b"\x17\x01\x00\x00\x00\x00\x00\x00\x05\x65\x88\x84\x00\x10")
FRAME = FlvTag(9, 40, b"\x27\x01\x00\x00\x00\x00\x00\x00\x03\x41\x9a\x02")
AUDIO = FlvTag(8, 23, b"\xaf\x01\x21\x10\x04")
HEVC_HEADER = FlvTag(9, 0, b"\x90hvc1" + bytes(22) + b"\x01\x20\x00\x01\x00\x02\x40\x01")
TAGS = [METADATA, AVC_HEADER, AAC_HEADER, KEYFRAME, AUDIO, FRAME]


def flv() -> list[bytes]:
    stream = encode_tags(FlvHeader(), TAGS)
    bare = encode_tags(None, [KEYFRAME, FRAME, AUDIO])
    hevc = encode_tags(FlvHeader(has_audio=False), [HEVC_HEADER, KEYFRAME])
    # harness.pieces: byte 0 bounds the cuts (0 whole; 0x80 and up: bare tags), byte 1 seeds
    return [
        b"\0\0" + stream,
        b"\x07\x01" + stream,
        b"\x82\0" + bare,
        b"\x85\x02" + bare,
        b"\0\0" + hevc,
    ]


def xp2pinfo() -> list[bytes]:
    info = Xp2pInfo("DEMO", "cam1", FINGERPRINT, "c2Vzc2lvbg", "2.4.1")
    payload = {"v": 1, "p": "DEMO", "d": "cam1", "f": FINGERPRINT, "s": "c2Vzc2lvbg"}
    return [
        info.encode().encode(),
        Xp2pInfo("P", "d", FINGERPRINT, "s", "2").encode().encode(),
        b"j" + json.dumps(payload).encode() + b"\x002.0.0.1",
        Xp2pInfo("DEMO", "cam1", FINGERPRINT, "s", "2.4.1", FINGERPRINT[::-1]).encode().encode(),
    ]


def command() -> list[bytes]:
    ok = json.dumps([{"status": "0", "appConnectNum": "1"}]).encode()
    return [
        b"qaction=inner_define&channel=0&cmd=get_device_st&type=live",
        b'qaction=user_define&channel=0&cmd={"topic":"ptz","data":"left"}',
        b"r\x00\xc8" + ok,
        b'r\x00\xc8{"status":"1","errmsg":"busy"}\x00',
        b'r\x01\x96{"status":"406","errmsg":"unknown command"}',
        b"taction=inner_define&channel=0&cmd=get_record_index&start_time=1 2",
    ]


def link_requests() -> list[bytes]:
    return [
        b":method=GET\n:scheme=https\n:authority=device.xp2p\n"
        b":path=/ipc.flv?action=live&channel=0&quality=high",
        b":method=POST\nx-grant=abc.def\n:path=/voice?channel=0&type=aac",
        b":method=GET\n:path=/command?action=inner_define&channel=0&cmd=get_device_st",
    ]


def swarm_wire() -> list[bytes]:
    signer = ChunkSigner(Ed25519PrivateKey.from_private_bytes(bytes(32)))
    init = InitChunk(7, 0, FlvHeader(), encode_tags(None, [METADATA, AVC_HEADER, AAC_HEADER]))
    chunk = Chunk(7, 12, 0, 1000, 330, True, encode_tags(None, [KEYFRAME, AUDIO, FRAME]))
    return [encode_item(item, signer.sign(item)) for item in (init, chunk)]


def swarm_protocol() -> list[bytes]:
    messages: list[protocol.Message] = [
        protocol.Hello(7, "peer-1", True),
        protocol.Bitfield.of(100, {100, 103, 110}, window=32),
        protocol.Have(111),
        protocol.Request(111),
        protocol.Cancel(111),
        protocol.ChunkData(111, swarm_wire()[1]),
        protocol.Busy(111, 250),
        protocol.Neighbours(("a", "b-2")),
    ]
    framed = b"".join(protocol.frame(m) for m in messages[:5])
    return [protocol.encode(m) for m in messages] + [b"\0\0" + framed, b"\x05\x03" + framed]


def edge_messages() -> list[bytes]:
    key = Ed25519PrivateKey.from_private_bytes(bytes(32))
    token = sign_peer_token(key, PeerToken("r", "peer-2", FINGERPRINT, 1700000000))
    ice = {"ufrag": "u", "pwd": "p", "candidates": [_candidate()]}
    neighbour = Neighbour("peer-2", FINGERPRINT, "full-cone")
    docs: list[tuple[bytes, dict[str, Any]]] = [
        (b"p", Signal("offer", "peer-2", "req-1", {"v": 1, "ice": ice}).to_json(outgoing=False)),
        (b"p", Signal("reject", "peer-2", 7, None, "busy").to_json(outgoing=False)),
        (b"p", PeerStats(10, 20, 30, 1, 4).to_json()),
        (b"p", NeedNeighbours(("peer-3",)).to_json()),
        (b"e", NeighboursUpdate((neighbour,)).to_json()),
        (b"e", StateUpdate("stalled").to_json()),
        (b"e", Signal("answer", "peer-2", "req-1", {"v": 1}).to_json(outgoing=True)),
        (b"j", JoinRequest("https://origin.example/live/x.flv", True, FINGERPRINT).to_json()),
        (
            b"r",
            JoinResponse(
                "r",
                "peer-1",
                2**63,
                export_public_key(key.public_key()),
                token,
                False,
                (neighbour,),
                [{"urls": ["stun:203.0.113.10:3478"]}],
                330,
            ).to_json(),
        ),
        (b"l", LiveInfo(2**63, 40, 36, 2, "live", (30, 33, 36)).to_json()),
    ]
    urls = [
        "http://user:p%40ss@Origin.Example:80/live/x.flv?token=s&a=1#f",
        "HTTPS://[::ffff:127.0.0.1]:443/",
        "http://0x7f000001./x",
    ]
    return (
        [kind + json.dumps(doc).encode() for kind, doc in docs]
        + [b"t" + token.encode()]
        + [b"u" + url.encode() for url in urls]
    )


def stun_() -> list[bytes]:
    out = []
    for change in (None, 0x2, 0x4, 0x6):
        # a fixed transaction id, so that rewriting the seeds changes nothing
        tid = bytes((change or 1,)) * 12
        request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, transaction_id=tid)
        if change is not None:
            request.attributes["CHANGE-REQUEST"] = change
        request.add_fingerprint()
        out.append(bytes((change or 0,)) + bytes(request))
    return out


def _candidate() -> str:
    return Candidate("1", 1, "udp", 2130706431, "192.0.2.5", 40000, "host").to_sdp()


def signalling() -> list[bytes]:
    grant = GrantSigner(Ed25519PrivateKey.from_private_bytes(bytes(32))).sign(
        AccessGrant("app", "DEMO", "cam1", frozenset({"live"}), 0, 300, "g1")
    )
    srflx = Candidate(
        "2", 1, "udp", 1694498815, "198.51.100.7", 50000, "srflx", "192.0.2.5", 40000
    ).to_sdp()
    ice = IceParameters("ufrag", "password", (_candidate(), srflx)).to_json()
    offer = {"v": 1, "ice": ice, "grant": grant, "nat": "full-cone"}
    answer = {"v": 1, "ice": ice, "certificate": "@", "nat": "symmetric"}
    payload = grant.partition(".")[0]
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    return [b"o" + json.dumps(offer).encode(), b"a" + json.dumps(answer).encode(), b"g" + raw]


def admin() -> list[bytes]:
    key = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"  # RFC 8032's test 1 public key
    docs: list[Any] = [
        {"key": "my-app", "products": ["DEMO", "*"], "permissions": ["live", "command"]},
        {"key": "web", "cors_origins": ["https://app.example:8443"]},
        {"product_id": "DEMO", "device_name": "cam7", "public_key": key},
        {"public_key": key},
        [],
    ]
    return [b"b" + json.dumps(d).encode() for d in docs] + [b"k" + key.encode(), b"kAAAA"]


def cloud_signalling() -> list[bytes]:
    frames: list[dict[str, Any]] = [
        {
            "type": "auth",
            "product_id": "DEMO",
            "device_name": "cam1",
            "proof": "ab" * 32,
            "nonce": "cd" * 16,
        },
        {"type": "xp2p_info", "xp2p_info": xp2pinfo()[0].decode()},
        {"type": "answer", "request_id": "@", "answer": {"v": 1, "certificate": "PEM"}},
        {"type": "reject", "request_id": "@", "code": 503, "reason": "busy"},
        {"type": "answer", "request_id": "0123456789abcdef", "answer": {}},
        {"type": "link_up", "request_id": "@", "mode": "direct"},
        {"type": "link_up", "request_id": "0123456789abcdef", "mode": "relay"},
    ]
    connect = {"offer": {"v": 1, "ice": {"ufrag": "u", "pwd": "p", "candidates": []}}}
    metrics = [b"mBearer the-operators-metrics-token", b"mbearer  wrong", b"m"]
    return [
        *(b"d" + json.dumps(f).encode() for f in frames),
        b"c" + json.dumps(connect).encode(),
        *metrics,
    ]


#: A TURN entry as the cloud mints them: REST API credentials, "<expiry>:<user>".
TURN = {"urls": ["turn:203.0.113.10:3478"], "username": "1700000300:DEMO/cam1", "credential": "c"}


def device_session() -> list[bytes]:
    offer = {
        "type": "offer",
        "request_id": "0123456789abcdef",
        "app_key": "app",
        "offer": {"v": 1},
        "ice_servers": [TURN],
    }
    welcome = {
        "type": "welcome",
        "session_id": "s2",
        "grant_public_key": export_public_key(
            Ed25519PrivateKey.from_private_bytes(bytes(32)).public_key()
        ),
        "ice_servers": [{"urls": ["stun:203.0.113.10:3478"]}, TURN],
        "stun": {
            "host": "203.0.113.10",
            "port": 3478,
            "alt_port": 3479,
            "alt_host": "203.0.113.11",
        },
        "server_time": 1700000000,
    }
    lines = [
        ["@", "@", json.dumps({"type": "xp2p_info_ok"}), json.dumps(offer)],
        ["@", json.dumps({"type": "error", "code": "auth_failed"})],
        ["@", json.dumps(welcome), json.dumps({"type": "xp2p_info_ok"})],
        [
            json.dumps({"type": "challenge", "nonce": "ab" * 16}),
            "@",
            json.dumps({"type": "error", "code": "x", "message": "y"}),
        ],
    ]
    return ["\n".join(frames).encode() for frames in lines]


def player_access() -> list[bytes]:
    token = "x" * 43
    return [
        f"Host: 127.0.0.1:8000\n?{token}".encode(),
        f"https://App.example:443\nHost: localhost:8000\nOrigin: https://app.example\n"
        f"Sec-Fetch-Site: cross-site\n?{token}".encode(),
        b"Host: attacker.example:8000\nSec-Fetch-Site: cross-site\nSec-Fetch-Mode: no-cors",
        f"Host: [::1]:8000\nOrigin: null\n/DEMO/cam2\n?{token}".encode(),
        f"Host: 192.0.2.1\nSec-Fetch-Site: same-origin\n?{token[:-1]}y".encode(),
    ]


def app_auth() -> list[bytes]:
    from xp2p.auth import sign_request

    out = []
    for i, source in enumerate((0, 1, 2, 3)):
        body = b"{}" if i % 2 else b""
        headers = sign_request(
            "fuzz-app",
            "fuzz-app-secret-0123456789",
            "POST",
            "/api/v1/app/session",
            body,
            timestamp=1_764_720_000 - 10 * i,
            nonce=f"{i:02d}" * 16,
        )
        lines = "".join(f"{k}: {v}\n" for k, v in headers.items())
        out.append(bytes((source,)) + lines.encode() + b"\n" + body)
    return out


def datachannel_framing() -> list[bytes]:
    from aiortc import RTCPeerConnection

    from xp2p.link.datachannel_framing import END, RequestHead, ResponseHead

    fingerprint = ":".join(["AB", "CD", "EF", "12", "34", "56", "78", "9A"] * 4)
    answer = (
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
        f"a=fingerprint:sha-256 {fingerprint}\r\na=setup:active\r\n"
    )

    async def offer() -> str:
        pc = RTCPeerConnection()
        pc.createDataChannel("xp2p")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return sdp

    return [
        b"q" + RequestHead("GET", "/ipc.flv?action=live&channel=0", {"x-a": "b"}).encode().encode(),
        b"Q" + RequestHead("POST", "/voice?channel=0").encode().encode(),
        b"r" + ResponseHead(200, {"content-type": "video/x-flv"}).encode().encode(),
        b"e" + END.encode(),
        b"b" + bytes(range(64)),
        b"o" + asyncio.run(offer()).encode(),
        b"a" + answer.encode(),
    ]


def viewer_token() -> list[bytes]:
    from xp2p.cloud.viewer_token import ViewerToken, ViewerTokenCodec

    codec = ViewerTokenCodec(b"fuzz viewer-token key, 32 bytes!")
    now = 1_764_720_000
    tokens = [
        ViewerToken("demo-app", frozenset({("DEMO", "cam1")}), frozenset(), frozenset({"live"}),
                    now - 10, now + 600, "0123456789abcdef"),
        ViewerToken("demo-app", frozenset(), frozenset({"DEMO", "OTHER"}),
                    frozenset({"live", "command", "voice"}), now - 700, now - 100,
                    "fedcba9876543210"),
    ]  # fmt: skip
    out = [b"t" + codec.sign(t).encode() for t in tokens]
    out += [b"s" + t.payload() for t in tokens] + [b"p" + tokens[0].payload()]
    return out


TARGETS = {
    "flv": flv,
    "xp2pinfo": xp2pinfo,
    "command": command,
    "link_requests": link_requests,
    "swarm_wire": swarm_wire,
    "swarm_protocol": swarm_protocol,
    "edge_messages": edge_messages,
    "stun": stun_,
    "signalling": signalling,
    "admin": admin,
    "cloud_signalling": cloud_signalling,
    "device_session": device_session,
    "player_access": player_access,
    "app_auth": app_auth,
    "viewer_token": viewer_token,
    "datachannel_framing": datachannel_framing,
}


def main() -> None:
    for name, make in TARGETS.items():
        folder = CORPUS / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for i, seed in enumerate(make()):
            (folder / f"seed-{i}").write_bytes(seed)
        print(f"{name}: {len(list(folder.iterdir()))} seeds")


if __name__ == "__main__":
    main()
