"""Requests over WebRTC data channels: the pure framing (docs/protocol.md §8b).

One data channel carries one request. Text messages are control, binary messages are body:

* requester → device: a head ``{"method", "target", "headers": {name: value}}`` (text), the
  request body as binary messages, then the end marker ``{"end": true}`` (text);
* device → requester: a head ``{"status", "headers": {...}}`` (text), the response body as
  binary messages, the end marker, then the device closes the channel.

A channel that closes before its end marker was abandoned (the QUIC equivalent is a reset).
Every parser here is bounded and raises ``FramingError`` with a code, never anything else,
so a hostile peer gets a 400 naming what was wrong (fuzz/fuzz_datachannel_framing.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from xp2p.link.requests import check_target

#: A head is a method, a target (≤ 3000-byte query plus its path) and a few headers.
MAX_HEAD_BYTES = 8 * 1024
MAX_HEADERS = 32
#: Body messages the sender splits its bytes into; browsers deliver up to 64 KiB reliably.
BODY_MESSAGE_BYTES = 16 * 1024
#: The largest message either side accepts (the SCTP default maximum for a remote peer).
MAX_MESSAGE_BYTES = 64 * 1024
METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "HEAD"})
END = '{"end":true}'


class FramingError(ValueError):
    """A message that breaks the framing; ``code`` is what the 400 answer carries."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class RequestHead:
    method: str
    target: str
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> str:
        doc = {"method": self.method, "target": self.target, "headers": self.headers}
        return json.dumps(doc, separators=(",", ":"))


@dataclass(frozen=True)
class ResponseHead:
    status: int
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> str:
        return json.dumps({"status": self.status, "headers": self.headers}, separators=(",", ":"))


def _control(message: str | bytes, what: str) -> dict[str, object]:
    if isinstance(message, bytes):
        raise FramingError("bad_framing", f"{what} must be a text message, got binary")
    if len(message.encode("utf-8", "surrogatepass")) > MAX_HEAD_BYTES:
        raise FramingError("head_too_large", f"{what} is over {MAX_HEAD_BYTES} bytes")
    try:
        doc = json.loads(message)
    except (ValueError, RecursionError) as exc:
        raise FramingError("bad_framing", f"{what} is not JSON") from exc
    if not isinstance(doc, dict):
        raise FramingError("bad_framing", f"{what} is not a JSON object")
    return doc


def _encodable(text: str) -> bool:
    """JSON's ``\\ud800`` escapes make lone surrogates, which a QUIC link (bytes on the
    wire) can never deliver and which the routes' ``str.encode`` would trip over."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _headers(raw: object) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or len(raw) > MAX_HEADERS:
        raise FramingError("bad_headers", f"headers must be an object of ≤ {MAX_HEADERS} names")
    out: dict[str, str] = {}
    for name, value in raw.items():
        if not isinstance(value, str) or not name or name.startswith(":"):
            raise FramingError("bad_headers", "header names and values must be strings")
        if not name.isascii() or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in name):
            raise FramingError("bad_headers", "header names are printable ASCII")
        if any(c in "\r\n\0" for c in value) or not _encodable(value):
            raise FramingError("bad_headers", "header values carry no line breaks")
        out[name.lower()] = value
    return out


def parse_request_head(message: str | bytes) -> RequestHead:
    """The first message on a request channel."""
    doc = _control(message, "request head")
    method, target = doc.get("method"), doc.get("target")
    if not isinstance(method, str) or method not in METHODS:
        raise FramingError("bad_method", f"method must be one of {', '.join(sorted(METHODS))}")
    if not isinstance(target, str) or not _encodable(target):
        raise FramingError("bad_target", "target must be a UTF-8 string")
    try:
        check_target(target)
    except ValueError as exc:
        raise FramingError("bad_target", str(exc)) from None
    return RequestHead(method, target, _headers(doc.get("headers")))


def parse_response_head(message: str | bytes) -> ResponseHead:
    """The first message the device sends back on a request channel."""
    doc = _control(message, "response head")
    status = doc.get("status")
    if type(status) is not int or not 100 <= status <= 599:
        raise FramingError("bad_status", "status must be an integer 100-599")
    return ResponseHead(status, _headers(doc.get("headers")))


def is_end(message: str | bytes) -> bool:
    """Whether a control message after the head is the end marker; anything else is an
    error (a body is binary, a second head is not allowed)."""
    doc = _control(message, "control message")
    if doc != {"end": True}:
        raise FramingError("bad_framing", "after the head only binary body and the end marker")
    return True


def check_body(message: bytes) -> bytes:
    if len(message) > MAX_MESSAGE_BYTES:
        raise FramingError("message_too_large", f"body message over {MAX_MESSAGE_BYTES} bytes")
    return message


def split_body(data: bytes) -> list[bytes]:
    """``data`` as body messages of at most ``BODY_MESSAGE_BYTES``."""
    return [data[i : i + BODY_MESSAGE_BYTES] for i in range(0, len(data), BODY_MESSAGE_BYTES)]
