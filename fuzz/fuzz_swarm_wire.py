"""A chunk in its signed wire form, as a neighbour or the edge sends it: ChunkFormatError
is the only refusal; what parses re-encodes to the same bytes, and its proof is checked
(``verify`` says False, never raises) the way a viewer checks every chunk before use."""

from __future__ import annotations

import atheris
import harness

with atheris.instrument_imports(include=["xp2p.swarm.wire", "xp2p.swarm.chunk"]):
    from xp2p.flv import FlvError
    from xp2p.swarm.signing import ChunkSigner, verify
    from xp2p.swarm.wire import ChunkFormatError, decode_item, encode_item

_SIGNER = ChunkSigner.generate()


def TestOneInput(data: bytes) -> None:
    try:
        item, proof = decode_item(data, max_payload=64 * 1024)
    except ChunkFormatError:
        return
    assert encode_item(item, proof) == data
    assert not verify(item, proof, _SIGNER.public_key)  # random bytes are never genuine
    try:
        item.tags()  # a genuine chunk's payload: FLV tags
    except FlvError:
        pass


if __name__ == "__main__":
    harness.main(TestOneInput)
