"""Commands both ways: the device's query parser (``GET /command``) and the viewer's reply
parser. The query parser refuses with ValueError (BadRequest 400 when oversize); the reply
parser never refuses: every answer is some ``CommandResult``. The viewer's ``command_target``
(an app's text, not the network's) is fed too: XP2PError -2000 or a target the device's
link accepts and parses back to the same fields."""

from __future__ import annotations

import atheris
import harness

with atheris.instrument_imports(include=["xp2p.device.commands", "xp2p.viewer"]):
    from xp2p.device.commands import parse_query
    from xp2p.device.request import BadRequest
    from xp2p.errors import ErrorCode, XP2PError
    from xp2p.link.requests import check_target
    from xp2p.viewer.command_codec import CommandResult, command_target, parse_reply

_TYPES = ("success", "failure")


def _query(text: str) -> None:
    try:
        parse_query(text)
    except BadRequest as exc:
        assert exc.status == 400, exc
    except ValueError:
        pass


def _reply(status: int, body: bytes) -> None:
    result = parse_reply(status, body)
    assert isinstance(result, CommandResult)
    assert result.type in _TYPES, result
    assert result.ok == (200 <= status < 300 and result.type == "success"), result
    assert isinstance(result.errmsg, str) and isinstance(result.errcode, int), result


def _target(text: str) -> None:
    try:
        target = command_target(text)
    except XP2PError as exc:
        assert exc.code == ErrorCode.BAD_PARAM, exc
        return
    check_target(target)  # must not raise: the link would refuse to send it
    try:
        sent = parse_query(target.partition("?")[2])
    except ValueError:
        return  # a malformed command (a key given twice...) is the device's to refuse
    expected = parse_query(text.strip().removeprefix("?"))
    assert sent == expected, (sent, expected)


def TestOneInput(data: bytes) -> None:
    # b"q" + query | b"r" + 2-byte HTTP status + reply body | b"t" + an app's command
    kind, rest = data[:1], data[1:]
    if kind == b"q":
        _query(harness.text(rest))
    elif kind == b"r":
        _reply(int.from_bytes(rest[:2], "big") % 1000, rest[2:])
    else:
        _target(harness.text(rest))


if __name__ == "__main__":
    harness.main(TestOneInput, dictionary="query.dict")
