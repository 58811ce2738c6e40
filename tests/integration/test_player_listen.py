"""The local player that cannot listen is the seed's -2301 (加载本地server错误), and the CLI
says which address in one line."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from xp2p import ErrorCode, XP2PError
from xp2p.player.server import PlayerServer
from xp2p.viewer import P2PModule


@pytest.fixture
def taken_port() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


async def test_a_player_that_cannot_listen_is_2301(taken_port: int) -> None:
    player = PlayerServer(P2PModule(), port=taken_port, devices=["DEMO/cam1"])
    with pytest.raises(XP2PError) as raised:
        await player.start()
    assert raised.value.code == ErrorCode.LOCAL_SERVER_ERROR == -2301
    assert f"cannot listen on 127.0.0.1:{taken_port}" in raised.value.message


def test_the_demo_says_its_player_port_is_taken(taken_port: int) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "xp2p", "demo", "--port", str(taken_port), "--cloud-port", "0"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert out.returncode != 0
    assert f"the local player cannot listen on 127.0.0.1:{taken_port}" in out.stderr
    assert "choose another --port" in out.stderr and "Traceback" not in out.stderr
