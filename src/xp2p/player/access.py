"""Who the local player answers: the sans-IO access policy of ``xp2p.player.server``.

The player listens on loopback, and loopback is reachable by every web page the user's
browser opens (``fetch(..., {mode: "no-cors"})``, ``<img>``/``<video>`` tags, and DNS
rebinding, where ``attacker.example`` re-resolves to 127.0.0.1) and by every local user and
process. So each request passes, in this order:

1. **Host** must be the player's own name and port: ``127.0.0.1:PORT``, ``localhost:PORT`` or
   ``[::1]:PORT`` (plus the listening address itself when it is public). A rebound name
   (``Host: attacker.example:PORT``) gets **421**.
2. **Cross-site**: a request carrying ``Origin`` whose value is not in ``allow_origins`` (the
   player's own origin is always allowed), or whose ``Sec-Fetch-Site`` is anything but
   ``same-origin`` or ``none`` without such an allowed ``Origin``, gets **403**. ffplay, VLC,
   mpv and ffprobe send neither header and pass.
3. **Token**: every URL the player serves, the index page ``/`` included, needs
   ``?token=T``, where T is ``secrets.token_urlsafe(32)`` (256 bits) drawn at each start and
   printed only in the URLs on the terminal. Missing or wrong: **403** (constant-time
   compare). The page needs it too because it lists the stream URLs, tokens included, and
   loopback is shared with every other local user; the token is also the authentication a
   player listening beyond loopback (``--player-public``) relies on.
4. **Device**: only the devices the player was started for; others get **404**.

The token never goes into a log line: refusals are logged by kind only.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

#: Playback pulls (each its own link to the device) one player runs at once; more get 503.
DEFAULT_MAX_PLAYBACKS = 4
#: Bytes of entropy in the per-start token (256 bits; the floor the issue asks is 128).
TOKEN_BYTES = 32


#: a DNS name or IPv4 address, or an IPv6 address (urlsplit drops its brackets)
_HOSTNAME = re.compile(r"[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?|[0-9a-f:.]*:[0-9a-f:.]*")


class AccessConfigError(ValueError):
    """A player setting is invalid; the message names the setting."""


def is_loopback(host: str) -> bool:
    """``host`` (a listen address or a name) only ever reaches this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def normalise_origin(text: str) -> str:
    """``scheme://host[:port]`` lower-cased, as browsers send it in ``Origin``; anything else
    (a path, userinfo, ``null``) is refused with an error naming ``allow_origin``."""
    try:
        parts = urlsplit(text.strip())
    except ValueError:  # "http://[x" and the like: urlsplit's own refusal
        parts = urlsplit("")
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise AccessConfigError(
            f"allow_origin: {text!r} is not an origin like https://app.example or "
            "http://localhost:3000"
        )
    try:
        port = parts.port
    except ValueError:
        raise AccessConfigError(f"allow_origin: {text!r} has a bad port") from None
    host = parts.hostname.lower()
    if not _HOSTNAME.fullmatch(host):
        raise AccessConfigError(f"allow_origin: {text!r} has no valid host name")
    host = f"[{host}]" if ":" in host else host
    if port == {"http": 80, "https": 443}[parts.scheme]:
        port = None  # browsers leave the default port out of Origin
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str
    #: what the log says (never the token nor the header values a page chose)
    kind: str


@dataclass(frozen=True)
class PlayerAccess:
    """The policy of one player run. ``port`` is the bound port (known after listening)."""

    host: str = "127.0.0.1"
    port: int = 0
    devices: tuple[str, ...] = ()
    allow_origins: frozenset[str] = frozenset()
    #: listening beyond loopback is allowed only when this is set (``--player-public``)
    public: bool = False
    max_playbacks: int = DEFAULT_MAX_PLAYBACKS
    token: str = field(default_factory=lambda: secrets.token_urlsafe(TOKEN_BYTES), repr=False)

    @classmethod
    def create(
        cls,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        devices: Iterable[str] = (),
        allow_origins: Iterable[str] = (),
        public: bool = False,
        max_playbacks: int = DEFAULT_MAX_PLAYBACKS,
    ) -> PlayerAccess:
        if not is_loopback(host) and not public:
            raise AccessConfigError(
                f"host: {host!r} is not loopback; listening beyond this machine needs "
                "--player-public (the URL token is then the only authentication)"
            )
        if max_playbacks < 1:
            raise AccessConfigError("max_playbacks: must be at least 1")
        return cls(
            host=host,
            port=port,
            devices=tuple(devices),
            allow_origins=frozenset(normalise_origin(o) for o in allow_origins),
            public=public,
            max_playbacks=max_playbacks,
        )

    # -- the checks ----------------------------------------------------------------------

    def allowed_hosts(self) -> frozenset[str]:
        names = {"127.0.0.1", "localhost", "[::1]"}
        if self.public and self.host not in ("0.0.0.0", "::", ""):
            names.add(f"[{self.host}]" if ":" in self.host else self.host.lower())
        hosts = {f"{name}:{self.port}" for name in names}
        if self.port == 80:  # a browser leaves the default port out
            hosts |= names
        return frozenset(hosts)

    def own_origins(self) -> frozenset[str]:
        return frozenset(f"http://{host}" for host in self.allowed_hosts())

    def check_request(self, headers: Mapping[str, str]) -> Refusal | None:
        """Host and cross-site checks: everything that does not depend on the URL."""
        host = headers.get("Host", "").strip().lower()
        wildcard = self.public and self.host in ("0.0.0.0", "::", "")
        if not wildcard and host not in self.allowed_hosts():
            return Refusal(
                421,
                f"this player answers only to 127.0.0.1:{self.port}, localhost:{self.port} "
                f"or [::1]:{self.port}\n",
                "foreign Host",
            )
        origin = headers.get("Origin")
        origin_ok = origin is not None and self.origin_allowed(origin)
        if origin is not None and not origin_ok:
            return Refusal(403, "cross-site request refused (origin not allowed)\n", "Origin")
        site = headers.get("Sec-Fetch-Site", "none").strip().lower()
        if site not in ("same-origin", "none") and not origin_ok:
            return Refusal(403, "cross-site request refused\n", "Sec-Fetch-Site")
        return None

    def origin_allowed(self, origin: str) -> bool:
        try:
            value = normalise_origin(origin)
        except AccessConfigError:
            return False  # "null", garbage: never allowed
        return value in self.allow_origins or value in self.own_origins()

    def cors_origin(self, headers: Mapping[str, str]) -> str | None:
        """The ``Access-Control-Allow-Origin`` to answer a configured foreign origin with."""
        origin = headers.get("Origin")
        if origin is not None and self.origin_allowed(origin):
            return origin
        return None

    def check_token(self, given: str | None) -> Refusal | None:
        if given is None or not hmac.compare_digest(
            given.encode("utf-8", "replace"), self.token.encode()
        ):
            return Refusal(
                403, "missing or wrong token: open the URL xp2p printed at start\n", "token"
            )
        return None

    def check_device(self, device: str) -> Refusal | None:
        if device not in self.devices:
            return Refusal(404, "this player does not serve that device\n", "device")
        return None
