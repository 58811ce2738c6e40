"""The sans-IO parts of commands: query parsing, reply shapes and parsing, the PTZ head."""

from __future__ import annotations

import json
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xp2p import ErrorCode, XP2PError
from xp2p.device.commands import MAX_COMMAND_BYTES, parse_query, seed_json
from xp2p.device.ptz import Direction, PtzHead, PtzLimits, PtzSimulator
from xp2p.device.request import BadRequest
from xp2p.viewer.command import CommandResult, command_target, lenient_int, parse_reply

# ---- the device's command query -----------------------------------------------------------


def test_parse_query_decodes_escapes_and_keeps_plus() -> None:
    query = "action=user_define&channel=0&cmd=%7B%22a%22%3A%22b%20c%22%7D&x=1+1&"
    assert parse_query(query) == {
        "action": "user_define",
        "channel": "0",
        "cmd": '{"a":"b c"}',
        "x": "1+1",
    }
    assert parse_query("") == {}
    assert parse_query("flag&&a=") == {"flag": "", "a": ""}
    raw = 'cmd={"topic":"ptz","data":{"cmd":"ptz_up_press"},"message_id":1}'
    assert json.loads(parse_query(raw)["cmd"])["data"]["cmd"] == "ptz_up_press"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("a=1&a=2", "given twice"),
        ("=x", "empty parameter name"),
        ("cmd=%ff%fe", "not UTF-8"),
    ],
)
def test_parse_query_refuses_malformed(query: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_query(query)


def test_parse_query_size_bound_is_16_kib() -> None:
    head = "action=inner_define&cmd=get_device_st&pad="
    exact = head + "x" * (MAX_COMMAND_BYTES - len(head))
    assert len(parse_query(exact)["pad"]) == MAX_COMMAND_BYTES - len(head)
    with pytest.raises(BadRequest) as e:
        parse_query(exact + "x")
    assert e.value.status == 400
    assert e.value.reason == f"command too large ({MAX_COMMAND_BYTES + 1} bytes, at most 16384)"
    # the bound is on bytes, not characters
    with pytest.raises(BadRequest):
        parse_query("pad=" + "é" * (MAX_COMMAND_BYTES // 2))


@given(st.dictionaries(st.text(min_size=1), st.text(), max_size=8))
def test_target_escaping_round_trips_through_the_device_parser(params: dict[str, str]) -> None:
    """What the viewer sends, the device decodes back exactly (keys and values with & = %
    escaped by the app, as a form would)."""
    from urllib.parse import quote

    command = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params.items())
    if not command.strip():
        return
    target = command_target(command)
    assert all(0x21 <= ord(c) < 0x7F for c in target), target
    assert parse_query(target.partition("?")[2]) == params


@given(st.text(max_size=200))
def test_raw_text_commands_survive_escaping(text: str) -> None:
    """A seed-style raw command (JSON, spaces, non-ASCII, controls) arrives as written, as
    long as it has no & or % of its own."""
    text = text.replace("&", "").replace("%", "")
    target = command_target("cmd=" + text) if ("cmd=" + text).strip() else None
    if target is None:
        return
    assert "\n" not in target and " " not in target and "\x00" not in target
    assert unquote(target.partition("?")[2]) == ("cmd=" + text).strip()


def test_command_target_rejects_bad_commands() -> None:
    for bad in ("", "   ", "?"):
        with pytest.raises(XP2PError) as e:
            command_target(bad)
        assert e.value.code == ErrorCode.BAD_PARAM and "empty" in e.value.message
    with pytest.raises(XP2PError) as e:
        command_target(b"action=inner_define")  # type: ignore[arg-type]
    assert e.value.code == ErrorCode.BAD_PARAM and "str" in e.value.message
    head = "action=inner_define&cmd=x&pad="
    assert command_target(head + "x" * (MAX_COMMAND_BYTES - len(head)))
    with pytest.raises(XP2PError) as e:
        command_target(head + "x" * (MAX_COMMAND_BYTES - len(head) + 1))
    assert e.value.code == ErrorCode.BAD_PARAM and "command too large" in e.value.message
    # measured as sent: a space travels as %20
    with pytest.raises(XP2PError):
        command_target(head + " " * (MAX_COMMAND_BYTES // 3) + "x")


def test_seed_json_turns_numbers_into_strings() -> None:
    reply = {"a": 1, "b": [2.5, {"c": -3}], "d": "x", "e": True, "f": None}
    assert seed_json(reply) == {"a": "1", "b": ["2.5", {"c": "-3"}], "d": "x", "e": True, "f": None}


# ---- the viewer's reply parser ------------------------------------------------------------


def test_parse_reply_success_shapes() -> None:
    body = b'[{"status":"405","appConnectNum":"2"}]'
    assert parse_reply(200, body) == CommandResult(
        "success", 200, [{"status": "405", "appConnectNum": "2"}]
    )
    assert parse_reply(200, b'{"status":"0"}\x00') == CommandResult("success", 200, {"status": "0"})
    assert parse_reply(200, b' \n{"status":0,"progress":1200}\r\n\x00\x00').data == {
        "status": 0,
        "progress": 1200,
    }
    assert parse_reply(200, b"plain text\x00") == CommandResult("success", 200, "plain text")
    assert parse_reply(204, b"").data == ""


def test_parse_reply_failures() -> None:
    refused = parse_reply(406, b'{"status":"406","errmsg":"unknown command \'x\'"}')
    assert refused == CommandResult(
        "failure",
        406,
        {"status": "406", "errmsg": "unknown command 'x'"},
        406,
        "unknown command 'x'",
    )
    text = parse_reply(400, b"bad query: parameter 'a' given twice")
    assert (text.type, text.errcode, text.errmsg) == (
        "failure",
        400,
        "bad query: parameter 'a' given twice",
    )
    assert parse_reply(500, b"").errmsg == "HTTP 500"
    own = parse_reply(200, b'{"status": 1, "msg": "not playing"}\x00')
    assert (own.type, own.status, own.errcode, own.errmsg) == ("failure", 200, 1, "not playing")
    assert parse_reply(200, b'{"status":"2"}').errmsg == "the device answered status 2"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3, 3),
        ("3", 3),
        (" -7 ", -7),
        (3.0, 3),
        (3.5, None),
        ("x", None),
        (True, None),
        (None, None),
    ],
)
def test_lenient_int(value: object, expected: int | None) -> None:
    assert lenient_int(value) == expected


@given(st.binary(max_size=300), st.integers(0, 999))
def test_parse_reply_never_raises(body: bytes, status: int) -> None:
    result = parse_reply(status, body)
    assert result.type in ("success", "failure")
    assert result.status == status


# ---- the PTZ head (injected clock) --------------------------------------------------------


def test_ptz_head_moves_at_speed_and_stops_at_limits() -> None:
    head = PtzHead(PtzLimits(pan_min=-90, pan_max=90, tilt_min=-10, tilt_max=30, speed=20))
    assert head.press(Direction.RIGHT, now=100.0) is False
    assert head.position(101.0) == (20.0, 0.0)
    assert head.release(now=102.5) is False
    assert head.position(200.0) == (50.0, 0.0)  # stands still after release
    assert head.press(Direction.RIGHT, now=200.0) is False
    assert head.position(201.0) == (70.0, 0.0)
    assert head.position(230.0) == (90.0, 0.0)  # clamped
    assert head.at_limit(Direction.RIGHT, 230.0)
    assert head.release(now=230.0) is True  # stopped at the right limit
    assert head.press(Direction.RIGHT, now=231.0) is True  # cannot go further
    assert head.press(Direction.LEFT, now=232.0) is False  # the other way is free
    assert head.position(233.0) == (70.0, 0.0)
    assert head.press(Direction.UP, now=233.0) is False  # switching axis keeps the pan
    assert head.release(now=236.0) is True
    assert head.position(236.0) == (70.0, 30.0)
    assert head.press(Direction.DOWN, now=236.0) is False
    assert head.position(238.0) == (70.0, -10.0)
    assert head.release(now=238.0) is True
    assert head.release(now=239.0) is False  # not moving: no direction to be at the apex of


def test_ptz_head_ignores_a_clock_that_steps_back() -> None:
    head = PtzHead()
    head.press(Direction.LEFT, now=10.0)
    assert head.position(5.0) == (0.0, 0.0)


def test_ptz_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        PtzLimits(pan_min=10)
    with pytest.raises(ValueError):
        PtzLimits(speed=0)


def ptz(cmd: str, message_id: int = 1) -> str:
    return json.dumps({"topic": "ptz", "data": {"cmd": cmd}, "message_id": message_id})


def test_ptz_simulator_keeps_one_head_per_channel() -> None:
    now = [0.0]
    sim = PtzSimulator(PtzLimits(speed=100), clock=lambda: now[0])
    assert sim.handle(0, ptz("ptz_up_press")) == {"apex": "no"}
    now[0] = 5.0
    assert sim.handle(0, ptz("ptz_up_press")) == {"apex": "yes"}  # 90 degrees reached
    assert sim.handle(1, ptz("ptz_up_press")) == {"apex": "no"}  # channel 1 is elsewhere
    assert sim.handle(0, ptz("ptz_release_pre")) == {"apex": "yes"}
    assert sim.heads[0].position(now[0]) == (0.0, 90.0)
    assert sim.heads[1].position(now[0]) == (0.0, 0.0)


@pytest.mark.parametrize(
    ("text", "status", "reason"),
    [
        ("not json", 400, "not JSON"),
        ("[1]", 400, "JSON object"),
        ('{"topic":"light","data":{"cmd":"on"}}', 406, "unsupported topic"),
        ('{"topic":"ptz","data":{}}', 400, "data.cmd"),
        ('{"topic":"ptz","data":"ptz_up_press"}', 400, "data.cmd"),
        (ptz("ptz_spin_press"), 406, "unknown ptz command"),
    ],
)
def test_ptz_simulator_refuses_bad_commands(text: str, status: int, reason: str) -> None:
    with pytest.raises(BadRequest) as e:
        PtzSimulator(clock=lambda: 0.0).handle(0, text)
    assert e.value.status == status and reason in e.value.reason
