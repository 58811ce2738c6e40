"""The camera agent: a signed-in cloud session, links accepted from authorised viewers, and the
channels they watch.

``DeviceAgent`` is also the SDK entry point for camera makers: build a ``DeviceConfig`` with
your own ``MediaSource`` factories and run ``async with DeviceAgent(config): ...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

from xp2p import SDK_VERSION
from xp2p.auth import MAX_GRANT_LENGTH, AccessGrant, GrantError, GrantVerifier
from xp2p.device.admission import AdmissionLimits, LinkAdmission, LinkWatch, Refused, Slot
from xp2p.device.channel import LiveChannel
from xp2p.device.cloud_session import DeviceCloudSession, OfferRejected, OfferRequest, SignInInfo
from xp2p.device.commands import UserCommandHandler, set_user_command_handler
from xp2p.device.config import DeviceConfig
from xp2p.device.request import QUALITIES, Channel, respond_text
from xp2p.device.routes import DeviceRoutes
from xp2p.device.voice import SessionBudget
from xp2p.link import (
    IncomingRequest,
    Link,
    LinkError,
    LinkIdentity,
    Xp2pInfo,
    accept_link,
    handover,
    parse_offer,
)
from xp2p.link.config import IceServer, LinkConfig, StunInfo
from xp2p.link.nat import discover_nat_behaviour
from xp2p.link.webrtc_sdp import parse_webrtc_offer
from xp2p.tasks import TaskSet

if TYPE_CHECKING:
    from xp2p.link.webrtc import WebRtcLink

logger = logging.getLogger("xp2p.device")

#: How often the agent looks at this machine's addresses (a network change).
ADDRESS_POLL = 0.2


class DeviceAgent:
    def __init__(self, config: DeviceConfig) -> None:
        if not config.channels:
            raise ValueError("a device needs at least one channel")
        if config.grant_public_key is None:
            raise ValueError(
                "a device needs the cloud's grant-signing public key pinned (grant_public_key; "
                "xp2p device --grant-key FILE, exported by xp2p cloud --export-grant-key)"
            )
        self.config = config
        self.identity = LinkIdentity.generate(common_name=config.label)
        from xp2p.link.webrtc import WebRtcIdentity  # aiortc loads with the device only

        #: The DTLS certificate of every WebRTC link this run (its fingerprint in xp2pInfo).
        self.webrtc_identity = WebRtcIdentity()
        self._channels = self._build_channels(config)
        self.routes = DeviceRoutes(config, self._channels)
        self.links: set[Link] = set()
        #: The app each QUIC link was granted to: only that app's re-offers may move it.
        self._link_apps: dict[Link, str] = {}
        #: Browsers' links; they count with QUIC links against every limit (admission).
        self.webrtc_links: set[WebRtcLink] = set()
        self._pending: set[asyncio.Future[Link]] = set()
        self._pending_webrtc: set[asyncio.Future[WebRtcLink]] = set()
        #: Link and pending-link slots by app and grant; validates the limits' fields.
        self.admission = LinkAdmission(
            AdmissionLimits(
                max_links=config.max_links,
                max_pending_links=config.max_pending_links,
                app_link_share=config.app_link_share,
                max_links_per_grant=config.max_links_per_grant,
            )
        )
        if not config.link_idle_timeout > 0:
            raise ValueError("link_idle_timeout must be more than 0")
        SessionBudget(  # raises ValueError naming the voice_* field that is wrong
            config.voice_max_bytes,
            config.voice_max_seconds,
            config.voice_max_speed,
            config.voice_rate_grace,
        )
        if config.voice_retention_bytes < 0:
            raise ValueError("voice_retention_bytes must be 0 or more")
        self._verifier: GrantVerifier | None = None
        self._ice_servers: tuple[IceServer, ...] = ()
        #: This device's NAT as its last probe found it (``link.nat.NatType`` values).
        self.nat_type = "unknown"
        self._tasks = TaskSet(f"device-{config.label}")
        self.xp2p_info: str | None = None
        self._session = DeviceCloudSession(
            config.cloud_url,
            config.product_id,
            config.device_name,
            config.device_secret,
            device_key=config.device_key,
            grant_public_key=config.grant_public_key,
            trust=config.cloud_trust,
            on_offer=self._on_offer,
            xp2p_info_factory=self._on_sign_in,
        )

    @staticmethod
    def _build_channels(config: DeviceConfig) -> dict[int, Channel]:
        channels: dict[int, Channel] = {}
        for number, channel_config in config.channels.items():
            shared = LiveChannel(
                f"{config.label}/ch{number}", channel_config.default, max_lag=config.max_lag
            )
            live = {}
            for quality in QUALITIES:
                factory = channel_config.by_quality.get(quality)
                live[quality] = (
                    shared
                    if factory is None
                    else LiveChannel(
                        f"{config.label}/ch{number}/{quality}", factory, max_lag=config.max_lag
                    )
                )
            channels[number] = Channel(number, live)
        return channels

    def user_command(self, handler: UserCommandHandler) -> UserCommandHandler:
        """Decorator: ``handler(channel, command_text)`` answers ``action=user_define``
        commands (str, dict or list, or an awaitable of one), replacing the PTZ simulator::

            @agent.user_command
            async def on_command(channel: int, command: str) -> dict[str, str]: ...
        """
        set_user_command_handler(self.routes.state, handler)
        return handler

    # ---- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        for channel in self._channels.values():
            for live in set(channel.live.values()):
                await live.start()
        await self.routes.start()
        await self._session.start()
        self._tasks.spawn(self._watch_addresses(), "address-watch")

    async def wait_signed_in(self, timeout: float = 10.0) -> None:
        await self._session.wait_signed_in(timeout)

    async def close(self) -> None:
        """Close every link (and those still being set up), sign out, stop the sources."""
        for future in self._pending:
            if future.done() and not future.cancelled() and future.exception() is None:
                self.links.add(future.result())
            else:
                future.cancel()  # _finish_accept closes a link nobody waits for
        for rtc_future in self._pending_webrtc:
            if rtc_future.done() and not rtc_future.cancelled() and not rtc_future.exception():
                self.webrtc_links.add(rtc_future.result())
            else:
                rtc_future.cancel()
        await asyncio.gather(*(link.close("device shutting down") for link in list(self.links)))
        await asyncio.gather(*(w.close("device shutting down") for w in list(self.webrtc_links)))
        await self._session.close()
        await self.routes.close()
        await self._tasks.cancel_all()
        for channel in self._channels.values():
            for live in set(channel.live.values()):
                await live.aclose()
        logger.info("device %s stopped", self.config.label)

    async def __aenter__(self) -> DeviceAgent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- cloud session callbacks ----------------------------------------------------

    def _on_sign_in(self, info: SignInInfo) -> str:
        """Called on every (re)connect to the cloud: publish a fresh xp2pInfo."""
        self._verifier = GrantVerifier(info.grant_public_key)
        self._ice_servers = info.ice_servers
        # A (re)connect may follow a network change: learn the NAT again, in the background.
        self._tasks.spawn(self._probe_nat(info.stun), "nat-probe")
        self.xp2p_info = Xp2pInfo(
            product_id=self.config.product_id,
            device_name=self.config.device_name,
            fingerprint=self.identity.fingerprint,
            session=secrets.token_hex(4),
            sdk_version=SDK_VERSION,
            dtls_fingerprint=self.webrtc_identity.fingerprint,
        ).encode()
        return self.xp2p_info

    async def _on_offer(self, request: OfferRequest) -> dict[str, Any]:
        # ``transport`` names the link kind; absent means QUIC (docs/protocol.md §6).
        offer = request.offer
        if handover.is_handover(offer):
            return await self._on_reoffer(request)
        transport = offer.get("transport", "quic") if isinstance(offer, dict) else "quic"
        try:
            if transport == "webrtc":
                offer_sdp, token = parse_webrtc_offer(offer)
            elif transport == "quic":
                remote, token = parse_offer(offer)
            else:
                raise LinkError("bad_signal", "offer names an unknown transport")
        except LinkError as exc:
            raise OfferRejected(400, exc.args[0]) from exc
        grant = self._check_grant(token)
        label = f"app {grant.app_key} (grant {grant.grant_id[:8]})"
        # The cloud relays the app key of the app that signed the connect request: a grant
        # works only for the app it was issued to, so a copied grant is useless to another.
        if grant.app_key != request.app_key:
            logger.warning("refused app %s presenting a grant of another app", request.app_key)
            raise OfferRejected(403, "access grant refused: it was issued to another app")
        # Each offer costs an ICE agent and TURN allocations: bounded per device, per app and
        # per grant (device.admission), whoever sends them.
        try:
            slot = self.admission.admit(grant.app_key, grant.grant_id)
        except Refused as exc:
            logger.warning("refused %s: %s", label, exc.reason)
            raise OfferRejected(exc.code, exc.reason) from None
        watch = LinkWatch(
            self.config.link_idle_timeout, grant.expires_at, asyncio.get_running_loop().time()
        )
        granted = [grant]  # the link's newest grant: POST /grant renews it
        link_config = replace(
            self.config.link,
            ice_servers=request.ice_servers or self._ice_servers or self.config.link.ice_servers,
            nat_type=self.nat_type,
        )

        async def handler(req: IncomingRequest) -> None:
            if req.path == "/grant":
                await self._renew(req, granted, watch)
                return
            loop = asyncio.get_running_loop()
            watch.request_started(loop.time())
            woken.set()
            try:
                await self.routes.handle(req, granted[0])
            finally:
                watch.request_ended(loop.time())
                woken.set()

        woken = asyncio.Event()
        if transport == "webrtc":
            return await self._accept_webrtc(
                offer_sdp, link_config, handler, label, slot, watch, woken, request.request_id
            )
        try:
            pending = await accept_link(
                link_config, self.identity, remote, handler=handler, peer_label=label
            )
        except LinkError as exc:
            self.admission.release(slot)
            raise OfferRejected(500, f"cannot open a link: {exc}") from exc
        except BaseException:
            self.admission.release(slot)
            raise
        self._pending.add(pending.link)
        self._tasks.spawn(
            self._adopt(pending.link, label, slot, watch, woken, request.request_id), "adopt-link"
        )
        return pending.answer

    async def _on_reoffer(self, request: OfferRequest) -> dict[str, Any]:
        """A viewer moving one of its links to a new path (docs/protocol.md §8c). It proves
        the link with a MAC under the link's own key, not with a grant; and only the app the
        link was granted to may send it. It takes no new slot: the link keeps its own."""
        from xp2p.link.handover_io import accept_reoffer, find_link

        try:
            message = handover.parse(request.offer)
        except LinkError as exc:
            raise OfferRejected(400, exc.args[0]) from exc
        link = find_link(self.links, message)
        if link is None or self._link_apps.get(link) != request.app_key:
            raise OfferRejected(404, "re-offer names no link of this app")
        link_config = replace(
            link.config,
            ice_servers=request.ice_servers or self._ice_servers or link.config.ice_servers,
            nat_type=self.nat_type,
        )
        try:
            return await accept_reoffer(link, message, link_config)
        except LinkError as exc:
            code = 403 if exc.reason == "bad_handover" else 500
            logger.warning("refused a re-offer for link %d: %s", link.id, exc)
            raise OfferRejected(code, str(exc)) from exc

    async def _accept_webrtc(
        self,
        offer_sdp: str,
        link_config: LinkConfig,
        handler: Callable[[IncomingRequest], Awaitable[None]],
        label: str,
        slot: Slot,
        watch: LinkWatch,
        woken: asyncio.Event,
        request_id: str,
    ) -> dict[str, Any]:
        """A browser's offer: the same slot, grant watch and handler as a QUIC link."""
        from xp2p.link.webrtc import accept_webrtc

        try:
            pending = await accept_webrtc(
                self.webrtc_identity, link_config, offer_sdp, handler=handler, peer_label=label
            )
        except LinkError as exc:
            self.admission.release(slot)
            code = 400 if exc.reason == "bad_signal" else 500
            raise OfferRejected(code, f"cannot open a WebRTC link: {exc}") from exc
        except BaseException:
            self.admission.release(slot)
            raise
        self._pending_webrtc.add(pending.link)
        self._tasks.spawn(
            self._adopt_webrtc(pending.link, label, slot, watch, woken, request_id), "adopt-webrtc"
        )
        return pending.answer

    async def _adopt_webrtc(
        self,
        future: asyncio.Future[WebRtcLink],
        label: str,
        slot: Slot,
        watch: LinkWatch,
        woken: asyncio.Event,
        request_id: str,
    ) -> None:
        try:
            try:
                link = await future  # bounded by connect_timeout
            except LinkError as exc:
                logger.warning("webrtc link from %s failed: %s", label, exc)
                return
            finally:
                self._pending_webrtc.discard(future)
            self.admission.opened(slot)
            self._session.report_link_up(request_id, link.link_mode)
            self.webrtc_links.add(link)
            try:
                await self._supervise(link, watch, woken)
            finally:
                self.webrtc_links.discard(link)
        finally:
            self.admission.release(slot)

    async def _renew(
        self, req: IncomingRequest, granted: list[AccessGrant], watch: LinkWatch
    ) -> None:
        """``POST /grant`` with a newer grant as the body: the link lives on until it expires
        (docs/protocol.md §9). Same app, same device, valid now; renewing is not activity."""
        if req.method != "POST":
            await respond_text(req, 405, "use POST /grant")
            return
        body = b""
        body_chunks = cast(AsyncGenerator[bytes, None], req.body())
        async with contextlib.aclosing(body_chunks) as chunks:
            async for chunk in chunks:
                body += chunk
                if len(body) > MAX_GRANT_LENGTH:
                    await respond_text(req, 400, "access grant too long")
                    return
        try:
            token = body.decode("ascii")
            grant = self._check_grant(token)
        except UnicodeDecodeError:
            await respond_text(req, 400, "access grant is not ASCII")
            return
        except OfferRejected as exc:
            await respond_text(req, exc.code, exc.reason)
            return
        if grant.app_key != granted[0].app_key:
            await respond_text(req, 403, "access grant refused: it was issued to another app")
            return
        if watch.renew(grant.expires_at):
            granted[0] = grant
        await respond_text(req, 200, json.dumps({"expires_at": int(watch.grant_expires_at)}))

    def _check_grant(self, token: str) -> AccessGrant:
        if self._verifier is None:
            raise OfferRejected(503, "device is not signed in")
        try:
            return self._verifier.verify(
                token, self.config.product_id, self.config.device_name, time.time()
            )
        except GrantError as exc:
            logger.warning("refused a viewer: %s", exc)
            raise OfferRejected(401, f"access grant refused: {exc}") from exc

    async def _adopt(
        self,
        future: asyncio.Future[Link],
        label: str,
        slot: Slot,
        watch: LinkWatch,
        woken: asyncio.Event,
        request_id: str,
    ) -> None:
        try:
            try:
                link = await future  # bounded by the link's connect_timeout: dead candidates
            except LinkError as exc:  # free their pending slot within it
                logger.warning("link from %s failed: %s", label, exc)
                return
            finally:
                self._pending.discard(future)
            self.admission.opened(slot)
            self._session.report_link_up(request_id, link.link_mode)
            self.links.add(link)
            self._link_apps[link] = slot.app_key
            try:
                await self._supervise(link, watch, woken)
            finally:
                self.links.discard(link)
                self._link_apps.pop(link, None)
        finally:
            self.admission.release(slot)

    async def _supervise(
        self, link: Link | WebRtcLink, watch: LinkWatch, woken: asyncio.Event
    ) -> None:
        """Close the link once it is idle or its grant expired (``device.admission``)."""
        loop = asyncio.get_running_loop()
        closed = asyncio.ensure_future(link.wait_closed())
        try:
            while not link.closed:
                reason, wait = watch.due(loop.time(), time.time())
                if reason is not None:
                    logger.info("closing link %d from %s: %s", link.id, link.peer_label, reason)
                    await link.close(reason)
                    break
                woken.clear()
                waiter = asyncio.ensure_future(woken.wait())
                try:
                    await asyncio.wait([closed, waiter], timeout=wait, return_when=FIRST_COMPLETED)
                finally:
                    waiter.cancel()
        finally:
            closed.cancel()

    async def _watch_addresses(self) -> None:
        """Sign in to the cloud again as soon as one of this machine's addresses goes away
        (the camera moved to another network): viewers then re-offer their links through
        the new session (``xp2p.link.handover``) instead of waiting out the old socket's
        heartbeat. Only a loss counts: a new address leaves every path working."""
        import aioice
        from yarl import URL

        from xp2p.link.handover_io import routable

        cloud = URL(self.config.cloud_url)
        cloud_address = (cloud.host or "", cloud.port or 443)

        wanted = self.config.link.host_addresses  # None: every address counts

        def addresses() -> set[str]:
            found = set(aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True))
            return found if wanted is None else found & set(wanted)

        known = addresses()
        while True:
            await asyncio.sleep(ADDRESS_POLL)
            now = addresses()
            if not now:
                continue  # between two networks: remember the old one until the new one
            if known - now:
                if not routable(cloud_address):
                    continue  # the address comes before the route: wait for it
                gone = ", ".join(sorted(known - now))
                await self._session.reconnect(f"network changed ({gone} gone)")
            known = now

    async def _probe_nat(self, stun: StunInfo) -> None:
        """Classify this device's NAT; viewers learn it from the answer and so know whether
        to wait for a direct path or take a relay at once."""
        try:
            behaviour = await discover_nat_behaviour((stun.host, stun.port), alt_port=stun.alt_port)
        except LinkError as exc:
            logger.warning("%s: NAT probe failed: %s", self.config.label, exc)
            return
        self.nat_type = str(behaviour.nat_type)
        logger.info("%s: NAT %s", self.config.label, self.nat_type)
