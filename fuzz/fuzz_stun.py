"""Datagrams at the cloud's STUN port, as its responder reads them: ``binding_response``
never raises (garbage is dropped: None), it answers only datagrams ``well_formed`` accepts
(magic cookie, exact length, attributes that tile the body), and whatever it answers is a
well-formed STUN message for the same transaction, sent from a socket the responder has."""

from __future__ import annotations

import atheris
import harness

with atheris.instrument_imports(include=["xp2p.cloud.stun", "aioice.stun"]):
    from aioice import stun

    from xp2p.cloud.stun import ALL_SOCKETS, ResponderAddresses, binding_response, well_formed

#: The responder's four set-ups: one socket, an alternate port, and the full RFC 5780 four
#: (by IP literal, and by a host name that cannot be advertised).
_SETUPS = (
    ResponderAddresses("203.0.113.10", 3478),
    ResponderAddresses("203.0.113.10", 3478, alt_port=3479),
    ResponderAddresses("203.0.113.10", 3478, "203.0.113.11", 3479),
    ResponderAddresses("stun.example", 3478, "2001:db8::11", 3479),
)
_SOURCES = (("198.51.100.7", 40000), ("2001:db8::7", 1))


def TestOneInput(data: bytes) -> None:
    # data[0]: which set-up, which socket it arrived on, and from where; the rest: the datagram
    config = data[0] if data else 0
    addresses = _SETUPS[config & 3]
    received_on = ALL_SOCKETS[(config >> 2) & 3]
    if addresses.address(received_on) is None:
        received_on = ALL_SOCKETS[0]
    source = _SOURCES[(config >> 4) & 1]
    datagram = data[1:]
    reply = binding_response(datagram, source, addresses, received_on)
    if reply is None:
        return
    assert well_formed(datagram)
    assert well_formed(reply.data)
    assert addresses.address(reply.send_from) is not None, reply.send_from
    request = stun.parse_message(datagram)
    answer = stun.parse_message(reply.data)
    assert answer.transaction_id == request.transaction_id
    assert answer.message_method == stun.Method.BINDING


if __name__ == "__main__":
    harness.main(TestOneInput)
