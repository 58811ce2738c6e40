"""Event names of the seed's callbacks (docs/api.md), as string enums so they compare equal to
the seed's strings (``"notify"``, ``"connected"``...)."""

from __future__ import annotations

from enum import StrEnum


class XP2PEvent(StrEnum):
    """First argument of ``msg_callback(event, subtype, detail)``."""

    NOTIFY = "notify"
    LOG = "log"


class NotifySubtype(StrEnum):
    CONNECTED = "connected"
    REQUEST = "request"
    PARSED = "parsed"
    SUCCESS = "success"
    EOF = "eof"
    FAIL = "fail"
    CLOSE = "close"
    DISCONNECT = "disconnect"
    #: 1vN: the service's statistics, about every 2 s (`SwarmStats` as a dict).
    SWARM = "swarm"
    #: 1vN: the room's state changed (stalled, ended, live) or the service re-joined.
    SWARM_STATE = "swarm_state"


class LogLevel(StrEnum):
    LOG = "log"
    INFO = "info"
    WARN = "warn"
    ERROR = "error"


class NatEvent(StrEnum):
    """Events of ``init(event_handler=...)``."""

    NAT_CHANGED = "natChanged"
    NAT_ERROR = "natError"
