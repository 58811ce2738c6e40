"""``xp2p talk``: talk-back from a shell: a sound file, or a tone, sent to a device.

The audio is decoded and resampled by PyAV to 8 kHz mono, then sent in real time either as
FLV with AAC audio tags (``calltype=audio``, the default) or as raw PCM s16le (``--pcm``).
Exit status 0 means the device reported taking every byte sent.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from xp2p.cli.common import (
    Subparsers,
    add_app_args,
    app_params,
    link_config,
    split_device,
    status,
)
from xp2p.errors import ErrorCode, XP2PError

SERVICE_ID = "talk"
PCM_CHUNK_SECONDS = 0.1  #: one PCM write per 100 ms of audio

EPILOG = """\
examples:
  xp2p talk DEMO/cam1 --file hello.wav            (anything FFmpeg reads; sent as AAC in FLV)
  xp2p talk DEMO/cam1 --file hello.mp3 --pcm      (raw 8 kHz mono s16le instead)
  xp2p talk DEMO/cam1 --tone 1000 --seconds 3     (a test tone)

exit status: 0 the device took all the audio; 1 it did not, or the session failed.
The app secret comes from $XP2P_APP_SECRET or --secret-file, never the command line."""


class Progress:
    """Prints how much audio has gone, about once a second."""

    def __init__(self, total: float) -> None:
        self.total = total
        self._next = 1.0

    def sent(self, seconds: float) -> None:
        if seconds + 1e-6 >= self._next or seconds >= self.total:
            print(f"sent {min(seconds, self.total):.1f}/{self.total:.1f} s", flush=True)
            self._next = seconds + 1.0


async def _load_pcm(args: argparse.Namespace) -> bytes:
    from xp2p.media.audio import TALK_FORMAT, AudioError, file_pcm, tone_pcm

    limit = args.seconds
    try:
        if args.tone is not None:
            pcm = await asyncio.to_thread(tone_pcm, args.tone, limit or 3.0, TALK_FORMAT)
        else:

            def decode() -> bytes:
                return b"".join(file_pcm(args.file, TALK_FORMAT))

            pcm = await asyncio.to_thread(decode)
    except (AudioError, ValueError) as exc:
        raise SystemExit(f"xp2p talk: {exc}") from exc
    if limit:
        pcm = pcm[: int(limit * TALK_FORMAT.sample_rate) * TALK_FORMAT.frame_bytes]
    if not pcm:
        raise SystemExit("xp2p talk: no audio to send")
    return pcm


async def _sleep_until(due: float, stop: asyncio.Event) -> None:
    delay = due - time.monotonic()
    if delay > 0:
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except TimeoutError:
            pass


async def _talk_aac(module: Any, pcm: bytes, args: argparse.Namespace, stop: asyncio.Event) -> Any:
    from xp2p.media.audio import TALK_FORMAT, AacEncoder

    def encode() -> tuple[bytes, list[Any]]:
        encoder = AacEncoder(TALK_FORMAT, bit_rate=args.bitrate)
        return encoder.header_bytes(), encoder.encode(pcm) + encoder.flush()

    header, tags = await asyncio.to_thread(encode)
    total = TALK_FORMAT.seconds(len(pcm))
    writer = await module.start_voice_data(SERVICE_ID, f"channel={args.channel}&calltype=audio")
    print(f"talking: {total:.1f} s as AAC in FLV ({len(tags)} frames)", flush=True)
    progress = Progress(total)
    await writer.write(header)
    started = time.monotonic()
    for tag in tags:
        await _sleep_until(started + tag.timestamp / 1000, stop)
        if stop.is_set():
            break
        await writer.write(tag.encode())
        progress.sent(tag.timestamp / 1000)
    return await writer.close()


async def _talk_pcm(
    module: Any,
    pcm: bytes,
    args: argparse.Namespace,
    stop: asyncio.Event,
    finished: asyncio.Future[dict[str, Any]],
) -> dict[str, Any]:
    from xp2p.media.audio import TALK_FORMAT

    total = TALK_FORMAT.seconds(len(pcm))
    step = int(PCM_CHUNK_SECONDS * TALK_FORMAT.sample_rate) * TALK_FORMAT.frame_bytes
    progress = Progress(total)

    async def paced() -> AsyncIterator[bytes]:
        started = time.monotonic()
        for offset in range(0, len(pcm), step):
            await _sleep_until(started + TALK_FORMAT.seconds(offset), stop)
            if stop.is_set():
                return
            yield pcm[offset : offset + step]
            progress.sent(TALK_FORMAT.seconds(offset + step))

    await module.start_voice(
        SERVICE_ID, paced(), TALK_FORMAT.sample_rate, 1, url_params=f"channel={args.channel}"
    )
    print(f"talking: {total:.1f} s as PCM s16le {TALK_FORMAT}", flush=True)
    return await finished


def _on_voice_close(future: asyncio.Future[dict[str, Any]]) -> Callable[[str, str, Any], None]:
    def on_msg(event: str, subtype: str, detail: Any) -> None:
        if event == "log" and subtype in ("warn", "error"):
            print(f"{subtype}: {detail}", file=sys.stderr, flush=True)
        is_voice = isinstance(detail, dict) and detail.get("kind") == "voice"
        if subtype == "voice_close" and is_voice and not future.done():
            future.set_result(detail)

    return on_msg


async def _cmd_talk(args: argparse.Namespace, stop: asyncio.Event) -> None:
    from xp2p.viewer import P2PModule, StreamInfo

    product, device = split_device(args.device)
    pcm = await _load_pcm(args)
    module = P2PModule(link_config(args))
    await module.init(app_params(args))
    finished: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    try:
        await module.start_p2p_service(
            SERVICE_ID,
            StreamInfo(product_id=product, device_name=device),
            msg_callback=_on_voice_close(finished),
        )
        if args.pcm:
            outcome = await _talk_pcm(module, pcm, args, stop, finished)
        else:
            outcome = dataclasses.asdict(await _talk_aac(module, pcm, args, stop))
    finally:
        await module.destroy()
    if not outcome["ok"]:
        raise XP2PError(ErrorCode.VOICE_FAILED, f"talk-back failed: {outcome['reason']}")
    seconds = outcome.get("seconds")
    status(
        f"device took all audio: {outcome['device_bytes']} bytes"
        + ("" if seconds is None else f", {seconds:.2f} s"),
        ok=True,
    )
    if stop.is_set():
        raise SystemExit("xp2p talk: interrupted; the device took what was sent")


def register(commands: Subparsers) -> None:
    talk = commands.add_parser(
        "talk",
        help="talk-back: send a sound file or a tone to a device",
        description="Send audio to PRODUCT/DEVICE over a P2P link, paced in real time: a "
        "file (anything FFmpeg reads, resampled to 8 kHz mono) or a test tone.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    talk.add_argument("device", metavar="PRODUCT/DEVICE")
    what = talk.add_mutually_exclusive_group(required=True)
    what.add_argument("--file", help="a sound file (WAV, MP3, AAC, Opus... anything FFmpeg reads)")
    what.add_argument("--tone", type=float, metavar="HZ", help="send a sine tone of HZ")
    talk.add_argument(
        "--seconds", type=float, metavar="S", help="tone length (3) or at most S of the file"
    )
    talk.add_argument(
        "--pcm", action="store_true", help="send raw 8 kHz mono s16le instead of AAC in FLV"
    )
    talk.add_argument("--channel", type=int, default=0, help="device channel (0)")
    talk.add_argument("--bitrate", type=int, default=24_000, help="AAC bit rate in bit/s (24000)")
    add_app_args(talk)
    talk.set_defaults(run=_cmd_talk)
