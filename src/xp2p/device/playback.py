"""``GET /ipc.flv?action=playback&channel=N&start_time=S&end_time=E`` and the commands that
steer an open playback (docs/protocol.md §9, §10).

The request streams the recordings of ``[S, E)`` (unix seconds, ``E - S >= 5``) paced in real
time (``PlaybackSession`` decides what to send when; this module reads the files on a worker
thread and waits). Status codes: 403 the grant lacks ``playback``; 400 bad or missing times, or
a span under 5 s; 404 no such channel, or nothing recorded in the span; 503 the device is at
its viewer capacity (a playback holds a viewer slot like a live pull). The stream ends with the
span (the viewer sees ``eof``).

``playback_pause``, ``playback_resume``, ``playback_seek`` (``time=<unix s>`` or
``progress=<ms from S>``) and ``playback_progress`` act on the playback that the same link has
open on that channel. With none open they answer status 404 ("no playback is open ...", the
seed's "bad request" status of ``get_device_st``); a seek target outside the span is a 400.
Pausing keeps the response open and sends nothing; resuming continues without a new FLV
header, and timestamps stay monotonic across seeks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from xp2p.device.capacity import viewer_slot
from xp2p.device.playback_session import FileRead, PlaybackSession
from xp2p.device.recordings import MAX_UNIX_SECONDS, channel_store, unix_seconds
from xp2p.device.request import BadRequest, Channel, RequestContext
from xp2p.link import StreamClosed

logger = logging.getLogger("xp2p.device")

MIN_SPAN_SECONDS = 5
#: How often a paused or waiting playback checks that its viewer is still there.
IDLE_CHECK = 0.5


@dataclass
class OpenPlayback:
    """A playback being streamed, as ``Channel.playbacks`` holds it for the commands."""

    session: PlaybackSession
    folder: Path
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    replaced: bool = False

    def poke(self) -> None:
        self.wake.set()


def _read(path: Path, read: FileRead) -> bytes:
    try:
        with open(path, "rb") as handle:
            handle.seek(read.offset)
            return handle.read(read.length)
    except OSError:
        return b""  # deleted by retention, or unreadable: the session moves on


async def serve(ctx: RequestContext) -> None:
    ctx.require("playback")
    channel = ctx.channel()
    start = unix_seconds(ctx.params, "start_time")
    end = unix_seconds(ctx.params, "end_time")
    if end - start < MIN_SPAN_SECONDS:
        raise BadRequest(400, f"end_time must be at least {MIN_SPAN_SECONDS} s after start_time")
    store = channel_store(channel)
    if store is None or not store.index.overlapping(start * 1000, end * 1000):
        raise BadRequest(
            404, f"no recordings between {start} and {end} on channel {channel.number}"
        )
    with viewer_slot(ctx):
        session = PlaybackSession(store.index, start * 1000, end * 1000)
        await _stream(ctx, channel, OpenPlayback(session, store.folder))


async def _stream(ctx: RequestContext, channel: Channel, playback: OpenPlayback) -> None:
    request = ctx.request
    link_id = request.link.id
    playbacks = channel.playbacks
    previous = playbacks.get(link_id)
    if previous is not None:  # only the newest playback of a link can be steered
        previous.replaced = True
        previous.poke()
    playbacks[link_id] = playback
    session = playback.session
    loop = asyncio.get_running_loop()
    logger.info(
        "link %d: playback of channel %d from %d to %d starts",
        link_id,
        channel.number,
        session.start_ms // 1000,
        session.end_ms // 1000,
    )
    try:
        await request.respond(200, [("content-type", "video/x-flv"), ("cache-control", "no-store")])
        while not request.closed and not playback.replaced:
            data = session.poll(loop.time())
            if data:
                await request.write(data)
                continue
            if session.finished:
                await request.write(b"", end=True)
                break
            read = session.want_read()
            if read is not None:
                chunk = await asyncio.to_thread(_read, playback.folder / read.file_name, read)
                session.on_read(read, chunk)
                continue
            delay = session.next_wakeup(loop.time())
            playback.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    playback.wake.wait(), IDLE_CHECK if delay is None else min(delay, IDLE_CHECK)
                )
    except StreamClosed:
        pass
    finally:
        if playbacks.get(link_id) is playback:
            del playbacks[link_id]
        logger.info(
            "link %d: playback of channel %d ends%s",
            link_id,
            channel.number,
            " (finished)" if session.finished else "",
        )


# ---- commands ---------------------------------------------------------------------------


def _open_playback(ctx: RequestContext) -> OpenPlayback:
    channel = ctx.channel()
    found = channel.playbacks.get(ctx.request.link.id)
    if found is None:
        raise BadRequest(404, f"no playback is open on this link for channel {channel.number}")
    return found


def _now() -> float:
    return asyncio.get_running_loop().time()


async def playback_pause(ctx: RequestContext) -> dict[str, str]:
    playback = _open_playback(ctx)
    playback.session.pause(_now())
    playback.poke()
    return {"status": "0"}


async def playback_resume(ctx: RequestContext) -> dict[str, str]:
    playback = _open_playback(ctx)
    playback.session.resume(_now())
    playback.poke()
    return {"status": "0"}


async def playback_seek(ctx: RequestContext) -> dict[str, str]:
    """``time=<unix s>`` or ``progress=<ms from the start of the span>``."""
    playback = _open_playback(ctx)
    session = playback.session
    has_time, has_progress = "time" in ctx.params, "progress" in ctx.params
    if has_time == has_progress:
        raise BadRequest(400, "playback_seek needs time=<unix s> or progress=<ms>, one of them")
    if has_time:
        target = unix_seconds(ctx.params, "time") * 1000
    else:
        raw = ctx.params["progress"]
        if not raw.isascii() or not raw.isdigit() or int(raw) > MAX_UNIX_SECONDS * 1000:
            raise BadRequest(400, f"progress must be milliseconds, got {raw[:40]!r}")
        target = session.start_ms + int(raw)
    try:
        session.seek(target, _now())
    except ValueError as exc:
        raise BadRequest(400, str(exc)) from None
    playback.poke()
    return {"status": "0"}


async def playback_progress(ctx: RequestContext) -> dict[str, str]:
    playback = _open_playback(ctx)
    return {"status": "0", "progress": str(playback.session.progress_ms(_now()))}
