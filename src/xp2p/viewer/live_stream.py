"""``P2PModule.stream``: the FLV bytes of one pull as an async iterator."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from xp2p.viewer.types import FlvParams, MsgCallback

if TYPE_CHECKING:
    from xp2p.viewer.service import Service
    from xp2p.viewer.swarm import SwarmService


class LiveStream:
    """FLV bytes of one pull as an async iterator (see ``P2PModule.stream``)."""

    def __init__(self, service: Service | SwarmService, flv: FlvParams) -> None:
        self._service = service
        self._flv = flv
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._previous: MsgCallback | None = None
        self._entered = False
        self._bare = False

    async def __aenter__(self) -> LiveStream:
        self._previous = self._service.msg_callback
        previous = self._previous

        def on_msg(event: str, subtype: str, detail: Any) -> None:
            if subtype in ("eof", "disconnect", "fail"):
                self._queue.put_nowait(None)
            if previous is not None:
                previous(event, subtype, detail)

        self._service.msg_callback = on_msg
        try:
            await self._service.start_stream(self._queue.put_nowait, self._flv)
        except BaseException:
            self._service.msg_callback = previous
            raise
        self._entered = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._service.msg_callback = self._previous
        await self._service.stop_stream()

    def __aiter__(self) -> LiveStream:
        return self

    async def __anext__(self) -> bytes:
        if not self._entered:
            # A bare ``async for`` (no ``async with``) starts the pull on its first step and
            # stops it when the stream ends; after a ``break`` the pull runs on until
            # ``stop_stream`` or ``stop_p2p_service``, as an iterator hears nothing of a break.
            await self.__aenter__()
            self._bare = True
        chunk = await self._queue.get()
        if chunk is None:
            self._queue.put_nowait(None)  # stay ended for later calls
            if self._bare:
                self._bare = False
                await self.__aexit__()
            raise StopAsyncIteration
        return chunk
