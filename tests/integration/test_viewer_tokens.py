"""Viewer tokens end to end: the app backend mints a token with its secret, then a client
holding only that token (what a browser holds) opens a session, reads p2p-info, gets a grant
and connects to a real device over QUIC, within the token's scope."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from tests.support.stack import Stack
from xp2p.auth import GrantVerifier
from xp2p.link import open_link
from xp2p.link.xp2pinfo import Xp2pInfo
from xp2p.viewer.cloud_client import CloudClient, CloudError, ViewerTokenClient


async def test_a_token_alone_reaches_the_device(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = stack.config.apps[0]
    async with CloudClient(stack.cloud.url, app.key, app.secret, timeout=5) as backend:
        minted = await backend.mint_viewer_token(
            devices=[("DEMO", "cam1")], permissions=["live", "command"], ttl=120
        )
    assert minted.permissions == ("command", "live")
    assert 0 < minted.expires_at - time.time() <= 120
    assert minted.token.startswith("xvt1.") and minted.token not in repr(minted)

    viewer = ViewerTokenClient(stack.cloud.url, minted.token, timeout=5)
    try:
        session = await viewer.create_session()
        assert session.session_id and session.stun.port
        info = await viewer.get_p2p_info("DEMO", "cam1")
        assert info.online and info.xp2p_info
        grant, expires_at = await viewer.get_grant("DEMO", "cam1")
        checked = GrantVerifier(stack.cloud.grant_public_key).verify(
            grant, "DEMO", "cam1", time.time()
        )
        # No list asked: the token's permissions, never the app's (all five).
        assert checked.permissions == frozenset({"live", "command"})
        assert checked.app_key == app.key and expires_at <= minted.expires_at

        parsed = Xp2pInfo.parse(info.xp2p_info)

        async def signal(offer: dict[str, Any]) -> dict[str, Any]:
            return await viewer.connect("DEMO", "cam1", offer)

        link = await open_link(
            stack.device.config.link,
            signal,
            fingerprint=parsed.fingerprint,
            grant=grant,
            peer_label="DEMO/cam1",
        )
        try:
            live = await link.request("GET", "/ipc.flv?action=live&channel=0")
            assert live.status == 200
            head = b""
            async for chunk in live:
                head += chunk
                if len(head) >= 3:
                    break
            assert head[:3] == b"FLV"
            live.cancel()
            # The grant carries only the token's permissions: the device refuses a download.
            download = await link.request("GET", "/ipc.flv?action=download&file_name=a.flv")
            assert download.status == 403
            await download.read(4096)
        finally:
            await link.close()
        # The token never names a permission beyond its own, even when asked for one.
        with pytest.raises(CloudError) as err:
            await viewer.get_grant("DEMO", "cam1", ["download"])
        assert (err.value.status, err.value.code) == (403, "token_scope")
        assert "download" in err.value.message
    finally:
        await viewer.close()

    # The cloud logged the token's id, never the token (access log included).
    assert minted.token_id in caplog.text
    payload = minted.token.split(".")[1]
    for record in caplog.records:
        text = record.getMessage()
        assert payload not in text and minted.token not in text
