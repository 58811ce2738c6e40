"""What every device request handler works with: the device's state, the request, its errors.

This is the leaf of ``xp2p.device``'s request side: every handler module (``live``,
``playback``, ``files``, ``voice``, ``commands``, ``recordings``, ``capacity``, ``ptz``)
imports it, and it imports none of them (their types appear here for the type checker
alone), so ``routes`` can import the handlers without an import circle.

The state one request module keeps for the others (viewer slots, the open talk session, a
channel's recordings, ...) is a typed field of ``DeviceState`` or ``Channel``, None until the
module that owns it first needs it: which module reads and writes a field is in its comment.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from xp2p.auth import AccessGrant
from xp2p.device.channel import LiveChannel
from xp2p.device.config import DeviceConfig
from xp2p.link import IncomingRequest, StreamClosed

if TYPE_CHECKING:
    from xp2p.device.capacity import ViewerSlots
    from xp2p.device.commands import UserCommandHandler
    from xp2p.device.files import DigestCache
    from xp2p.device.playback import OpenPlayback
    from xp2p.device.ptz import PtzSimulator
    from xp2p.device.recordings import ChannelRecordings
    from xp2p.device.voice import TalkSession

QUALITIES = ("standard", "high", "super")


class BadRequest(Exception):
    """Answer the request with ``status`` and ``reason`` as a text body."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Channel:
    """One camera channel: a LiveChannel per quality (often the same one for all)."""

    number: int
    live: dict[str, LiveChannel]
    #: ``recordings``: the channel's store and recorder; None when the device does not record
    #: (or the folder was unusable at start).
    recordings: ChannelRecordings | None = None
    #: ``playback``: the open playback of each link (by link id) on this channel; only the
    #: newest one of a link can be steered by the playback commands.
    playbacks: dict[int, OpenPlayback] = field(default_factory=dict)


@dataclass
class DeviceState:
    """The device as its request handlers see it: shared by every link."""

    config: DeviceConfig
    channels: dict[int, Channel]
    #: ``capacity``: which links pull video (made from ``config.max_viewers`` on first use).
    viewer_slots: ViewerSlots | None = None
    #: ``commands``: the device maker's user_define handler (``DeviceAgent.user_command``).
    user_command: UserCommandHandler | None = None
    #: ``commands``: the PTZ simulator answering user_define when no handler is set.
    ptz: PtzSimulator | None = None
    #: ``voice``: the open talk session, exactly while one is open (one per device), so
    #: ``get_device_st type=voice`` answers busy then.
    talk: TalkSession | None = None
    #: ``files``: sha256 of served files.
    digests: DigestCache | None = None


@dataclass
class RequestContext:
    """Everything a handler needs about one request."""

    device: DeviceState
    request: IncomingRequest
    params: dict[str, str]
    grant: AccessGrant

    def require(self, permission: str) -> None:
        if permission not in self.grant.permissions:
            raise BadRequest(403, f"the access grant does not allow {permission}")

    def channel(self) -> Channel:
        raw = self.params.get("channel", "0")
        # ASCII digits: str.isdigit() also takes "²", which int() refuses with a ValueError.
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 4:
            raise BadRequest(400, f"channel must be a small non-negative integer, got {raw!r}")
        channel = self.device.channels.get(int(raw))
        if channel is None:
            raise BadRequest(404, f"no channel {int(raw)}")
        return channel


Handler = Callable[[RequestContext], Awaitable[None]]


def check_params(params: dict[str, str]) -> None:
    """Rules every request shares: internal keys are ours, user keys never start with ``_``."""
    for key in params:
        if key.startswith("_") and key not in ("_crypto", "_token"):
            raise BadRequest(400, f"unknown internal parameter {key!r}")


async def respond_text(request: IncomingRequest, status: int, text: str) -> None:
    """A short text answer (errors, command replies); silently dropped if the viewer left."""
    if request.responded or request.closed:
        return
    try:
        await request.respond(
            status, [("content-type", "text/plain; charset=utf-8")], body=text.encode()
        )
    except StreamClosed:
        pass
