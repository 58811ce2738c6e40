"""NAT behaviour (RFC 4787) and its classification from RFC 5780 test outcomes: pure.

The probe that produces the outcomes (``BehaviourDiscovery``, sans-IO, and its asyncio
shell) is in ``xp2p.link.nat``; this half imports with the standard library alone, so the
tracker and anything else that only needs a ``NatType`` stays free of aioice.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass
from typing import Any

Address = tuple[str, int]


class Dependence(enum.StrEnum):
    """What a NAT's mapping or filtering depends on (RFC 4787 §4.1, §5)."""

    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"
    UNKNOWN = "unknown"


class NatType(enum.StrEnum):
    """The common names: cones are endpoint-independent mappings, by their filtering."""

    OPEN = "open"  # no NAT: the server sees our own address
    FULL_CONE = "full-cone"
    RESTRICTED_CONE = "restricted-cone"
    PORT_RESTRICTED = "port-restricted"
    SYMMETRIC = "symmetric"  # any mapping that is not endpoint-independent
    UDP_BLOCKED = "udp-blocked"  # no STUN answer at all
    UNKNOWN = "unknown"  # the server cannot run the tests that would tell


@dataclass(frozen=True, slots=True)
class NatBehaviour:
    """The result of one probe."""

    nat_type: NatType
    mapping: Dependence
    filtering: Dependence
    #: The probe's (mapping socket's) local address, and what the server saw of it.
    local: Address
    mapped: Address | None
    #: The STUN server's primary address and the alternate the tests used, if any.
    server: Address
    other: Address | None = None

    @property
    def failed(self) -> bool:
        return self.nat_type == NatType.UDP_BLOCKED

    def describe(self) -> str:
        """One log line's worth."""
        mapped = "none" if self.mapped is None else format_address(self.mapped)
        other = "" if self.other is None else f"/{format_address(self.other)}"
        return (
            f"{self.nat_type} (mapping {self.mapping}, filtering {self.filtering}; "
            f"local {format_address(self.local)}, mapped {mapped}, "
            f"STUN {format_address(self.server)}{other})"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "nat_type": str(self.nat_type),
            "mapping": str(self.mapping),
            "filtering": str(self.filtering),
            "local": format_address(self.local),
            "mapped": None if self.mapped is None else format_address(self.mapped),
        }


@dataclass(frozen=True, slots=True)
class ProbeResults:
    """What the tests found: the input of :func:`classify`. ``None`` = no answer or not run."""

    server: Address
    local: Address
    #: Test I: the mapped address, and the alternate address the server offered (its
    #: OTHER-ADDRESS, or the primary IP with ``StunInfo.alt_port`` when it has one IP).
    mapped: Address | None = None
    other: Address | None = None
    #: Test II (other IP, primary port) and test III (the other address).
    mapped_via_other_ip: Address | None = None
    mapped_via_other: Address | None = None
    #: Filtering tests: True answered, False no answer in time, None not possible (the
    #: server refused the change or ignored it).
    answered_change_ip_port: bool | None = None
    answered_change_port: bool | None = None


def classify(results: ProbeResults) -> NatBehaviour:
    """The NAT behaviour the test results show (pure)."""
    r = results

    def behaviour(nat_type: NatType, mapping: Dependence, filtering: Dependence) -> NatBehaviour:
        return NatBehaviour(nat_type, mapping, filtering, r.local, r.mapped, r.server, r.other)

    if r.mapped is None:
        return behaviour(NatType.UDP_BLOCKED, Dependence.UNKNOWN, Dependence.UNKNOWN)
    filtering = _filtering(r)
    if r.mapped == r.local:
        # No translation; the filtering (a firewall's) is still reported.
        return behaviour(NatType.OPEN, Dependence.ENDPOINT_INDEPENDENT, filtering)
    mapping, independent = _mapping(r)
    if independent is False:
        return behaviour(NatType.SYMMETRIC, mapping, filtering)
    if independent is None:
        return behaviour(NatType.UNKNOWN, mapping, filtering)
    cones = {
        Dependence.ENDPOINT_INDEPENDENT: NatType.FULL_CONE,
        Dependence.ADDRESS_DEPENDENT: NatType.RESTRICTED_CONE,
        Dependence.ADDRESS_AND_PORT_DEPENDENT: NatType.PORT_RESTRICTED,
        Dependence.UNKNOWN: NatType.UNKNOWN,
    }
    return behaviour(cones[filtering], mapping, filtering)


def _mapping(r: ProbeResults) -> tuple[Dependence, bool | None]:
    """The mapping behaviour, and whether it is endpoint-independent (None: cannot tell)."""
    if r.other is None:
        return Dependence.UNKNOWN, None
    if same_ip(r.other[0], r.server[0]):
        # One IP: a different mapping for another port is address-and-port-dependent; the
        # same one could be endpoint-independent or address-dependent.
        if r.mapped_via_other is not None and r.mapped_via_other != r.mapped:
            return Dependence.ADDRESS_AND_PORT_DEPENDENT, False
        return Dependence.UNKNOWN, None
    if r.mapped_via_other_ip is None:
        return Dependence.UNKNOWN, None
    if r.mapped_via_other_ip == r.mapped:
        return Dependence.ENDPOINT_INDEPENDENT, True
    if r.mapped_via_other is None:
        return Dependence.UNKNOWN, False
    if r.mapped_via_other == r.mapped_via_other_ip:
        return Dependence.ADDRESS_DEPENDENT, False
    return Dependence.ADDRESS_AND_PORT_DEPENDENT, False


def _filtering(r: ProbeResults) -> Dependence:
    both, port = r.answered_change_ip_port, r.answered_change_port
    if both:
        return Dependence.ENDPOINT_INDEPENDENT
    if port is False:
        # Not even the primary IP's other port gets in (with or without a second IP).
        return Dependence.ADDRESS_AND_PORT_DEPENDENT
    if both is False and port:
        return Dependence.ADDRESS_DEPENDENT
    return Dependence.UNKNOWN


def same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b


def format_address(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
