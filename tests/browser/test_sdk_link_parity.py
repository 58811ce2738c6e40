"""A differential fuzz of the browser SDK's link parsers (web/src/xp2pinfo.js, sdp.js,
link.js parseResponseHead) against the Python ones they mirror, fuzzed with atheris as
fuzz_xp2pinfo.py and fuzz_datachannel_framing.py: random and mutated inputs through both.

The fingerprint check must agree exactly (it is what keeps a cloud in the middle from
answering as the camera). The xp2pInfo parser may refuse more than Python's (its base64 is
strict where Python's skips stray characters) but never accepts what Python refuses, and what
both accept they read alike. One difference is deliberate: JSON.parse cannot tell 1.0 from 1,
so a float `v` or `status` that equals an integer is that integer in JS (no device sends one)."""

from __future__ import annotations

import base64
import json
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.browser.chromium import WEB, require_browser_tools
from xp2p.errors import XP2PError
from xp2p.link.datachannel_framing import FramingError, parse_response_head
from xp2p.link.errors import LinkError
from xp2p.link.webrtc_sdp import check_answer_fingerprint
from xp2p.link.xp2pinfo import Xp2pInfo

pytestmark = pytest.mark.browser

FP = base64.urlsafe_b64encode(bytes(range(32))).rstrip(b"=").decode()
OTHER_FP = base64.urlsafe_b64encode(bytes(range(1, 33))).rstrip(b"=").decode()
HEX = ":".join(f"{b:02X}" for b in range(32))
BREAKS = ["\r\n", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", " ", "\t", ""]


def b64(doc: Any) -> str:
    raw = json.dumps(doc, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def mutate(text: str, rng: random.Random) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(4)
        at = rng.randrange(len(chars) + 1)
        if op == 0 and chars:
            del chars[min(at, len(chars) - 1)]
        elif op == 1:
            chars.insert(at, rng.choice(["%", "=", "+", "/", "\n", " ", "é", "\x00", "A", "."]))
        elif op == 2 and chars:
            chars[min(at, len(chars) - 1)] = rng.choice("AZaz09-_.%")
        else:
            chars = chars[:at]
    return "".join(chars)


def xp2pinfo_cases(rng: random.Random, count: int) -> list[str]:
    good = {"v": 1, "p": "DEMO", "d": "cam1", "f": FP, "s": "1a2b3c4d", "w": OTHER_FP}
    variants: list[Any] = [
        good,
        {k: v for k, v in good.items() if k != "w"},
        {**good, "w": ""},
        {**good, "w": "x" * 43 + "!"},
        {**good, "v": "1"},
        {**good, "v": 1.0},
        {**good, "v": True},
        {**good, "p": ""},
        {**good, "d": 7},
        {**good, "f": FP[:-1]},
        [good],
        "text",
        None,
    ]
    versions = ["2.4.0", "2", "1.9", "2.0.0.1", "10.1", "2.4.0.0.1", "", "2.x", "02.4"]
    out = []
    for _ in range(count):
        doc = rng.choice(variants)
        text = f"XP2P{b64(doc)}%{rng.choice(versions)}"
        out.append(mutate(text, rng) if rng.random() < 0.5 else text)
    return out


def answer_cases(rng: random.Random, count: int) -> list[dict[str, str]]:
    lines = [
        "v=0",
        "o=- 1 1 IN IP4 0.0.0.0",
        "s=-",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "a=setup:active",
    ]
    fingerprint_lines = [
        f"a=fingerprint:sha-256 {HEX}",
        f"a=fingerprint:SHA-256 {HEX.lower()}",
        f"a=fingerprint:sha-256 {HEX[:-1]}0",
        f"a=fingerprint:sha-1 {HEX[:59]}",
        f"a=fingerprint:sha-256  {HEX}",
        f" a=fingerprint:sha-256 {HEX}",
        f"A=FINGERPRINT:sha-256 {HEX}",
        f"a=fingerprint:sha-256 {HEX} ",
        "a=fingerprint:",
    ]
    out = []
    for _ in range(count):
        body = list(lines)
        for _ in range(rng.randint(0, 3)):
            body.insert(rng.randint(0, len(body)), rng.choice(fingerprint_lines))
        sep = rng.choice(BREAKS[:9])
        sdp = "".join(line + (sep if rng.random() < 0.9 else rng.choice(BREAKS)) for line in body)
        if rng.random() < 0.3:
            sdp = mutate(sdp, rng)
        out.append({"sdp": sdp, "fingerprint": rng.choice([FP, FP, FP, OTHER_FP, "", "short"])})
    return out


def head_cases(rng: random.Random, count: int) -> list[str]:
    heads: list[Any] = [
        {"status": 200, "headers": {"content-type": "video/x-flv"}},
        {"status": 404},
        {"status": 99},
        {"status": 600},
        {"status": 200.0},
        {"status": "200"},
        {"status": True},
        {"status": 200, "headers": None},
        {"status": 200, "headers": []},
        {"status": 200, "headers": {":path": "/"}},
        {"status": 200, "headers": {"X-Up": "v"}},
        {"status": 200, "headers": {"a b": "v"}},
        {"status": 200, "headers": {"k": "line\nbreak"}},
        {"status": 200, "headers": {"k": 1}},
        {"status": 200, "headers": {f"h{i}": "v" for i in range(33)}},
        [200],
    ]
    out = []
    for _ in range(count):
        text = json.dumps(rng.choice(heads))
        out.append(mutate(text, rng) if rng.random() < 0.3 else text)
    return out


def py_xp2pinfo(text: str) -> dict[str, Any]:
    try:
        info = Xp2pInfo.parse(text)
    except XP2PError as exc:
        return {"error": int(exc.code)}
    return {
        "ok": {
            "productId": info.product_id,
            "deviceName": info.device_name,
            "fingerprint": info.fingerprint,
            "session": info.session,
            "sdkVersion": info.sdk_version,
            "dtlsFingerprint": info.dtls_fingerprint,
        }
    }


def py_answer(case: dict[str, str]) -> dict[str, Any]:
    try:
        check_answer_fingerprint(case["sdp"], case["fingerprint"])
    except LinkError as exc:
        return {"error": exc.reason}
    return {"ok": True}


def py_head(text: str) -> dict[str, Any]:
    try:
        head = parse_response_head(text)
    except FramingError:
        return {"error": "bad_framing"}
    return {"ok": {"status": head.status, "headers": head.headers}}


def not_strict_base64(text: str) -> bool:
    body = text[4:].partition("%")[0]
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    return bool(set(body) - alphabet) or len(body) % 4 == 1


def float_status(text: str) -> bool:
    try:
        doc = json.loads(text)
    except ValueError:
        return False
    return isinstance(doc, dict) and isinstance(doc.get("status"), float)


def float_version(text: str) -> bool:
    try:
        body = text[4:].partition("%")[0]
        doc = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except ValueError:
        return False
    return isinstance(doc, dict) and isinstance(doc.get("v"), float)


def test_random_link_inputs_match_python(tmp_path: Path) -> None:
    require_browser_tools()
    rng = random.Random(20261204)
    cases = {
        "xp2pinfo": xp2pinfo_cases(rng, 1500),
        "answers": answer_cases(rng, 1500),
        "heads": head_cases(rng, 800),
    }
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(cases), "utf-8")
    out = subprocess.run(
        ["node", str(WEB / "test" / "link_dump.mjs"), str(path)],
        capture_output=True,
        check=True,
        timeout=60,
    )
    js = json.loads(out.stdout)

    accepted = 0
    for text, got in zip(cases["xp2pinfo"], js["xp2pinfo"], strict=True):
        want = py_xp2pinfo(text)
        if float_version(text):
            continue  # JSON.parse reads 1.0 as 1: the one number JS cannot tell apart
        if "ok" in got:
            assert got == want, text  # never accepts what Python refuses, reads it alike
            accepted += 1
        elif not_strict_base64(text):
            assert got["error"] == -2001, text  # Python's decoder skips what JS refuses
        else:
            assert "ok" not in want and got["error"] == want["error"], text
    assert accepted > 100

    verdicts = set()
    for case, got in zip(cases["answers"], js["answers"], strict=True):
        want = py_answer(case)
        assert ("ok" in got) == ("ok" in want), case
        verdicts.add("ok" in got)
    assert verdicts == {True, False}

    for text, got in zip(cases["heads"], js["heads"], strict=True):
        want = py_head(text)
        if float_status(text):
            assert "ok" not in want, text  # Python wants an int; JS reads 200.0 as 200
            continue
        assert got == want, text
