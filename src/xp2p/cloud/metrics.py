"""The cloud's numbers for an operator: ``GET /metrics`` in Prometheus' text format.

Every metric lives on a registry of this cloud's own (``CloudMetrics.registry``), never the
process-wide default: several clouds in one process (the tests, an embedding app) must not
add up, and a library should not register globals on import.

Nothing here carries a secret or an identity beyond what the operator already sees in the
log: labels are outcomes, error codes, link modes and room ids (a hash of the room's URL,
never the URL, which may carry a query an origin uses for its own access control).
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from xp2p.swarm.edge_messages import RoomStats

__all__ = ["CONTENT_TYPE_LATEST", "CloudMetrics", "MetricsAccess"]

#: Offer-to-answer through the cloud, in seconds: a device on loopback answers in a few ms,
#: one across the world in a few hundred; past the connect timeout it is an error instead.
RELAY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Rooms(Collector):
    """The edge's rooms as they are at scrape time (a room's counters go with the room)."""

    def __init__(self, rooms: Callable[[], Iterable[RoomStats]]) -> None:
        self._rooms = rooms

    def collect(self) -> Iterator[Metric]:
        stats = list(self._rooms())
        count = GaugeMetricFamily("xp2p_swarm_rooms", "1vN rooms open on this node's edge")
        count.add_metric([], len(stats))
        viewers = GaugeMetricFamily(
            "xp2p_swarm_viewers", "viewers in each 1vN room", labels=["room"]
        )
        sent = CounterMetricFamily(
            "xp2p_swarm_bytes",
            "stream bytes each room's viewers got, by who sent them: peers (p2p) or the edge (cdn)",
            labels=["room", "source"],
        )
        for room in stats:
            viewers.add_metric([room.room], room.online)
            sent.add_metric([room.room, "p2p"], room.p2p_bytes)
            sent.add_metric([room.room, "cdn"], room.cdn_bytes)
        yield from (count, viewers, sent)


class CloudMetrics:
    """What the cloud counts. ``devices_online`` and ``rooms`` are read at scrape time."""

    def __init__(
        self,
        devices_online: Callable[[], int],
        rooms: Callable[[], Iterable[RoomStats]] = tuple,
    ) -> None:
        # No auto_describe: it would collect the rooms at registration, before the edge exists.
        self.registry = CollectorRegistry()
        r = self.registry
        online = Gauge("xp2p_devices_online", "devices signed in to this node", registry=r)
        online.set_function(lambda: float(devices_online()))
        self.sign_ins = Counter(
            "xp2p_device_sign_ins",
            "device sign-ins by outcome (ok, auth_failed, auth_throttled, bad_message)",
            ["outcome"],
            registry=r,
        )
        self.connects = Counter(
            "xp2p_connects",
            "viewer connect requests by outcome: answered, or the error code",
            ["outcome"],
            registry=r,
        )
        self.links = Counter(
            "xp2p_links",
            "links that came up, by path (direct, relay), as their devices report them",
            ["mode"],
            registry=r,
        )
        self.relay_latency = Histogram(
            "xp2p_signalling_relay_seconds",
            "an offer relayed to its device until the answer came back",
            buckets=RELAY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "xp2p_api_errors", "error answers of the HTTP API by error code", ["code"], registry=r
        )
        self.turn_credentials = Counter(
            "xp2p_turn_credentials_issued",
            "TURN credentials minted (one per TURN server per session, offer or welcome)",
            registry=r,
        )
        r.register(_Rooms(rooms))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


@dataclass(frozen=True)
class MetricsAccess:
    """Who may read ``/metrics``: a scraper with the operator's bearer token, or, when the
    operator gave none, a client on this machine only (the counts are the operator's)."""

    token: str = ""

    def allows(self, remote: str | None, authorization: str) -> bool:
        if self.token:
            scheme, _, given = authorization.partition(" ")
            return scheme.lower() == "bearer" and secrets.compare_digest(
                given.strip().encode(), self.token.encode()
            )
        try:
            return remote is not None and ipaddress.ip_address(remote).is_loopback
        except ValueError:
            return False
