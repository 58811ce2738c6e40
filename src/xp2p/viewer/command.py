"""``send_command``: a command to the device and its parsed reply (docs/protocol.md §10).

The asyncio shell: one request on the service's link, bounded by the timeout. Building the
target and reading the reply (what each ``CommandResult.type`` means) is the sans-IO
`xp2p.viewer.command_codec`.
"""

from __future__ import annotations

import asyncio
import logging

from xp2p.events import LogLevel
from xp2p.link import LinkError
from xp2p.viewer.command_codec import (
    ERROR_ERRCODE,
    MAX_COMMAND_BYTES,
    MAX_REPLY_BYTES,
    TIMEOUT_ERRCODE,
    CommandResult,
    check_timeout,
    command_target,
    lenient_int,
    parse_reply,
    timed_out,
)
from xp2p.viewer.service import Service

logger = logging.getLogger("xp2p.viewer")

# The codec's names stay importable from here, where they lived before the split.
__all__ = [
    "ERROR_ERRCODE",
    "MAX_COMMAND_BYTES",
    "MAX_REPLY_BYTES",
    "TIMEOUT_ERRCODE",
    "CommandResult",
    "command_target",
    "lenient_int",
    "parse_reply",
    "send_command",
]


async def send_command(service: Service, command: str, timeout: float) -> CommandResult:
    target = command_target(command)
    timeout = check_timeout(timeout)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        # Link.request bounds the wait for the answer's head and cancels on its own timeout.
        response = await service.link.request("GET", target, timeout=timeout)
    except LinkError as exc:
        if exc.reason == "request_timeout":
            result = timed_out(timeout)
        else:
            result = CommandResult("error", errcode=ERROR_ERRCODE, errmsg=f"request failed: {exc}")
        return _logged(service, result)
    try:
        async with asyncio.timeout_at(deadline):
            body = await response.read(limit=MAX_REPLY_BYTES)
    except TimeoutError:
        response.cancel()
        return _logged(service, timed_out(timeout))
    except LinkError as exc:
        response.cancel()
        result = CommandResult(
            "error", response.status, errcode=ERROR_ERRCODE, errmsg=f"reply lost: {exc}"
        )
        return _logged(service, result)
    return _logged(service, parse_reply(response.status, body))


def _logged(service: Service, result: CommandResult) -> CommandResult:
    # Neither the command nor the reply is logged: user commands may carry private data.
    level = LogLevel.INFO if result.ok else LogLevel.WARN
    detail = f" {result.errcode} {result.errmsg}" if not result.ok else ""
    service.log(level, f"command: {result.type} ({result.status}){detail}")
    return result
