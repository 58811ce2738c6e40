"""One viewer service (one id): a link to one device and at most one pull on it at a time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from xp2p.errors import ErrorCode, XP2PError
from xp2p.events import LogLevel, NotifySubtype, XP2PEvent
from xp2p.link import Link, LinkError, ResponseStream
from xp2p.link.requests import check_target

logger = logging.getLogger("xp2p.viewer")

MsgCallback = Callable[[str, str, Any], None]
DataCallback = Callable[[bytes], None]


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """The seed's streamInfo. 1v1: product_id + device_name (xp2p_info optional: fetched from
    the cloud when empty). 1vN: an http(s) FLV ``url``; ``upload=False`` makes the viewer
    download-only (it serves and announces nothing, as metered mobile users want) and
    ``upload_rate_cap`` caps what it serves its neighbours, in bytes/s (0 = no cap);
    ``playout_delay`` is how far behind live its player runs, in seconds (0 = the default,
    3 s): a longer delay gives each chunk more time to spread among viewers before anyone must
    fetch it from the edge (more offload), a shorter one lowers the latency."""

    url: str = ""
    product_id: str = ""
    device_name: str = ""
    xp2p_info: str = ""
    live_stream_domain: str = ""
    upload: bool = True
    upload_rate_cap: int = 0
    playout_delay: float = 0.0

    @property
    def is_1v1(self) -> bool:
        return bool(self.product_id or self.device_name or self.xp2p_info)


@dataclass(frozen=True, slots=True)
class FlvParams:
    """The seed's ``flv`` option of startStream: file name and query on the device."""

    filename: str = "ipc.flv"
    params: str = "action=live&channel=0&quality=high"

    @property
    def target(self) -> str:
        return f"/{self.filename}?{self.params}"


class ServiceEvents:
    """How a service (1v1 or 1vN) reports to the app: notifies, also logged, and log lines,
    through the app's ``msg_callback``, whose exceptions never reach the service."""

    #: Notifies too frequent to log (periodic statistics).
    unlogged: frozenset[NotifySubtype] = frozenset()

    def __init__(self, service_id: str, msg_callback: MsgCallback | None, log_context: str) -> None:
        self.id = service_id
        self.msg_callback = msg_callback
        self._log_context = log_context

    def notify(self, subtype: NotifySubtype, detail: Any = None) -> None:
        if subtype not in self.unlogged:
            logger.info(
                "%s service %s: %s %s",
                self._log_context,
                self.id,
                subtype.value,
                "" if detail is None else detail,
            )
        self._emit(XP2PEvent.NOTIFY, subtype.value, detail)

    def log(self, level: LogLevel, text: str) -> None:
        self._emit(XP2PEvent.LOG, level.value, text)

    def _emit(self, event: str, subtype: str, detail: Any) -> None:
        if self.msg_callback is None:
            return
        try:
            self.msg_callback(event, subtype, detail)
        except Exception:  # an app's callback bug must not kill the service
            logger.exception("msg_callback raised for service %s", self.id)


class Service(ServiceEvents):
    def __init__(
        self,
        service_id: str,
        info: StreamInfo,
        link: Link,
        msg_callback: MsgCallback | None,
        log_context: str,
    ) -> None:
        super().__init__(service_id, msg_callback, log_context)
        self.info = info
        self.link = link
        self._pull: asyncio.Task[None] | None = None
        self._response: ResponseStream | None = None
        self._stopping = False
        #: what else runs on this service (voice, downloads): stopped with it, by kind
        self.closers: dict[str, Callable[[], Awaitable[None]]] = {}
        self._watch = asyncio.create_task(self._watch_link(), name=f"watch-{service_id}")

    async def _watch_link(self) -> None:
        await self.link.wait_closed()
        if not self._stopping:
            self.log(LogLevel.WARN, f"link lost: {self.link.close_reason}")
            self.notify(NotifySubtype.DISCONNECT, {"reason": self.link.close_reason})

    # ---- pulls ----------------------------------------------------------------------

    @property
    def streaming(self) -> bool:
        return self._pull is not None and not self._pull.done()

    async def start_stream(self, data_callback: DataCallback, flv: FlvParams) -> None:
        if self.streaming:
            raise XP2PError(
                ErrorCode.START_STREAM_FAILED,
                f"service {self.id} is already pulling a stream; stop it first",
            )
        try:
            check_target(flv.target)
        except ValueError as exc:
            raise XP2PError(ErrorCode.BAD_PARAM, f"bad flv params: {exc}") from exc
        if self.link.closed:
            raise XP2PError(
                ErrorCode.START_STREAM_FAILED,
                f"service {self.id} lost its link ({self.link.close_reason})",
            )
        self.notify(NotifySubtype.REQUEST, {"target": flv.target})
        try:
            response = await self.link.request("GET", flv.target, timeout=7.5)
        except LinkError as exc:
            raise XP2PError(ErrorCode.START_STREAM_FAILED, f"stream request failed: {exc}") from exc
        self.notify(NotifySubtype.PARSED, {"status": response.status, "headers": response.headers})
        if response.status != 200:
            reason = (await _read_reason(response)) or f"status {response.status}"
            self.notify(NotifySubtype.FAIL, {"status": response.status, "reason": reason})
            raise XP2PError(
                ErrorCode.START_STREAM_FAILED,
                f"device refused the stream ({response.status}): {reason}",
            )
        self._response = response
        self._pull = asyncio.create_task(
            self._deliver(response, data_callback), name=f"pull-{self.id}"
        )

    async def _deliver(self, response: ResponseStream, data_callback: DataCallback) -> None:
        try:
            async for chunk in response:
                data_callback(chunk)
        except LinkError:
            return  # reported as disconnect by _watch_link
        except Exception:
            logger.exception("data_callback raised for service %s; stopping the pull", self.id)
            response.cancel()
            self.notify(NotifySubtype.FAIL, {"reason": "data_callback raised"})
            return
        if not self.link.closed and self._response is response:
            self.notify(NotifySubtype.EOF)

    async def stop_stream(self) -> None:
        pull, response = self._pull, self._response
        self._pull, self._response = None, None
        if pull is None or response is None:
            return
        response.cancel()
        pull.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pull
        self.notify(NotifySubtype.CLOSE)

    async def stop(self) -> None:
        self._stopping = True
        await self.stop_stream()
        for kind, closer in list(self.closers.items()):
            try:
                await closer()
            except Exception:
                logger.exception("stopping %s of service %s failed", kind, self.id)
        self.closers.clear()
        await self.link.close("viewer stopped the service")
        self._watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watch


async def _read_reason(response: ResponseStream) -> str:
    with contextlib.suppress(LinkError, TimeoutError):
        body = await asyncio.wait_for(response.read(limit=4096), 2.0)
        return body.decode("utf-8", "replace").strip()
    return ""
