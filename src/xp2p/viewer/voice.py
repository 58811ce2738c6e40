"""Talk-back: raw PCM (``start_voice``) or FLV/AAC (``start_voice_data``) to the device. Issue 3."""

from __future__ import annotations

from collections.abc import AsyncIterable

from xp2p.errors import ErrorCode, XP2PError
from xp2p.viewer.service import Service


class VoiceWriter:
    """What ``start_voice_data`` returns: the app adds FLV bytes with ``add_chunk``."""

    def add_chunk(self, data: bytes) -> None:
        raise XP2PError(ErrorCode.UNSUPPORTED, "talk-back is not implemented yet")


async def start_voice(
    service: Service,
    pcm_source: AsyncIterable[bytes],
    sample_rate: int,
    channels: int,
    url_params: str,
) -> None:
    raise XP2PError(ErrorCode.UNSUPPORTED, "talk-back is not implemented yet")


async def start_voice_data(service: Service, url_params: str) -> VoiceWriter:
    raise XP2PError(ErrorCode.UNSUPPORTED, "talk-back is not implemented yet")


async def stop_voice(service: Service) -> None:
    closer = service.closers.pop("voice", None)
    if closer is not None:
        await closer()
