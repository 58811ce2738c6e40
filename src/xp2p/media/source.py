"""The MediaSource interface and the thread-to-asyncio pump every PyAV source shares, and
the one way a source URL's credentials are kept out of logs (``redact_url``) and out of
``ps`` (``with_credentials``: inserted in memory, from a file or the environment)."""

from __future__ import annotations

import abc
import asyncio
import itertools
import re
import threading
from collections.abc import AsyncIterator, Iterator
from urllib.parse import quote, unquote

from xp2p.flv import FlvHeader, FlvTag


class MediaError(Exception):
    """A source could not be opened or read (bad URL, unreadable file, codec FLV can't carry)."""


_SCHEME = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)(.*)", re.DOTALL)


def redact_url(url: str) -> str:
    """The URL with its userinfo replaced by ``***``: ``rtsp://***@host/path``.

    The userinfo ends at the *last* ``@``: a password may hold ``@``, ``/``, ``:`` or
    ``%40`` (typed raw, as people do), and stopping at the first ``@`` or ``/`` would show
    the rest of it. A URL whose path or query holds an ``@`` is shown from that ``@`` on:
    saying too little is the safe way to be wrong."""
    match = _SCHEME.fullmatch(url)
    if match is None:
        return url
    scheme, rest = match.groups()
    at = rest.rfind("@")
    return url if at < 0 else f"{scheme}***@{rest[at + 1 :]}"


def has_userinfo(url: str) -> bool:
    """``url`` (may) carry a user:password that ``ps`` shows."""
    return redact_url(url) != url


def parse_credentials(text: str, what: str) -> tuple[str, str]:
    """``user:password`` on one line (a trailing newline is dropped; the password may hold
    ``:``, ``@``, ``/``): the pair, or a ValueError naming ``what``."""
    line = text.rstrip("\r\n")
    user, sep, password = line.partition(":")
    if not sep or not user or "\n" in line or "\r" in line:
        raise ValueError(f"{what}: expected user:password on one line")
    return user, password


def with_credentials(url: str, credentials: tuple[str, str]) -> str:
    """``url`` with ``user:password`` inserted, percent-encoded (so ``@`` and ``/`` in the
    password reach the camera intact; FFmpeg decodes userinfo). Only ever held in memory."""
    match = _SCHEME.fullmatch(url)
    if match is None:
        raise ValueError("source credentials need a URL source (rtsp://, http://, https://)")
    if has_userinfo(url):
        raise ValueError("the source URL already holds a user:password; drop one of the two")
    scheme, rest = match.groups()
    user, password = (quote(part, safe="") for part in credentials)
    return f"{scheme}{user}:{password}@{rest}"


def scrub(text: str, url: str) -> str:
    """``text`` (an FFmpeg message that may quote the URL, whole or in parts) with ``url``
    redacted and its userinfo and password, raw or percent-decoded, replaced by ``***``."""
    text = text.replace(url, redact_url(url))
    match = _SCHEME.fullmatch(url)
    at = match.group(2).rfind("@") if match else -1
    if match is None or at < 0:
        return text
    userinfo = match.group(2)[:at]
    password = userinfo.partition(":")[2]
    forms = {userinfo, unquote(userinfo), password, unquote(password)}
    for form in sorted(forms, key=len, reverse=True):  # the longest first: no half-replacing
        if len(form) >= 3:  # a one- or two-letter password would scrub ordinary words
            text = text.replace(form, "***")
    return text


class MediaSource(abc.ABC):
    """Yields FLV tags in real time: script and sequence headers first, then a keyframe.

    ``header`` says which of audio and video the stream has; it is exact once the first tag
    has been yielded (a URL's streams are only known after it has been opened).
    """

    header: FlvHeader
    description: str

    @abc.abstractmethod
    def tags(self) -> AsyncIterator[FlvTag]: ...

    @abc.abstractmethod
    async def aclose(self) -> None: ...

    def request_keyframe(self) -> None:  # noqa: B027 - a no-op unless a source can do it
        """Ask for an IDR frame soon (a viewer's decoder needs one). Sources that cannot
        force one (files, remuxed streams) ignore it and the next keyframe comes on its own."""

    async def __aenter__(self) -> MediaSource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class _End:
    """Sentinel: the worker has finished (or aclose() was called)."""


_END = _End()
_QueueItem = FlvHeader | FlvTag | BaseException | _End
_worker_ids = itertools.count(1)

# A jump larger than this between consecutive tags is a discontinuity (a camera restart, a
# concatenated file), not a reason to stall the stream for that long: pacing re-anchors.
_MAX_FORWARD_JUMP_MS = 10_000
_MAX_BACKWARD_JUMP_MS = 1_000


class ThreadedSource(MediaSource):
    """Runs ``_produce()`` (blocking PyAV work) on a worker thread and paces its tags.

    The worker may run at most ``queue_size`` items ahead of the consumer: it takes a credit
    from a semaphore before posting each item to the event loop, and the consumer gives the
    credit back when it dequeues the item. Between items the worker checks the stop flag, so
    aclose() stops it within one item's encode or demux time.
    """

    join_timeout = 5.0

    def __init__(self, header: FlvHeader, description: str, *, queue_size: int = 64) -> None:
        self.header = header
        self.description = description
        self._credits = threading.Semaphore(queue_size)
        # Room for every credited item plus the worker's end marker and aclose()'s.
        self._queue: asyncio.Queue[_QueueItem] = asyncio.Queue(maxsize=queue_size + 2)
        self._stop = threading.Event()
        self._closed = asyncio.Event()
        self._worker_done = asyncio.Event()
        self._thread: threading.Thread | None = None
        self._iterating = False

    @abc.abstractmethod
    def _produce(self) -> Iterator[FlvHeader | FlvTag]:
        """Blocking generator run on the worker thread; closing it must release resources."""

    def tags(self) -> AsyncIterator[FlvTag]:
        if self._iterating:
            raise RuntimeError(f"tags() of {self.description} can be iterated only once")
        self._iterating = True
        return self._paced_tags()

    async def aclose(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._stop.set()
        if self._thread is None:
            return
        self._queue.put_nowait(_END)
        # Waiting on an event the worker sets on its way out, rather than
        # asyncio.to_thread(join), leaves no executor thread behind.
        try:
            async with asyncio.timeout(self.join_timeout):
                await self._worker_done.wait()
        except TimeoutError:
            # Blocked in a network read: it is a daemon thread and exits as soon as that
            # read times out and it sees the stop flag.
            return
        self._thread.join(timeout=1.0)  # only the return from _run() is left

    async def _paced_tags(self) -> AsyncIterator[FlvTag]:
        if self._closed.is_set():
            return
        loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._run, args=(loop,), name=f"xp2p-media-{next(_worker_ids)}", daemon=True
        )
        self._thread.start()
        anchor_ts: int | None = None
        anchor_time = 0.0
        last_ts = 0
        try:
            while not self._closed.is_set():
                item = await self._queue.get()
                if isinstance(item, _End) or self._closed.is_set():
                    return
                if isinstance(item, BaseException):
                    raise item
                self._credits.release()
                if isinstance(item, FlvHeader):
                    self.header = item
                    continue
                if not (item.is_script or item.is_sequence_header):
                    ts = item.timestamp
                    if (
                        anchor_ts is None
                        or ts > last_ts + _MAX_FORWARD_JUMP_MS
                        or ts < last_ts - _MAX_BACKWARD_JUMP_MS
                    ):
                        anchor_ts, anchor_time = ts, loop.time()
                    last_ts = ts
                    await self._sleep_until(anchor_time + (ts - anchor_ts) / 1000)
                    if self._closed.is_set():
                        return
                yield item
        finally:
            self._stop.set()

    async def _sleep_until(self, due: float) -> None:
        delay = due - asyncio.get_running_loop().time()
        if delay <= 0:
            return
        try:
            async with asyncio.timeout(delay):
                await self._closed.wait()
        except TimeoutError:
            pass

    # -- worker thread -------------------------------------------------------------------

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        final: _QueueItem = _END
        produced: Iterator[FlvHeader | FlvTag] = iter(())
        try:
            produced = self._produce()
            for item in produced:
                if not self._post(loop, item):
                    break
        except MediaError as exc:
            final = exc
        except Exception as exc:
            final = MediaError(f"{self.description}: {exc}")
            final.__cause__ = exc
        finally:
            close = getattr(produced, "close", None)
            if close is not None:
                try:
                    close()  # runs the generator's finally: containers are closed here
                except Exception:  # already failing or stopping; keep the first error
                    pass
            try:
                loop.call_soon_threadsafe(self._queue.put_nowait, final)
                loop.call_soon_threadsafe(self._worker_done.set)
            except RuntimeError:
                pass  # the loop is closed: nobody is listening any more

    def _post(self, loop: asyncio.AbstractEventLoop, item: FlvHeader | FlvTag) -> bool:
        while not self._stop.is_set():
            if self._credits.acquire(timeout=0.1):
                try:
                    loop.call_soon_threadsafe(self._queue.put_nowait, item)
                except RuntimeError:
                    self._stop.set()  # the loop is closed
                    return False
                return True
        return False
