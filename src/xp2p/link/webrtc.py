"""WebRTC as a second link transport: the asyncio shell around aiortc (docs/protocol.md §8b).

A browser reaches the device through an ``RTCPeerConnection``; each request travels on its own
data channel labelled ``req`` (framing in ``xp2p.link.datachannel_framing``). ``WebRtcLink``
implements ``RequestTransport`` (``xp2p.link.transport``), so the device's routes, grants and
capacity rules serve it exactly as a QUIC link. Back-pressure is the channel's
``bufferedAmount``: a writer waits above a high-water mark, so the live route sees a slow
reader the way it does on QUIC and skips to the next keyframe.

The device's end runs on xp2p's own ICE agent (``link.ice.IceConnection``, built from the
link's ``LinkConfig`` as a QUIC link's is: its host addresses, every TURN URL, the bound on
checks to unproven addresses), and takes a peer for gone as a QUIC link does: an SCTP
HEARTBEAT every ``keepalive_interval``, closed after ``idle_timeout`` with nothing heard.

The same class is the requesting end too (a Python stand-in for a browser: tests, benches);
there a reader that falls ``MAX_UNREAD`` behind gets its request reset with
``LinkError("too_much_unread")``, as the device resets a peer that ignores back-pressure.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aioice import Candidate
from aiortc import (
    RTCCertificate,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)

from xp2p.link import datachannel_framing as framing
from xp2p.link.aiortc_internals import (
    SctpPulse,
    use_certificate,
    use_ice_connection,
    uses_ice_connection,
)
from xp2p.link.config import IceServer, LinkConfig
from xp2p.link.errors import LinkError, StreamClosed
from xp2p.link.ice import create_ice
from xp2p.link.link import Link
from xp2p.link.requests import IncomingRequest, ResponseStream
from xp2p.link.transport import StreamState
from xp2p.link.webrtc_sdp import (
    check_answer_fingerprint,
    keep_sha256_fingerprints,
    split_mdns_candidates,
)
from xp2p.tasks import TaskSet

logger = logging.getLogger("xp2p.link")

RequestHandler = Callable[[IncomingRequest], Awaitable[None]]

REQUEST_LABEL = "req"
#: The offerer opens this channel before its offer so that the offer negotiates SCTP; it
#: carries nothing.
CONTROL_LABEL = "xp2p"
#: A writer waits while more than this is queued on its channel, until it drains below LOW.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
#: Data channels have no receive window: a peer that sends this much more than the
#: application has taken ignores back-pressure, and its request is reset.
MAX_UNREAD = 4 * 1024 * 1024
#: Requests open at once on one link (aioquic's default stream limit on a QUIC link); SCTP
#: would allow 65535 channels, each a task on the device.
MAX_REQUESTS = 128


class WebRtcIdentity:
    """The DTLS certificate of one device run, shown on every WebRTC link (as
    ``link.identity.LinkIdentity`` is for QUIC); xp2pInfo publishes its fingerprint."""

    def __init__(self) -> None:
        self.certificate = RTCCertificate.generateCertificate()

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the certificate, base64url without padding (xp2pInfo's ``w``)."""
        value = next(
            f.value for f in self.certificate.getFingerprints() if f.algorithm == "sha-256"
        )
        digest = bytes.fromhex(value.replace(":", ""))
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def rtc_ice_servers(servers: Iterable[IceServer]) -> list[RTCIceServer]:
    """The cloud's STUN/TURN entries as aiortc takes them."""
    out = []
    for server in servers:
        urls = [u for u in server.urls if u.split(":", 1)[0] in ("stun", "turn", "turns")]
        if urls:
            out.append(RTCIceServer(urls, server.username, server.credential))
    return out


class _ReceivedBody(asyncio.Queue[bytes | None]):
    """A requester's received body. Data channels have no receive window, so nothing slows a
    device whose reader fell behind: past ``MAX_UNREAD`` bytes not taken the request is
    reset, and the reader's next read raises ``error`` rather than ending as if the body were
    whole."""

    def __init__(self) -> None:
        super().__init__()
        self.error: LinkError | None = None

    def fail(self, error: LinkError) -> None:
        self.error = error
        while not self.empty():  # the memory goes now, not when the reader catches up
            self.get_nowait()
        self.put_nowait(None)  # wakes a reader waiting in get()

    async def get(self) -> bytes | None:
        if self.error is not None:
            raise self.error
        item = await super().get()
        if self.error is not None:
            raise self.error
        return item


@dataclass
class _Channel:
    state: StreamState
    channel: RTCDataChannel
    head: bool = False  #: the peer's head has arrived
    ended: bool = False  #: the peer's end marker has arrived
    refused: bool = False  #: answered 400 for bad framing; the rest is ignored
    drained: asyncio.Event = field(default_factory=asyncio.Event)


class WebRtcLink:
    """One peer connection carrying requests on data channels (``RequestTransport``)."""

    def __init__(
        self, pc: RTCPeerConnection, *, peer_label: str, handler: RequestHandler | None = None
    ) -> None:
        self.id = next(Link._ids)  # one numbering with QUIC links: ids name viewer slots
        self.peer_label = peer_label
        self.close_reason = ""
        self.link_mode = "webrtc"
        self._pc = pc
        self._handler = handler
        self._channels: dict[int, _Channel] = {}
        self._stream_ids = itertools.count(0, 4)
        self._closed = False
        self._closed_event = asyncio.Event()
        self._connected = asyncio.Event()
        self._tasks = TaskSet(f"webrtc{self.id}")
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_state)

    @property
    def closed(self) -> bool:
        return self._closed

    async def wait_closed(self) -> None:
        await self._closed_event.wait()

    async def wait_connected(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        except TimeoutError:
            raise LinkError(
                "connect_timeout", f"no WebRTC connection within {timeout:g} s"
            ) from None
        if self._closed:
            raise LinkError("closed", f"WebRTC connection failed ({self.close_reason})")

    def _on_state(self) -> None:
        state = self._pc.connectionState
        if state == "connected":
            self._connected.set()
        elif state in ("failed", "closed") and not self._closed:
            self._tasks.spawn(self.close(f"peer connection {state}"), "close")

    def keep_alive(self, pulse: SctpPulse, interval: float, idle_timeout: float) -> None:
        """Close the link once the peer has sent nothing for ``idle_timeout`` s, asking it
        for a packet every ``interval`` s: a QUIC link's PING and idle timeout, so a vanished
        browser frees its viewer slot as soon as a vanished QUIC viewer does (within
        ``idle_timeout + interval``) instead of after aiortc's ~30 s of consent checks."""
        self._tasks.spawn(self._watch(pulse, interval, idle_timeout), "keepalive")

    async def _watch(self, pulse: SctpPulse, interval: float, idle_timeout: float) -> None:
        loop = asyncio.get_running_loop()
        seen, heard_at = pulse.received, loop.time()
        next_beat = heard_at + interval
        while not self._closed:
            await asyncio.sleep(max(0.0, min(next_beat, heard_at + idle_timeout) - loop.time()))
            now = loop.time()
            # A counter read at each wake costs nothing per packet; heard_at is then late by
            # at most one interval, which is QUIC's slack too (its idle timer restarts on
            # the first PING sent after the peer went silent).
            if pulse.received != seen:
                seen, heard_at = pulse.received, now
            elif now >= heard_at + idle_timeout:
                await self.close(f"no packet from the peer for {idle_timeout:g} s")
                return
            if now >= next_beat:
                next_beat = now + interval
                with contextlib.suppress(ConnectionError):  # DTLS already down: closing
                    await pulse.heartbeat()

    # ---- channels ---------------------------------------------------------------------

    def _track(self, channel: RTCDataChannel, state: StreamState) -> _Channel:
        record = _Channel(state, channel)
        self._channels[state.stream_id] = record
        channel.bufferedAmountLowThreshold = LOW_WATER
        channel.on("message", lambda message: self._on_message(record, message))
        channel.on("close", lambda: self._on_channel_closed(record))
        channel.on("bufferedamountlow", record.drained.set)
        return record

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if self._handler is None or self._closed:
            return  # we serve no requests
        if channel.label != REQUEST_LABEL:
            channel.close()  # the offerer's control channel has done its job
            return
        if len(self._channels) >= MAX_REQUESTS:
            logger.warning(
                "link %d to %s: over %d requests at once, one refused",
                self.id,
                self.peer_label,
                MAX_REQUESTS,
            )
            channel.close()
            return
        self._track(channel, StreamState(next(self._stream_ids)))

    def _on_message(self, record: _Channel, message: str | bytes) -> None:
        if record.refused:
            return
        try:
            if not record.head:
                self._on_head(record, message)
            elif isinstance(message, bytes):
                if record.ended:
                    raise framing.FramingError("bad_framing", "body after the end marker")
                framing.check_body(message)
                record.state.unread += len(message)
                if record.state.unread > MAX_UNREAD:
                    raise framing.FramingError(
                        "too_much_unread",
                        "peer ignores back-pressure"
                        if self._handler is not None
                        else f"the reader fell over {MAX_UNREAD} bytes behind: request reset",
                    )
                if message:
                    record.state.body.put_nowait(message)
            elif framing.is_end(message) and not record.ended:
                record.ended = True
                record.state.body.put_nowait(None)
        except framing.FramingError as exc:
            logger.warning("link %d to %s: %s (%s)", self.id, self.peer_label, exc, exc.code)
            if self._handler is not None and not record.head:
                record.head = record.refused = True
                self._tasks.spawn(self._refuse(record, exc), "refuse")
                return
            if self._handler is None:  # the reader learns why, instead of a short body
                self._fail_reader(record.state, LinkError(exc.code, str(exc)))
            self.cancel(record.state.stream_id)

    @staticmethod
    def _fail_reader(state: StreamState, error: LinkError) -> None:
        if state.headers is not None and not state.headers.done():
            state.headers.set_exception(error)
            state.headers.exception()  # retrieved: request() may have given up already
        if isinstance(state.body, _ReceivedBody):
            state.body.fail(error)

    def _on_head(self, record: _Channel, message: str | bytes) -> None:
        state = record.state
        if self._handler is None:  # requesting side: the response head
            response = framing.parse_response_head(message)
            record.head = True
            raw = [(b":status", str(response.status).encode())]
            raw += [(k.encode(), v.encode()) for k, v in response.headers.items()]
            if state.headers is not None and not state.headers.done():
                state.headers.set_result(raw)
            return
        head = framing.parse_request_head(message)
        record.head = True
        request = IncomingRequest(self, state, head.method, head.target, head.headers)
        self._tasks.spawn(self._serve(request, state), f"serve-{state.stream_id}")

    async def _serve(self, request: IncomingRequest, state: StreamState) -> None:
        assert self._handler is not None
        try:
            await self._handler(request)
            if not state.finished and not state.closed:
                await self.write(state.stream_id, b"", end=True)
        except StreamClosed:
            pass
        finally:
            self.release(state)

    async def _refuse(self, record: _Channel, error: framing.FramingError) -> None:
        body = json.dumps({"error": {"code": error.code, "message": str(error)}})
        try:
            self.send_response(record.state.stream_id, 400, [("content-type", "application/json")])
            await self.write(record.state.stream_id, body.encode(), end=True)
        except StreamClosed:
            pass
        self.release(record.state)

    def _on_channel_closed(self, record: _Channel) -> None:
        state = record.state
        self._channels.pop(state.stream_id, None)
        record.drained.set()
        if not record.ended:  # closed before its end marker: abandoned
            _close(state)

    # ---- RequestTransport -------------------------------------------------------------

    async def request(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | AsyncIterable[bytes] | None = None,
        timeout: float = 10.0,
    ) -> ResponseStream:
        if self._closed:
            raise LinkError("closed", f"link is closed ({self.close_reason})")
        try:
            head = framing.RequestHead(method, target, {k.lower(): v for k, v in headers})
            framing.parse_request_head(head.encode())  # what the device would refuse
        except framing.FramingError as exc:
            raise LinkError("bad_request", str(exc)) from exc
        channel = self._pc.createDataChannel(REQUEST_LABEL, ordered=True)
        answered: asyncio.Future[list[tuple[bytes, bytes]]] = (
            asyncio.get_running_loop().create_future()
        )
        state = StreamState(next(self._stream_ids), body=_ReceivedBody(), headers=answered)
        self._track(channel, state)
        try:
            if channel.readyState != "open":
                settled = asyncio.Event()  # opened, or closed by the device first
                channel.on("open", settled.set)
                channel.on("close", settled.set)
                async with asyncio.timeout(timeout):
                    await settled.wait()
            self._open(state.stream_id).channel.send(head.encode())
            if body is None:
                await self.write(state.stream_id, b"", end=True)
            elif isinstance(body, bytes):
                await self.write(state.stream_id, body, end=True)
            else:
                self._tasks.spawn(self._upload(state.stream_id, body), f"upload-{state.stream_id}")
            answer = await asyncio.wait_for(asyncio.shield(answered), timeout)
        except TimeoutError as exc:
            self.cancel(state.stream_id)
            raise LinkError("request_timeout", f"no response within {timeout:.1f} s") from exc
        except StreamClosed as exc:  # the device closed the channel (too many requests...)
            self.cancel(state.stream_id)
            raise LinkError("closed", f"request refused: {exc}") from exc
        except LinkError:  # a malformed response head (``_fail_reader``)
            self.cancel(state.stream_id)
            raise
        return ResponseStream(self, state, answer)

    async def _upload(self, stream_id: int, body: AsyncIterable[bytes]) -> None:
        try:
            async for chunk in body:
                await self.write(stream_id, chunk)
            await self.write(stream_id, b"", end=True)
        except StreamClosed:
            pass

    def _open(self, stream_id: int) -> _Channel:
        record = self._channels.get(stream_id)
        if record is None or record.state.closed or record.channel.readyState != "open":
            raise StreamClosed(f"stream {stream_id} is closed")
        return record

    def send_response(
        self, stream_id: int, status: int, headers: Iterable[tuple[str, str]]
    ) -> None:
        record = self._open(stream_id)
        record.channel.send(framing.ResponseHead(status, dict(headers)).encode())

    async def write(self, stream_id: int, data: bytes, end: bool = False) -> None:
        record = self._open(stream_id)
        if record.state.finished:
            raise StreamClosed(f"stream {stream_id} is finished")
        for piece in framing.split_body(data):
            while record.channel.bufferedAmount > HIGH_WATER:
                record.drained.clear()
                await record.drained.wait()
                record = self._open(stream_id)
            record.channel.send(piece)
        if end:
            record.channel.send(framing.END)
            record.state.finished = True
            if self._handler is not None:  # the device closes a channel it has answered
                record.channel.close()

    def backlog(self, stream_id: int) -> int:
        record = self._channels.get(stream_id)
        return 0 if record is None else record.channel.bufferedAmount

    def consumed(self, stream: StreamState, size: int) -> None:
        stream.unread -= size
        stream.taken += size

    def cancel(self, stream_id: int) -> None:
        record = self._channels.pop(stream_id, None)
        if record is None:
            return
        record.state.cancelled = True
        _close(record.state)
        record.drained.set()
        record.channel.close()

    def release(self, stream: StreamState) -> None:
        record = self._channels.pop(stream.stream_id, None)
        if record is not None and self._handler is None:
            record.channel.close()  # the requester is done with an answered channel

    async def close(self, reason: str = "closed") -> None:
        if self._closed:
            return
        self._closed = True
        self.close_reason = reason
        for record in list(self._channels.values()):
            _close(record.state)
            record.drained.set()
        self._channels.clear()
        self._connected.set()
        with contextlib.suppress(Exception):
            await self._pc.close()
        self._closed_event.set()
        logger.info("link %d to %s closed: %s", self.id, self.peer_label, reason)
        await self._tasks.cancel_all()


def _close(stream: StreamState) -> None:
    if stream.closed:
        return
    stream.closed = True
    stream.body.put_nowait(None)
    if stream.headers is not None and not stream.headers.done():
        stream.headers.set_exception(LinkError("closed", "stream closed before a response"))
        stream.headers.exception()


# ---- setting a link up ----------------------------------------------------------------


@dataclass
class PendingWebRtc:
    """The device's half-open WebRTC link: the answer to send now, the link once connected."""

    answer: dict[str, Any]
    link: asyncio.Future[WebRtcLink]


async def accept_webrtc(
    identity: WebRtcIdentity,
    config: LinkConfig,
    offer_sdp: str,
    *,
    handler: RequestHandler,
    peer_label: str,
) -> PendingWebRtc:
    """Device side: answer the offer (gathering candidates), connect in the background.

    ICE runs on the agent a QUIC link of ``config`` would get (``link.ice.create_ice``): the
    same host addresses, STUN and TURN servers, NAT rules and check budget; once connected
    the link keeps QUIC's ``keepalive_interval`` and ``idle_timeout``."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # ``ice`` has the servers
    use_certificate(pc, identity.certificate)
    link = WebRtcLink(pc, peer_label=peer_label, handler=handler)
    try:
        ice = create_ice(config, controlling=False)
        pulse = SctpPulse(use_ice_connection(pc, ice))
    except BaseException:
        await link.close("setup failed")
        raise
    offer_sdp, mdns_candidates = split_mdns_candidates(offer_sdp)
    for text in mdns_candidates:
        try:
            candidate = Candidate.from_sdp(text)
        except ValueError:
            continue  # as aiortc would skip it
        # Resolved beside the checks (aioice keeps a name still resolving when the end of
        # candidates arrives): the answer does not wait for multicast DNS.
        task = asyncio.ensure_future(ice.add_remote_candidate(candidate))
        _accepting.add(task)
        task.add_done_callback(_accepting.discard)
    try:
        await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        if not uses_ice_connection(pc, ice):  # media sections bring aiortc's own ICE agents
            raise ValueError("it has media sections; the device serves data channels only")
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception as exc:  # aiortc refuses an SDP it cannot use with assorted errors
        await link.close("bad offer")
        raise LinkError("bad_signal", f"offer SDP refused: {exc}") from None
    if not ice.local_candidates:  # relay only, and every TURN server failed
        await link.close("no candidates")
        raise LinkError("no_candidates", f"no ICE candidates to answer: {ice.empty_reason()}")
    sdp = keep_sha256_fingerprints(pc.localDescription.sdp)
    answer = {"v": 1, "transport": "webrtc", "sdp": sdp, "nat": config.nat_type}
    future: asyncio.Future[WebRtcLink] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(_finish_accept(link, config, pulse, future))
    _accepting.add(task)
    task.add_done_callback(_accepting.discard)
    return PendingWebRtc(answer, future)


_accepting: set[asyncio.Future[None]] = set()


async def _finish_accept(
    link: WebRtcLink, config: LinkConfig, pulse: SctpPulse, future: asyncio.Future[WebRtcLink]
) -> None:
    try:
        await link.wait_connected(config.connect_timeout)
    except LinkError as exc:
        await link.close(str(exc))
        if not future.done():
            future.set_exception(exc)
        return
    logger.info("webrtc link %d from %s up", link.id, link.peer_label)
    link.keep_alive(pulse, config.keepalive_interval, config.idle_timeout)
    if not future.done():
        future.set_result(link)
    else:
        await link.close("abandoned")


Signaller = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


async def open_webrtc(
    ice_servers: Iterable[IceServer],
    signal: Signaller,
    *,
    fingerprint: str,
    grant: str,
    peer_label: str,
    connect_timeout: float = 10.0,
    relay_only: bool = False,
) -> WebRtcLink:
    """Viewer side (what the browser SDK does): offer, check the answer's DTLS fingerprint
    against xp2pInfo's, connect. Raises ``LinkError("bad_identity")`` on a mismatch.
    ``relay_only`` offers relayed candidates only (a browser's ``iceTransportPolicy:
    "relay"``)."""
    policy = RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL
    configuration = RTCConfiguration(rtc_ice_servers(ice_servers), iceTransportPolicy=policy)
    pc = RTCPeerConnection(configuration)
    link = WebRtcLink(pc, peer_label=peer_label)
    try:
        pc.createDataChannel(CONTROL_LABEL)
        await pc.setLocalDescription(await pc.createOffer())
        offer = {"v": 1, "transport": "webrtc", "sdp": pc.localDescription.sdp, "grant": grant}
        try:
            answer = await asyncio.wait_for(signal(offer), connect_timeout)
        except TimeoutError as exc:
            raise LinkError("signal_timeout", "no answer from the peer") from exc
        sdp = answer.get("sdp") if isinstance(answer, dict) else None
        if not isinstance(sdp, str) or answer.get("transport") != "webrtc":
            raise LinkError("bad_signal", "the device's answer is not a WebRTC answer")
        check_answer_fingerprint(sdp, fingerprint)
        await pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))
        await link.wait_connected(connect_timeout)
    except BaseException:
        await link.close("setup failed")
        raise
    return link
