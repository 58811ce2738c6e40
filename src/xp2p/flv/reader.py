"""Incremental, sans-IO FLV reader: bytes in (split anywhere), headers and tags out."""

from __future__ import annotations

from enum import Enum, auto

from .constants import FILE_HEADER_SIZE, PREVIOUS_TAG_SIZE, TAG_HEADER_SIZE, TagType
from .errors import FlvError
from .header import SIGNATURE, VERSION, FlvHeader
from .tag import FlvTag

_TAG_OVERHEAD = TAG_HEADER_SIZE + PREVIOUS_TAG_SIZE
_RESERVED_TYPE_BITS = 0xC0
_FILTER_BIT = 0x20
_KNOWN_TYPES = frozenset(int(t) for t in TagType)


class _State(Enum):
    HEADER = auto()
    SKIP = auto()  # header bytes past the 9 we understand (DataOffset > 9)
    FIRST_TAG_SIZE = auto()  # PreviousTagSize0
    TAG = auto()
    FAILED = auto()


class FlvReader:
    """Feed it bytes as they arrive; it returns every header and tag completed so far.

    At most one incomplete item is held between calls, so ``buffered`` never exceeds
    ``max_tag_size + 15`` whatever the input. Errors are final: a stream that has lost its
    framing cannot be trusted again, so every later ``feed`` raises the same error.
    """

    def __init__(
        self,
        *,
        expect_header: bool = True,
        max_tag_size: int = 8 * 1024 * 1024,
        reject_unknown: bool = False,
    ) -> None:
        if not 0 < max_tag_size <= 0xFFFFFF:
            raise ValueError("max_tag_size must be between 1 and 2**24 - 1")
        self._max_tag_size = max_tag_size
        # Unknown tag types are passed through by default: a relay should not break on a
        # vendor's private tags. Strict mode is for validating what we produce ourselves.
        self._reject_unknown = reject_unknown
        self._state = _State.HEADER if expect_header else _State.TAG
        self._buf = bytearray()
        self._offset = 0  # stream offset of self._buf[0]
        self._skip = 0
        self._error: FlvError | None = None

    @property
    def offset(self) -> int:
        """Bytes consumed (parsed into items or skipped) so far."""
        return self._offset

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of their item."""
        return len(self._buf)

    @property
    def failed(self) -> bool:
        return self._error is not None

    def feed(self, data: bytes) -> list[FlvHeader | FlvTag]:
        if self._error is not None:
            raise FlvError(self._error.message, self._error.offset)
        self._buf += data
        items: list[FlvHeader | FlvTag] = []
        pos = 0
        try:
            while True:
                consumed = self._parse_one(pos, items)
                if consumed == 0:
                    break
                pos += consumed
        except FlvError as exc:
            self._state = _State.FAILED
            self._error = exc
            self._buf = bytearray()
            exc.items = list(items)
            raise
        del self._buf[:pos]
        self._offset += pos
        return items

    def close(self) -> None:
        """Declare the end of input: raises FlvError if it stopped inside an item."""
        if self._error is not None:
            raise FlvError(self._error.message, self._error.offset)
        if self._buf or self._skip:
            self._fail(f"stream ends inside the {self._item_name()}", self._offset)

    def _item_name(self) -> str:
        if self._state in (_State.HEADER, _State.SKIP):
            return "file header"
        if self._state is _State.FIRST_TAG_SIZE:
            return "first PreviousTagSize"
        return "tag"

    def _fail(self, message: str, offset: int) -> None:
        error = FlvError(message, offset)
        self._state = _State.FAILED
        self._error = error
        self._buf = bytearray()
        raise error

    def _parse_one(self, pos: int, items: list[FlvHeader | FlvTag]) -> int:
        """Parse one item at ``pos``; the bytes it consumed, 0 if it needs more input."""
        buf = self._buf
        avail = len(buf) - pos
        at = self._offset + pos  # stream offset of buf[pos]
        state = self._state
        if state is _State.TAG:
            return self._parse_tag(pos, avail, at, items)
        if state is _State.HEADER:
            return self._parse_header(pos, avail, at, items)
        if state is _State.SKIP:
            step = min(self._skip, avail)
            self._skip -= step
            if self._skip == 0:
                self._state = _State.FIRST_TAG_SIZE
            return step
        if state is _State.FIRST_TAG_SIZE:
            if avail < PREVIOUS_TAG_SIZE:
                return 0
            size = int.from_bytes(buf[pos : pos + 4], "big")
            if size != 0:
                raise FlvError(f"PreviousTagSize0 is {size}, must be 0", at)
            self._state = _State.TAG
            return PREVIOUS_TAG_SIZE
        return 0  # FAILED never reaches here: feed() raises first

    def _parse_header(self, pos: int, avail: int, at: int, items: list[FlvHeader | FlvTag]) -> int:
        buf = self._buf
        # Compare what has arrived so far, so garbage fails at once instead of waiting.
        seen = bytes(buf[pos : pos + min(avail, 3)])
        if seen != SIGNATURE[: len(seen)]:
            raise FlvError(f"bad signature {seen!r}, expected b'FLV'", at)
        if avail >= 4 and buf[pos + 3] != VERSION:
            raise FlvError(f"unsupported FLV version {buf[pos + 3]}, expected 1", at + 3)
        if avail < FILE_HEADER_SIZE:
            return 0
        data_offset = int.from_bytes(buf[pos + 5 : pos + 9], "big")
        if data_offset < FILE_HEADER_SIZE:
            raise FlvError(f"header data offset {data_offset} is less than 9", at + 5)
        if data_offset > self._max_tag_size:
            raise FlvError(f"header data offset {data_offset} is implausibly large", at + 5)
        # Reserved flag bits are ignored: some muxers set them and nothing depends on them.
        items.append(FlvHeader.from_flags(buf[pos + 4]))
        self._skip = data_offset - FILE_HEADER_SIZE
        self._state = _State.SKIP if self._skip else _State.FIRST_TAG_SIZE
        return FILE_HEADER_SIZE

    def _parse_tag(self, pos: int, avail: int, at: int, items: list[FlvHeader | FlvTag]) -> int:
        if avail == 0:
            return 0
        buf = self._buf
        type_byte = buf[pos]
        if type_byte & _RESERVED_TYPE_BITS:
            raise FlvError(f"reserved bits set in tag type byte 0x{type_byte:02x}", at)
        if type_byte & _FILTER_BIT:
            raise FlvError("filtered (encrypted) tags are not supported", at)
        if self._reject_unknown and type_byte not in _KNOWN_TYPES:
            raise FlvError(f"unknown tag type {type_byte}", at)
        if avail < 4:
            return 0
        size = int.from_bytes(buf[pos + 1 : pos + 4], "big")
        if size > self._max_tag_size:
            raise FlvError(
                f"tag data size {size} exceeds max_tag_size {self._max_tag_size}", at + 1
            )
        if size == 0 and type_byte in (TagType.VIDEO, TagType.AUDIO):
            kind = "video" if type_byte == TagType.VIDEO else "audio"
            raise FlvError(f"{kind} tag with an empty body", at)
        total = size + _TAG_OVERHEAD
        if avail < total:
            return 0
        end = pos + TAG_HEADER_SIZE + size
        previous = int.from_bytes(buf[end : end + 4], "big")
        if previous != TAG_HEADER_SIZE + size:
            raise FlvError(
                f"PreviousTagSize {previous} does not match tag size {TAG_HEADER_SIZE + size}",
                at + TAG_HEADER_SIZE + size,
            )
        timestamp = int.from_bytes(buf[pos + 4 : pos + 7], "big") | (buf[pos + 7] << 24)
        stream_id = int.from_bytes(buf[pos + 8 : pos + 11], "big")
        data = bytes(buf[pos + TAG_HEADER_SIZE : end])
        items.append(FlvTag(type_byte, timestamp, data, stream_id))
        return total
