"""Peer messages as a neighbour's byte stream carries them: framed messages split anywhere
into a ``MessageReader``, and single messages into ``decode``. ProtocolError is the only
refusal, a failed reader stays failed, and what decodes re-encodes to the same bytes."""

from __future__ import annotations

import atheris
import harness

with atheris.instrument_imports(include=["xp2p.swarm.protocol"]):
    from xp2p.swarm.protocol import Message, MessageReader, ProtocolError, decode, encode, frame


def _stream(data: bytes) -> None:
    reader = MessageReader(max_frame=64 * 1024)
    got: list[Message] = []
    try:
        for piece in harness.pieces(data):
            got += reader.feed(piece)
    except ProtocolError:
        try:
            reader.feed(b"")
        except ProtocolError:
            return
        raise AssertionError("a failed MessageReader accepted more input") from None
    framed = b"".join(frame(m) for m in got)
    assert data[2:].startswith(framed), "messages do not re-frame to their bytes"


def TestOneInput(data: bytes) -> None:
    try:
        message = decode(data)
    except ProtocolError:
        pass
    else:
        assert encode(message) == data, message
    _stream(data)


if __name__ == "__main__":
    harness.main(TestOneInput)
