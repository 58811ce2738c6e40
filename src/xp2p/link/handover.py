"""Moving a live link to a new network path: the re-offer, its proof, and when to start one.

Sans-IO: nothing here sends, sleeps or reads a clock; ``xp2p.link.handover_io`` is the shell.

When the viewer's network changes (or the camera's, which the viewer sees as a dead path),
the link runs ICE again with a new agent on each side, through the cloud as the first offer
did, and the QUIC connection carries on over the new pair: QUIC never sees an address
(``xp2p.link.link.PEER``), so to it a handover is a burst of loss.

A re-offer must not let anyone but the link's own two ends steer it elsewhere: the cloud
relays it, so it carries no grant (a grant proves an app may *open* a link, not that it holds
this one) but a MAC under a key both ends derive from the link's TLS session, which the cloud
never sees. The answer carries one too, so neither end follows ICE parameters a third party
wrote. ``seq`` only grows: a re-offer the cloud (or anyone) replays is refused.

* re-offer ``{"v": 1, "handover": {"ref", "seq", "mac"}, "ice": {...}, "nat"}``
* answer   ``{"v": 1, "handover": {"ref", "seq", "mac"}, "ice": {...}, "nat"}``
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any

from xp2p.link.errors import LinkError
from xp2p.link.ice import IceParameters

SIGNAL_VERSION = 1
KEY_LABEL = b"xp2p link handover key v1"
REF_LABEL = b"xp2p link handover ref v1"
#: A link moves a handful of times in its life; a huge seq is a forged or broken message.
MAX_SEQ = 2**31
MAX_NAT_LENGTH = 32
_HEX = frozenset("0123456789abcdef")


def derive_key(client_secret: bytes, server_secret: bytes) -> bytes:
    """The link's handover key, from the QUIC connection's 1-RTT traffic secrets.

    Both ends hold these two secrets after the handshake and nobody else does (TLS 1.3's
    exporter is derived from the same master secret; aioquic has none, docs/protocol.md §8c).
    """
    if not client_secret or not server_secret:
        raise ValueError("the QUIC handshake has not produced its traffic secrets")
    return hmac.new(KEY_LABEL, client_secret + server_secret, hashlib.sha256).digest()


def link_ref(key: bytes) -> str:
    """Names the link to the device in a re-offer: 32 hex digits, useless without ``key``."""
    return hmac.new(key, REF_LABEL, hashlib.sha256).hexdigest()[:32]


class Direction(StrEnum):
    """Which way a message goes: an answer's MAC must not pass as an offer's."""

    OFFER = "offer"
    ANSWER = "answer"


def _mac(key: bytes, direction: Direction, ref: str, seq: int, ice: IceParameters, nat: str) -> str:
    body = json.dumps(
        [direction.value, ref, seq, ice.ufrag, ice.pwd, list(ice.candidates), nat],
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hmac.new(key, body.encode("ascii"), hashlib.sha256).hexdigest()


def build(
    key: bytes, direction: Direction, seq: int, ice: IceParameters, nat: str
) -> dict[str, Any]:
    """A re-offer or its answer, MAC'd under the link's key."""
    ref = link_ref(key)
    return {
        "v": SIGNAL_VERSION,
        "handover": {"ref": ref, "seq": seq, "mac": _mac(key, direction, ref, seq, ice, nat)},
        "ice": ice.to_json(),
        "nat": nat,
    }


@dataclass(frozen=True, slots=True)
class HandoverMessage:
    """A parsed re-offer or answer, not yet authenticated."""

    ref: str
    seq: int
    mac: str
    ice: IceParameters
    nat: str


def is_handover(doc: Any) -> bool:
    """Whether an offer is a re-offer for an existing link (and not a new link's offer)."""
    return isinstance(doc, dict) and "handover" in doc


def _is_hex(value: Any, length: int) -> bool:
    return isinstance(value, str) and len(value) == length and set(value) <= _HEX


def parse(doc: Any) -> HandoverMessage:
    """Check a re-offer's or answer's shape; raises ``LinkError("bad_signal")``."""
    if not isinstance(doc, dict) or doc.get("v") != SIGNAL_VERSION:
        raise LinkError("bad_signal", "re-offer is malformed")
    meta = doc.get("handover")
    if not isinstance(meta, dict):
        raise LinkError("bad_signal", "re-offer has no handover object")
    ref, seq, mac = meta.get("ref"), meta.get("seq"), meta.get("mac")
    if not _is_hex(ref, 32):
        raise LinkError("bad_signal", "re-offer's ref must be 32 lowercase hex digits")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 < seq < MAX_SEQ:
        raise LinkError("bad_signal", f"re-offer's seq must be an integer in 1..{MAX_SEQ - 1}")
    if not _is_hex(mac, 64):
        raise LinkError("bad_signal", "re-offer's mac must be 64 lowercase hex digits")
    nat = doc.get("nat", "unknown")
    if not isinstance(nat, str) or len(nat) > MAX_NAT_LENGTH:
        raise LinkError("bad_signal", "re-offer's nat must be a short string")
    return HandoverMessage(str(ref), seq, str(mac), IceParameters.from_json(doc.get("ice")), nat)


def verify(key: bytes, direction: Direction, message: HandoverMessage) -> None:
    """Raises ``LinkError("bad_handover")`` unless the link's other end made ``message``."""
    expected = _mac(key, direction, message.ref, message.seq, message.ice, message.nat)
    if message.ref != link_ref(key) or not hmac.compare_digest(expected, message.mac):
        raise LinkError("bad_handover", "re-offer's proof does not match the link")


class SeqCheck:
    """The device's side of replay protection: each re-offer's seq above the last one taken."""

    def __init__(self) -> None:
        self.last = 0

    def take(self, seq: int) -> None:
        if seq <= self.last:
            raise LinkError("bad_handover", f"re-offer {seq} is not newer than {self.last}")
        self.last = seq


# ---- when to start one (the viewer's side) --------------------------------------------------


class Action(Enum):
    NONE = "none"
    PROBE = "probe"  #: send a PING now: the path has been quiet
    HANDOVER = "handover"


@dataclass
class PathWatch:
    """Decides, from what the link saw, whether its path is dead and a handover is due.

    Two signs: the selected pair's local address left this machine (a network change seen
    directly: act at once), or the peer went quiet: after ``silence`` with no datagram the
    link probes with a PING, and a probe unanswered for ``probe_timeout`` (or three round
    trips, on a long path) is a dead path. A live stream sends all the time, and an idle
    link's PINGs are answered within a round trip, so neither trips it on a working path.
    After a failed handover the next waits ``backoff`` (doubling), and at most
    ``max_attempts`` run in a row: a link that cannot move dies of QUIC's idle timeout as
    before.
    """

    silence: float = 0.5
    probe_timeout: float = 0.3
    backoff: float = 0.5
    max_attempts: int = 4
    probe_sent_at: float | None = None
    attempts: int = 0
    not_before: float = 0.0
    running: bool = False

    def step(
        self, now: float, last_received: float, address_gone: bool, rtt: float = 0.0
    ) -> Action:
        if self.running or self.attempts >= self.max_attempts or now < self.not_before:
            return Action.NONE
        if address_gone:
            return Action.HANDOVER
        if self.probe_sent_at is not None and last_received >= self.probe_sent_at:
            self.probe_sent_at = None  # answered
        if now - last_received < self.silence:
            return Action.NONE
        if self.probe_sent_at is None:
            self.probe_sent_at = now
            return Action.PROBE
        if now - self.probe_sent_at >= max(self.probe_timeout, 3 * rtt):
            return Action.HANDOVER
        return Action.NONE

    def started(self) -> None:
        self.running = True
        self.attempts += 1
        self.probe_sent_at = None

    def finished(self, ok: bool, now: float) -> None:
        self.running = False
        if ok:
            self.attempts = 0
            self.not_before = now + self.silence  # the new path's first datagrams are due
        else:
            self.not_before = now + self.backoff * 2 ** (self.attempts - 1)
