"""What the viewer's calls take: stream descriptions and the app's callback types.

One leaf module that both the 1v1 service (`xp2p.viewer.service`, `xp2p.viewer.module`) and
the 1vN service (`xp2p.viewer.swarm`) import, so neither has to import the other. Standard
library only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

#: ``msg_callback(event, subtype, detail)``: notifies and log lines of one service.
MsgCallback = Callable[[str, str, Any], None]
#: ``data_callback(chunk)``: the FLV bytes of a pull, in order.
DataCallback = Callable[[bytes], None]
#: ``event_handler(event, detail)`` of ``init``: natChanged, natError.
EventHandler = Callable[[str, Any], None]
#: A ``start_local_download`` callback: a plain function or a coroutine function.
DownloadCallback = Callable[..., Any]
#: ``on_progress(done, total)`` of ``download_to_file``: bytes in the file so far (a resumed
#: partial included) and the file's size on the device (0 until the device has answered).
ProgressCallback = Callable[[int, int], None]
#: ``on_notice(text)`` of ``download_to_file``: what a person would want told (resuming at
#: byte N, starting over and why, a file the device sent no digest for).
NoticeCallback = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """The seed's streamInfo. 1v1: product_id + device_name (xp2p_info optional: fetched from
    the cloud when empty). 1vN: an http(s) FLV ``url``; ``upload=False`` makes the viewer
    download-only (it serves and announces nothing, as metered mobile users want) and
    ``upload_rate_cap`` caps what it serves its neighbours, in bytes/s (0 = no cap);
    ``playout_delay`` is how far behind live its player runs, in seconds (0 = the default,
    3 s): a longer delay gives each chunk more time to spread among viewers before anyone must
    fetch it from the edge (more offload), a shorter one lowers the latency."""

    url: str = ""
    product_id: str = ""
    device_name: str = ""
    xp2p_info: str = ""
    live_stream_domain: str = ""
    #: the guide's other spelling of ``live_stream_domain`` (its startP2PService text)
    stream_live_domain: str = ""
    upload: bool = True
    upload_rate_cap: int = 0
    playout_delay: float = 0.0

    @property
    def is_1v1(self) -> bool:
        return bool(
            self.product_id or self.device_name or self.xp2p_info or flv_of_1v1_url(self.url)
        )

    @property
    def switch_domain(self) -> str:
        """The edge of the 1v1→1vN switch (``xp2p.viewer.switch``), "" when it is off."""
        return self.live_stream_domain or self.stream_live_domain

    @property
    def flv(self) -> FlvParams | None:
        """The pull the seed's 1v1 ``url`` names (``start_stream`` without ``flv``), if any."""
        return flv_of_1v1_url(self.url)


@dataclass(frozen=True, slots=True)
class FlvParams:
    """The seed's ``flv`` option of startStream: file name and query on the device."""

    filename: str = "ipc.flv"
    params: str = "action=live&channel=0&quality=high"

    @property
    def target(self) -> str:
        return f"/{self.filename}?{self.params}"


#: The host of the seed's 1v1 url: ``http://XP2P_INFO.xnet/ipc.p2p.com/ipc.flv?<params>``.
XP2P_INFO_HOST = "xp2p_info.xnet"


def flv_of_1v1_url(url: str) -> FlvParams | None:
    """The ``FlvParams`` of a seed-style 1v1 url (host ``XP2P_INFO.xnet``; the last path
    segment is the file on the device, the query its params), or None for any other url (a
    1vN stream's). The seed's path puts a placeholder host (``ipc.p2p.com``) before the file:
    it names nothing and is skipped."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or (parts.hostname or "") != XP2P_INFO_HOST:
        return None
    filename = parts.path.rsplit("/", 1)[-1] or "ipc.flv"
    return FlvParams(filename=filename, params=parts.query or FlvParams().params)
