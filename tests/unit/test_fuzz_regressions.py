"""Every crash the fuzz tier (fuzz/) found, as the input that made it, fed straight to the
parser: each must now be refused with the parser's documented error, by type and message.

Non-ASCII digits are one family: ``str.isdigit()`` is true of "²" and of other scripts'
digits, which ``int()`` then refuses with a bare ValueError. Lone surrogates are the
other: a JSON ``"\\ud800"`` escape decodes to a str that ``.encode()`` refuses with
UnicodeEncodeError.
"""

from __future__ import annotations

import json
import re
from typing import TypeVar

import pytest

from xp2p.auth import AccessGrant
from xp2p.cloud.device_ws import BadMessage, parse_device_frame
from xp2p.device.commands import parse_query
from xp2p.device.config import DeviceConfig
from xp2p.device.request import BadRequest, Channel, DeviceState, RequestContext
from xp2p.link.config import IceServer
from xp2p.link.requests import IncomingRequest
from xp2p.link.transport import StreamState
from xp2p.swarm.edge_messages import (
    JoinRequest,
    JoinResponse,
    LiveInfo,
    MessageError,
    parse_edge_message,
)

FINGERPRINT = "A" * 43
E = TypeVar("E", bound=Exception)


def refused(error: type[E], message: str) -> pytest.RaisesExc[E]:
    """``pytest.raises`` of exactly this error type and this whole message."""
    return pytest.raises(error, match=f"^{re.escape(message)}$")


# --- fuzz_edge_messages ----------------------------------------------------------------------


def test_join_url_with_a_lone_surrogate_is_a_message_error() -> None:
    # found: UnicodeEncodeError in check_source_url's len(url.encode())
    with refused(MessageError, "url is not valid Unicode text") as caught:
        JoinRequest.from_json(b'{"url":"\\ud800"}')
    assert caught.value.code == "bad_request"


@pytest.mark.parametrize("nat_type", [[], {}, [["full-cone"]]])
def test_unhashable_nat_type_is_a_message_error(nat_type: object) -> None:
    # found: TypeError "unhashable type" from the set lookup in _nat
    neighbour = {"peer_id": "peer-2", "fingerprint": FINGERPRINT, "nat_type": nat_type}
    frame = json.dumps({"type": "neighbours", "neighbours": [neighbour]})
    with refused(MessageError, "nat_type must be a NatType value"):
        parse_edge_message(frame)
    join = {"url": "http://h/x.flv", "upload": True, "fingerprint": FINGERPRINT}
    with refused(MessageError, "nat_type must be a NatType value"):
        JoinRequest.from_json(json.dumps({**join, "nat_type": nat_type}))


@pytest.mark.parametrize("stream_id", ["\u00b2", "\u0661\u0662", "1" * 5000, "0" * 21 + "1"])
def test_stream_id_of_non_ascii_or_too_many_digits_is_a_message_error(stream_id: str) -> None:
    # found: ValueError from int() ("invalid literal", "Exceeds the limit (4300 digits)")
    live = {"stream_id": stream_id, "live_seq": 1, "keyframe_seq": 0, "init_id": 0}
    with refused(MessageError, "stream_id must be a u64 as a decimal string"):
        LiveInfo.from_json(json.dumps({**live, "state": "live"}))
    with pytest.raises(MessageError):
        JoinResponse.from_json(json.dumps({"stream_id": stream_id}))


def test_stream_ids_the_edge_sends_still_parse() -> None:
    live = {"live_seq": None, "keyframe_seq": None, "init_id": None, "state": "starting"}
    for stream_id in (0, 1, 2**64 - 1):
        assert LiveInfo.from_json({**live, "stream_id": str(stream_id)}).stream_id == stream_id


# --- fuzz_cloud_signalling -------------------------------------------------------------------


@pytest.mark.parametrize("field", ["product_id", "device_name", "proof"])
def test_device_sign_in_with_a_lone_surrogate_is_a_bad_message(field: str) -> None:
    # found: UnicodeEncodeError in verify_device_proof (product_id.encode()), which ended the
    # gateway's socket handler with a traceback instead of a bad_message answer
    auth = {"type": "auth", "product_id": "DEMO", "device_name": "cam1", "proof": "ab" * 32}
    frame = json.dumps({**auth, field: "\ud800"})
    with refused(BadMessage, f"{field} is not valid Unicode text"):
        parse_device_frame(frame)


# --- fuzz_link_requests ----------------------------------------------------------------------

_DEVICE = DeviceState(DeviceConfig("http://c", "DEMO", "cam1", "s"), {0: Channel(0, {})})
_GRANT = AccessGrant("app", "DEMO", "cam1", frozenset({"live"}), 0, 300, "g1")


class _NoLink:
    id = 1
    closed = False
    close_reason = ""


def test_channel_of_non_ascii_digits_is_a_bad_request() -> None:
    # found, as the fuzzer wrote it: ValueError from int("²") in RequestContext.channel,
    # which DeviceRoutes answered 500 "internal error" with a logged traceback
    crash = b":method=GET\n:path=/command?&er_deif&e&channel=\xc2\xb2&%zzcn:method=n5:&$F\x00=1&c"
    raw = [
        (name, value) for name, _, value in (line.partition(b"=") for line in crash.split(b"\n"))
    ]
    request = IncomingRequest.from_headers(_NoLink(), StreamState(0), raw)  # type: ignore[arg-type]
    assert request is not None
    params = parse_query(request.query)
    assert params["channel"] == "\u00b2"
    context = RequestContext(_DEVICE, request, params, _GRANT)
    message = "channel must be a small non-negative integer, got '\u00b2'"
    with refused(BadRequest, message) as caught:
        context.channel()
    assert caught.value.status == 400
    for digits in ("\u0661", "%D9%A1"):
        params = parse_query(f"channel={digits}")
        context = RequestContext(_DEVICE, request, params, _GRANT)
        got = params["channel"]
        with refused(BadRequest, f"channel must be a small non-negative integer, got {got!r}"):
            context.channel()


# --- fuzz_device_session ---------------------------------------------------------------------


@pytest.mark.parametrize("username", ["\u00b2:DEMO/cam1", "\u0661:u", "9" * 5000 + ":u"])
def test_turn_username_with_a_non_ascii_expiry_has_no_expiry(username: str) -> None:
    # found: ValueError from int() in IceServer.expires_at, on an ice_servers entry the cloud
    # sends (the viewer reads the expiry to refresh its sign-in before the TURN credentials)
    assert IceServer(("turn:203.0.113.10:3478",), username, "c").expires_at is None
    assert IceServer(("turn:h",), "1700000300:DEMO/cam1", "c").expires_at == 1700000300


# --- fuzz_datachannel_framing ----------------------------------------------------------------


def test_a_candidate_port_with_a_non_ascii_digit_is_dropped() -> None:
    # found: ValueError from int() on "6030²3" while filtering a WebRTC offer's candidates
    from xp2p.link.webrtc_sdp import usable_candidates

    line = "a=candidate:1 1 udp 1 192.0.2.8 6030\u00b23 typ host"
    assert "a=candidate" not in usable_candidates(f"v=0\r\n{line}\r\n")


def test_a_malformed_fingerprint_line_cannot_balance_a_hidden_one() -> None:
    # found: a malformed a=fingerprint line (counted, not matched) beside a CR-prefixed good
    # one (matched, not counted) passed the viewer's check
    from xp2p.link.errors import LinkError
    from xp2p.link.webrtc_sdp import check_answer_fingerprint

    good = ":".join(["AB", "CD", "EF", "12", "34", "56", "78", "9A"] * 4)
    answer = f"v=0\r\na=fingerprint:sha-25iM:S *\r\n\ra=fingerprint:sha-256 {good}\r\n"
    message = "the device's answer has no well-formed DTLS fingerprint"
    with refused(LinkError, message):
        check_answer_fingerprint(answer, "q83vEjRWeJqrze8SNFZ4mqvN7xI0Vniaq83vEjRWeJo")
