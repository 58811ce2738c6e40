"""Unit tests of xp2p.httpd's sans-IO parts: the throttled log and the connection table."""

from __future__ import annotations

import logging

import pytest

from xp2p.httpd import ConnectionLimits, ConnectionTable, ThrottledLog


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_throttled_log_writes_one_line_per_interval_with_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _Clock()
    log = ThrottledLog(logging.getLogger("test.throttled"), 10.0, clock=clock)
    with caplog.at_level(logging.WARNING, "test.throttled"):
        assert log.warning("emfile", "cannot accept: %s", "EMFILE")
        for _ in range(999):
            assert not log.warning("emfile", "cannot accept: %s", "EMFILE")
        assert log.warning("other", "another key goes out at once")
        clock.now = 10.0
        assert log.warning("emfile", "cannot accept: %s", "EMFILE")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "cannot accept: EMFILE",
        "another key goes out at once",
        "cannot accept: EMFILE (999 similar lines suppressed)",
    ]


def test_throttled_log_keys_are_bounded() -> None:
    log = ThrottledLog(logging.getLogger("test.throttled"), 10.0, clock=_Clock(), max_keys=5)
    for i in range(100):
        log.info(("source", i), "refused %d", i)
    assert len(log._keys) == 5


def _table(per_source: int = 3, capacity: int = 4) -> ConnectionTable:
    return ConnectionTable(ConnectionLimits(max_per_source=per_source), capacity)


def _idle(_: int) -> bool:
    return True


def test_a_source_past_its_cap_sheds_its_own_oldest_waiting_connection() -> None:
    table = _table()
    for i in range(3):
        assert table.admit(i, "198.51.100.1", float(i), _idle) == (True, [])
    assert table.admit(10, "203.0.113.2", 5.0, _idle) == (True, [])
    # The capacity (4) is reached too, but shedding the source's own oldest frees the room.
    assert table.admit(3, "198.51.100.1", 6.0, _idle) == (True, [0])
    assert table.from_source("198.51.100.1") == 3 and len(table) == 4


def test_busy_connections_are_never_shed() -> None:
    table = _table(per_source=2)
    for i in range(2):
        table.admit(i, "198.51.100.1", float(i), _idle)
        table.request_started(i)  # e.g. a device's WebSocket: inside its request for good
    assert table.admit(2, "198.51.100.1", 3.0, _idle) == (False, [])
    # Between requests a connection may be shed, but only if it is really idle.
    table.request_finished(1, 4.0)
    assert table.admit(2, "198.51.100.1", 5.0, lambda _: False) == (False, [])
    assert table.admit(2, "198.51.100.1", 5.0, _idle) == (True, [1])


def test_at_capacity_the_oldest_never_used_connection_goes_first() -> None:
    table = _table(per_source=100, capacity=3)
    table.admit(0, "a", 0.0, _idle)
    table.request_started(0)
    table.request_finished(0, 1.0)  # idle keep-alive since 1.0
    table.admit(1, "b", 2.0, _idle)  # never sent a request
    table.admit(2, "c", 3.0, _idle)
    assert table.admit(3, "d", 4.0, _idle) == (True, [1])
    assert table.admit(4, "e", 5.0, _idle) == (True, [2])
    assert table.admit(5, "f", 6.0, _idle) == (True, [3])
    assert table.awaiting_first_request(5) and not table.awaiting_first_request(0)
    for conn in (0, 4, 5):
        table.closed(conn)
    assert len(table) == 0 and table.from_source("a") == 0


def test_limits_are_validated_by_field() -> None:
    with pytest.raises(ValueError, match="header_timeout"):
        ConnectionLimits(header_timeout=0)
    with pytest.raises(ValueError, match="max_per_source"):
        ConnectionLimits(max_per_source=0)


async def test_accept_errors_are_logged_once_per_interval_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import asyncio
    import errno

    from aiohttp import web

    from xp2p.httpd import start_site

    runner, _ = await start_site(web.Application(), "127.0.0.1", 0, access_log=False)
    try:
        loop = asyncio.get_running_loop()
        with caplog.at_level(logging.DEBUG):
            for _ in range(500):  # what asyncio reports for each failed accept under EMFILE
                loop.call_exception_handler(
                    {
                        "message": "socket.accept() out of system resource",
                        "exception": OSError(errno.EMFILE, "Too many open files"),
                    }
                )
        accept_lines = [r for r in caplog.records if "cannot accept" in r.getMessage()]
        assert len(accept_lines) <= 1
        assert all(r.exc_info is None for r in caplog.records)
        assert not [r for r in caplog.records if r.name == "asyncio"]
    finally:
        await runner.cleanup()
