"""Talk-back: raw PCM (``start_voice``) or FLV/AAC (``start_voice_data``) to the device.

A talk session is one ``POST /voice`` whose body is the audio, streamed for as long as the
session lasts. It is open once the device answers 200; it ends when the app ends it
(``stop_voice``, ``VoiceWriter.close``, or the PCM source running out), which ends the upload
with a stream end so the device finalises what it recorded, then waits for the device's
closing JSON. It succeeds when the device reports that it took every byte sent.

Queue policy (the app can push faster than the link takes):

* ``start_voice`` pulls the PCM source only as fast as the link drains it (back-pressure):
  an async source simply waits.
* ``VoiceWriter.add_chunk`` is synchronous, as the seed's ``addChunk``, so it cannot wait.
  It parses the FLV into tags and, when the queue holds more than ``MAX_QUEUE_LAG`` seconds
  of media (tag timestamps) or ``MAX_QUEUE_BYTES``, drops the *oldest* audio frames: in a
  conversation, late audio is worse than a gap. Headers and sequence headers are never
  dropped, so the device still gets a well-formed stream. Drops are counted
  (``dropped_tags``) and logged. ``await VoiceWriter.write`` is the back-pressure variant.

One talk session per service (a second one raises -2601); the device allows one per device
and answers 409 to a second viewer, raised as -2601 "device busy". Events, all with
``"kind": "voice"`` in their detail: notify ``request``, ``parsed``, ``success`` (the device
took everything) and ``close`` (always last, with ``ok`` and ``reason``); failures also
go out as ``log`` events. ``fail``/``eof`` are left to the stream, whose consumers end on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import asdict, dataclass, replace
from typing import Any
from urllib.parse import parse_qsl

from xp2p.errors import ErrorCode, XP2PError
from xp2p.events import LogLevel, NotifySubtype
from xp2p.flv import FlvError, FlvHeader, FlvReader, FlvTag
from xp2p.link import LinkError, ResponseStream
from xp2p.tasks import TaskSet
from xp2p.viewer.service import Service, read_reason

logger = logging.getLogger("xp2p.viewer")

OPEN_TIMEOUT = 7.5  #: for the device's 200 (or refusal)
END_TIMEOUT = 10.0  #: for the device's closing reply once the upload has ended
MAX_QUEUE_LAG = 2.0  #: seconds of FLV media add_chunk may queue before dropping the oldest
MAX_QUEUE_BYTES = 256 * 1024
PCM_QUEUE_SECONDS = 1.0  #: start_voice reads ahead of the link by at most this much audio
MAX_CHUNK = 16 * 1024  #: queued pieces are joined into body writes of up to this size
MAX_TAG_SIZE = 4 * 1024 * 1024  #: a video call may carry keyframes; audio tags are small
WARN_INTERVAL = 5.0  #: at most one drop warning per this many seconds


@dataclass(frozen=True, slots=True)
class VoiceResult:
    """How a talk session ended. ``device_bytes``/``seconds`` are what the device reported
    taking (None if it never said)."""

    ok: bool
    reason: str
    bytes_sent: int
    device_bytes: int | None = None
    seconds: float | None = None
    dropped_tags: int = 0


@dataclass(slots=True)
class _Piece:
    data: bytes
    timestamp: int | None  #: media time of a droppable frame; None = never dropped


class _Upload:
    """The request body: a queue the link drains, with an end marker."""

    def __init__(self) -> None:
        self._pieces: deque[_Piece] = deque()
        self.queued_bytes = 0
        self.sent = 0
        self.ended = False
        self._wake = asyncio.Event()
        self._room = asyncio.Event()

    def put(self, data: bytes, timestamp: int | None = None) -> None:
        self._pieces.append(_Piece(data, timestamp))
        self.queued_bytes += len(data)
        self._wake.set()

    def end(self) -> None:
        self.ended = True
        self._wake.set()
        self._room.set()

    def lag_ms(self) -> int:
        droppable = [p.timestamp for p in self._pieces if p.timestamp is not None]
        return droppable[-1] - droppable[0] if droppable else 0

    def full(self, max_bytes: int, max_lag_ms: int) -> bool:
        return self.queued_bytes > max_bytes or self.lag_ms() > max_lag_ms

    def drop_oldest(self) -> bool:
        for index, piece in enumerate(self._pieces):
            if piece.timestamp is not None:
                del self._pieces[index]
                self.queued_bytes -= len(piece.data)
                return True
        return False

    async def wait_room(self, max_bytes: int, max_lag_ms: int) -> None:
        while self.full(max_bytes, max_lag_ms) and not self.ended:
            self._room.clear()
            await self._room.wait()

    async def body(self) -> AsyncIterator[bytes]:
        while True:
            if self._pieces:
                parts, size = [], 0
                while self._pieces and size < MAX_CHUNK:
                    data = self._pieces.popleft().data
                    parts.append(data)
                    size += len(data)
                self.queued_bytes -= size
                self.sent += size
                self._room.set()
                yield b"".join(parts)
            elif self.ended:
                return
            else:
                self._wake.clear()
                await self._wake.wait()


class VoiceSession:
    """One talk session on a service: the request, its body queue and the device's reply."""

    def __init__(self, service: Service, target: str, headers: list[tuple[str, str]]) -> None:
        self.service = service
        self.target = target
        self.headers = headers
        self.upload = _Upload()
        self.result: VoiceResult | None = None
        self.dropped_tags = 0
        self._response: ResponseStream | None = None
        self._stopping = False
        self._abort_reason = ""
        self._done = asyncio.Event()
        #: the reply reader and the PCM pump: ended by ``close``
        self._tasks = TaskSet(f"voice-{service.id}")

    async def open(self) -> None:
        service = self.service
        if "voice" in service.closers:
            raise XP2PError(
                ErrorCode.VOICE_FAILED, f"service {service.id} already has a talk session open"
            )
        service.closers["voice"] = self.stop  # reserved while the request is in flight
        try:
            await self._request()
        except BaseException:
            if service.closers.get("voice") == self.stop:
                del service.closers["voice"]
            self.upload.end()
            raise
        assert self._response is not None
        self._tasks.spawn(self._read_reply(self._response), "reply")
        service.log(LogLevel.INFO, f"talk session open ({self.target})")

    async def _request(self) -> None:
        service = self.service
        if service.link.closed:
            raise XP2PError(
                ErrorCode.VOICE_FAILED,
                f"service {service.id} lost its link ({service.link.close_reason})",
            )
        service.notify(NotifySubtype.REQUEST, {"kind": "voice", "target": self.target})
        try:
            response = await service.link.request(
                "POST", self.target, self.headers, body=self.upload.body(), timeout=OPEN_TIMEOUT
            )
        except LinkError as exc:
            raise XP2PError(ErrorCode.VOICE_FAILED, f"talk-back request failed: {exc}") from exc
        service.notify(
            NotifySubtype.PARSED,
            {"kind": "voice", "status": response.status, "headers": response.headers},
        )
        if response.status != 200:
            reason = await read_reason(response)
            response.cancel()
            service.log(LogLevel.ERROR, f"device refused talk-back ({response.status}): {reason}")
            if response.status == 409:
                raise XP2PError(
                    ErrorCode.VOICE_FAILED, "device busy: a talk session is already open"
                )
            raise XP2PError(
                ErrorCode.VOICE_FAILED,
                f"device refused talk-back ({response.status}): {reason or 'no reason given'}",
            )
        if self._stopping:  # stop_voice while the request was in flight
            response.cancel()
            raise XP2PError(ErrorCode.VOICE_FAILED, "talk session stopped while opening")
        self._response = response

    async def _read_reply(self, response: ResponseStream) -> None:
        reply: dict[str, Any] = {}
        error = ""
        try:
            raw = await response.read(limit=64 * 1024)
            with contextlib.suppress(ValueError):
                doc = json.loads(raw or b"{}")
                reply = doc if isinstance(doc, dict) else {}
        except LinkError as exc:
            error = str(exc)  # "link lost: <why>"
        if not self.upload.ended:  # the device ended the session before we did
            self.upload.end()
            response.cancel()
        self._finish(self._judge(reply, error))

    def _judge(self, reply: dict[str, Any], error: str) -> VoiceResult:
        device_bytes = reply.get("bytes")
        seconds = reply.get("seconds")
        result = VoiceResult(
            ok=False,
            reason="",
            bytes_sent=self.upload.sent,
            device_bytes=device_bytes if isinstance(device_bytes, int) else None,
            seconds=float(seconds) if isinstance(seconds, int | float) else None,
            dropped_tags=self.dropped_tags,
        )
        if self._abort_reason or error:
            reason = self._abort_reason or error
        elif reply.get("result") == "error":
            reason = f"device ended talk-back ({reply.get('status')}): {reply.get('reason')}"
        elif reply.get("result") != "ok":
            reason = "device ended talk-back without a result"
        elif result.device_bytes != result.bytes_sent:
            reason = f"device took {result.device_bytes} of {result.bytes_sent} bytes"
        else:
            return replace(result, ok=True, reason="device took all audio")
        return replace(result, reason=reason)

    def _finish(self, result: VoiceResult) -> None:
        if self.result is not None:
            return
        self.result = result
        service = self.service
        if service.closers.get("voice") == self.stop:
            del service.closers["voice"]
        detail = {"kind": "voice", **asdict(result)}
        if result.dropped_tags:
            text = f"talk-back queue overflowed: {result.dropped_tags} audio frames dropped"
            logger.warning("service %s: %s", service.id, text)
            service.log(LogLevel.WARN, text)
        if result.ok:
            service.notify(NotifySubtype.SUCCESS, detail)
        else:
            service.log(LogLevel.ERROR, f"talk session failed: {result.reason}")
        service.notify(NotifySubtype.CLOSE, detail)
        self._done.set()

    async def close(self) -> VoiceResult:
        """End the upload after what is queued, and wait for the device's verdict."""
        self._stopping = True
        self.upload.end()
        if self._response is None:  # never opened
            return self.result or VoiceResult(False, "talk session never opened", 0)
        try:
            await asyncio.wait_for(self._done.wait(), END_TIMEOUT)
        except TimeoutError:
            self._response.cancel()
            self._finish(self._judge({}, f"no reply from the device within {END_TIMEOUT:g} s"))
        await self._tasks.cancel_all()
        assert self.result is not None
        return self.result

    async def stop(self) -> None:
        await self.close()

    def abort(self, reason: str) -> None:
        """Reset the upload (the app gave us something unusable): no clean end."""
        self._abort_reason = reason
        self.upload.end()
        if self._response is not None:
            self._response.cancel()

    def pump(self, source: AsyncIterable[bytes], max_bytes: int) -> None:
        """Feed PCM from ``source`` with back-pressure; end the upload when it ends."""
        self._tasks.spawn(self._pump(source, max_bytes), "pump")

    async def _pump(self, source: AsyncIterable[bytes], max_bytes: int) -> None:
        upload = self.upload
        try:
            async for item in source:
                if upload.ended:
                    break
                chunk: object = item  # the app's typing is not a guarantee
                if not isinstance(chunk, bytes | bytearray | memoryview):
                    self.abort(f"the PCM source yielded {type(chunk).__name__}, not bytes")
                    return
                upload.put(bytes(chunk))
                await upload.wait_room(max_bytes, 1 << 62)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the app's source; the session ends cleanly with what came
            logger.exception("PCM source of service %s raised", self.service.id)
            self.service.log(LogLevel.ERROR, f"PCM source raised {exc!r}; ending talk-back")
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
        upload.end()


class VoiceWriter:
    """What ``start_voice_data`` returns: the app adds FLV bytes (header, AAC sequence header,
    AAC frames; split anywhere) with ``add_chunk``, then ``close()``s it (or ``stop_voice``)."""

    def __init__(self, session: VoiceSession) -> None:
        self._session = session
        self._reader = FlvReader(max_tag_size=MAX_TAG_SIZE)
        self._last_warning: float | None = None
        self._dropped_since_warning = 0

    @property
    def closed(self) -> bool:
        return self._session.upload.ended

    @property
    def dropped_tags(self) -> int:
        return self._session.dropped_tags

    @property
    def result(self) -> VoiceResult | None:
        return self._session.result

    def add_chunk(self, data: bytes) -> None:
        """Queue FLV bytes; never waits: drops the oldest audio frames when the queue is over
        ``MAX_QUEUE_LAG``/``MAX_QUEUE_BYTES``. Raises -2601 when closed or the FLV is bad."""
        self._queue(data)
        upload = self._session.upload
        dropped = 0
        while upload.full(MAX_QUEUE_BYTES, int(MAX_QUEUE_LAG * 1000)) and upload.drop_oldest():
            dropped += 1
        if dropped:
            self._dropped(dropped)

    async def write(self, data: bytes) -> None:
        """Queue FLV bytes and wait while the queue is over its bounds (back-pressure)."""
        self._queue(data)
        await self._session.upload.wait_room(MAX_QUEUE_BYTES, int(MAX_QUEUE_LAG * 1000))

    async def close(self) -> VoiceResult:
        return await self._session.close()

    def _queue(self, data: bytes) -> None:
        session = self._session
        if session.upload.ended:
            reason = session.result.reason if session.result else "it was stopped"
            raise XP2PError(ErrorCode.VOICE_FAILED, f"talk session is closed ({reason})")
        try:
            items = self._reader.feed(bytes(data))
        except FlvError as exc:
            session.abort(f"malformed FLV from the app: {exc}")
            raise XP2PError(ErrorCode.VOICE_FAILED, f"malformed FLV from the app: {exc}") from exc
        for item in items:
            if isinstance(item, FlvHeader):
                session.upload.put(item.encode())
            else:
                session.upload.put(item.encode(), _droppable_time(item))

    def _dropped(self, count: int) -> None:
        session = self._session
        session.dropped_tags += count
        self._dropped_since_warning += count
        now = asyncio.get_running_loop().time()
        if self._last_warning is None or now - self._last_warning >= WARN_INTERVAL:
            text = (
                f"talk-back queue over {MAX_QUEUE_LAG:g} s: dropped the oldest "
                f"{self._dropped_since_warning} audio frames ({session.dropped_tags} in all)"
            )
            logger.warning("service %s: %s", session.service.id, text)
            session.service.log(LogLevel.WARN, text)
            self._last_warning = now
            self._dropped_since_warning = 0


def _droppable_time(tag: FlvTag) -> int | None:
    if (tag.is_audio or tag.is_video) and not tag.is_sequence_header:
        return tag.timestamp
    return None


def _target(url_params: str, *, flv: bool) -> str:
    try:
        params = dict(parse_qsl(url_params, keep_blank_values=True, strict_parsing=True))
    except ValueError as exc:
        raise XP2PError(ErrorCode.BAD_PARAM, f"bad url_params {url_params!r}: {exc}") from exc
    if flv and "calltype" not in params:
        url_params += "&calltype=audio"  # FLV bodies are told apart by calltype
    if not flv and "calltype" in params:
        raise XP2PError(
            ErrorCode.BAD_PARAM, "start_voice sends raw PCM: url_params must not set calltype"
        )
    return f"/voice?{url_params}"


async def start_voice(
    service: Service,
    pcm_source: AsyncIterable[bytes],
    sample_rate: int,
    channels: int,
    url_params: str,
) -> VoiceSession:
    """Open a PCM talk session and stream ``pcm_source`` (s16le) in the background; returns
    once the device accepted. The session ends when the source does, or on ``stop_voice``."""
    if not hasattr(pcm_source, "__aiter__"):
        raise XP2PError(ErrorCode.BAD_PARAM, "pcm_source must be an async iterable of bytes")
    if not 8000 <= sample_rate <= 48000 or channels not in (1, 2):
        raise XP2PError(ErrorCode.BAD_PARAM, "talk-back PCM is 8000-48000 Hz with 1 or 2 channels")
    headers = [("content-type", f"audio/pcm;rate={sample_rate};channels={channels}")]
    session = VoiceSession(service, _target(url_params, flv=False), headers)
    await session.open()
    session.pump(pcm_source, int(PCM_QUEUE_SECONDS * sample_rate * channels * 2))
    return session


async def start_voice_data(service: Service, url_params: str) -> VoiceWriter:
    """Open an FLV/AAC talk session; returns the writer once the device accepted."""
    headers = [("content-type", "video/x-flv")]
    session = VoiceSession(service, _target(url_params, flv=True), headers)
    await session.open()
    return VoiceWriter(session)


async def stop_voice(service: Service) -> None:
    closer = service.closers.pop("voice", None)
    if closer is not None:
        await closer()
