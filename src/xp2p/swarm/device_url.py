"""The room URL of a camera's live stream, for the 1v1→1vN switch (docs/protocol.md §12).

``xp2p-device://PID/DEV?quality=Q`` names "this camera's live stream at this quality, pulled
by the edge over its own 1v1 link", as an http(s) URL names an FLV server. Only the canonical
spelling is a device URL: the product and device names are case-sensitive (so the URL is kept
as it is, never lower-cased like an http host) and one camera and quality is one room.
Standard library only: the viewer, the edge and the message checks all import it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SCHEME = "xp2p-device"
#: The device's qualities (`xp2p.device.request.QUALITIES`).
QUALITIES = ("standard", "high", "super")
_NAME = r"[A-Za-z0-9_.:@-]{1,64}"  # the cloud's NAME_RE
_URL_RE = re.compile(rf"{SCHEME}://({_NAME})/({_NAME})\?quality=([a-z]+)")


@dataclass(frozen=True, slots=True)
class DeviceUrl:
    product_id: str
    device_name: str
    quality: str = "high"

    def __str__(self) -> str:
        return f"{SCHEME}://{self.product_id}/{self.device_name}?quality={self.quality}"

    @property
    def target(self) -> str:
        """The live request the edge makes on its link to the camera."""
        return f"/ipc.flv?action=live&channel=0&quality={self.quality}"


def is_device_url(url: str) -> bool:
    return url.startswith(f"{SCHEME}:")


def parse_device_url(url: str) -> DeviceUrl:
    """The parts of a canonical device URL; ValueError (with a reason) for anything else."""
    match = _URL_RE.fullmatch(url)
    if match is None:
        raise ValueError(f"a device url is {SCHEME}://PRODUCT/DEVICE?quality=Q")
    pid, dev, quality = match.groups()
    if quality not in QUALITIES:
        raise ValueError(f"quality must be one of {', '.join(QUALITIES)}")
    return DeviceUrl(pid, dev, quality)
