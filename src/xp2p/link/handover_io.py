"""The asyncio shell of a handover (``xp2p.link.handover``): watch the path, re-offer, swap.

The viewer's end (``ViewerMover``) watches its link and, when the path dies or this machine's
address under it goes away, gathers a new ICE agent, sends a re-offer through the cloud the
way the first offer went, runs ICE on the answer and moves QUIC onto the new pair. The
device's end (``accept_reoffer``) checks the re-offer's proof, answers at once with its own
new agent and swaps once ICE on it works. Either way the old path stays under QUIC until the
new one works, and everything is bounded: a handover that fails leaves the link to QUIC's
idle timeout, as before handovers existed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import aioice

from xp2p.link import conditioner, handover
from xp2p.link.config import LinkConfig
from xp2p.link.errors import LinkError
from xp2p.link.handover import Action, Direction, PathWatch
from xp2p.link.ice import (
    IceConnection,
    connect_ice,
    create_ice,
    local_parameters,
    selected_pair,
    set_remote_parameters,
    split_ice_servers,
)
from xp2p.link.link import Link
from xp2p.tasks import TaskSet

logger = logging.getLogger("xp2p.link")

Signaller = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
#: How often the viewer's end looks at its path and this machine's addresses.
POLL = 0.2
#: How often a handover waiting for this machine's new network looks for it.
NETWORK_POLL = 0.05


def address_gone(link: Link) -> bool:
    """Whether the local address of the link's selected pair is no longer this machine's.

    Only host candidates say so directly (a relayed pair's local end is the TURN server's),
    and loopback never goes away."""
    pair = selected_pair(link.ice)
    if pair is None or pair[0].type != "host" or _is_loopback(pair[0].host):
        return False
    host = pair[0].host
    present = aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True)
    return host not in present


def network_ready(config: LinkConfig, link: Link) -> bool:
    """Whether this machine has an address to gather on: a move takes the old interface
    away before the new one is up (a phone between two networks), and gathering in between
    finds only loopback, which no peer can reach."""
    present = set(aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=config.use_ipv6))
    wanted = config.host_addresses
    if wanted is not None:
        return any(a in present or _is_loopback(a) for a in wanted)
    if not present:
        pair = selected_pair(link.ice)  # a link on loopback needs nothing more
        return pair is not None and _is_loopback(pair[0].host)
    # The address comes before the route: STUN and TURN need the route.
    return all(routable(server) for server in _server_addresses(config))


def _server_addresses(config: LinkConfig) -> list[tuple[str, int]]:
    stun, turn = split_ice_servers(config.ice_servers)
    found = [stun] if stun is not None else []
    return found + [t.address for t in turn[:1]]


def routable(address: tuple[str, int]) -> bool:
    """Whether the kernel has a route to ``address`` (an IP literal; names are not looked
    up here, that would block)."""
    try:
        family = (
            socket.AF_INET6 if ipaddress.ip_address(address[0]).version == 6 else socket.AF_INET
        )
    except ValueError:
        return True
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(address)  # a route lookup, nothing sent
        except OSError:
            return False
    return True


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ViewerMover:
    """The viewer's end of handovers for one link; ``link.move()`` calls ``handover``."""

    def __init__(
        self,
        link: Link,
        signal: Signaller,
        *,
        relay_grace: Callable[[str, Any], float],
        watch: PathWatch | None = None,
    ) -> None:
        self.link = link
        self._signal = signal
        self._relay_grace = relay_grace
        self.watch = watch or PathWatch()
        self._seq = 0
        self._running: asyncio.Task[bool] | None = None
        self._tasks = TaskSet(f"link{link.id}-mover")
        #: (reason, seconds, ok) of each handover, for logs, tests and bench/handover.py.
        self.history: list[tuple[str, float, bool]] = []
        link.mover = self

    def start(self) -> None:
        self._tasks.spawn(self._watch_loop(), "watch")

    async def _watch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        closed = asyncio.ensure_future(self.link.wait_closed())
        try:
            while not self.link.closed:
                gone = address_gone(self.link)
                action = self.watch.step(loop.time(), self.link.last_received, gone, self.link.rtt)
                if action is Action.PROBE:
                    self.link.probe()
                elif action is Action.HANDOVER:
                    self._start("local address gone" if gone else "path silent")
                await asyncio.wait([closed], timeout=POLL)
        finally:
            closed.cancel()
            if self._running is not None:
                self._running.cancel()

    def _start(self, reason: str) -> asyncio.Task[bool]:
        if self._running is None or self._running.done():
            self._running = self._tasks.spawn(self._run(reason), "handover")
        return self._running

    async def handover(self, reason: str = "asked") -> bool:
        """Move the link to a new path now (the viewer module calls this when the machine's
        network changed); True once QUIC runs over the new pair. A handover already running
        is waited for, not doubled."""
        if self.link.closed:
            return False
        return await asyncio.shield(self._start(reason))

    async def _run(self, reason: str) -> bool:
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.watch.started()
        ok = False
        try:
            await asyncio.wait_for(self._attempt(), self.link.config.connect_timeout)
            ok = True
        except TimeoutError:
            logger.warning("link %d: handover (%s) timed out", self.link.id, reason)
        except LinkError as exc:
            logger.warning("link %d: handover (%s) failed: %s", self.link.id, reason, exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the signaller's own errors (the cloud said no, say)
            logger.warning(
                "link %d: handover (%s) failed: %s: %s",
                self.link.id,
                reason,
                type(exc).__name__,
                exc,
            )
        finally:
            self.watch.finished(ok, loop.time())
        elapsed = loop.time() - started
        self.history.append((reason, elapsed, ok))
        if ok:
            logger.info("link %d: handover (%s) took %.3f s", self.link.id, reason, elapsed)
        return ok

    async def _attempt(self) -> None:
        link, config = self.link, self.link.config
        key = link.handover_key
        if key is None:
            raise LinkError("not_ready", "the link's QUIC handshake has not completed")
        closed = asyncio.ensure_future(link.wait_closed())
        try:
            while not network_ready(config, link):  # bounded by the caller's wait_for
                await asyncio.wait([closed], timeout=NETWORK_POLL)
        finally:
            closed.cancel()
        if link.closed:
            raise LinkError("closed", "the link closed before a network came up")
        ice = create_ice(config, controlling=True)
        link.keep_spare(ice)
        try:
            await ice.gather_candidates()
            if not ice.local_candidates:
                raise LinkError("no_candidates", f"no ICE candidates: {ice.empty_reason()}")
            self._seq += 1
            seq = self._seq
            # This end's NAT as probed before is stale after a move: say "unknown", so
            # neither end waits long for a direct path on the old theory.
            offer = handover.build(key, Direction.OFFER, seq, local_parameters(ice), "unknown")
            answer = await self._signal(offer)
            message = handover.parse(answer)
            handover.verify(key, Direction.ANSWER, message)
            if message.seq != seq:
                raise LinkError("bad_handover", f"answer is for re-offer {message.seq}, not {seq}")
            ice.relay_grace = self._relay_grace("unknown", message.nat)
            conditioner.attach(ice, config.conditions)
            await set_remote_parameters(ice, message.ice)
            await connect_ice(ice, config.connect_timeout)
        except BaseException:
            await _drop(link, ice)
            raise
        link.swap_ice(ice)

    async def close(self) -> None:
        await self._tasks.cancel_all()


async def _drop(link: Link, ice: IceConnection) -> None:
    link.forget_spare(ice)
    await ice.close()


#: The device's half-done handover per link: a newer re-offer replaces it.
_pending: weakref.WeakKeyDictionary[Link, IceConnection] = weakref.WeakKeyDictionary()
_seqs: weakref.WeakKeyDictionary[Link, handover.SeqCheck] = weakref.WeakKeyDictionary()
_accepting: set[asyncio.Task[None]] = set()


def find_link(links: set[Link], message: handover.HandoverMessage) -> Link | None:
    """The link a re-offer names, if it is one of ``links``."""
    for link in links:
        key = link.handover_key
        if key is not None and not link.closed and handover.link_ref(key) == message.ref:
            return link
    return None


async def accept_reoffer(
    link: Link, message: handover.HandoverMessage, config: LinkConfig
) -> dict[str, Any]:
    """Device side: check a re-offer, answer at once, move the link once ICE works.

    ``config`` is the link's own with the ICE servers and NAT type of now (the device's
    network may have changed too). Raises ``LinkError("bad_handover")`` for a re-offer that
    does not prove the link or replays an older one."""
    key = link.handover_key
    if key is None:
        raise LinkError("bad_handover", "the link is not up")
    handover.verify(key, Direction.OFFER, message)
    _seqs.setdefault(link, handover.SeqCheck()).take(message.seq)
    previous = _pending.pop(link, None)
    if previous is not None:
        await _drop(link, previous)
    ice = create_ice(config, controlling=False)
    link.keep_spare(ice)
    try:
        await ice.gather_candidates()
        await set_remote_parameters(ice, message.ice)
    except BaseException:
        await _drop(link, ice)
        raise
    _pending[link] = ice
    answer = handover.build(
        key, Direction.ANSWER, message.seq, local_parameters(ice), config.nat_type
    )
    task = asyncio.get_running_loop().create_task(_finish(link, ice, config))
    _accepting.add(task)
    task.add_done_callback(_accepting.discard)
    return answer


async def _finish(link: Link, ice: IceConnection, config: LinkConfig) -> None:
    try:
        conditioner.attach(ice, config.conditions)
        await connect_ice(ice, config.connect_timeout)
    except Exception as exc:
        if _pending.get(link) is ice:
            del _pending[link]
        logger.info("link %d: handover from %s failed: %s", link.id, link.peer_label, exc)
        await _drop(link, ice)
        return
    if _pending.get(link) is not ice:  # a newer re-offer replaced this one
        await _drop(link, ice)
        return
    del _pending[link]
    link.swap_ice(ice)
