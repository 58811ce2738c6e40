"""``start_local_download``: a recorded file from the device, resumable (SPEC §2). Issue 3."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xp2p.errors import ErrorCode, XP2PError
from xp2p.viewer.service import Service

DownloadCallback = Callable[..., Any]


async def start_local_download(
    service: Service, url_params: str, callbacks: dict[str, DownloadCallback | None]
) -> None:
    raise XP2PError(ErrorCode.UNSUPPORTED, "downloads are not implemented yet")


async def stop_local_download(service: Service) -> None:
    closer = service.closers.pop("download", None)
    if closer is not None:
        await closer()
