"""The command codec of ``send_command`` (docs/protocol.md §10), sans-IO and standard library
only: a command as a request target, a device's reply as the seed's ``CommandResult``.

What ``CommandResult.type`` means, as the seed's sendCommand:

* ``success``: the device answered 2xx. ``data`` is the parsed JSON (or the text, if a
  user_define handler answered something that is not JSON). A reply that is a list is always
  an answer, whatever ``status`` its items carry: ``get_device_st``'s
  ``[{"status":"405",...}]`` says the device is full, which is a successful query of its state.
* ``failure``: the device refused. Either it answered non-2xx (bad query, no such channel,
  unknown command, the handler failed...; ``errcode`` is the JSON error's ``status``, else the
  HTTP status), or it answered 2xx with a JSON object whose own ``status`` is not 0 (a command
  that did not do its job, e.g. ``{"status":"1"}``); ``errcode`` is that status. ``data`` keeps
  whatever was parsed, and ``errmsg`` the device's ``errmsg`` (or its text).
* ``timeout``: no whole reply within ``timeout`` seconds; the request is cancelled on the link
  so the device stops working on it. ``errcode`` 408.
* ``error``: the request could not be made or finished: the link is closed or broke, or the
  reply was too large. ``errcode`` 502.

``status`` is always the device's HTTP status (0 when none arrived). Replies are parsed
leniently: numbers or strings, surrounding whitespace and trailing NULs (C devices send
their string terminator) are all fine.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from xp2p.errors import ErrorCode, XP2PError

#: The largest command, in bytes as sent (after escaping): what the device accepts
#: (docs/protocol.md §9).
MAX_COMMAND_BYTES = 16 * 1024
#: A command reply bigger than this is not a command reply (a month of recordings is ~10 KiB).
MAX_REPLY_BYTES = 4 * 1024 * 1024
TIMEOUT_ERRCODE = 408
ERROR_ERRCODE = 502
#: Printable ASCII but space and ``#``: what may stay unescaped in a request target. The
#: app's own ``%XX`` escapes, ``&`` and ``=`` pass untouched, so seed-style commands such as
#: ``cmd={"topic":"ptz",...}`` travel as written.
_TARGET_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "#")


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The seed's command result: ``type`` is success, failure, error or timeout."""

    type: str
    status: int = 0
    data: Any = None
    errcode: int = 0
    errmsg: str = ""

    @property
    def ok(self) -> bool:
        return self.type == "success"


def command_target(command: str) -> str:
    """The request target of ``command``; XP2PError -2000 if it is not a usable command."""
    if not isinstance(command, str):
        raise XP2PError(ErrorCode.BAD_PARAM, "command must be a str")
    query = command.strip().removeprefix("?")
    if not query:
        raise XP2PError(ErrorCode.BAD_PARAM, "command is empty")
    # Control characters and spaces cannot travel in a request target (HTTP/3 refuses CR, LF
    # and NUL outright); non-ASCII goes as UTF-8 escapes. The device decodes them back.
    escaped = quote(query, safe=_TARGET_SAFE)
    size = len(escaped)
    if size > MAX_COMMAND_BYTES:
        raise XP2PError(
            ErrorCode.BAD_PARAM,
            f"command too large ({size} bytes as sent, at most {MAX_COMMAND_BYTES})",
        )
    return "/command?" + escaped


def check_timeout(timeout: float) -> float:
    """``timeout`` as a float; XP2PError -2000 unless it is a positive finite number."""
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise XP2PError(ErrorCode.BAD_PARAM, f"timeout must be a positive number, not {timeout!r}")
    return float(timeout)


def timed_out(timeout: float) -> CommandResult:
    """The result of a command that got no whole reply within ``timeout`` seconds."""
    return CommandResult(
        "timeout", errcode=TIMEOUT_ERRCODE, errmsg=f"no reply within {timeout:g} s"
    )


def parse_reply(status: int, body: bytes) -> CommandResult:
    """A device's answer (HTTP ``status`` and body) as the seed's command result."""
    text = body.decode("utf-8", "replace").strip("\x00 \t\r\n")
    try:
        data: Any = json.loads(text)
    except (ValueError, RecursionError):
        data = text
    own_status = _status_of(data)
    errmsg = _errmsg_of(data, text)
    if 200 <= status < 300:
        if isinstance(data, dict) and own_status not in (None, 0):
            errmsg = errmsg or f"the device answered status {own_status}"
            return CommandResult("failure", status, data, own_status, errmsg)
        return CommandResult("success", status, data)
    errcode = own_status if own_status not in (None, 0) else status
    return CommandResult("failure", status, data, errcode, errmsg or f"HTTP {status}")


def _status_of(data: Any) -> int | None:
    """A reply object's ``status`` as an int, whether sent as a number or a string."""
    if not isinstance(data, dict):
        return None
    return lenient_int(data.get("status"))


def lenient_int(value: Any) -> int | None:
    """``3``, ``"3"``, ``" 3 "`` and ``3.0`` are 3; anything else is None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _errmsg_of(data: Any, text: str) -> str:
    if isinstance(data, dict):
        for key in ("errmsg", "message", "msg", "reason"):
            if isinstance(data.get(key), str):
                return str(data[key])
    return text[:500] if isinstance(data, str) else ""
