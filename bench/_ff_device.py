"""The far end of bench/first_frame.py: the cloud, a test-pattern device and an HTTP-FLV
baseline server, in their own process so the encoder never shares the viewer's event loop.

It prints one JSON line on stdout once everything is ready (URLs and credentials, which the
parent keeps to itself), then runs until its stdin closes. The baseline server answers
``GET /live.flv`` from the device's own ``LiveChannel``, exactly as the device answers a P2P
pull: start bytes (header, sequence headers, cached GOP) then each batch as it comes. With
``--trace`` it records the device's phases (see ``_ff_trace``) and serves them on
``GET /trace`` (the events so far, then forgets them).

    python -m bench._ff_device [--trace] [--congestion-control NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Sequence

from aiohttp import web

from bench._common import serve_live_channel
from xp2p.cloud.app import CloudServer
from xp2p.cloud.config import CloudConfig
from xp2p.device import ChannelConfig, DeviceAgent, DeviceConfig
from xp2p.device.channel import LiveChannel
from xp2p.link import LinkConfig
from xp2p.media import TestPatternConfig, TestPatternSource

#: The camera of the brief: 640x360@25, 800 kbit/s, a keyframe every 2 s.
PATTERN = TestPatternConfig(width=640, height=360, fps=25, bitrate=800_000, gop=50)


def baseline_app(live: LiveChannel, trace: list[dict[str, object]] | None) -> web.Application:
    async def live_flv(request: web.Request) -> web.StreamResponse:
        if not await live.wait_ready(5.0):
            raise web.HTTPServiceUnavailable(text="channel has no video yet")
        return await serve_live_channel(live, request)

    async def get_trace(request: web.Request) -> web.Response:
        events = [] if trace is None else list(trace)
        if trace is not None:
            trace.clear()
        return web.json_response(events)

    app = web.Application()
    app.router.add_get("/live.flv", live_flv)
    app.router.add_get("/trace", get_trace)
    return app


async def serve(trace: bool, congestion_control: str) -> None:
    events: list[dict[str, object]] | None = None
    if trace:
        from bench._ff_trace import install_device_trace

        events = install_device_trace()
    cloud = CloudServer(CloudConfig.demo(port=0, stun_port=0))
    await cloud.start()
    account = cloud.config.devices[0]
    agent = DeviceAgent(
        DeviceConfig(
            cloud_url=cloud.url,
            product_id=account.product_id,
            device_name=account.device_name,
            device_secret=account.secret,
            grant_public_key=cloud.grant_public_key,
            channels={0: ChannelConfig(default=lambda: TestPatternSource(PATTERN))},
            link=LinkConfig(congestion_control=congestion_control),
        )
    )
    runner: web.AppRunner | None = None
    try:
        await agent.start()
        await agent.wait_signed_in(timeout=15)
        live = agent._channels[0].live["high"]  # the device's own channel, no public accessor
        if not await live.wait_ready(15):
            raise RuntimeError(f"the test pattern did not start: {live.failed}")
        runner = web.AppRunner(baseline_app(live, events))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        app = cloud.config.apps[0]
        ready = {
            "cloud_url": cloud.url,
            "app_key": app.key,
            "app_secret": app.secret,
            "product_id": account.product_id,
            "device_name": account.device_name,
            "baseline": [host, port],
            "pattern": PATTERN.description,
            "gop": PATTERN.gop,
        }
        print(json.dumps(ready), flush=True)
        # The parent holds our stdin open for as long as it wants us; EOF means stop.
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)
    finally:
        if runner is not None:
            await runner.cleanup()
        await agent.close()
        await cloud.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trace", action="store_true", help="record phase timestamps")
    parser.add_argument("--congestion-control", default=LinkConfig().congestion_control)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.trace, args.congestion_control))


if __name__ == "__main__":
    main()
