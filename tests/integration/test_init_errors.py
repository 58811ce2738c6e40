"""``init`` against a cloud that is not there, does not answer, or refuses the app (issue 12
item 5): each is its own error, bounded in time, and the module stays usable for a retry."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest

from tests.support.procs import free_port
from tests.support.stack import Stack
from xp2p import ErrorCode, XP2PError
from xp2p.viewer import AppParams, P2PModule


@pytest.fixture
async def silent_cloud() -> AsyncIterator[str]:
    """A TCP server that accepts, reads and never answers: a cloud that hangs."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(4096):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_an_unreachable_cloud_is_2006_not_a_bad_parameter() -> None:
    module = P2PModule()
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens
    with pytest.raises(XP2PError) as caught:
        await module.init(AppParams(url, "my-app", "a long random secret"))
    assert caught.value.code == ErrorCode.CLOUD_UNREACHABLE == -2006
    assert caught.value.message.startswith("cloud sign-in failed: cannot reach the cloud")
    assert "a long random secret" not in str(caught.value)
    with pytest.raises(XP2PError) as again:  # not initialised: a retry may call init again
        await module.start_p2p_service("cam", None)  # type: ignore[arg-type]
    assert again.value.code == ErrorCode.NOT_INITIALISED


async def test_a_silent_cloud_is_2006_after_the_timeout(silent_cloud: str) -> None:
    module = P2PModule()
    params = AppParams(silent_cloud, "my-app", "a long random secret", cloud_timeout=0.5)
    with pytest.raises(XP2PError) as caught:
        await asyncio.wait_for(module.init(params), 10)  # bounded by cloud_timeout, not this
    assert caught.value.code == ErrorCode.CLOUD_UNREACHABLE
    assert caught.value.message == "cloud sign-in failed: no answer from the cloud within 0.5 s"


async def test_wrong_credentials_stay_2000_and_a_retry_with_good_ones_works(stack: Stack) -> None:
    good = stack.app_params
    module = P2PModule()
    with pytest.raises(XP2PError) as caught:
        await module.init(dataclasses.replace(good, app_secret="not the secret"))
    assert caught.value.code == ErrorCode.BAD_PARAM
    assert "not the secret" not in str(caught.value)
    await module.init(good)
    try:
        assert module.nat_type != "unknown"
    finally:
        await module.destroy()
