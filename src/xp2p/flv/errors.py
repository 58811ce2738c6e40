"""The one exception of the FLV layer."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .header import FlvHeader
    from .tag import FlvTag


class FlvError(ValueError):
    """Malformed FLV data.

    ``offset`` is the absolute byte offset in the stream (counted from the first byte ever fed
    to the reader) of the field that is wrong, so a log line points straight at the bad byte.
    Not an ``XP2PError``: the FLV layer knows nothing of the public API's error codes; callers
    translate at their boundary.
    """

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} (at byte {offset})")
        self.message = message
        self.offset = offset
        # Items parsed in the same feed() before the error, so a relay can still pass on the
        # good tags that preceded the corruption.
        self.items: list[FlvHeader | FlvTag] = []

    def __reduce__(self) -> tuple[type[FlvError], tuple[str, int]]:
        return (type(self), (self.message, self.offset))
