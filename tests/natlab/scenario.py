"""Recovery scenarios, run by a lab viewer inside its namespace; JSON lines on stdout.

* ``idle DEVICE --seconds S``: connect, stay idle (keep-alives only) for S seconds, then send
  a command: the NAT binding must still be open.
* ``nat DEVICE``: init only, no service (so no link can be lost), and wait for the NAT events
  the module reports by itself, at most ``--seconds``.
* ``follow DEVICE``: stream; when the link is lost, report ``disconnect`` and how long after
  the last byte it came, ``reset_p2p``, start a new service (fresh xp2pInfo from the cloud) and
  stream again until video flows: ``recovered``. NAT events are reported as they fire.
  Runs until the test has seen what it needs (at most ``--seconds``). ``--no-handover``: the
  link does not move to a new network path (``xp2p.link.handover``), so a move loses it, as
  a handover that fails does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from xp2p import XP2PError
from xp2p.trust import CloudTrust
from xp2p.viewer import AppParams, P2PModule, StreamInfo
from xp2p.watchdog import watch_running_loop

T0 = time.monotonic()
#: Set by the module's event handler when a NAT probe reports (natChanged or natError).
NAT_REPORTED = asyncio.Event()


def emit(event: str, **detail: Any) -> None:
    print(json.dumps({"event": event, "t": round(time.monotonic() - T0, 3), **detail}), flush=True)


async def idle(module: P2PModule, info: StreamInfo, seconds: float) -> None:
    await module.start_p2p_service("cam", info)
    emit("connected", mode=module.link_mode("cam"))
    await asyncio.sleep(seconds)
    result = await module.send_command(
        "cam", "action=inner_define&channel=0&cmd=get_device_st&type=live", timeout=5
    )
    emit("command", type=result.type, status=result.status)


async def follow(
    module: P2PModule, info: StreamInfo, seconds: float, *, handover: bool = True
) -> None:
    last_byte = [time.monotonic()]
    got = asyncio.Event()
    lost = asyncio.Event()

    def on_data(chunk: bytes) -> None:
        last_byte[0] = time.monotonic()
        got.set()

    def on_msg(event: str, subtype: str, detail: Any) -> None:
        if subtype == "disconnect":
            emit("disconnect", after_last_byte=round(time.monotonic() - last_byte[0], 3))
            lost.set()

    await module.start_p2p_service("cam", info, msg_callback=on_msg, data_callback=on_data)
    mover = module._service("cam").link.mover
    if not handover and mover is not None:
        await mover.close()
    await asyncio.wait_for(got.wait(), 15)
    emit("streaming", mode=module.link_mode("cam"))
    NAT_REPORTED.clear()  # only a report after the link is lost counts below
    await asyncio.wait_for(lost.wait(), seconds)
    await module.stop_p2p_service("cam")
    # The lost link starts a background re-probe: let it report before reset_p2p probes again.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(NAT_REPORTED.wait(), 5)
    await module.reset_p2p()
    emit("reset", nat_type=module.nat_type)
    deadline = time.monotonic() + 30
    while True:
        got.clear()
        try:
            await module.start_p2p_service("cam", info, data_callback=on_data)
            await asyncio.wait_for(got.wait(), 15)
            break
        except (XP2PError, TimeoutError) as exc:  # e.g. the device is still restarting
            emit("retry", error=str(exc))
            if module.has_service("cam"):
                await module.stop_p2p_service("cam")
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)
    emit("recovered", mode=module.link_mode("cam"))


def on_event(event: str, detail: Any) -> None:
    emit(event, detail=detail)
    NAT_REPORTED.set()


async def main_async(args: argparse.Namespace) -> int:
    watchdog = watch_running_loop()
    module = P2PModule()
    secret = os.environ["XP2P_APP_SECRET"]
    await module.init(
        AppParams(args.cloud, args.app_key, secret, cloud_trust=CloudTrust(ca_file=args.cloud_ca)),
        event_handler=on_event,
    )
    emit("init", nat_type=module.nat_type)
    product, _, name = args.device.partition("/")
    info = StreamInfo(product_id=product, device_name=name)
    try:
        if args.scenario == "idle":
            await idle(module, info, args.seconds)
        elif args.scenario == "nat":
            await asyncio.sleep(args.seconds)  # the events are emitted by on_event
        else:
            await follow(module, info, args.seconds, handover=not args.no_handover)
    finally:
        await module.destroy()
        watchdog.stop()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scenario", choices=("idle", "nat", "follow"))
    parser.add_argument("device")
    parser.add_argument("--cloud", required=True)
    parser.add_argument(
        "--cloud-ca", type=Path, help="the lab cloud's self-signed certificate (https cloud)"
    )
    parser.add_argument("--app-key", required=True)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--no-handover", action="store_true")
    # The log goes to the same file as the events; events are the lines that start with "{".
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
