"""Event names of the seed's callbacks (docs/api.md), as string enums so they compare equal to
the seed's strings (``"notify"``, ``"connected"``...)."""

from __future__ import annotations

from enum import StrEnum


class XP2PEvent(StrEnum):
    """First argument of ``msg_callback(event, subtype, detail)``."""

    NOTIFY = "notify"
    LOG = "log"


class NotifySubtype(StrEnum):
    """Second argument of a ``notify``. The stream's subtypes (``request`` ... ``close``) are
    the pull's alone: a talk session has its own (``voice_*``), so a seed-style msg_callback
    that ends the video on ``close``, ``eof`` or ``fail`` never ends it when a talk ends."""

    CONNECTED = "connected"
    REQUEST = "request"
    PARSED = "parsed"
    EOF = "eof"
    FAIL = "fail"
    CLOSE = "close"
    DISCONNECT = "disconnect"
    #: Talk-back: the request went out / the device's answer headers came / the device took
    #: every byte / the session ended (always its last notify; ``ok`` says how).
    VOICE_REQUEST = "voice_request"
    VOICE_PARSED = "voice_parsed"
    VOICE_SUCCESS = "voice_success"
    VOICE_CLOSE = "voice_close"
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


class XP2PEventEnum:
    """The seed's spelling of `XP2PEvent` (``p2pModule.XP2PEventEnum.Notify``)."""

    Notify = XP2PEvent.NOTIFY
    Log = XP2PEvent.LOG


class XP2PNotify_SubType:
    """The seed's spelling of `NotifySubtype` (``p2pModule.XP2PNotify_SubType.Disconnect``)."""

    Connected = NotifySubtype.CONNECTED
    Request = NotifySubtype.REQUEST
    Parsed = NotifySubtype.PARSED
    Eof = NotifySubtype.EOF
    Fail = NotifySubtype.FAIL
    Close = NotifySubtype.CLOSE
    Disconnect = NotifySubtype.DISCONNECT
    VoiceRequest = NotifySubtype.VOICE_REQUEST
    VoiceParsed = NotifySubtype.VOICE_PARSED
    VoiceSuccess = NotifySubtype.VOICE_SUCCESS
    VoiceClose = NotifySubtype.VOICE_CLOSE
    Swarm = NotifySubtype.SWARM
    SwarmState = NotifySubtype.SWARM_STATE
