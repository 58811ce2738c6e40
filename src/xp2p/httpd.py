"""What every xp2p HTTP server (cloud, edge, origin, player) does to listen and be named."""

from __future__ import annotations

import ssl

from aiohttp import web
from aiohttp.log import access_logger


async def start_site(
    app: web.Application,
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    shutdown_timeout: float = 2.0,
    access_log: bool = True,
) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port`` (0: any free port): the runner, to ``cleanup()`` when
    done, and the bound port. When it cannot listen, nothing is left running."""
    log = access_logger if access_log else None
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout, access_log=log)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, int(runner.addresses[0][1])


def host_in_url(host: str) -> str:
    """An IPv6 address goes in brackets in a URL."""
    return f"[{host}]" if ":" in host else host
