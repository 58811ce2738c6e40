"""The NAT lab: network namespaces, veth pairs and iptables NAT routers of each RFC 4787 kind.

Used by the NAT-lab tests (``tests/natlab/``) and the benchmarks (``bench/nat_matrix.py``);
also a script, for poking at it by hand::

    python tests/natlab/lab.py up        # the public network and one site of each kind
    python tests/natlab/lab.py status
    python tests/natlab/lab.py down      # removes everything, also after a crash

Topology (TEST-NET addresses only; nothing leaves the machine)::

    {prefix}-pub   the "internet": a bridge, 203.0.113.0/24
                   CLOUD_IP 203.0.113.1, CLOUD_ALT_IP 203.0.113.2 (STUN's second address),
                   TURN_IP 203.0.113.3 — services bound to these run inside this namespace
    {prefix}-sink  203.0.113.250, the default route of everyone: it does not forward, so a
                   packet for an address nobody owns (another site's private address) is
                   dropped silently, as the internet drops it. (coturn drops a whole
                   allocation when a peer address is unroutable: it needs a route.)
    {prefix}-rN    site N's NAT router: WAN 203.0.113.(10+N) on the bridge, LAN 192.0.2.16N+1/28
    {prefix}-hN    site N's host: 192.0.2.16N+2/28, default route via its router

Router kinds (``NatKind``), built with iptables, mapping / filtering per RFC 4787:

* ``full-cone``: endpoint-independent mapping (SNAT keeps the port) and endpoint-independent
  filtering (every inbound UDP datagram is DNATed back to the host, port for port).
* ``restricted-cone``: EIM and address-dependent filtering: inbound UDP is DNATed back only
  from addresses the host has sent to (the ``recent`` match keeps those addresses).
* ``port-restricted``: EIM with address-and-port-dependent filtering: plain MASQUERADE, only
  conntrack replies come in (Linux's default).
* ``symmetric``: endpoint-dependent mapping, ``MASQUERADE --random-fully`` (a new random port
  per destination), conntrack filtering.
* ``udp-blocked``: TCP is NATed, UDP is dropped both ways.

The full-cone and restricted-cone "mapping back" assumes the port was kept, which SNAT does
whenever it is free; with one host per site it always is.

Every router forgets UDP mappings after ``UDP_TIMEOUT`` seconds without traffic (Linux's 30 s
for an unanswered flow, here also for answered ones, so that keep-alives are what holds a
binding). Optional impairments per site, on the router's WAN side, both directions:
``loss`` with iptables ``statistic`` and ``delay_ms`` with the NFQUEUE delayer
(``tests/natlab/delayer.py``: this kernel has no netem).

Set-up and teardown are idempotent: ``up()`` first removes whatever a crashed run left under
the same prefix, ``down()`` kills every process still inside the lab's namespaces.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PUBLIC_NET = "203.0.113"
BRIDGE_MAC = "02:00:cb:00:71:01"  # locally administered
CLOUD_IP = f"{PUBLIC_NET}.1"
CLOUD_ALT_IP = f"{PUBLIC_NET}.2"
TURN_IP = f"{PUBLIC_NET}.3"
SINK_IP = f"{PUBLIC_NET}.250"
PRIVATE_NET = "192.0.2"
MAX_SITES = 15  # 192.0.2.0/24 in /28s, subnet 0 unused
UDP_TIMEOUT = 30
DELAYER = Path(__file__).with_name("delayer.py")


class NatKind(enum.StrEnum):
    FULL_CONE = "full-cone"
    RESTRICTED_CONE = "restricted-cone"
    PORT_RESTRICTED = "port-restricted"
    SYMMETRIC = "symmetric"
    UDP_BLOCKED = "udp-blocked"

    @property
    def mapping_independent(self) -> bool:
        return self in (NatKind.FULL_CONE, NatKind.RESTRICTED_CONE, NatKind.PORT_RESTRICTED)


#: The four NAT behaviours of the connection matrix.
NAT_KINDS = (
    NatKind.FULL_CONE,
    NatKind.RESTRICTED_CONE,
    NatKind.PORT_RESTRICTED,
    NatKind.SYMMETRIC,
)


def direct_possible(a: NatKind, b: NatKind) -> bool:
    """Whether two hosts behind these NATs can reach each other without a relay, in theory.

    Hole punching needs each side's packets to reach the other through a mapping the other
    learned: both endpoint-independent mappings always work; one symmetric side works only
    when the other side lets in a new port from an address it has sent to (full cone and
    restricted cone), the symmetric side's checks then showing up as peer-reflexive.
    """
    if NatKind.UDP_BLOCKED in (a, b):
        return False
    if a.mapping_independent and b.mapping_independent:
        return True
    other = b if a == NatKind.SYMMETRIC else a
    return other in (NatKind.FULL_CONE, NatKind.RESTRICTED_CONE)


class LabUnavailable(RuntimeError):
    """This machine cannot host the lab (not root, no namespaces, no iptables)."""


def unavailable_reason() -> str | None:
    """Why the lab cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "the NAT lab needs root (network namespaces and iptables)"
    for tool in ("ip", "iptables", "ethtool"):
        if shutil.which(tool) is None:
            return f"the NAT lab needs {tool!r} (scripts/setup.sh installs it)"
    probe = "xlprobe-" + str(os.getpid())
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create network namespaces: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


@dataclass
class Site:
    """A private network behind one NAT router, with one host."""

    lab: NatLab
    index: int
    kind: NatKind
    loss: float = 0.0
    delay_ms: float = 0.0
    delayer: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def router(self) -> str:
        return f"{self.lab.prefix}-r{self.index}"

    @property
    def host(self) -> str:
        """The host's namespace: run programs of this site with ``lab.popen(site.host, ...)``."""
        return f"{self.lab.prefix}-h{self.index}"

    @property
    def wan_ip(self) -> str:
        return f"{PUBLIC_NET}.{10 + self.index}"

    @property
    def lan_router_ip(self) -> str:
        return f"{PRIVATE_NET}.{16 * self.index + 1}"

    @property
    def host_ip(self) -> str:
        return f"{PRIVATE_NET}.{16 * self.index + 2}"

    @property
    def queue_num(self) -> int:
        return 100 + self.index


class NatLab:
    """Build with ``up()``, add sites, tear down with ``down()`` (or use it as a context)."""

    def __init__(self, prefix: str = "xl") -> None:
        if not prefix.isalnum() or len(prefix) > 6:
            raise ValueError("prefix must be 1-6 letters or digits (interface names are short)")
        self.prefix = prefix
        self.sites: dict[int, Site] = {}

    @property
    def public(self) -> str:
        """The public namespace (cloud, STUN, TURN)."""
        return f"{self.prefix}-pub"

    @property
    def sink(self) -> str:
        return f"{self.prefix}-sink"

    def namespaces(self) -> list[str]:
        """Every namespace of this prefix that exists now, the leftovers of a crash included."""
        out = _run("ip", "netns", "list").stdout.split("\n")
        names = [line.split()[0] for line in out if line.strip()]
        return [n for n in names if n.startswith(self.prefix + "-")]

    # ---- lifecycle ------------------------------------------------------------------

    def up(self) -> NatLab:
        reason = unavailable_reason()
        if reason is not None:
            raise LabUnavailable(reason)
        self.down()
        pub, sink = self.public, self.sink
        for ns in (pub, sink):
            _run("ip", "netns", "add", ns)
            self._ns(ns, "ip", "link", "set", "lo", "up")
        # A fixed MAC: a bridge left to choose takes its lowest port's, so adding a site could
        # change it, and every router that cached the old one lost the cloud until its ARP
        # entry expired (TCP stalled 14 s; the device's WebSocket missed PONGs, offers timed out).
        self._ns(pub, "ip", "link", "add", "br0", "address", BRIDGE_MAC, "type", "bridge")
        self._ns(pub, "ip", "link", "set", "br0", "up")
        for ip in (CLOUD_IP, CLOUD_ALT_IP, TURN_IP):
            self._ns(pub, "ip", "addr", "add", f"{ip}/24", "dev", "br0")
        self._ns(pub, "ip", "route", "add", "default", "via", SINK_IP)
        self._plug_into_bridge(sink, "wan", "sink0", f"{SINK_IP}/24")
        self._ns(sink, "sysctl", "-qw", "net.ipv4.ip_forward=0")
        return self

    def down(self) -> None:
        for site in self.sites.values():
            _stop(site.delayer)
        self.sites.clear()
        for ns in self.namespaces():
            pids = _run("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for ns in self.namespaces():
            _run("ip", "netns", "del", ns, check=False)

    def __enter__(self) -> NatLab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # ---- sites ----------------------------------------------------------------------

    def add_site(self, kind: NatKind | str, *, loss: float = 0.0, delay_ms: float = 0.0) -> Site:
        """A new private network behind a router of this kind, with one host in it."""
        free = [i for i in range(1, MAX_SITES + 1) if i not in self.sites]
        if not free:
            raise RuntimeError(f"the lab holds at most {MAX_SITES} sites")
        index = free[0]
        site = Site(self, index, NatKind(kind), loss, delay_ms)
        self.sites[index] = site
        router, host = site.router, site.host
        for ns in (router, host):
            _run("ip", "netns", "add", ns)
            self._ns(ns, "ip", "link", "set", "lo", "up")
        self._plug_into_bridge(router, "wan", f"w{index}", f"{site.wan_ip}/24")
        self._ns(router, "ip", "route", "add", "default", "via", SINK_IP)
        for key, value in (
            ("net.ipv4.ip_forward", "1"),
            ("net.netfilter.nf_conntrack_udp_timeout", str(UDP_TIMEOUT)),
            ("net.netfilter.nf_conntrack_udp_timeout_stream", str(UDP_TIMEOUT)),
        ):
            self._ns(router, "sysctl", "-qw", f"{key}={value}")
        self._connect_host(site)
        self._nat_rules(site)
        self._impairments(site)
        return site

    def move(self, host_site: Site, to: Site) -> None:
        """Move ``host_site``'s host into ``to``'s private network (its address changes).

        The host keeps its namespace, so processes running in it stay up and see their
        interface vanish and another appear: a phone moving from Wi-Fi to another network.
        ``to`` must have no host of its own in use.
        """
        self._ns(host_site.host, "ip", "link", "del", "eth0")
        self._ns(to.host, "ip", "link", "del", "eth0", check=False)
        self._veth(host_site.host, "eth0", to.router, "lan")
        self._ns(to.router, "ip", "addr", "add", f"{to.lan_router_ip}/28", "dev", "lan")
        self._ns(host_site.host, "ip", "addr", "add", f"{to.host_ip}/28", "dev", "eth0")
        self._ns(host_site.host, "ip", "route", "add", "default", "via", to.lan_router_ip)
        # The NAT rules name the host's address, which is ``to``'s: they still hold.

    def popen(self, ns: str, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """Start a program inside a namespace (killed by ``down()`` if still running)."""
        return subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kwargs)  # type: ignore[call-overload, no-any-return]

    def run(self, ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._ns(ns, *argv, check=check)

    # ---- plumbing -------------------------------------------------------------------

    def _ns(self, ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run("ip", "netns", "exec", ns, *argv, check=check)

    def _veth(self, ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
        tmp_a, tmp_b = (
            f"{self.prefix}t{os.getpid() % 10000}a",
            f"{self.prefix}t{os.getpid() % 10000}b",
        )
        _run("ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b)
        _run("ip", "link", "set", tmp_a, "netns", ns_a, "name", if_a)
        _run("ip", "link", "set", tmp_b, "netns", ns_b, "name", if_b)
        for ns, ifname in ((ns_a, if_a), (ns_b, if_b)):
            # Offloads off: with GRO/GSO a "packet" the lab drops would be many on the wire.
            self._ns(
                ns, "ethtool", "-K", ifname, "gro", "off", "gso", "off", "tso", "off", check=False
            )
            self._ns(ns, "ip", "link", "set", ifname, "up")

    def _plug_into_bridge(self, ns: str, ifname: str, bridge_port: str, cidr: str) -> None:
        self._veth(ns, ifname, self.public, bridge_port)
        self._ns(self.public, "ip", "link", "set", bridge_port, "master", "br0")
        self._ns(ns, "ip", "addr", "add", cidr, "dev", ifname)

    def _connect_host(self, site: Site) -> None:
        self._veth(site.host, "eth0", site.router, "lan")
        self._ns(site.router, "ip", "addr", "add", f"{site.lan_router_ip}/28", "dev", "lan")
        self._ns(site.host, "ip", "addr", "add", f"{site.host_ip}/28", "dev", "eth0")
        self._ns(site.host, "ip", "route", "add", "default", "via", site.lan_router_ip)

    def _iptables(self, ns: str, rule: str) -> None:
        """One iptables rule, written as on a command line (``-w``: wait for the lock)."""
        self._ns(ns, "iptables", "-w", *rule.split())

    def _nat_rules(self, site: Site) -> None:
        r, host = site.router, site.host_ip
        # Unsolicited UDP for the router itself is dropped before conntrack confirms an entry
        # for it: a confirmed entry for (peer -> wan:p) would make SNAT pick another port
        # when the host then sends to that peer from p, breaking endpoint-independent mapping
        # exactly when hole punching needs it (the peer's check arriving first).
        self._iptables(r, "-A INPUT -i wan -p udp -m conntrack --ctstate NEW -j DROP")
        if site.kind == NatKind.SYMMETRIC:
            self._iptables(r, "-t nat -A POSTROUTING -o wan -j MASQUERADE --random-fully")
        else:
            self._iptables(r, f"-t nat -A POSTROUTING -o wan -j SNAT --to-source {site.wan_ip}")
        if site.kind == NatKind.FULL_CONE:
            self._iptables(r, f"-t nat -A PREROUTING -i wan -p udp -j DNAT --to-destination {host}")
        elif site.kind == NatKind.RESTRICTED_CONE:
            seen = f"{self.prefix}r{site.index}"
            recent = f"-m recent --name {seen}"
            self._iptables(r, f"-A FORWARD -i lan -o wan -p udp {recent} --rdest --set")
            self._iptables(
                r,
                f"-t nat -A PREROUTING -i wan -p udp {recent} --rsource --rcheck"
                f" --seconds {UDP_TIMEOUT} -j DNAT --to-destination {host}",
            )
        elif site.kind == NatKind.UDP_BLOCKED:
            self._iptables(r, "-A FORWARD -p udp -j DROP")

    def _impairments(self, site: Site) -> None:
        r = site.router
        if site.loss > 0:
            drop = f"-m statistic --mode random --probability {site.loss:.4f} -j DROP"
            for direction in ("-i", "-o"):
                self._iptables(r, f"-t mangle -I FORWARD {direction} wan {drop}")
        if site.delay_ms > 0:
            # Half the round trip each way; --queue-bypass: a dead delayer must not blackhole.
            queue = site.queue_num
            self._iptables(r, f"-t mangle -A FORWARD -j NFQUEUE --queue-num {queue} --queue-bypass")
            argv = [sys.executable, str(DELAYER), "--queue", str(queue)]
            argv += ["--delay-ms", f"{site.delay_ms / 2:.1f}"]
            site.delayer = self.popen(r, argv, stdin=subprocess.DEVNULL)
            time.sleep(0.3)  # let it bind the queue before traffic arrives
            if site.delayer.poll() is not None:
                raise RuntimeError(f"the NFQUEUE delayer for {r} exited at start")


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def lab(prefix: str = "xl") -> Iterator[NatLab]:
    with NatLab(prefix) as built:
        yield built


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build or remove the xp2p NAT lab by hand.")
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("--prefix", default="xl", help="namespace name prefix (default xl)")
    args = parser.parse_args(argv)
    built = NatLab(args.prefix)
    if args.action == "down":
        built.down()
    elif args.action == "up":
        built.up()
        for kind in (*NAT_KINDS, NatKind.UDP_BLOCKED):
            site = built.add_site(kind)
            print(
                f"{kind:16} router {site.router} ({site.wan_ip})  host {site.host} ({site.host_ip})"
            )
        print(f"public namespace {built.public}: cloud {CLOUD_IP}/{CLOUD_ALT_IP}, TURN {TURN_IP}")
    for ns in built.namespaces() if args.action == "status" else ():
        print(ns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
