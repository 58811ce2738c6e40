"""``POST /voice?channel=N[&calltype=audio|video]``: talk-back from a viewer (docs/protocol.md §9).

What the body is, decided by the query alone:

* no ``calltype``: raw PCM, signed 16-bit little-endian, channels interleaved. Its rate and
  channels come from a ``content-type: audio/pcm;rate=R;channels=C`` header (either parameter
  may be left out); without a content-type it is 8 kHz mono (docs/protocol.md §9). ``audio/L16`` is
  refused: RFC 3551 makes it big-endian, and guessing byte order makes noise.
* ``calltype=audio`` or ``video``: FLV (header, AAC sequence header, AAC frames), parsed
  incrementally; video and script tags are skipped.

One talk session per device: it is ``DeviceState.talk`` while open (``get_device_st
type=voice`` reports busy from that), and a second request gets 409. The device answers 200
at once, so the viewer knows the session is open, then takes the body until the viewer ends
it, the link dies, the body turns out malformed, or nothing arrives for
``VOICE_IDLE_TIMEOUT``. The session is freed and its sink closed in every case. The response
body, sent when the session ends, is one JSON object: ``{"result": "ok", "bytes": N,
"seconds": S}`` (N = body bytes taken, so the viewer can check that all of its audio
arrived) or ``{"result": "error", "status": 400|408|413|429|500|503, "reason": ..., "bytes":
N}``.

Talk-back is live speech, so a session is bounded (``DeviceConfig``): at most
``voice_max_bytes`` of body and ``voice_max_seconds`` of audio (413 past either; the audio
that would cross the bound is not written), and audio may not arrive faster than
``voice_max_speed`` times real time once ``voice_rate_grace`` seconds of it arrived (429):
a viewer pushing a file at network speed cannot fill the camera's disk in seconds.
``SessionBudget`` is that rule, sans-IO.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import cast

from xp2p.device.request import BadRequest, DeviceState, RequestContext
from xp2p.device.voice_sink import DiscardSink, VoiceFiles, VoiceSink, wait_players
from xp2p.flv import FlvError, FlvHeader, FlvReader
from xp2p.link import IncomingRequest, StreamClosed
from xp2p.media.audio import TALK_FORMAT, AacDecoder, AudioError, PcmFormat

logger = logging.getLogger("xp2p.device")

#: A session that receives nothing for this long is ended, so a stuck viewer cannot hold the
#: device's one talk slot forever.
VOICE_IDLE_TIMEOUT = 30.0
#: Audio tags are a few hundred bytes; anything near this is not talk-back. A video call's
#: body (skipped) may carry keyframes, hence the second bound.
MAX_AUDIO_TAG = 64 * 1024
MAX_VIDEO_TAG = 4 * 1024 * 1024
#: How long an error reply may take to be acknowledged before the upload is refused.
REPLY_GRACE = 1.0


@dataclass(frozen=True, slots=True)
class SessionBudget:
    """The bounds of one talk session (sans-IO: the caller passes the elapsed time in)."""

    max_bytes: int
    max_seconds: float
    max_speed: float
    grace_seconds: float

    def __post_init__(self) -> None:
        if self.max_bytes < 1:
            raise ValueError("voice_max_bytes must be 1 or more")
        if not self.max_seconds > 0:
            raise ValueError("voice_max_seconds must be more than 0")
        if not self.max_speed >= 1:
            raise ValueError("voice_max_speed must be 1 or more")
        if not self.grace_seconds >= 0:
            raise ValueError("voice_rate_grace must be 0 or more")

    def check_body(self, received: int) -> None:
        """Raises TalkError(413) once the body taken would pass ``max_bytes``."""
        if received > self.max_bytes:
            raise TalkError(413, f"talk session too long: more than {self.max_bytes} bytes")

    def check_audio(self, audio_seconds: float, elapsed: float) -> None:
        """Raises TalkError(413) past ``max_seconds`` of audio, TalkError(429) when the audio
        ran ahead of real time by more than ``max_speed`` after the grace."""
        if audio_seconds > self.max_seconds:
            raise TalkError(
                413, f"talk session too long: more than {self.max_seconds:g} s of audio"
            )
        if audio_seconds > self.grace_seconds + self.max_speed * elapsed:
            speed = audio_seconds / max(elapsed, 1e-3)
            raise TalkError(
                429,
                f"talk-back arrives {speed:.1f} times faster than real time "
                f"(at most {self.max_speed:g}): it must be live audio",
            )


def session_budget(device: DeviceState) -> SessionBudget:
    config = device.config
    return SessionBudget(
        config.voice_max_bytes,
        config.voice_max_seconds,
        config.voice_max_speed,
        config.voice_rate_grace,
    )


class TalkError(Exception):
    """Ends a session that is already open (answered 200): the status goes in the reply."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TalkFormat:
    """What the request says its body is: PCM of ``pcm`` format, or FLV (``pcm`` None)."""

    calltype: str  #: "" for raw PCM, else "audio" or "video"
    pcm: PcmFormat | None


def talk_format(params: dict[str, str], headers: dict[str, str]) -> TalkFormat:
    """Apply the body rule of the module docstring; BadRequest(400) when it cannot."""
    calltype = params.get("calltype", "")
    if calltype in ("audio", "video"):
        return TalkFormat(calltype, None)
    if calltype:
        raise BadRequest(400, f"calltype must be audio or video, got {calltype!r}")
    content_type = headers.get("content-type", "")
    media_type, *raw_params = (part.strip() for part in content_type.split(";"))
    if media_type.lower() in ("", "application/octet-stream"):
        return TalkFormat("", TALK_FORMAT)
    if media_type.lower() != "audio/pcm":
        raise BadRequest(
            400,
            f"PCM talk-back is s16le as audio/pcm;rate=R;channels=C, not {media_type!r}",
        )
    values = dict(p.partition("=")[::2] for p in raw_params)
    try:
        fmt = PcmFormat(
            int(values.get("rate", TALK_FORMAT.sample_rate)),
            int(values.get("channels", TALK_FORMAT.channels)),
        )
    except ValueError as exc:
        raise BadRequest(400, f"bad PCM format in content-type: {exc}") from exc
    return TalkFormat("", fmt)


class TalkIntake:
    """Sans-IO: body bytes in, PCM s16le out (whole samples only). ``format`` is known from
    the start for PCM, after the first decoded frame for AAC."""

    def __init__(self, talk: TalkFormat) -> None:
        self.format = talk.pcm
        self._pending = b""
        max_tag = MAX_VIDEO_TAG if talk.calltype == "video" else MAX_AUDIO_TAG
        self._reader = FlvReader(max_tag_size=max_tag) if talk.pcm is None else None
        self._decoder = AacDecoder()

    def feed(self, data: bytes) -> bytes:
        """Raises TalkError(400) on malformed FLV or AAC."""
        if self._reader is None:
            assert self.format is not None
            data = self._pending + data
            whole = len(data) - len(data) % self.format.frame_bytes
            self._pending = data[whole:]
            return data[:whole]
        try:
            items = self._reader.feed(data)
            pcm = b"".join(
                self._decoder.decode(item) for item in items if not isinstance(item, FlvHeader)
            )
        except (FlvError, AudioError) as exc:
            raise TalkError(400, f"malformed talk-back: {exc}") from exc
        self.format = self._decoder.format
        return pcm

    def finish(self) -> None:
        """The viewer ended the body: raises TalkError if it stopped inside a tag."""
        if self._reader is not None:
            try:
                self._reader.close()
            except FlvError as exc:
                raise TalkError(400, f"malformed talk-back: {exc}") from exc


@dataclass
class TalkSession:
    """The open talk session, as ``DeviceState.talk`` holds it."""

    link_id: int
    channel: int
    calltype: str
    started: float = field(default_factory=time.monotonic)
    received: int = 0  #: body bytes taken
    pcm_bytes: int = 0  #: PCM bytes given to the sink
    format: PcmFormat | None = None
    sink: VoiceSink | None = None
    ended: bool = False  #: the sink is closed for good (session over, or device shutdown)

    @property
    def seconds(self) -> float:
        return 0.0 if self.format is None else self.format.seconds(self.pcm_bytes)

    def close_sink(self) -> None:
        self.ended = True
        sink, self.sink = self.sink, None
        if sink is not None:
            try:
                sink.close()
            except Exception:  # the maker's sink; the session ends anyway
                logger.exception("talk-back sink failed to close")


async def serve(ctx: RequestContext) -> None:
    ctx.require("voice")
    channel = ctx.channel()
    talk = talk_format(ctx.params, ctx.request.headers)
    device = ctx.device
    if device.talk is not None:
        raise BadRequest(409, "a talk session is already open")
    session = TalkSession(ctx.request.link.id, channel.number, talk.calltype or "pcm")
    device.talk = session
    try:
        reply = await _run(ctx, session, talk)
    finally:
        session.close_sink()
        if device.talk is session:
            device.talk = None
    # Freed first: a viewer that gets the reply may open the next session at once.
    if reply is not None:
        await _reply(ctx.request, reply, refuse_rest=reply["result"] != "ok")


async def _run(
    ctx: RequestContext, session: TalkSession, talk: TalkFormat
) -> dict[str, object] | None:
    """Answer 200 and take the body; the closing reply, or None when the link is gone."""
    request = ctx.request
    intake = TalkIntake(talk)
    if intake.format is not None:
        try:
            _open_sink(ctx, session, intake.format)
        except TalkError as exc:
            raise BadRequest(exc.status, exc.reason) from exc
    logger.info(
        "link %d: talk session on ch%d opened (%s)",
        session.link_id,
        session.channel,
        intake.format or "FLV/AAC",
    )
    await request.respond(200, [("content-type", "application/json")])
    try:
        await _take_body(ctx, session, intake)
    except TalkError as exc:
        logger.warning(
            "link %d: talk session ended with %d: %s", session.link_id, exc.status, exc.reason
        )
        return {
            "result": "error",
            "status": exc.status,
            "reason": exc.reason,
            "bytes": session.received,
        }
    if request.closed:
        logger.info(
            "link %d: talk session ended, link lost (%.1f s of audio)",
            session.link_id,
            session.seconds,
        )
        return None
    logger.info(
        "link %d: talk session ended by the viewer: %.2f s of audio, %d bytes",
        session.link_id,
        session.seconds,
        session.received,
    )
    return {"result": "ok", "bytes": session.received, "seconds": round(session.seconds, 3)}


async def _take_body(ctx: RequestContext, session: TalkSession, intake: TalkIntake) -> None:
    budget = session_budget(ctx.device)
    body = cast(AsyncGenerator[bytes, None], ctx.request.body())  # closed below
    try:
        while (chunk := await _next_chunk(body)) is not None:
            session.received += len(chunk)
            budget.check_body(session.received)
            if session.calltype == "pcm":
                pcm = intake.feed(chunk)
            else:  # FFmpeg's AAC decoding is blocking work
                pcm = await asyncio.to_thread(intake.feed, chunk)
            if session.ended:  # close(device) ran: the device is shutting down
                raise TalkError(503, "the device is shutting down")
            if pcm:
                assert intake.format is not None
                # Checked before the write: what would cross a bound never reaches the sink.
                # Decoded AAC is ~10x its body: the PCM written is bounded by the same bytes.
                budget.check_body(session.pcm_bytes + len(pcm))
                budget.check_audio(
                    intake.format.seconds(session.pcm_bytes + len(pcm)),
                    time.monotonic() - session.started,
                )
                if session.sink is None:
                    _open_sink(ctx, session, intake.format)
                _write(session, pcm)
        if not ctx.request.closed:
            intake.finish()
    finally:
        await body.aclose()


async def _next_chunk(body: AsyncIterator[bytes]) -> bytes | None:
    try:
        async with asyncio.timeout(VOICE_IDLE_TIMEOUT):
            return await anext(body, None)
    except TimeoutError:
        raise TalkError(408, f"no talk-back data for {VOICE_IDLE_TIMEOUT:g} s") from None


def _open_sink(ctx: RequestContext, session: TalkSession, fmt: PcmFormat) -> None:
    config = ctx.device.config
    factory = config.voice_sink
    if factory is None:
        folder = None if config.recordings_dir is None else config.recordings_dir / "voice"
        factory = VoiceFiles(
            folder,
            max_bytes=config.voice_retention_bytes,
            session_bytes=config.voice_max_bytes,
            max_age=config.retention_days * 86400,
        )
    try:
        sink = factory(session.channel, fmt.sample_rate, fmt.channels)
    except Exception as exc:  # the maker's code, or a folder we cannot write
        logger.exception("cannot open the talk-back sink")
        raise TalkError(500, f"cannot open the talk-back sink: {exc}") from exc
    if isinstance(sink, DiscardSink):
        logger.info("talk-back is discarded: set recordings_dir or voice_sink to keep it")
    session.format, session.sink = fmt, sink


def _write(session: TalkSession, pcm: bytes) -> None:
    assert session.sink is not None
    try:
        session.sink.write(pcm)
    except Exception as exc:
        logger.exception("talk-back sink failed")
        raise TalkError(500, f"talk-back sink failed: {exc}") from exc
    session.pcm_bytes += len(pcm)


async def _reply(request: IncomingRequest, reply: dict[str, object], *, refuse_rest: bool) -> None:
    """Send the closing JSON; after an error, also stop the viewer's upload (STOP_SENDING),
    once the reply has been acknowledged, so the reason is not lost to the stop."""
    if request.closed:
        return
    try:
        await request.write(json.dumps(reply).encode(), end=True)
    except StreamClosed:
        return
    if not refuse_rest:
        return
    # The link has no public "acknowledged" event: poll, bounded by REPLY_GRACE.
    for _ in range(int(REPLY_GRACE / 0.02)):
        if not request.backlog() or request.closed:
            break
        await asyncio.sleep(0.02)
    request.cancel()


async def close(device: DeviceState) -> None:
    """End an open talk session (device shutdown) and let players finish."""
    session, device.talk = device.talk, None
    if session is not None:
        session.close_sink()
    with contextlib.suppress(Exception):
        await wait_players()
