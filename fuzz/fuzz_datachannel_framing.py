"""WebRTC link input as the device and the viewer read it (docs/protocol.md §7b).

``q`` a request head (the first message on a ``req`` data channel; ``Q``: the same bytes as
a binary message), ``r`` a response head, ``e`` a control message after the head, ``b`` a
body message; ``o`` an offer SDP as the device reads it (``parse_webrtc_offer``: bounds,
then only the candidates it may probe), ``a`` an answer SDP as the viewer checks it against
a fixed xp2pInfo fingerprint.

Refusals: ``FramingError`` (framing), ``LinkError`` (SDP); what parses encodes back to
itself, and an answer that passes names only the expected fingerprint.
"""

from __future__ import annotations

import re

import atheris
import harness

with atheris.instrument_imports(include=["xp2p.link.datachannel_framing", "xp2p.link.webrtc_sdp"]):
    from xp2p.link import datachannel_framing as framing
    from xp2p.link.errors import LinkError
    from xp2p.link.webrtc_sdp import (
        check_answer_fingerprint,
        count_candidates,
        parse_webrtc_offer,
        sdp_fingerprint,
        split_mdns_candidates,
        usable_candidates,
    )

_SHA256 = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){31}")
#: The fingerprint the answer target expects (xp2pInfo's ``w``).
FINGERPRINT = "q83vEjRWeJqrze8SNFZ4mqvN7xI0Vniaq83vEjRWeJo"


def _framing(kind: bytes, data: bytes) -> None:
    message: str | bytes = data if kind == b"Q" else harness.text(data)
    try:
        if kind in (b"q", b"Q"):
            head = framing.parse_request_head(message)
            assert framing.parse_request_head(head.encode()) == head
        elif kind == b"r":
            response = framing.parse_response_head(message)
            assert framing.parse_response_head(response.encode()) == response
        elif kind == b"e":
            assert framing.is_end(message)
        else:
            assert framing.check_body(data) == data
            assert b"".join(framing.split_body(data)) == data
    except framing.FramingError as exc:
        assert exc.code and str(exc), exc


def _sdp(kind: bytes, data: bytes) -> None:
    sdp = harness.text(data)
    try:
        if kind == b"o":
            offer = {"v": 1, "transport": "webrtc", "grant": "g", "sdp": sdp}
            parsed, grant = parse_webrtc_offer(offer)
            assert grant == "g" and 0 < count_candidates(parsed) <= count_candidates(sdp) <= 32
            assert usable_candidates(parsed) == parsed  # the filter is idempotent
            rest, names = split_mdns_candidates(parsed)  # every candidate lands on one side
            assert count_candidates(rest) + len(names) == count_candidates(parsed)
            assert all(".local" in n for n in names)
        else:
            check_answer_fingerprint(sdp, FINGERPRINT)
            expected = sdp_fingerprint(FINGERPRINT)
            # However a parser splits the lines (LF, CRLF, aiortc's splitlines), every line it
            # could read as a fingerprint names the expected certificate or no valid one.
            splitted = sdp.splitlines()
            for lines in ([x.rstrip("\r") for x in sdp.split("\n")], splitted):
                named = [x.split() for x in lines if x.lower().startswith("a=fingerprint:")]
                assert named or lines is not splitted  # an LF parser may see none: no link
                for tokens in named:
                    value = tokens[1] if len(tokens) > 1 else ""
                    assert value.upper() == expected or not _SHA256.fullmatch(value), tokens
    except LinkError as exc:
        assert exc.reason in ("bad_signal", "bad_identity"), exc


def TestOneInput(data: bytes) -> None:
    kind, rest = data[:1], data[1:]
    if kind in (b"o", b"a"):
        _sdp(kind, rest)
    else:
        _framing(kind, rest)


if __name__ == "__main__":
    harness.main(TestOneInput, dictionary="json.dict")
