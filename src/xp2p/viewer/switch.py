"""The seed's 1v1→1vN switch (``liveStreamDomain``, docs/api.md, docs/protocol.md §12).

With `StreamInfo.live_stream_domain` set, a 1v1 service first asks the camera over its new
link whether it could serve one more live viewer (``get_device_st type=live``). A camera with
a free slot keeps this viewer on 1v1. A full one (status 405) makes the viewer close that
link and join, on the edge at ``live_stream_domain``, the swarm of the camera's stream
(``xp2p-device://PID/DEV?quality=Q``): the edge pulls the camera once over its own link and
every later viewer of that camera and quality joins the same room. A query that fails (no
answer, a refusal, a reply that is not the documented list) is -2801, as in the seed.

Here the decision alone (sans-IO: `state_command`, `camera_is_full`, `swarm_info`) and the
one step with I/O (`swarm_if_full`, on the module's just-opened 1v1 service).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

from xp2p.errors import ErrorCode, XP2PError
from xp2p.swarm.device_url import QUALITIES, DeviceUrl
from xp2p.viewer import command as command_module
from xp2p.viewer.command_codec import CommandResult
from xp2p.viewer.service import Service
from xp2p.viewer.types import StreamInfo

#: How long the camera has to answer the state query.
STATE_TIMEOUT = 5.0
DEFAULT_QUALITY = "high"


def quality_of(info: StreamInfo) -> str:
    """The quality the viewer will pull: ``quality=`` of a seed-style 1v1 ``url``
    (``...ipc.flv?action=live&channel=0&quality=standard``), else ``high``; -2000 if unknown."""
    quality = DEFAULT_QUALITY
    if info.url:
        quality = parse_qs(urlsplit(info.url).query).get("quality", [quality])[-1]
    if quality not in QUALITIES:
        raise XP2PError(ErrorCode.BAD_PARAM, f"quality must be one of {', '.join(QUALITIES)}")
    return quality


def edge_url(domain: str) -> str:
    """The edge's base URL from the guide's ``liveStreamDomain``: a host (``edge.example.com``,
    then https) or an http(s) URL; -2000 for anything else."""
    url = domain if "://" in domain else f"https://{domain}"
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        parts, port_ok = None, False
    if (
        parts is None
        or not port_ok
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        raise XP2PError(
            ErrorCode.BAD_PARAM,
            f"live_stream_domain must be the edge's host or its http(s) URL, not {domain[:80]!r}",
        )
    return url.rstrip("/")


def state_command(quality: str) -> str:
    return f"action=inner_define&channel=0&cmd=get_device_st&type=live&quality={quality}"


def camera_is_full(result: CommandResult) -> bool:
    """True for status 405, False for 0; XP2PError -2801 for anything else."""
    status = _status(result.data) if result.ok else None
    if status == "405":
        return True
    if status == "0":
        return False
    why = (
        f"{result.type} {result.errcode}: {result.errmsg}"
        if not result.ok
        else "an unexpected reply" + (f" (status {status})" if status is not None else "")
    )
    raise XP2PError(ErrorCode.DEVICE_STATE_QUERY_FAILED, f"the device state query failed: {why}")


def _status(data: Any) -> str | None:
    if isinstance(data, list) and data and isinstance(data[0], dict):
        status = data[0].get("status")
        if isinstance(status, str | int) and not isinstance(status, bool):
            return str(status)
    return None


def swarm_info(info: StreamInfo, quality: str) -> StreamInfo:
    """The 1vN stream a viewer of a full camera joins: the camera's room on the edge at
    ``live_stream_domain``, with the viewer's own 1vN options."""
    url = DeviceUrl(info.product_id, info.device_name, quality)
    return replace(info, url=str(url), product_id="", device_name="", xp2p_info="")


async def swarm_if_full(service: Service, info: StreamInfo) -> StreamInfo | None:
    """Ask the camera of ``service`` (just connected, pulling nothing) for its live state.
    None: stay on 1v1. A StreamInfo: the camera is full, ``service`` is stopped and this is
    the swarm to join. XP2PError -2801 (``service`` stopped) when the query fails."""
    try:
        quality = quality_of(info)
        result = await command_module.send_command(service, state_command(quality), STATE_TIMEOUT)
        full = camera_is_full(result)
    except XP2PError:
        await service.stop()
        raise
    if not full:
        return None
    await service.stop()  # its link holds no slot, but it counts against the device's links
    return swarm_info(info, quality)
