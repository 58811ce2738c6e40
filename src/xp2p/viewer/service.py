"""One viewer service (one id): a link to one device and at most one pull on it at a time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from xp2p.errors import ErrorCode, XP2PError
from xp2p.events import LogLevel, NotifySubtype
from xp2p.link import Link, LinkError, ResponseStream
from xp2p.link.requests import check_target
from xp2p.tasks import TaskSet
from xp2p.viewer.service_events import ServiceEvents
from xp2p.viewer.types import DataCallback, FlvParams, MsgCallback, StreamInfo

logger = logging.getLogger("xp2p.viewer")

#: How much of a refusal's text body is kept as its reason.
MAX_REASON_BYTES = 4096
#: How long a refusal's body may take to arrive before the reason is left empty.
REASON_TIMEOUT = 2.0


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
        #: why the SDK closed the link itself (a finished download), "" otherwise
        self.closed_by_sdk = ""
        #: what else runs on this service (voice, downloads): stopped with it, by kind
        self.closers: dict[str, Callable[[], Awaitable[None]]] = {}
        #: the link watch and the pull: none outlives ``stop``
        self._tasks = TaskSet(f"service-{service_id}")
        self._tasks.spawn(self._watch_link(), "watch")

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
            reason = (await read_reason(response)) or f"status {response.status}"
            self.notify(NotifySubtype.FAIL, {"status": response.status, "reason": reason})
            raise XP2PError(
                ErrorCode.START_STREAM_FAILED,
                f"device refused the stream ({response.status}): {reason}",
            )
        self._response = response
        self._pull = self._tasks.spawn(self._deliver(response, data_callback), "pull")

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
        await self._tasks.cancel_all()

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def close_link(self, reason: str) -> None:
        """Close the link but keep the service, as the seed does after a download: the app
        gets ``disconnect`` with ``reason`` and stops (or restarts) the service when it
        likes. No NAT re-probe follows: the network did not change."""
        if self._stopping or self.link.closed:
            return
        self.closed_by_sdk = reason
        await self.link.close(reason)


async def read_reason(response: ResponseStream, limit: int = MAX_REASON_BYTES) -> str:
    """The text body of a refusal (a non-2xx answer), stripped; "" when it does not come
    within ``REASON_TIMEOUT`` or the stream breaks: a reason is a courtesy, never a wait."""
    return (await read_body(response, limit)).decode("utf-8", "replace").strip()


async def read_body(response: ResponseStream, limit: int = MAX_REASON_BYTES) -> bytes:
    """A refusal's body as it came (at most ``limit`` bytes; b"" as for ``read_reason``)."""
    with contextlib.suppress(LinkError, TimeoutError):
        return await asyncio.wait_for(response.read(limit=limit), REASON_TIMEOUT)
    return b""
