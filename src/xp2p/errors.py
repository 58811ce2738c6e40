"""The seed's error codes (docs/api.md, Error codes) and the one exception the public API raises."""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    OK = 0
    BAD_PARAM = -2000
    BAD_XP2P_INFO = -2001
    NOT_INITIALISED = -2002
    INIT_REPEATED = -2003
    UNSUPPORTED = -2004
    DEVICE_VERSION_TOO_LOW = -2005
    #: xp2p's own (the seed has none): the cloud could not be reached or did not answer in
    #: time, which an app retries later, unlike -2000's wrong parameters.
    CLOUD_UNREACHABLE = -2006
    NAT_PROBE_STARTED_TWICE = -2201
    NAT_PROBE_ERROR = -2202
    LOCAL_SERVER_ERROR = -2301
    SERVICE_ALREADY_STARTED = -2401
    START_STREAM_FAILED = -2402
    SERVICE_NOT_STARTED = -2403
    ENVIRONMENT_UNSUPPORTED = -2404
    ENCRYPT_FAILED = -2501
    DECRYPT_FAILED = -2502
    VOICE_FAILED = -2601
    DOWNLOAD_FAILED = -2701
    DEVICE_STATE_QUERY_FAILED = -2801


class XP2PError(Exception):
    """An error of the public API; ``code`` is one of the seed's codes.

    Messages never carry secrets (keys, grants, passwords): they are safe to log.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{message} ({int(code)})")
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"XP2PError({self.code.name}, {self.message!r})"
