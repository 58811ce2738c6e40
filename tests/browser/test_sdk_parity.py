"""The JavaScript SDK's pure modules (web/src) against the Python ones they mirror: the same
error codes, the same event names, and the command codec giving the same results on the
shared vectors of web/test/command_vectors.json (run in node: they touch no DOM)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import subprocess
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
