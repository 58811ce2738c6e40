"""``send_command``: a command to the device and its parsed reply (SPEC §4). Issue 3."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xp2p.errors import ErrorCode, XP2PError
from xp2p.viewer.service import Service


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The seed's command result: ``type`` is success, failure, error or timeout."""

    type: str
    status: int = 0
    data: Any = None
    errcode: int = 0
    errmsg: str = ""


async def send_command(service: Service, command: str, timeout: float) -> CommandResult:
    raise XP2PError(ErrorCode.UNSUPPORTED, "send_command is not implemented yet")
