"""The JavaScript SDK's pure modules (web/src) against the Python ones they mirror: the same
error codes, the same event names, and the command codec giving the same results on the
shared vectors of web/test/command_vectors.json (run in node: they touch no DOM)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.browser.chromium import WEB, require_browser_tools
from xp2p.errors import ErrorCode, XP2PError
from xp2p.events import LogLevel, NatEvent, NotifySubtype, XP2PEvent
from xp2p.viewer.command_codec import (
    check_timeout,
    command_target,
    lenient_int,
    parse_reply,
    timed_out,
)

pytestmark = pytest.mark.browser

VECTORS = WEB / "test" / "command_vectors.json"
#: check_timeout's inputs, the same list as web/test/dump.mjs's (NaN and Infinity included).
TIMEOUT_CHECKS: list[Any] = [5, 0.5, 0, -1, float("inf"), float("nan"), "5", True, None]


@pytest.fixture(scope="module")
def js() -> dict[str, Any]:
    require_browser_tools()
    out = subprocess.run(
        ["node", str(WEB / "test" / "dump.mjs"), str(VECTORS)],
        capture_output=True,
        check=True,
        timeout=60,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@pytest.fixture(scope="module")
def vectors() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(VECTORS.read_text("utf-8"))
    return result


def command_of(case: dict[str, Any]) -> str:
    if "command" in case:
        return str(case["command"])
    parts = case["command_parts"]
    return str(parts["prefix"] + parts["repeat"] * parts["times"])


def as_expected(case: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    """A long command's target compared by sha256 and length, as the vectors store it."""
    if "command_parts" in case and "target" in got:
        target = str(got["target"]).encode()
        return {"target_sha256": hashlib.sha256(target).hexdigest(), "target_length": len(target)}
    return got


def py_target(command: str) -> dict[str, Any]:
    try:
        return {"target": command_target(command)}
    except XP2PError as exc:
        return {"error": int(exc.code), "message": exc.message}


def test_error_codes_are_the_pythons(js: dict[str, Any]) -> None:
    assert js["errors"] == {code.name: int(code) for code in ErrorCode}


def test_event_names_are_the_pythons(js: dict[str, Any]) -> None:
    python = {
        enum.__name__: {member.name: member.value for member in enum}
        for enum in (XP2PEvent, NotifySubtype, LogLevel, NatEvent)
    }
    assert js["events"] == python


def test_command_targets_match(js: dict[str, Any], vectors: dict[str, Any]) -> None:
    cases = vectors["targets"]
    assert len(js["targets"]) == len(cases) >= 10
    for case, got in zip(cases, js["targets"], strict=True):
        expect = case["expect"]
        assert as_expected(case, py_target(command_of(case))) == expect, case
        assert as_expected(case, got) == expect, case


def test_replies_match(js: dict[str, Any], vectors: dict[str, Any]) -> None:
    cases = vectors["replies"]
    assert len(js["replies"]) == len(cases) >= 20
    for case, got in zip(cases, js["replies"], strict=True):
        body = base64.b64decode(case["body_b64"])
        python = dataclasses.asdict(parse_reply(case["status"], body))
        assert python == case["expect"], case
        assert got == case["expect"], case
    types = {case["expect"]["type"] for case in cases}
    assert types == {"success", "failure"}


def test_timeouts_and_lenient_ints_match(js: dict[str, Any], vectors: dict[str, Any]) -> None:
    for case, got in zip(vectors["timeouts"], js["timeouts"], strict=True):
        assert dataclasses.asdict(timed_out(case["timeout"])) == case["expect"] == got
    for case, got in zip(vectors["lenient_ints"], js["lenient_ints"], strict=True):
        assert lenient_int(case["value"]) == case["expect"] == got, case
    python: list[Any] = []
    for value in TIMEOUT_CHECKS:
        try:
            python.append(check_timeout(value))
        except XP2PError as exc:
            python.append({"error": int(exc.code)})
    assert js["timeout_checks"] == python


def random_cases(seed: int, count: int) -> dict[str, Any]:
    """Replies and commands made of the pieces devices and apps send (JSON of every shape,
    status fields as numbers and strings, NULs, whitespace, non-ASCII, broken UTF-8), cut and
    spliced at random. Left out: what the JS module documents as different (bare NaN or
    Infinity, integers beyond 2**53, non-ASCII digits)."""
    rng = random.Random(seed)
    values = ['"0"', '"1"', " 2 ", '"+3"', '"1_0"', "3.0", "3.5", "-7", "true", "null", '"x"']
    values += ["[]", "{}", '[{"status":"405"}]', '"caméra"', '"\\u00e9"', "1e3", "-0"]
    keys = ["status", "errmsg", "message", "msg", "reason", "data", "Status"]
    junk = ["\x00", " ", "\t", "\r\n", "\x1c", "\u3000", "#", "%", "%2", "&", "=", "?", "é", "🎥"]

    def body() -> bytes:
        fields = [f'"{rng.choice(keys)}":{rng.choice(values)}' for _ in range(rng.randrange(0, 4))]
        text = "{" + ",".join(fields) + "}" if rng.random() < 0.8 else rng.choice(values)
        if rng.random() < 0.3:  # cut or spliced: not JSON any more
            cut = rng.randrange(len(text) + 1)
            text = text[:cut] + rng.choice(junk) + text[cut:]
        pad = "".join(rng.choice(["\x00", " ", "\n", ""]) for _ in range(rng.randrange(3)))
        raw = (pad + text + pad).encode()
        if rng.random() < 0.1:
            raw += bytes([rng.choice([0xFF, 0xC3, 0xE6, 0x80])])
        return raw

    def command() -> str:
        parts = [
            rng.choice([*junk, "action=user_define", "cmd=", '{"a":1}', "x"]) for _ in range(8)
        ]
        return "".join(parts[: rng.randrange(9)])

    statuses = [200, 204, 299, 300, 400, 404, 500, 502]
    return {
        "targets": [{"command": command()} for _ in range(count)],
        "replies": [
            {"status": rng.choice(statuses), "body_b64": base64.b64encode(body()).decode()}
            for _ in range(count)
        ],
        "timeouts": [],
        "lenient_ints": [],
    }


def test_random_replies_and_commands_match(tmp_path: Path) -> None:
    """A differential fuzz of the JS codec, the network parser of the browser SDK: random
    inputs through both implementations, the Python one being the reference."""
    require_browser_tools()
    cases = random_cases(seed=11, count=1500)
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(cases), "utf-8")
    out = subprocess.run(
        ["node", str(WEB / "test" / "dump.mjs"), str(path)],
        capture_output=True,
        check=True,
        timeout=60,
    )
    js = json.loads(out.stdout)
    kinds: set[str] = set()
    for case, got in zip(cases["replies"], js["replies"], strict=True):
        python = dataclasses.asdict(parse_reply(case["status"], base64.b64decode(case["body_b64"])))
        assert got == python, base64.b64decode(case["body_b64"])
        kinds.add(python["type"])
    for case, got in zip(cases["targets"], js["targets"], strict=True):
        assert got == py_target(case["command"]), case["command"]
    assert kinds == {"success", "failure"}
