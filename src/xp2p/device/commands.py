"""``GET /command``: the inner_define command table and the user_define handler (SPEC §4).

Not implemented yet (issue 3): the registry below is the extension point other modules
(playback, recordings) add their commands to.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from xp2p.device.routes import BadRequest, RequestContext

InnerCommand = Callable[[RequestContext], Awaitable[Any]]
INNER_COMMANDS: dict[str, InnerCommand] = {}


def inner_command(name: str) -> Callable[[InnerCommand], InnerCommand]:
    """Register ``action=inner_define&cmd=<name>``; the handler returns the JSON reply."""

    def register(handler: InnerCommand) -> InnerCommand:
        INNER_COMMANDS[name] = handler
        return handler

    return register


async def serve(ctx: RequestContext) -> None:
    raise BadRequest(400, "this device does not support commands yet")
