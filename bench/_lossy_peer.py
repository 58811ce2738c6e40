"""One end of bench/lossy_link.py, run inside its network namespace (``ip netns exec``).

    python -m bench._lossy_peer device --addr A [--port P] [--congestion-control NAME]
    python -m bench._lossy_peer viewer --addr A --device D [--port P] [--congestion-control NAME]

The two ends talk JSON lines with the orchestrator on stdin/stdout (it also carries the
link's offer and answer, which are the only signalling):

* device: prints ``{"fingerprint"}``; for each ``{"offer"}`` line prints ``{"answer"}``. It
  serves, on the xp2p link, ``GET /bulk`` (random bytes until cancelled) and
  ``GET /live?seconds=S`` (the synthetic 4 Mbit/s FLV stream, each frame written when its
  media time comes), and the same two over plain TCP on ``--port``: a line ``bulk CC`` or
  ``live CC S``, where CC is the kernel congestion control the server's socket then uses
  (``TCP_CONGESTION``). Exits when stdin closes.
* viewer: ``{"op": "connect", "fingerprint"}`` (prints ``{"offer"}``, reads ``{"answer"}``,
  prints ``{"connected"}``), then ``{"op": "bulk"|"live"|"tcp_bulk"|"tcp_live", ...}`` and
  prints one result line per command. Bulk reads for ``seconds`` and counts bytes; live reads
  the stream to its end (or for ``seconds + grace``) and counts what a 500 ms jitter buffer would
  stall on. Exits when stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import socket
import sys
from typing import Any

from tests.support.live_stream import FPS, LiveWatch, stream_pieces

CHUNK = 64 * 1024


def emit(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


async def read_command() -> dict[str, Any] | None:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if not line:
        return None
    doc: dict[str, Any] = json.loads(line)
    return doc


def link_config(addr: str, congestion_control: str | None) -> Any:
    from xp2p.link import LinkConfig

    config = LinkConfig(host_addresses=(addr,), connect_timeout=15.0)
    if congestion_control:
        from dataclasses import replace

        config = replace(config, congestion_control=congestion_control)
    return config


async def write_live(write: Any, seconds: float) -> None:
    """Write the stream's pieces when their media time comes (a late one goes at once)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for n, piece in enumerate(stream_pieces(seconds)):
        delay = start + max(0, n - 1) / FPS - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await write(piece)


# ---- device ------------------------------------------------------------------------------------


async def device(args: argparse.Namespace) -> None:
    from xp2p.link import IncomingRequest, LinkIdentity, StreamClosed, accept_link, parse_offer

    config = link_config(args.addr, args.congestion_control)
    identity = LinkIdentity.generate()
    chunk = os.urandom(CHUNK)

    async def handler(request: IncomingRequest) -> None:
        await request.respond(200, [("content-type", "application/octet-stream")])
        with contextlib.suppress(StreamClosed):
            if request.path == "/bulk":
                while True:
                    await request.write(chunk)
            elif request.path == "/live":
                await write_live(request.write, float(request.params()["seconds"]))

    async def tcp_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            words = (await reader.readline()).decode().split()
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, words[1].encode())

            async def write(data: bytes) -> None:
                writer.write(data)
                await writer.drain()

            if words[0] == "bulk":
                while True:
                    await write(chunk)
            elif words[0] == "live":
                await write_live(write, float(words[2]))
        except (ConnectionError, IndexError, OSError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(tcp_client, args.addr, args.port)
    emit({"fingerprint": identity.fingerprint})
    links = []
    while (command := await read_command()) is not None:
        remote, _grant = parse_offer(command["offer"])
        pending = await accept_link(config, identity, remote, handler=handler, peer_label="viewer")
        emit({"answer": pending.answer})
        links.append(asyncio.ensure_future(pending.link))
    for future in links:
        if future.done() and not future.exception():
            await future.result().close()
    server.close()


# ---- viewer ------------------------------------------------------------------------------------


async def timed_read(pull: Any, seconds: float) -> int:
    """Bytes ``pull`` (an async iterator of chunks) yields within ``seconds``."""
    got = 0

    async def count() -> None:
        nonlocal got
        async for data in pull:
            got += len(data)

    task = asyncio.ensure_future(count())
    await asyncio.sleep(seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    return got


async def tcp_chunks(reader: asyncio.StreamReader) -> Any:
    while data := await reader.read(CHUNK):
        yield data


def live_result(watch: LiveWatch, seconds: float, end: float, started: float) -> dict[str, Any]:
    detector = watch.detector
    expected = int(seconds * FPS)
    stalls, stalled = detector.stalls, detector.stalled_seconds
    if detector.frames < expected:
        # The rest never came in time: the player sits stalled from the next frame's due time.
        base = detector.base if detector.base is not None else started
        due = base + detector.frames / FPS + detector.buffer
        stalls += 1
        stalled += max(0.0, end - due)
    digest = hashlib.sha256(b"".join(stream_pieces(seconds))).hexdigest()
    return {
        "frames": detector.frames,
        "expected": expected,
        "stalls": stalls,
        "stalled_s": stalled,
        "bytes": watch.bytes,
        "digest_ok": watch.sha256.hexdigest() == digest,
    }


async def watch_live(pull: Any, seconds: float, grace: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    watch = LiveWatch()
    started = loop.time()

    async def consume() -> None:
        async for data in pull:
            watch.feed(data, loop.time())

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(consume(), seconds + grace)
    return live_result(watch, seconds, loop.time(), started)


async def viewer(args: argparse.Namespace) -> None:
    from xp2p.link import open_link

    config = link_config(args.addr, args.congestion_control)
    link = None
    while (command := await read_command()) is not None:
        op = command["op"]
        if op == "connect":

            async def signal(offer: dict[str, Any]) -> dict[str, Any]:
                emit({"offer": offer})
                reply = await read_command()
                assert reply is not None
                answer: dict[str, Any] = reply["answer"]
                return answer

            link = await open_link(
                config, signal, fingerprint=command["fingerprint"], grant="bench", peer_label="d"
            )
            emit({"connected": link.path, "rtt": link.rtt})
        elif op == "bulk":
            assert link is not None
            response = await link.request("GET", "/bulk")
            got = await timed_read(response, command["seconds"])
            response.cancel()
            emit({"bytes": got, "seconds": command["seconds"]})
        elif op == "live":
            assert link is not None
            response = await link.request("GET", f"/live?seconds={command['seconds']}")
            result = await watch_live(response, command["seconds"], command["grace"])
            response.cancel()
            emit(result)
        elif op in ("tcp_bulk", "tcp_live"):
            reader, writer = await asyncio.open_connection(args.device, args.port)
            if op == "tcp_bulk":
                writer.write(f"bulk {command['cc']}\n".encode())
                got = await timed_read(tcp_chunks(reader), command["seconds"])
                emit({"bytes": got, "seconds": command["seconds"]})
            else:
                writer.write(f"live {command['cc']} {command['seconds']}\n".encode())
                emit(await watch_live(tcp_chunks(reader), command["seconds"], command["grace"]))
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
        await asyncio.sleep(0.2)  # let the last transfer's tail drain before the next
    if link is not None:
        await link.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=("device", "viewer"))
    parser.add_argument("--addr", required=True, help="this end's address")
    parser.add_argument("--device", help="the device's address (viewer, for TCP)")
    parser.add_argument("--port", type=int, default=5201, help="the device's TCP port")
    parser.add_argument("--congestion-control", help="the link's (default: LinkConfig's)")
    args = parser.parse_args()
    asyncio.run(device(args) if args.role == "device" else viewer(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
