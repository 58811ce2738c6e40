"""Recordings of a device: one recorder and one store per channel, and the commands that list
what they hold (``get_month_record``, ``get_record_index``, ``get_file_list``: docs/protocol.md
§10).

When ``DeviceConfig.recordings_dir`` is set, each channel's ``high`` live stream is recorded
into ``<recordings_dir>/ch<N>/`` (see ``recorder`` and ``record_store``). Every answer comes
from the in-memory index, so listing never waits on the disk except for files people dropped
into the folder, which are probed once and cached.

Times are unix seconds; days of ``get_month_record`` are **UTC** days, because a device and its
viewers may sit in different time zones and the reply carries no zone: an app that wants local
days asks ``get_record_index`` for the local day's span instead. A device that does not record
answers the list commands with empty results rather than an error.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from xp2p.device.record_store import FILE_TYPE_PICTURE, FILE_TYPE_VIDEO, RecordStore
from xp2p.device.recorder import ChannelRecorder
from xp2p.device.request import BadRequest, Channel, DeviceState, RequestContext

logger = logging.getLogger("xp2p.device.recordings")

#: Unix seconds we accept: 0 up to the year 2286 (ten digits).
MAX_UNIX_SECONDS = 9_999_999_999
_MONTH = re.compile(r"[0-9]{6}")


@dataclass
class ChannelRecordings:
    """What ``Channel.recordings`` holds while the channel records."""

    store: RecordStore
    recorder: ChannelRecorder


def channel_store(channel: Channel) -> RecordStore | None:
    """The channel's recordings, None when the device does not record."""
    return None if channel.recordings is None else channel.recordings.store


async def start(device: DeviceState) -> None:
    """Start one recorder per channel when ``device.config.recordings_dir`` is set."""
    config = device.config
    if config.recordings_dir is None:
        return
    segment_ms = max(1000, int(config.segment_seconds * 1000))
    for number, channel in sorted(device.channels.items()):
        folder = config.recordings_dir / f"ch{number}"
        try:
            store = await RecordStore.open(
                folder,
                retention_bytes=config.retention_bytes,
                retention_days=config.retention_days,
            )
        except OSError as exc:  # an unusable disk must not keep the camera from going live
            logger.error("channel %d: cannot record into %s: %s", number, folder, exc)
            continue
        recorder = ChannelRecorder(channel.live["high"], store, segment_ms)
        await recorder.start()
        channel.recordings = ChannelRecordings(store, recorder)


async def close(device: DeviceState) -> None:
    """Stop the recorders, finishing and indexing the current segments."""
    for channel in device.channels.values():
        if channel.recordings is not None:
            await channel.recordings.recorder.stop()


# ---- parameters -------------------------------------------------------------------------


def unix_seconds(params: dict[str, str], key: str) -> int:
    """A required unix-seconds parameter; 400 with the reason otherwise."""
    raw = params.get(key)
    if raw is None:
        raise BadRequest(400, f"{key} is required (unix seconds)")
    if not raw.isascii() or not raw.isdigit() or int(raw) > MAX_UNIX_SECONDS:
        raise BadRequest(400, f"{key} must be unix seconds, got {raw[:40]!r}")
    return int(raw)


def time_range(params: dict[str, str]) -> tuple[int, int]:
    start, end = unix_seconds(params, "start_time"), unix_seconds(params, "end_time")
    if end < start:
        raise BadRequest(400, "end_time is before start_time")
    return start, end


# ---- commands ---------------------------------------------------------------------------


async def get_month_record(ctx: RequestContext) -> dict[str, str]:
    """``time=YYYYMM`` → ``{"video_list": "<uint32>"}``: bit d-1 set when UTC day d has
    recordings."""
    raw = ctx.params.get("time", "")
    if not _MONTH.fullmatch(raw):
        raise BadRequest(400, f"time must be YYYYMM, got {raw[:40]!r}")
    year, month = int(raw[:4]), int(raw[4:])
    if not 1970 <= year <= 2285 or not 1 <= month <= 12:
        raise BadRequest(400, f"time must be YYYYMM, got {raw!r}")
    store = channel_store(ctx.channel())
    bits = 0 if store is None else store.index.month_days(year, month)
    return {"video_list": str(bits)}


async def get_record_index(ctx: RequestContext) -> dict[str, list[dict[str, str]]]:
    """``start_time``/``end_time`` → the recorded spans between them, contiguous segments
    merged and clipped to the query, in whole seconds."""
    start, end = time_range(ctx.params)
    store = channel_store(ctx.channel())
    spans = [] if store is None else store.index.spans(start * 1000, end * 1000)
    return {
        "video_list": [
            {"start_time": str(s.start_ms // 1000), "end_time": str(-(-s.end_ms // 1000))}
            for s in spans
        ]
    }


async def get_file_list(ctx: RequestContext) -> dict[str, list[dict[str, str]]]:
    """``start_time``/``end_time`` [``file_type`` 0 video, 1 picture; both if absent] → the
    files a viewer may download (``action=download``) with content in that range."""
    start, end = time_range(ctx.params)
    raw_type = ctx.params.get("file_type")
    file_type: int | None = None
    if raw_type is not None:
        if raw_type not in (str(FILE_TYPE_VIDEO), str(FILE_TYPE_PICTURE)):
            raise BadRequest(400, f"file_type must be 0 (video) or 1 (picture), got {raw_type!r}")
        file_type = int(raw_type)
    store = channel_store(ctx.channel())
    files = [] if store is None else await store.list_files(start * 1000, end * 1000, file_type)
    listing = [
        {
            "file_name": f.file_name,
            "file_size": str(f.file_size),
            "file_type": str(f.file_type),
            "start_time": str(f.start_ms // 1000),
            "end_time": str(-(-f.end_ms // 1000)),
        }
        for f in files
    ]
    return {"file_list": listing}
