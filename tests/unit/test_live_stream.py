"""``P2PModule.stream`` used without its ``async with``: a clear error, not a wait forever."""

from __future__ import annotations

from typing import Any

import pytest

from xp2p.viewer.live_stream import LiveStream
from xp2p.viewer.types import FlvParams


async def test_iterating_a_stream_that_was_not_entered_says_how() -> None:
    service: Any = object()  # never touched: nothing runs before the check
    with pytest.raises(RuntimeError, match=r"async with module\.stream\(id\) as chunks"):
        async for _chunk in LiveStream(service, FlvParams()):
            pass
