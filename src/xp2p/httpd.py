"""What every xp2p HTTP server (cloud, edge, origin, player) does to listen and be named, and
how it keeps its connections from being used up.

An HTTP server facing a network is attacked by connections that never finish a request: idle
sockets and "slowloris" clients sending headers a byte at a time. Each holds a descriptor, and
at the process's descriptor limit nothing else is accepted (not ``/healthz``, not a device's
sign-in), while asyncio logs a traceback per failed ``accept``. :func:`start_site` therefore
applies :class:`ConnectionLimits`:

- ``header_timeout``: a new connection that has not sent the headers of its first request in
  that many seconds is closed (and a TLS handshake must finish as fast);
- ``keepalive_timeout``: an idle keep-alive connection is closed after that many seconds
  (aiohttp's own default is about an hour). A WebSocket or a streaming response is inside its
  request, so neither timeout touches it: those end by their own heartbeats;
- ``max_per_source``: open connections per client address; past it the source's oldest
  connection still waiting for its first request is shed, or, if all of them are busy, the new
  one is refused;
- descriptors: at start the soft ``RLIMIT_NOFILE`` is raised to the hard one, and past
  (limit - ``fd_reserve``) open connections, or when ``accept`` fails for lack of
  descriptors, the oldest connection still waiting for its first request (then the oldest idle
  keep-alive one) is shed, so the server keeps accepting. The ``accept`` failures are logged
  through :class:`ThrottledLog`: one line per interval with a count, never a traceback each.

:class:`ConnectionTable` is the sans-IO bookkeeping; :class:`ThrottledLog` is for any log
line an attacker can make repeat.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import ssl
import time
import weakref
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.log import access_logger

logger = logging.getLogger("xp2p.httpd")


@dataclass(frozen=True)
class ConnectionLimits:
    """Connection limits of one HTTP server (see the module docstring). The defaults are safe
    for a server facing a network and loose enough for loopback tests."""

    header_timeout: float = 10.0
    keepalive_timeout: float = 20.0
    max_per_source: int = 256
    fd_reserve: int = 64
    #: Connections the kernel queues before the server accepts them (capped by
    #: net.core.somaxconn). aiohttp's 128 is too few for a fleet signing in again after a
    #: restart: the SYNs beyond it are dropped and TCP retries them a second later
    #: (bench/cloud_load.py: connect p99 1.03 s with 10,000 cameras, then 3 ms).
    backlog: int = 4096

    def __post_init__(self) -> None:
        for name in ("header_timeout", "keepalive_timeout"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 < value <= 3600):
                raise ValueError(f"{name}: must be a number of seconds in (0, 3600]")
        for name in ("max_per_source", "fd_reserve", "backlog"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ValueError(f"{name}: must be a positive integer")


# --- repeated log lines -------------------------------------------------------------------


class ThrottledLog:
    """Logs a given ``key`` at most once per ``interval`` seconds.

    The first line of a key goes out at once; repeats inside the interval are counted, and the
    next line after it says how many were suppressed. At most ``max_keys`` keys are tracked
    (the oldest is forgotten first), so keys taken from attacker input stay bounded.
    """

    def __init__(
        self,
        log: logging.Logger,
        interval: float = 10.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 1000,
    ) -> None:
        self._log = log
        self._interval = interval
        self._clock = clock
        self._max_keys = max_keys
        self._keys: dict[Hashable, tuple[float, int]] = {}  # key -> (last emitted, suppressed)

    def log(self, level: int, key: Hashable, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless ``key`` was logged less than ``interval`` s ago;
        True when it was written."""
        now = self._clock()
        entry = self._keys.get(key)
        if entry is not None and now - entry[0] < self._interval:
            self._keys[key] = (entry[0], entry[1] + 1)
            return False
        suppressed = entry[1] if entry is not None else 0
        self._keys.pop(key, None)
        if len(self._keys) >= self._max_keys:
            del self._keys[next(iter(self._keys))]
        self._keys[key] = (now, 0)
        if suppressed:
            msg += " (%d similar lines suppressed)"
            args = (*args, suppressed)
        self._log.log(level, msg, *args)
        return True

    def info(self, key: Hashable, msg: str, *args: object) -> bool:
        return self.log(logging.INFO, key, msg, *args)

    def warning(self, key: Hashable, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, key, msg, *args)

    def error(self, key: Hashable, msg: str, *args: object) -> bool:
        return self.log(logging.ERROR, key, msg, *args)


# --- connection bookkeeping (sans-IO) -----------------------------------------------------


@dataclass
class _Conn:
    source: str
    opened: float
    first_request: bool = False  #: it has sent the headers of a request
    active: int = 0  #: requests inside their handler (a WebSocket stays here)
    idle_since: float = 0.0


class ConnectionTable:
    """Which connections are open, from where, and which to shed. Sans-IO: ids and clocks in,
    ids out; the shell closes what it is told to.

    Shedding order: connections that never sent a request, oldest first; then connections
    between requests (``idle`` says whether one really is idle), oldest idle first. A
    connection inside a request is never shed.
    """

    def __init__(self, limits: ConnectionLimits, capacity: int) -> None:
        self.limits = limits
        self.capacity = capacity
        self._conns: dict[int, _Conn] = {}
        self._per_source: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._conns)

    def from_source(self, source: str) -> int:
        return self._per_source.get(source, 0)

    def admit(
        self, conn_id: int, source: str, now: float, idle: Callable[[int], bool]
    ) -> tuple[bool, list[int]]:
        """A connection arrived: whether to keep it, and the ids to shed to make room."""
        shed: list[int] = []
        if self.from_source(source) >= self.limits.max_per_source:
            victim = self.victim(idle, source)
            if victim is None:
                return False, []
            shed.append(victim)
            self.closed(victim)
        if len(self._conns) >= self.capacity:
            victim = self.victim(idle)
            if victim is None:  # everything open is busy: refuse the newcomer
                return False, shed
            shed.append(victim)
            self.closed(victim)
        self._conns[conn_id] = _Conn(source, now, idle_since=now)
        self._per_source[source] = self.from_source(source) + 1
        return True, shed

    def victim(self, idle: Callable[[int], bool], source: str | None = None) -> int | None:
        """The connection to shed first (of ``source`` only, when given), or None."""
        fresh: tuple[float, int] | None = None
        between: tuple[float, int] | None = None
        for conn_id, conn in self._conns.items():
            if conn.active or (source is not None and conn.source != source):
                continue
            if not conn.first_request:
                if fresh is None or conn.opened < fresh[0]:
                    fresh = (conn.opened, conn_id)
            elif (between is None or conn.idle_since < between[0]) and idle(conn_id):
                between = (conn.idle_since, conn_id)
        pick = fresh or between
        return None if pick is None else pick[1]

    def request_started(self, conn_id: int) -> None:
        conn = self._conns.get(conn_id)
        if conn is not None:
            conn.first_request = True
            conn.active += 1

    def request_finished(self, conn_id: int, now: float) -> None:
        conn = self._conns.get(conn_id)
        if conn is not None:
            conn.active = max(0, conn.active - 1)
            conn.idle_since = now

    def awaiting_first_request(self, conn_id: int) -> bool:
        conn = self._conns.get(conn_id)
        return conn is not None and not conn.first_request

    def closed(self, conn_id: int) -> None:
        conn = self._conns.pop(conn_id, None)
        if conn is not None:
            left = self._per_source[conn.source] - 1
            if left:
                self._per_source[conn.source] = left
            else:
                del self._per_source[conn.source]


# --- the asyncio shell --------------------------------------------------------------------

_FD_LIMIT: int | None = None


def descriptor_limit() -> int:
    """The soft ``RLIMIT_NOFILE``, raised once to the hard limit (where the system lets us):
    a server should not run out of descriptors at 1024 when it is allowed many more."""
    global _FD_LIMIT
    if _FD_LIMIT is None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        if target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (ValueError, OSError):
                pass  # e.g. above the kernel's nr_open: keep the soft limit we have
        _FD_LIMIT = soft
    return _FD_LIMIT


#: Every guard in this process: the descriptor budget is the process's, not one server's.
_GUARDS: weakref.WeakSet[_Guard] = weakref.WeakSet()
_ACCEPT_LOG = ThrottledLog(logger, 10.0)
_ACCEPT_ERROR = "socket.accept() out of system resource"


class _Guard:
    """Connection limits of one site: the table, timers and the protocol wrapper."""

    def __init__(self, limits: ConnectionLimits, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        capacity = max(1, descriptor_limit() - limits.fd_reserve)
        self.table = ConnectionTable(limits, capacity)
        self.protocols: dict[int, _GuardedProtocol] = {}
        self.by_handler: dict[object, int] = {}
        self._next_id = 0
        self.shed_count = 0
        self.refused_count = 0
        self._log = ThrottledLog(logger, 10.0)
        _GUARDS.add(self)
        _install_accept_handler(loop)

    def total_open(self) -> int:
        return sum(len(g.table) for g in _GUARDS)

    def _idle(self, conn_id: int) -> bool:
        proto = self.protocols.get(conn_id)
        return proto is not None and proto.write_buffer_empty()

    def admit(self, proto: _GuardedProtocol, source: str) -> bool:
        self._next_id += 1
        proto.conn_id = self._next_id
        now = self.loop.time()
        # The capacity is the process's: when the descriptors are held by another server in
        # this process (or this one), shed there. The table then checks its own share.
        if self.total_open() >= self.table.capacity and not shed_elsewhere():
            self.refused_count += 1
            self._log.warning("full", "refused a connection: too many open")
            return False
        ok, shed = self.table.admit(proto.conn_id, source, now, self._idle)
        for victim in shed:
            self._shed(victim, "to make room")
        if not ok:
            self.refused_count += 1
            self._log.warning(
                ("refused", source), "refused a connection from %s: too many open", source
            )
            return False
        self.protocols[proto.conn_id] = proto
        proto.header_timer = self.loop.call_later(
            self.table.limits.header_timeout, self._header_timeout, proto.conn_id
        )
        return True

    def _shed(self, conn_id: int, why: str) -> None:
        proto = self.protocols.pop(conn_id, None)
        self.table.closed(conn_id)
        if proto is not None:
            self.shed_count += 1
            self._log.info(("shed", why), "closed an idle connection %s", why)
            proto.abort()

    def shed_one(self) -> bool:
        victim = self.table.victim(self._idle)
        if victim is None:
            return False
        self._shed(victim, "(descriptors low)")
        return True

    def _header_timeout(self, conn_id: int) -> None:
        if self.table.awaiting_first_request(conn_id):
            self._shed(conn_id, "that sent no request in time")

    def released(self, proto: _GuardedProtocol) -> None:
        if self.protocols.get(proto.conn_id) is proto:
            del self.protocols[proto.conn_id]
            self.table.closed(proto.conn_id)
        if proto.handler is not None:
            self.by_handler.pop(proto.handler, None)

    def wrap_handler(
        self, handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
        async def tracked(request: web.BaseRequest) -> web.StreamResponse:
            conn_id = self.by_handler.get(request.protocol)
            if conn_id is None:
                return await handler(request)
            self.table.request_started(conn_id)
            proto = self.protocols.get(conn_id)
            if proto is not None and proto.header_timer is not None:
                proto.header_timer.cancel()
                proto.header_timer = None
            try:
                return await handler(request)
            finally:
                self.table.request_finished(conn_id, self.loop.time())

        return tracked


def shed_elsewhere() -> bool:
    """Shed the oldest idle connection of any server in this process; False if none is."""
    return any(g.shed_one() for g in list(_GUARDS))


def _install_accept_handler(loop: asyncio.AbstractEventLoop) -> None:
    """asyncio reports each failed ``accept`` (EMFILE...) with a traceback through the loop's
    exception handler and retries a second later. Log it once per interval instead, and shed
    an idle connection so the retry finds a descriptor."""
    previous = loop.get_exception_handler()
    if getattr(previous, "_xp2p_accept_guard", False):
        return

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == _ACCEPT_ERROR:
            exc = context.get("exception")
            shed = shed_elsewhere()
            _ACCEPT_LOG.warning(
                "accept",
                "cannot accept connections: %s%s",
                exc.strerror if isinstance(exc, OSError) and exc.strerror else exc,
                "; shed an idle connection" if shed else "",
            )
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    handler._xp2p_accept_guard = True  # type: ignore[attr-defined]
    loop.set_exception_handler(handler)


class _GuardedProtocol(asyncio.Protocol):
    """Stands between the transport and aiohttp's request handler: admits or refuses the
    connection, and tells the guard when it closes. Everything else is passed through."""

    def __init__(self, guard: _Guard, make_handler: Callable[[], asyncio.Protocol]) -> None:
        self._guard = guard
        self._make_handler = make_handler
        self.handler: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.conn_id = 0
        self.header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        source = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        if not self._guard.admit(self, source):
            self.abort()
            return
        self.handler = self._make_handler()
        self._guard.by_handler[self.handler] = self.conn_id
        self.handler.connection_made(transport)

    def write_buffer_empty(self) -> bool:
        transport = self.transport
        return transport is None or transport.get_write_buffer_size() == 0

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.handler is not None:
            self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self.handler.eof_received() if self.handler is not None else None

    def pause_writing(self) -> None:
        if self.handler is not None:
            self.handler.pause_writing()

    def resume_writing(self) -> None:
        if self.handler is not None:
            self.handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None
        self._guard.released(self)
        if self.handler is not None:
            self.handler.connection_lost(exc)
        self.transport = None


class _GuardedSite(web.TCPSite):
    """aiohttp's TCPSite, with every connection passed through a :class:`_GuardedProtocol`."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        limits: ConnectionLimits,
    ) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context)
        self._limits = limits
        self.guard: _Guard | None = None

    async def start(self) -> None:
        # TCPSite.start with our protocol factory (aiohttp offers no hook for one).
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        guard = self.guard = _Guard(self._limits, loop)
        server.request_handler = guard.wrap_handler(server.request_handler)
        self._server = await loop.create_server(
            lambda: _GuardedProtocol(guard, server),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._limits.backlog,
            ssl_handshake_timeout=self._limits.header_timeout if self._ssl_context else None,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port


async def start_site(
    app: web.Application,
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    shutdown_timeout: float = 2.0,
    access_log: bool = True,
    limits: ConnectionLimits | None = None,
    access_log_class: type[AbstractAccessLogger] | None = None,
) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port`` (0: any free port) under ``limits`` (default
    :class:`ConnectionLimits`): the runner, to ``cleanup()`` when done, and the bound port.
    When it cannot listen, nothing is left running."""
    limits = limits or ConnectionLimits()
    log = access_logger if access_log else None
    # access_log_class: a server whose URLs might carry something unfit for a log (the cloud
    # refuses tokens in query strings, and must not log them while refusing) logs its own way.
    extra: dict[str, Any] = (
        {} if access_log_class is None else {"access_log_class": access_log_class}
    )
    runner = web.AppRunner(
        app,
        shutdown_timeout=shutdown_timeout,
        access_log=log,
        keepalive_timeout=limits.keepalive_timeout,
        **extra,
    )
    await runner.setup()
    try:
        await _GuardedSite(runner, host, port, ssl_context=ssl_context, limits=limits).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, int(runner.addresses[0][1])


def host_in_url(host: str) -> str:
    """An IPv6 address goes in brackets in a URL."""
    return f"[{host}]" if ":" in host else host
