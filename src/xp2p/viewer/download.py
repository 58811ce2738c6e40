"""``start_local_download``: a recorded file from the device, resumable (docs/api.md).

The seed's callbacks, in the order they fire:

* ``on_headers_received({"status", "headers"})`` once the device answered (any status);
* ``on_chunk_received(bytes)`` for each piece of the body (status 2xx only);
* exactly one of ``on_success(result)`` (2xx and every byte ``content-length`` promised),
  ``on_failure(result)`` (the device answered non-2xx; ``errmsg`` is its reason) or
  ``on_error(result)`` (no answer, link lost, transfer cut short, stopped: ``errmsg`` says
  which; "stopped" after ``stop_local_download`` or ``stop_p2p_service``);
* ``on_complete()`` last, whatever happened;
* then, as in the seed, the service's link closes by itself (``disconnect`` notified with
  the reason), unless the app passed ``keep_link=True`` or ``on_complete`` started the next
  download on it (that one's ``keep_link`` then decides). ``download_to_file`` keeps its link:
  it may resume or start over on it.

Callbacks may be plain functions or coroutine functions; an awaited callback holds the
transfer back (the link's receive window follows the reader), which is how a slow disk slows
the device down instead of filling memory. A callback that raises ends the download with
``on_error``. One download per service at a time; the slot is free again before the final
callbacks run, so ``on_complete`` may start the next one. A failure's result carries the
device's body (its reason) as ``data``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote

from xp2p.errors import ErrorCode, XP2PError
from xp2p.events import LogLevel
from xp2p.link import LinkError, ResponseStream
from xp2p.link.requests import MAX_QUERY_BYTES
from xp2p.viewer.service import Service, read_body
from xp2p.viewer.types import DownloadCallback

logger = logging.getLogger("xp2p.viewer")

CALLBACKS = (
    "on_headers_received",
    "on_chunk_received",
    "on_success",
    "on_failure",
    "on_error",
    "on_complete",
)
#: The device hashes the whole file before it answers: a cold 2 GB file takes seconds.
HEADERS_TIMEOUT = 30.0
#: Printable ASCII but the space: what goes into the request target as it is.
_QUERY_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))


@dataclass(frozen=True, slots=True)
class LocalDownloadResult:
    """The seed's XP2PLocalDownloadResult. ``status`` is 0 when the device never answered;
    ``bytes_received`` counts body bytes delivered to ``on_chunk_received``; ``data`` is the
    body of a non-2xx answer (a success's body went to ``on_chunk_received``)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    bytes_received: int = 0
    errcode: int = 0
    errmsg: str = ""
    data: bytes | None = None


def download_target(url_params: str) -> str:
    """The request target for ``url_params``; raises XP2PError(-2000) when they are unusable."""
    if not isinstance(url_params, str) or not url_params:
        raise XP2PError(ErrorCode.BAD_PARAM, "url_params must be a non-empty string")
    try:
        params = dict(parse_qsl(url_params, keep_blank_values=True, strict_parsing=True))
    except ValueError as exc:
        raise XP2PError(ErrorCode.BAD_PARAM, f"url_params is not a query string: {exc}") from exc
    if not params.get("file_name"):
        raise XP2PError(ErrorCode.BAD_PARAM, "url_params needs file_name")
    action = params.get("action")
    if action not in (None, "download"):
        raise XP2PError(ErrorCode.BAD_PARAM, f"url_params asks for action={action}, not download")
    # Raw spaces, control characters or non-ASCII text in the target would make the device's
    # HTTP/3 layer refuse the headers and close the whole link: send them percent-encoded
    # (they mean the same once the device decodes the query).
    query = quote(url_params if action else f"action=download&{url_params}", safe=_QUERY_SAFE)
    if len(query.encode()) > MAX_QUERY_BYTES:
        raise XP2PError(
            ErrorCode.BAD_PARAM, f"url_params longer than {MAX_QUERY_BYTES} bytes with the action"
        )
    return f"/ipc.flv?{query}"


class _CallbackFailed(Exception):
    pass


class LocalDownload:
    """One transfer on one service; ``run`` is its task, ``stop`` its closer."""

    def __init__(
        self,
        service: Service,
        target: str,
        callbacks: dict[str, DownloadCallback | None],
        keep_link: bool,
    ) -> None:
        self.service = service
        self.target = target
        self.callbacks = callbacks
        self.keep_link = keep_link
        self.status = 0
        self.headers: dict[str, str] = {}
        self.received = 0
        self._response: ResponseStream | None = None
        self._stopping = False
        self._finishing = False
        self.task = asyncio.create_task(self._run(), name=f"download-{service.id}")

    async def stop(self) -> None:
        """Cancel the transfer; the task reports ``stopped`` and ``on_complete`` first."""
        inside = asyncio.current_task() is self.task  # called from one of our callbacks
        if self._finishing:  # ending anyway: let its last callbacks run
            if not inside:
                await asyncio.shield(self.task)
            return
        self._stopping = True
        if self._response is not None:
            self._response.cancel()
        self.task.cancel()  # from inside, it lands at the callback's next await
        if not inside:
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    # ---- the transfer ------------------------------------------------------------------

    async def _run(self) -> None:
        outcome, result = "on_error", self._result("")
        try:
            outcome, result = await self._transfer()
        except asyncio.CancelledError:
            result = self._result("stopped" if self._stopping else "cancelled")
            if not self._stopping:
                await self._finish(outcome, result)
                raise
        except _CallbackFailed as exc:
            result = self._result(str(exc))
        except LinkError as exc:
            link = self.service.link
            if link.closed:
                text = f"link lost after {self.received} bytes ({link.close_reason})"
            else:  # the stream alone was reset
                text = f"the device broke off the transfer after {self.received} bytes ({exc})"
            result = self._result(text)
        finally:
            if self._response is not None:
                self._response.cancel()  # a no-op after a clean end
        await self._finish(outcome, result)

    async def _transfer(self) -> tuple[str, LocalDownloadResult]:
        link = self.service.link
        try:
            response = await link.request("GET", self.target, timeout=HEADERS_TIMEOUT)
        except LinkError as exc:
            return "on_error", self._result(f"no response from the device: {exc}")
        self._response = response
        self.status, self.headers = response.status, dict(response.headers)
        await self._call("on_headers_received", {"status": self.status, "headers": self.headers})
        if not 200 <= self.status < 300:
            body = await read_body(response)
            reason = body.decode("utf-8", "replace").strip() or f"status {self.status}"
            return "on_failure", self._result(reason, data=body or None)
        expected = _content_length(self.headers)
        async for chunk in response:
            self.received += len(chunk)
            if expected is not None and self.received > expected:
                return "on_error", self._result(f"more than the {expected} bytes announced")
            await self._call("on_chunk_received", chunk)
        if self._stopping:  # cancelled under us: the iteration ended quietly
            return "on_error", self._result("stopped")
        if expected is not None and self.received != expected:
            return "on_error", self._result(f"ended after {self.received} of {expected} bytes")
        return "on_success", self._result("", errcode=ErrorCode.OK)

    def _result(
        self, errmsg: str, errcode: int = ErrorCode.DOWNLOAD_FAILED, data: bytes | None = None
    ) -> LocalDownloadResult:
        return LocalDownloadResult(
            self.status, self.headers, self.received, int(errcode), errmsg, data
        )

    async def _finish(self, outcome: str, result: LocalDownloadResult) -> None:
        self._finishing = True
        service = self.service
        if service.closers.get("download") == self.stop:
            del service.closers["download"]  # free before on_complete: it may start the next
        level = LogLevel.INFO if outcome == "on_success" else LogLevel.WARN
        text = result.errmsg or f"{result.bytes_received} bytes"
        service.log(level, f"download {self.target}: {outcome[3:]} ({text})")
        for name, args in ((outcome, (result,)), ("on_complete", ())):
            with contextlib.suppress(_CallbackFailed):
                await self._call(name, *args)
        if not self.keep_link and "download" not in service.closers and not service.stopping:
            await service.close_link(f"download {outcome[3:]}: the link closes after a download")

    async def _call(self, name: str, *args: Any) -> None:
        callback = self.callbacks.get(name)
        if callback is None:
            return
        try:
            value = callback(*args)
            if inspect.isawaitable(value):
                await value
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("%s raised for download on service %s", name, self.service.id)
            raise _CallbackFailed(f"{name} raised {type(exc).__name__}: {exc}") from exc


def _content_length(headers: dict[str, str]) -> int | None:
    raw = headers.get("content-length", "")
    return int(raw) if raw.isascii() and raw.isdigit() else None


async def start_local_download(
    service: Service,
    url_params: str,
    callbacks: dict[str, DownloadCallback | None],
    *,
    keep_link: bool = True,
) -> None:
    """Start a download on ``service``; returns at once, the transfer runs in a task. The
    default keeps the link (xp2p's own callers chain transfers on it);
    ``P2PModule.start_local_download`` passes the seed's ``keep_link=False``."""
    target = download_target(url_params)
    for name, callback in callbacks.items():
        if name not in CALLBACKS:
            raise XP2PError(ErrorCode.BAD_PARAM, f"unknown download callback {name}")
        if callback is not None and not callable(callback):
            raise XP2PError(ErrorCode.BAD_PARAM, f"{name} must be callable")
    if "download" in service.closers:
        raise XP2PError(
            ErrorCode.DOWNLOAD_FAILED,
            f"service {service.id} is already downloading; stop_local_download first",
        )
    if service.link.closed:
        raise XP2PError(
            ErrorCode.DOWNLOAD_FAILED,
            f"service {service.id} lost its link ({service.link.close_reason})",
        )
    download = LocalDownload(service, target, callbacks, keep_link)
    service.closers["download"] = download.stop


async def stop_local_download(service: Service) -> None:
    """Cancel the service's download, if any (its ``on_error("stopped")`` and
    ``on_complete`` have run when this returns)."""
    closer = service.closers.pop("download", None)
    if closer is not None:
        await closer()
