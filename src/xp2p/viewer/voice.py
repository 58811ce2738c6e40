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
and answers 409 to a second viewer, raised as -2601 "device busy". Notifies, with subtypes of
their own so that an app that ends the video on the stream's ``close``/``eof``/``fail`` never
ends it when a talk ends (all with ``"kind": "voice"`` in their detail): ``voice_request``,
``voice_parsed``, ``voice_success`` (the device took everything) and ``voice_close`` (always
last, with ``ok`` and ``reason``); failures also go out as ``log`` events.

The seed's callbacks:

* ``start_voice`` (a recorder in the seed): ``on_start()`` once the device accepted and the
  source is read, ``on_pause(in_interruption)``/``on_resume()`` when the source yields
  `VoicePause`/`VoiceResume`, ``on_stop(will_restart)``: True when the source was renewed at
  ``max_seconds`` (the session goes on with the next source, and ``on_start`` follows), False
  once at the end.
* ``start_voice_data``: ``on_stop()`` when the session ends, then one of ``on_success(result)``
  (the device answered 2xx and took every byte), ``on_failure(result)`` (non-2xx: refused at
  the start, or its closing verdict an error or short) or ``on_error(result)`` (no response:
  no answer, link lost, no verdict), then ``on_complete()``, always last. `VoiceRequestResult`
  is the seed's XP2PRequestResult.

Callbacks are plain functions; one that returns an awaitable (``lambda: p2p.stop_voice(id)``,
as the seed's examples do) has it run as a task. Their exceptions are logged, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, TypeAlias
from urllib.parse import parse_qsl

from xp2p.errors import ErrorCode, XP2PError
from xp2p.events import LogLevel, NotifySubtype
from xp2p.flv import FlvError, FlvHeader, FlvReader, FlvTag
from xp2p.link import LinkError, ResponseStream
from xp2p.tasks import TaskSet
from xp2p.viewer.service import Service, read_body

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


@dataclass(frozen=True, slots=True)
class VoiceRequestResult:
    """The seed's XP2PRequestResult, given to ``start_voice_data``'s outcome callbacks.
    ``status`` is the device's (0: no response); ``data`` is its closing JSON, or the text of
    its refusal; ``voice`` is how the session ended (None when it never opened)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    data: Any = None
    errcode: int = 0
    errmsg: str = ""
    voice: VoiceResult | None = None


@dataclass(frozen=True, slots=True)
class VoicePause:
    """Yielded by a ``start_voice`` source: the recorder paused (``on_pause``); nothing is
    sent until `VoiceResume`, and the session stays open."""

    in_interruption: bool = False


@dataclass(frozen=True, slots=True)
class VoiceResume:
    """Yielded by a ``start_voice`` source after `VoicePause` (``on_resume``)."""


#: A ``start_voice`` callback (any arguments; see the module's docstring).
VoiceCallback: TypeAlias = Callable[..., Any]
PcmItem: TypeAlias = bytes | VoicePause | VoiceResume
#: What ``start_voice`` reads: a source, or a function returning a fresh one (renewals).
VoiceSource: TypeAlias = AsyncIterable[bytes] | AsyncIterable[PcmItem] | Callable[[], Any]
PCM_CALLBACKS = ("on_start", "on_pause", "on_resume", "on_stop")
DATA_CALLBACKS = ("on_stop", "on_success", "on_failure", "on_error", "on_complete")
#: the tasks of callbacks that returned an awaitable (kept so they are not collected)
_callback_tasks: set[asyncio.Task[Any]] = set()


def _call(callbacks: dict[str, VoiceCallback | None], name: str, *args: Any) -> None:
    callback = callbacks.get(name)
    if callback is None:
        return
    try:
        value = callback(*args)
    except Exception:
        logger.exception("voice callback %s raised", name)
        return
    if inspect.isawaitable(value):
        task = asyncio.ensure_future(value)
        _callback_tasks.add(task)
        task.add_done_callback(_callback_done)


def _callback_done(task: asyncio.Task[Any]) -> None:
    _callback_tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.error("a voice callback's task raised", exc_info=task.exception())


def _check_callbacks(callbacks: dict[str, VoiceCallback | None], names: tuple[str, ...]) -> None:
    for name, callback in callbacks.items():
        if name not in names:
            raise XP2PError(ErrorCode.BAD_PARAM, f"unknown voice callback {name}")
        if callback is not None and not callable(callback):
            raise XP2PError(ErrorCode.BAD_PARAM, f"{name} must be callable")


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

    def __init__(
        self,
        service: Service,
        target: str,
        headers: list[tuple[str, str]],
        callbacks: dict[str, VoiceCallback | None] | None = None,
        *,
        pcm: bool = False,
    ) -> None:
        self.service = service
        self.target = target
        self.headers = headers
        self.callbacks = callbacks or {}
        self.pcm = pcm
        self.status = 0
        self.response_headers: dict[str, str] = {}
        self.upload = _Upload()
        self.result: VoiceResult | None = None
        self.dropped_tags = 0
        self._response: ResponseStream | None = None
        self._stopping = False
        self._abort_reason = ""
        self._refusal = ""
        self._reply: dict[str, Any] | None = None
        self._no_response = False
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
        except BaseException as exc:
            if service.closers.get("voice") == self.stop:
                del service.closers["voice"]
            self.upload.end()
            if not self.pcm and isinstance(exc, XP2PError):
                outcome = "on_failure" if self.status else "on_error"
                data = self._refusal or None
                result = VoiceRequestResult(
                    self.status, self.response_headers, data, int(exc.code), exc.message
                )
                _call(self.callbacks, outcome, result)
                _call(self.callbacks, "on_complete")
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
        service.notify(NotifySubtype.VOICE_REQUEST, {"kind": "voice", "target": self.target})
        try:
            response = await service.link.request(
                "POST", self.target, self.headers, body=self.upload.body(), timeout=OPEN_TIMEOUT
            )
        except LinkError as exc:
            raise XP2PError(ErrorCode.VOICE_FAILED, f"talk-back request failed: {exc}") from exc
        self.status, self.response_headers = response.status, dict(response.headers)
        service.notify(
            NotifySubtype.VOICE_PARSED,
            {"kind": "voice", "status": response.status, "headers": response.headers},
        )
        if response.status != 200:
            reason = (await read_body(response)).decode("utf-8", "replace").strip()
            self._refusal = reason
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
            self._no_response = True
        if not self.upload.ended:  # the device ended the session before we did
            self.upload.end()
            response.cancel()
        self._finish(self._judge(reply, error))

    def _judge(self, reply: dict[str, Any], error: str) -> VoiceResult:
        self._reply = reply or None
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
            self._no_response = True
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
            service.notify(NotifySubtype.VOICE_SUCCESS, detail)
        else:
            service.log(LogLevel.ERROR, f"talk session failed: {result.reason}")
        service.notify(NotifySubtype.VOICE_CLOSE, detail)
        self._done.set()
        if self.pcm:
            _call(self.callbacks, "on_stop", False)
            return
        _call(self.callbacks, "on_stop")
        if result.ok:
            outcome, errcode = "on_success", 0
        else:
            outcome = "on_error" if self._no_response else "on_failure"
            errcode = int(ErrorCode.VOICE_FAILED)
        status = self.status
        if outcome == "on_failure" and isinstance((self._reply or {}).get("status"), int):
            status = int((self._reply or {})["status"])  # the verdict's own status
        request = VoiceRequestResult(
            status, self.response_headers, self._reply, errcode, result.reason, result
        )
        _call(self.callbacks, outcome, request)
        _call(self.callbacks, "on_complete")

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

    def pump(
        self,
        source: VoiceSource,
        max_bytes: int,
        bytes_per_second: int,
        max_seconds: float | None,
    ) -> None:
        """Feed PCM from ``source`` with back-pressure; end the upload when it ends."""
        limit = None if max_seconds is None else int(max_seconds * bytes_per_second)
        self._tasks.spawn(self._pump(source, max_bytes, limit), "pump")

    async def _pump(self, factory: VoiceSource, max_bytes: int, limit: int | None) -> None:
        """Read sources one after the other: a source read for ``limit`` bytes is closed and
        renewed (the seed's recorder at its maximum duration); one that ends by itself, or
        the session's end, ends the upload."""
        upload = self.upload
        while not upload.ended:
            source = _open_source(factory)
            if source is None:
                self.abort("the PCM source function returned no async iterable")
                return
            _call(self.callbacks, "on_start")
            renew = await self._read_source(source, max_bytes, limit)
            if not renew or upload.ended:
                break
            _call(self.callbacks, "on_stop", True)
        upload.end()

    async def _read_source(
        self, source: AsyncIterable[Any], max_bytes: int, limit: int | None
    ) -> bool:
        """Pump one source; True when it reached ``limit`` (renew), False when it ended."""
        upload = self.upload
        taken = 0
        try:
            async for item in source:
                if upload.ended:
                    return False
                if isinstance(item, VoicePause):
                    _call(self.callbacks, "on_pause", item.in_interruption)
                    continue
                if isinstance(item, VoiceResume):
                    _call(self.callbacks, "on_resume")
                    continue
                chunk: object = item  # the app's typing is not a guarantee
                if not isinstance(chunk, bytes | bytearray | memoryview):
                    self.abort(f"the PCM source yielded {type(chunk).__name__}, not bytes")
                    return False
                data = bytes(chunk)
                if limit is not None and taken + len(data) >= limit:
                    # Keep whole samples: the renewed source carries on from here.
                    keep = (limit - taken) & ~1
                    upload.put(data[:keep])
                    return True
                taken += len(data)
                upload.put(data)
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
        return False


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


def _open_source(factory: VoiceSource) -> AsyncIterable[Any] | None:
    """The source itself, or a fresh one from the app's function."""
    if hasattr(factory, "__aiter__"):
        return factory
    made = factory() if callable(factory) else None
    return made if hasattr(made, "__aiter__") else None


async def start_voice(
    service: Service,
    pcm_source: VoiceSource,
    sample_rate: int,
    channels: int,
    url_params: str,
    *,
    max_seconds: float | None = None,
    callbacks: dict[str, VoiceCallback | None] | None = None,
) -> VoiceSession:
    """Open a PCM talk session and stream ``pcm_source`` (s16le) in the background; returns
    once the device accepted. The session ends when the source does, or on ``stop_voice``."""
    renewable = callable(pcm_source) and not hasattr(pcm_source, "__aiter__")
    if not (renewable or hasattr(pcm_source, "__aiter__")):
        raise XP2PError(
            ErrorCode.BAD_PARAM,
            "pcm_source must be an async iterable of bytes, or a function returning one",
        )
    if max_seconds is not None and (not renewable or not max_seconds > 0):
        raise XP2PError(
            ErrorCode.BAD_PARAM,
            "max_seconds needs a positive number and a pcm_source function to renew from",
        )
    if not 8000 <= sample_rate <= 48000 or channels not in (1, 2):
        raise XP2PError(ErrorCode.BAD_PARAM, "talk-back PCM is 8000-48000 Hz with 1 or 2 channels")
    callbacks = callbacks or {}
    _check_callbacks(callbacks, PCM_CALLBACKS)
    headers = [("content-type", f"audio/pcm;rate={sample_rate};channels={channels}")]
    session = VoiceSession(service, _target(url_params, flv=False), headers, callbacks, pcm=True)
    await session.open()
    per_second = sample_rate * channels * 2
    session.pump(pcm_source, int(PCM_QUEUE_SECONDS * per_second), per_second, max_seconds)
    return session


async def start_voice_data(
    service: Service,
    url_params: str,
    *,
    callbacks: dict[str, VoiceCallback | None] | None = None,
) -> VoiceWriter:
    """Open an FLV/AAC talk session; returns the writer once the device accepted."""
    callbacks = callbacks or {}
    _check_callbacks(callbacks, DATA_CALLBACKS)
    headers = [("content-type", "video/x-flv")]
    session = VoiceSession(service, _target(url_params, flv=True), headers, callbacks)
    await session.open()
    return VoiceWriter(session)


async def stop_voice(service: Service) -> None:
    closer = service.closers.pop("voice", None)
    if closer is not None:
        await closer()
