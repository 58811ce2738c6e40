"""A player joining a running pull gets a stream that parses from its first byte to its
last, wherever the link's chunks cut the tags (the pull forwards whole tags only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.support.live_stream import stream_pieces
from xp2p.flv import FlvHeader, FlvReader, FlvTag
from xp2p.player.server import DevicePull


class FakeModule:
    """What DevicePull calls of P2PModule; keeps the data callback so the test feeds it."""

    def __init__(self) -> None:
        self.on_data: Callable[[bytes], None] | None = None

    def has_service(self, service_id: str) -> bool:
        return True

    async def start_stream(self, service_id: str, on_data: Callable[[bytes], None], _: Any) -> None:
        self.on_data = on_data

    async def stop_stream(self, service_id: str) -> None:
        self.on_data = None


def drain(client: Any) -> bytes:
    out = bytearray()
    while not client.queue.empty():
        out += client.queue.get_nowait()
    return bytes(out)


async def test_a_player_joining_mid_tag_gets_a_stream_that_parses() -> None:
    module = FakeModule()
    pull = DevicePull(module, "DEMO", "cam1")  # type: ignore[arg-type]
    stream = b"".join(stream_pieces(seconds=3, bitrate=200_000))
    first = await pull.join("high")
    assert module.on_data is not None
    chunk = 1167  # the cuts fall inside tags, as a link's chunks do
    cut = len(stream) // 2 + 7
    for at in range(0, cut, chunk):
        module.on_data(stream[at : min(at + chunk, cut)])
    second = await pull.join("high")  # the reader holds part of a tag now
    for at in range(cut, len(stream), chunk):
        module.on_data(stream[at : at + chunk])

    whole = FlvReader().feed(stream)
    assert FlvReader().feed(drain(first)) == whole
    late = FlvReader().feed(drain(second))  # raises FlvError on a broken seam
    assert isinstance(late[0], FlvHeader)
    tags = [t for t in late if isinstance(t, FlvTag)]
    assert tags[0].is_sequence_header
    assert next(t for t in tags if not t.is_sequence_header).is_keyframe
    assert tags[-1] == whole[-1]  # it runs to the live end
    pull.close()
