"""The edge's settings: one dataclass, checked when built, read from a TOML ``[edge]`` table.

::

    [edge]
    enabled = true          # inside `xp2p cloud`; `xp2p edge` always serves
    port = 8090             # `xp2p edge` only (host and apps come from the cloud settings)
    linger = 10.0           # keep pulling this long after the last viewer left
    stall_timeout = 5.0     # no byte from the source this long: stalled, reconnect
    give_up = 60.0          # reconnecting this long without success: the room ends
    keep_seconds = 30.0     # chunks kept for late and lagging viewers (at least 30)
    max_rooms = 100         # rooms with a viewer's WebSocket open
    max_pending_rooms = 20  # rooms whose joiners have not opened their WebSocket yet
    max_rooms_per_app = 10  # rooms one app has made (open or pending)
    join_grace = 10.0       # a join's WebSocket must open within this (at most 30)
    chunk_ms = 330
    max_room_bytes = 134217728   # one room's chunks at most (128 MiB)
    max_buffer_bytes = 268435456 # all rooms' chunks at most (256 MiB): the biggest room
                                 # gives way first
    # Sources: public addresses only, unless listed here (scheme://host:port, exact match
    # after normalisation; a redirect's target is checked the same way).
    allowed_sources = ["http://127.0.0.1:8081"]
    # A room of one of these origins is also joinable by every app allowed the product
    # (an app's `products`); any other room belongs to the app that made it alone.
    source_products = { "http://127.0.0.1:8081" = "DEMO" }
    source_ca_file = "origin.pem"   # trust this CA (PEM) for https sources, besides the
                                    # system store; relative to the config file
    stun = ["stun:stun.example.com:3478"]  # `xp2p edge` only: handed out with TURN
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xp2p.cloud.config import ConfigError, read_toml
from xp2p.swarm.chunk import DEFAULT_TARGET_MS
from xp2p.swarm.edge_routes import JOIN_GRACE, url_origin

from .policy import SourcePolicy, parse_allowed

#: A viewer's playout buffer plus its retries must fit in what the edge keeps.
MIN_KEEP_SECONDS = 30.0


@dataclass(frozen=True)
class EdgeConfig:
    enabled: bool = True
    port: int = 8090
    linger: float = 10.0
    stall_timeout: float = 5.0
    give_up: float = 60.0
    keep_seconds: float = MIN_KEEP_SECONDS
    max_rooms: int = 100
    chunk_ms: int = DEFAULT_TARGET_MS
    #: how long a join waits for the source's FLV header before 502 source_unreachable
    connect_timeout: float = 5.0
    #: cap on what one room holds whatever the bitrate (128 MiB: 30 s at 35 Mbit/s)
    max_room_bytes: int = 128 * 1024 * 1024
    #: cap on what all rooms hold together; over it, the room holding most gives way
    max_buffer_bytes: int = 256 * 1024 * 1024
    max_pending_rooms: int = 20
    max_rooms_per_app: int = 10
    join_grace: float = 10.0
    #: origins (`xp2p.swarm.edge_routes.url_origin` form) pulled whatever their address
    allowed_sources: tuple[str, ...] = ()
    #: origin -> product id: who besides the room's maker may join its rooms
    source_products: tuple[tuple[str, str], ...] = ()
    source_ca_file: Path | None = None
    stun: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check(0 <= self.port <= 65535, "port", "must be in [0, 65535]")
        for name in ("linger", "stall_timeout", "give_up", "connect_timeout"):
            value = getattr(self, name)
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            _check(ok and 0 <= value <= 3600, name, "must be a number of seconds in [0, 3600]")
        _check(self.stall_timeout > 0, "stall_timeout", "must be positive")
        _check(
            MIN_KEEP_SECONDS <= self.keep_seconds <= 3600,
            "keep_seconds",
            f"must be in [{MIN_KEEP_SECONDS:g}, 3600]",
        )
        _check(1 <= self.max_rooms <= 100_000, "max_rooms", "must be in [1, 100000]")
        _check(50 <= self.chunk_ms <= 5000, "chunk_ms", "must be in [50, 5000]")
        _check(self.max_room_bytes >= 1 << 20, "max_room_bytes", "must be at least 1 MiB")
        _check(
            self.max_buffer_bytes >= self.max_room_bytes,
            "max_buffer_bytes",
            "must be at least max_room_bytes",
        )
        _check(
            1 <= self.max_pending_rooms <= 100_000, "max_pending_rooms", "must be in [1, 100000]"
        )
        _check(
            1 <= self.max_rooms_per_app <= 100_000, "max_rooms_per_app", "must be in [1, 100000]"
        )
        ok = isinstance(self.join_grace, int | float) and 1 <= self.join_grace <= JOIN_GRACE
        _check(ok, "join_grace", f"must be a number of seconds in [1, {JOIN_GRACE:g}]")
        try:
            parse_allowed(self.allowed_sources)
            parse_allowed(tuple(o for o, _ in self.source_products))
        except ValueError as exc:
            raise ConfigError(f"edge.allowed_sources: {exc}") from None
        for url in self.stun:
            _check(url.startswith("stun:"), "stun", "entries must be stun: URLs")

    def source_policy(self) -> SourcePolicy:
        return SourcePolicy(parse_allowed(self.allowed_sources))

    def product_of(self, url: str) -> str | None:
        """The product whose apps share rooms of ``url`` (None: its maker's alone)."""
        origin = url_origin(url)
        for entry, product in self.source_products:
            if url_origin(entry) == origin:
                return product
        return None

    @classmethod
    def from_toml(cls, path: str | Path) -> EdgeConfig:
        """The ``[edge]`` table of a config file (defaults where it has none)."""
        path = Path(path)
        section = read_toml(path).get("edge", {})
        if not isinstance(section, dict):
            raise ConfigError("edge: must be a table")
        return cls.from_dict(section, base_dir=path.parent)

    @classmethod
    def from_dict(cls, doc: dict[str, Any], *, base_dir: Path | None = None) -> EdgeConfig:
        floats = "linger stall_timeout give_up keep_seconds connect_timeout join_grace".split()
        ints = "port max_rooms chunk_ms max_room_bytes max_buffer_bytes".split()
        ints += ["max_pending_rooms", "max_rooms_per_app"]
        known = {*floats, *ints, "enabled", "source_ca_file", "stun"}
        known |= {"allowed_sources", "source_products"}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ConfigError(f"edge.{unknown[0]}: unknown setting")
        kw: dict[str, Any] = {}
        for name in floats:
            if name in doc:
                value = doc[name]
                number = isinstance(value, int | float) and not isinstance(value, bool)
                _check(number, name, "must be a number")
                kw[name] = float(value)
        for name in ints:
            if name in doc:
                value = doc[name]
                _check(isinstance(value, int) and not isinstance(value, bool), name, "integer")
                kw[name] = value
        if "enabled" in doc:
            _check(isinstance(doc["enabled"], bool), "enabled", "must be true or false")
            kw["enabled"] = doc["enabled"]
        if "source_ca_file" in doc:
            _check(isinstance(doc["source_ca_file"], str), "source_ca_file", "must be a path")
            ca = Path(doc["source_ca_file"])
            kw["source_ca_file"] = base_dir / ca if base_dir and not ca.is_absolute() else ca
        if "stun" in doc:
            stun = doc["stun"]
            ok = isinstance(stun, list) and all(isinstance(s, str) for s in stun)
            _check(ok, "stun", "must be a list of stun: URLs")
            kw["stun"] = tuple(stun)
        if "allowed_sources" in doc:
            allowed = doc["allowed_sources"]
            ok = isinstance(allowed, list) and all(isinstance(a, str) for a in allowed)
            _check(ok, "allowed_sources", "must be a list of http(s)://host:port origins")
            kw["allowed_sources"] = tuple(allowed)
        if "source_products" in doc:
            table = doc["source_products"]
            ok = isinstance(table, dict) and all(isinstance(v, str) for v in table.values())
            _check(ok, "source_products", "must be a table of origin = product id")
            kw["source_products"] = tuple(sorted(table.items()))
        return cls(**kw)


def _check(ok: bool, where: str, problem: str) -> None:
    if not ok:
        raise ConfigError(f"edge.{where}: {problem}")
