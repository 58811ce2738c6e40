"""P2PModule: the seed's X-P2P module for Python apps (docs/api.md)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from xp2p.errors import ErrorCode, XP2PError
from xp2p.events import NatEvent, NotifySubtype, XP2PEventEnum, XP2PNotify_SubType
from xp2p.link import Link, LinkConfig, LinkError, Xp2pInfo, open_link
from xp2p.link.nat import discover_nat_behaviour
from xp2p.link.nat_behaviour import NatBehaviour
from xp2p.swarm.edge_messages import MessageError, check_source_url
from xp2p.swarm.edge_routes import room_id
from xp2p.tasks import TaskSet
from xp2p.trust import CloudTrust
from xp2p.viewer import command as command_module
from xp2p.viewer import download as download_module
from xp2p.viewer import file_download, switch
from xp2p.viewer import voice as voice_module
from xp2p.viewer.address_watch import watch_addresses
from xp2p.viewer.cloud_client import AppSession, CloudClient, CloudError
from xp2p.viewer.command_codec import CommandResult
from xp2p.viewer.file_download import SavedFile
from xp2p.viewer.live_stream import LiveStream
from xp2p.viewer.service import Service
from xp2p.viewer.swarm import EdgeClient, SwarmService, SwarmStats, pick_edge
from xp2p.viewer.swarm.service import DEFAULT_LAG
from xp2p.viewer.types import (
    DataCallback,
    DownloadCallback,
    EventHandler,
    FlvParams,
    MsgCallback,
    NoticeCallback,
    ProgressCallback,
    StreamInfo,
)
from xp2p.viewer.voice import VoiceCallback, VoiceSource, VoiceWriter

logger = logging.getLogger("xp2p.viewer")

MAX_ID_LENGTH = 128
#: Renew TURN credentials this long before they expire (a link may need them for its life).
TURN_REFRESH_MARGIN = 600
#: How long before a link's access grant expires a fresh one is presented on it (or half
#: the time left, for grants shorter than twice this).
GRANT_RENEW_MARGIN = 60.0
#: getStreamLinkMode's values.
LINK_MODE_CODES = {"direct": 62, "relay": 63}


@dataclass(frozen=True)
class AppParams:
    """What the seed calls appParams: which cloud, and the app's key and secret."""

    cloud_url: str
    app_key: str
    app_secret: str = field(repr=False)
    #: 1vN edges (``xp2p edge``); empty: the cloud itself runs the edge. A room is always
    #: served by the same one of them (rendezvous hashing of its id).
    edge_urls: tuple[str, ...] = ()
    #: How the cloud's (and the edges') https:// certificate is verified: the system's CA
    #: store by default, or a pinned CA file or certificate fingerprint (``xp2p.trust``).
    cloud_trust: CloudTrust = field(default_factory=CloudTrust)
    #: Bounds every request to the cloud: past it, a silent cloud is -2006.
    cloud_timeout: float = 10.0


class P2PModule:
    """One per app. Every method except ``get_uuid`` needs ``init`` first (-2002).

    ``one_link_per_device`` is the seed's rule: a second service for a device that already
    has one is -2401. A local player that serves live and several playbacks of one camera at
    once turns it off (each runs on its own link)."""

    #: The seed's event constants, where its apps read them (``p2pModule.XP2PEventEnum``).
    XP2PEventEnum = XP2PEventEnum
    XP2PNotify_SubType = XP2PNotify_SubType

    def __init__(
        self, link_config: LinkConfig | None = None, *, one_link_per_device: bool = True
    ) -> None:
        self._uuid = uuid.uuid4().hex
        self._link_config = link_config or LinkConfig()
        self.one_link_per_device = one_link_per_device
        #: the device of each 1v1 service starting (they are not in ``_services`` yet)
        self._starting_devices: dict[str, tuple[str, str]] = {}
        self._cloud: CloudClient | None = None
        self._session: AppSession | None = None
        self._app: AppParams | None = None
        self._event_handler: EventHandler | None = None
        self._services: dict[str, Service | SwarmService] = {}
        self._starting: set[str] = set()
        self._probing = False
        self._nat: NatBehaviour | None = None
        self._background_probe: asyncio.Task[None] | None = None
        #: the background NAT probe and the link watchers: all ended by ``destroy``
        self._tasks = TaskSet(f"module-{self._uuid}")

    def get_uuid(self) -> str:
        return self._uuid

    @property
    def nat_type(self) -> str:
        """The last probe's NAT type: ``open``, ``full-cone``, ``restricted-cone``,
        ``port-restricted``, ``symmetric``, ``udp-blocked`` or ``unknown``."""
        return "unknown" if self._nat is None else str(self._nat.nat_type)

    @property
    def nat_behaviour(self) -> NatBehaviour | None:
        """The last probe's full result (mapping, filtering, addresses); None before one."""
        return self._nat

    # ---- module lifecycle -----------------------------------------------------------

    async def init(self, app_params: AppParams, event_handler: EventHandler | None = None) -> None:
        if self._cloud is not None:
            raise XP2PError(ErrorCode.INIT_REPEATED, "the module is already initialised")
        if not (app_params.cloud_url and app_params.app_key and app_params.app_secret):
            raise XP2PError(
                ErrorCode.BAD_PARAM, "app_params needs cloud_url, app_key and app_secret"
            )
        try:
            cloud = CloudClient(
                app_params.cloud_url,
                app_params.app_key,
                app_params.app_secret,
                trust=app_params.cloud_trust,
                timeout=app_params.cloud_timeout,
            )
        except ValueError as exc:  # an unreadable pinned CA file, say
            raise XP2PError(ErrorCode.BAD_PARAM, str(exc)) from None
        try:
            self._session = await cloud.create_session()
        except CloudError as exc:
            await cloud.close()
            if exc.status == 0 and exc.code in UNREACHABLE:
                raise XP2PError(
                    ErrorCode.CLOUD_UNREACHABLE, f"cloud sign-in failed: {exc.message}"
                ) from exc
            raise XP2PError(ErrorCode.BAD_PARAM, f"cloud sign-in failed: {exc}") from exc
        self._cloud = cloud
        self._app = app_params
        self._event_handler = event_handler
        self._link_config = replace(
            self._link_config,
            ice_servers=self._session.ice_servers or self._link_config.ice_servers,
        )
        logger.info(
            "module %s signed in to %s as app %s",
            self._uuid,
            app_params.cloud_url,
            app_params.app_key,
        )
        await self._probe_nat()
        stun = self._session.stun
        self._tasks.spawn(
            watch_addresses(
                self._addresses_changed,
                stun=(stun.host, stun.port),
                use_ipv6=self._link_config.use_ipv6,
            ),
            "address-watch",
        )

    def _addresses_changed(self, before: frozenset[str], now: frozenset[str]) -> bool:
        why = f"this machine's addresses changed ({_listed(before)} -> {_listed(now)})"
        return self._probe_nat_in_background(why)

    async def reset_p2p(self) -> None:
        """Re-probe the network (after a network change)."""
        self._require_init()
        await self._probe_nat()

    async def _probe_nat(self) -> None:
        """The probe of ``init`` and ``reset_p2p``; -2201 while another of those runs."""
        if self._probing:
            raise XP2PError(ErrorCode.NAT_PROBE_STARTED_TWICE, "a NAT probe is already running")
        self._probing = True
        try:
            background = self._background_probe
            if background is not None and not background.done():
                # Its answer predates this call (the app may know of a change it missed).
                await asyncio.wait({background})
            await self._run_nat_probe()
        finally:
            self._probing = False

    def _probe_nat_in_background(self, why: str) -> bool:
        """Re-probe without anyone waiting; False (nothing done) while a probe runs."""
        running = self._background_probe is not None and not self._background_probe.done()
        if self._session is None or self._probing or running:
            return False
        logger.info("module %s: re-probing the NAT (%s)", self._uuid, why)
        self._background_probe = self._tasks.spawn(self._run_nat_probe(), "nat-probe")
        return True

    async def _run_nat_probe(self) -> None:
        """One probe; reports through natChanged/natError, never raises."""
        session = self._session
        assert session is not None
        stun = session.stun
        try:
            behaviour = await discover_nat_behaviour((stun.host, stun.port), alt_port=stun.alt_port)
        except LinkError as exc:
            self._nat_error(str(exc))
            return
        previous, self._nat = self._nat, behaviour
        logger.info("module %s: NAT %s", self._uuid, behaviour.describe())
        if behaviour.failed:
            self._nat_error(f"no STUN answer from {stun.host}:{stun.port}: UDP looks blocked")
        elif previous is not None and _nat_differs(previous, behaviour):
            self._fire(
                NatEvent.NAT_CHANGED,
                {
                    **behaviour.to_json(),
                    "previous": str(previous.nat_type),
                    "previous_mapped": previous.to_json()["mapped"],
                },
            )

    def _nat_error(self, message: str) -> None:
        logger.warning("module %s: NAT probe failed: %s", self._uuid, message)
        self._fire(NatEvent.NAT_ERROR, {"code": int(ErrorCode.NAT_PROBE_ERROR), "message": message})

    def _watch_link_for_network_change(self, service: Service) -> None:
        """A link that dies under a service the app did not stop may mean a new network:
        re-probe so that natChanged comes without the app calling reset_p2p."""

        async def watch() -> None:
            await service.link.wait_closed()
            if self._services.get(service.id) is service and not service.closed_by_sdk:
                self._probe_nat_in_background(f"service {service.id} lost its link")

        self._tasks.spawn(watch(), f"nat-watch-{service.id}")

    def _fire(self, event: NatEvent, detail: Any) -> None:
        if self._event_handler is not None:
            try:
                self._event_handler(event.value, detail)
            except Exception:
                logger.exception("event_handler raised")

    async def destroy(self) -> None:
        """Stop every service and sign out. The module can be initialised again afterwards."""
        for service_id in list(self._services):
            await self.stop_p2p_service(service_id)
        await self._tasks.cancel_all()
        self._background_probe = None
        if self._cloud is not None:
            await self._cloud.close()
        self._cloud = None
        self._app = None
        self._session = None
        self._nat = None  # a new init may be on another network: no natChanged against this

    def _require_init(self) -> CloudClient:
        if self._cloud is None:
            raise XP2PError(ErrorCode.NOT_INITIALISED, "call init() first")
        return self._cloud

    def has_service(self, service_id: str) -> bool:
        return service_id in self._services

    def _any_service(self, service_id: str) -> Service | SwarmService:
        self._require_init()
        service = self._services.get(service_id)
        if service is None:
            raise XP2PError(ErrorCode.SERVICE_NOT_STARTED, f"no service {service_id!r}")
        return service

    def _service(self, service_id: str) -> Service:
        """A 1v1 service (the device functions have no meaning in a swarm)."""
        service = self._any_service(service_id)
        if isinstance(service, SwarmService):
            raise XP2PError(
                ErrorCode.UNSUPPORTED, f"service {service_id!r} is 1vN; this needs a 1v1 service"
            )
        return service

    # ---- services -------------------------------------------------------------------

    async def start_p2p_service(
        self,
        service_id: str,
        stream_info: StreamInfo,
        msg_callback: MsgCallback | None = None,
        data_callback: DataCallback | None = None,
    ) -> None:
        """Connect to a device (1v1), or join the swarm of an http(s) FLV ``url`` (1vN).
        Returns once the link is up or the room joined (``connected`` notified); with
        ``data_callback`` the live pull starts too, as in the seed."""
        cloud = self._require_init()
        if not service_id or len(service_id) > MAX_ID_LENGTH:
            raise XP2PError(ErrorCode.BAD_PARAM, "service id must be 1-128 characters")
        if service_id in self._services or service_id in self._starting:
            raise XP2PError(
                ErrorCode.SERVICE_ALREADY_STARTED,
                f"service {service_id!r} is already started; stop it first",
            )
        if not stream_info.is_1v1:
            await self._start_swarm(service_id, stream_info, msg_callback, data_callback)
            return
        if not (stream_info.product_id and stream_info.device_name):
            raise XP2PError(ErrorCode.BAD_PARAM, "1v1 needs product_id and device_name")
        device = (stream_info.product_id, stream_info.device_name)
        edge_url = switch.edge_url(stream_info.switch_domain) if stream_info.switch_domain else ""
        self._check_one_link(service_id, device)
        self._starting.add(service_id)
        self._starting_devices[service_id] = device
        moved: StreamInfo | None = None
        try:
            service = await self._connect(cloud, service_id, stream_info, msg_callback)
            if edge_url:
                # The seed's 1v1→1vN switch: a full camera sends this viewer to its swarm
                # (the service above is stopped then); a failed state query is -2801.
                try:
                    moved = await switch.swarm_if_full(service, stream_info)
                except BaseException:
                    await service.stop()  # cancelled mid-query: no link left behind
                    raise
        finally:
            self._starting.discard(service_id)
            del self._starting_devices[service_id]
        if moved is not None:
            logger.info("service %s: %s is full, joining its 1vN swarm", service_id, device[1])
            await self._start_swarm(service_id, moved, msg_callback, data_callback, edge_url)
            return
        self._services[service_id] = service
        self._watch_link_for_network_change(service)
        service.notify(
            NotifySubtype.CONNECTED, {"mode": "1v1", "link_mode": service.link.link_mode}
        )
        if data_callback is not None:
            try:
                await self.start_stream(service_id, data_callback)
            except BaseException:
                await self.stop_p2p_service(service_id)  # a refused pull leaves no service
                raise

    def _check_one_link(self, service_id: str, device: tuple[str, str]) -> None:
        """-2401 for a second service of one device (the seed: 同一个设备只能有1个连接)."""
        if not self.one_link_per_device:
            return
        holders = [sid for sid, dev in self._starting_devices.items() if dev == device]
        holders += [
            sid
            for sid, running in self._services.items()
            if isinstance(running, Service)
            and (running.info.product_id, running.info.device_name) == device
        ]
        if holders:
            raise XP2PError(
                ErrorCode.SERVICE_ALREADY_STARTED,
                f"one link per device (同一个设备只能有1个连接): {device[0]}/{device[1]} "
                f"already has service {holders[0]!r}; stop it first",
            )

    async def _start_swarm(
        self,
        service_id: str,
        info: StreamInfo,
        msg_callback: MsgCallback | None,
        data_callback: DataCallback | None,
        edge_url: str | None = None,
    ) -> None:
        """Join the swarm of ``info.url`` on ``edge_url`` (by default the edge the app's
        configuration picks for the room: the 1v1→1vN switch names its own)."""
        app = self._app
        assert app is not None
        try:
            url = check_source_url(info.url)
        except MessageError as exc:
            raise XP2PError(ErrorCode.BAD_PARAM, f"1vN needs an http(s) FLV url: {exc}") from None
        if info.upload_rate_cap < 0:
            raise XP2PError(ErrorCode.BAD_PARAM, "upload_rate_cap must be >= 0 (0 = no cap)")
        if not (info.playout_delay == 0 or 1.0 <= info.playout_delay <= 30.0):
            raise XP2PError(
                ErrorCode.BAD_PARAM, "playout_delay must be 0 (default) or 1-30 seconds"
            )
        edge_url = edge_url or pick_edge(app.edge_urls or (app.cloud_url,), room_id(url))
        edge = EdgeClient(edge_url, app.app_key, app.app_secret, trust=app.cloud_trust)
        config = replace(self._link_config, nat_type=self.nat_type)
        service = SwarmService(
            service_id,
            info,
            msg_callback,
            f"module {self._uuid}",
            edge=edge,
            link_config=config,
            lag=info.playout_delay or DEFAULT_LAG,
        )
        self._starting.add(service_id)
        try:
            await service.join()
        finally:
            self._starting.discard(service_id)
        self._services[service_id] = service
        if data_callback is not None:
            try:
                await self.start_stream(service_id, data_callback)
            except BaseException:
                await self.stop_p2p_service(service_id)  # a failed pull leaves no service
                raise

    def get_swarm_stats(self, service_id: str) -> SwarmStats:
        """A 1vN service's statistics (also notified as ``swarm`` about every 2 s)."""
        service = self._any_service(service_id)
        if not isinstance(service, SwarmService):
            raise XP2PError(ErrorCode.UNSUPPORTED, f"service {service_id!r} is 1v1, not 1vN")
        return service.stats()

    async def _connect(
        self,
        cloud: CloudClient,
        service_id: str,
        info: StreamInfo,
        msg_callback: MsgCallback | None,
    ) -> Service:
        pid, dev = info.product_id, info.device_name
        label = f"{pid}/{dev}"
        try:
            xp2p_info = info.xp2p_info or (await cloud.get_p2p_info(pid, dev)).xp2p_info
            if not xp2p_info:
                raise XP2PError(ErrorCode.BAD_XP2P_INFO, f"device {label} has no xp2pInfo yet")
            parsed = Xp2pInfo.parse(xp2p_info)
            if (parsed.product_id, parsed.device_name) != (pid, dev):
                raise XP2PError(
                    ErrorCode.BAD_XP2P_INFO,
                    f"xp2pInfo belongs to {parsed.product_id}/{parsed.device_name}, not {label}",
                )
            grant, expires_at = await cloud.get_grant(pid, dev)
            await self._refresh_turn_credentials(cloud)

            async def signal(offer: dict[str, Any]) -> dict[str, Any]:
                return await cloud.connect(pid, dev, offer)

            async def reoffer(offer: dict[str, Any]) -> dict[str, Any]:
                # A network change moves the link (issue 12 item 6). The pooled connection
                # to the cloud may be bound to the address that went away: a new one.
                assert self._app is not None
                secret = self._app.app_secret
                async with CloudClient(
                    cloud.base_url, cloud.app_key, secret, trust=cloud.trust
                ) as fresh:
                    return await fresh.connect(pid, dev, offer)

            link = await open_link(
                replace(self._link_config, nat_type=self.nat_type),
                signal,
                fingerprint=parsed.fingerprint,
                grant=grant,
                peer_label=label,
                reoffer=reoffer,
            )
        except CloudError as exc:
            raise _cloud_error(label, exc) from exc
        except LinkError as exc:
            code = (
                ErrorCode.BAD_XP2P_INFO
                if exc.reason == "bad_identity"
                else ErrorCode.START_STREAM_FAILED
            )
            raise XP2PError(code, f"cannot connect to {label}: {exc}") from exc
        self._tasks.spawn(self._renew_grant(cloud, pid, dev, link, expires_at), "grant-renewal")
        return Service(service_id, info, link, msg_callback, f"module {self._uuid}")

    async def _renew_grant(
        self, cloud: CloudClient, pid: str, dev: str, link: Link, expires_at: float
    ) -> None:
        """Present a fresh grant on the link (``POST /grant``) before the current one
        expires: the device closes a link whose grant expired (docs/protocol.md §9)."""
        while not link.closed:
            remaining = expires_at - time.time()
            wait = remaining - min(GRANT_RENEW_MARGIN, remaining / 2)
            closed = asyncio.ensure_future(link.wait_closed())
            try:
                done, _ = await asyncio.wait([closed], timeout=max(0.0, wait))
            finally:
                closed.cancel()
            if done:
                return
            try:
                token, expires_at = await cloud.get_grant(pid, dev)
                response = await link.request("POST", "/grant", body=token.encode("ascii"))
                await response.read(4096)
                if response.status != 200:
                    logger.warning(
                        "%s refused a renewed grant (%d)", link.peer_label, response.status
                    )
                    return
            except (CloudError, LinkError) as exc:
                logger.warning("cannot renew the grant of %s: %s", link.peer_label, exc)
                await asyncio.sleep(min(5.0, max(0.5, (expires_at - time.time()) / 4)))

    async def _refresh_turn_credentials(self, cloud: CloudClient) -> None:
        """A new app session when the TURN credentials are about to expire (an app may run
        for days; the credentials last ``ttl`` from init)."""
        expiries = [e for s in self._link_config.ice_servers if (e := s.expires_at) is not None]
        if not expiries or min(expiries) - time.time() > TURN_REFRESH_MARGIN:
            return
        self._session = await cloud.create_session()
        if self._session.ice_servers:
            self._link_config = replace(self._link_config, ice_servers=self._session.ice_servers)
        logger.info("module %s: TURN credentials renewed", self._uuid)

    def update_service_callbacks(
        self, service_id: str, msg_callback: MsgCallback | None = None
    ) -> None:
        service = self._any_service(service_id)
        if msg_callback is None:
            raise XP2PError(ErrorCode.BAD_PARAM, "msg_callback is required")
        service.msg_callback = msg_callback

    def get_stream_link_mode(self, service_id: str) -> int:
        """How the service's link runs: 62 direct (peer to peer), 63 through a TURN relay,
        as the seed's getStreamLinkMode; ``link_mode(id)`` gives the word."""
        return LINK_MODE_CODES[self.link_mode(service_id)]

    def link_mode(self, service_id: str) -> str:
        """``direct`` or ``relay``."""
        return self._service(service_id).link.link_mode

    async def stop_p2p_service(self, service_id: str) -> None:
        service = self._services.pop(service_id, None)
        if service is not None:
            await service.stop()

    async def start_stream(
        self, service_id: str, data_callback: DataCallback, flv: FlvParams | None = None
    ) -> None:
        """Without ``flv`` the pull is the one the service's ``StreamInfo.url`` names (the
        seed's ``http://XP2P_INFO.xnet/ipc.p2p.com/ipc.flv?...``), else the default live."""
        if not callable(data_callback):
            raise XP2PError(ErrorCode.BAD_PARAM, "data_callback must be callable")
        service = self._any_service(service_id)
        await service.start_stream(data_callback, flv or service.info.flv or FlvParams())

    async def stop_stream(self, service_id: str) -> None:
        await self._any_service(service_id).stop_stream()

    # The seed's names before 1.3.0, still accepted by its plugin.
    async def start_p2p_stream(
        self, service_id: str, data_callback: DataCallback, flv: FlvParams | None = None
    ) -> None:
        """``start_stream``'s name before the seed's 1.3.0."""
        await self.start_stream(service_id, data_callback, flv)

    async def stop_p2p_stream(self, service_id: str) -> None:
        """``stop_stream``'s name before the seed's 1.3.0."""
        await self.stop_stream(service_id)

    async def stop_service_by_id(self, service_id: str) -> None:
        """``stop_p2p_service``'s name before the seed's 1.3.0."""
        await self.stop_p2p_service(service_id)

    # ---- the 1v1 extended functions (docs/api.md); each lives in its own module ----------

    async def send_command(
        self, service_id: str, command: str, timeout: float = 7.5
    ) -> CommandResult:
        """``command`` is the query of ``GET /command``, e.g.
        ``"action=inner_define&channel=0&cmd=get_device_st&type=live"``."""
        return await command_module.send_command(self._service(service_id), command, timeout)

    async def start_voice(
        self,
        service_id: str,
        pcm_source: VoiceSource,
        sample_rate: int = 8000,
        channels: int = 1,
        url_params: str = "channel=0",
        *,
        max_seconds: float | None = None,
        on_start: VoiceCallback | None = None,
        on_pause: VoiceCallback | None = None,
        on_resume: VoiceCallback | None = None,
        on_stop: VoiceCallback | None = None,
    ) -> None:
        """Talk-back from raw PCM (s16le): ``pcm_source`` is an async iterable of bytes (the
        seed's recorder), or a function returning one. With ``max_seconds`` each source is
        read for at most that much audio, then renewed from the function with
        ``on_stop(True)`` and ``on_start()``, as the seed renews a recorder at its maximum
        duration. Ends when a source ends by itself or at ``stop_voice``: ``on_stop(False)``.
        A source may yield ``VoicePause``/``VoiceResume`` (``on_pause(in_interruption)``,
        ``on_resume()``)."""
        callbacks = {
            "on_start": on_start,
            "on_pause": on_pause,
            "on_resume": on_resume,
            "on_stop": on_stop,
        }
        await voice_module.start_voice(
            self._service(service_id),
            pcm_source,
            sample_rate,
            channels,
            url_params,
            max_seconds=max_seconds,
            callbacks=callbacks,
        )

    async def start_voice_data(
        self,
        service_id: str,
        url_params: str = "channel=0&calltype=audio",
        *,
        on_stop: VoiceCallback | None = None,
        on_success: VoiceCallback | None = None,
        on_failure: VoiceCallback | None = None,
        on_error: VoiceCallback | None = None,
        on_complete: VoiceCallback | None = None,
    ) -> VoiceWriter:
        """Talk-back from FLV (header + AAC audio tags) the app adds with ``add_chunk``. At
        the end ``on_stop()``, then one of ``on_success(result)`` (the device answered 2xx
        and took every byte), ``on_failure(result)`` (non-2xx) or ``on_error(result)`` (no
        response), then ``on_complete()``; a session refused at the start also raises."""
        callbacks = {
            "on_stop": on_stop,
            "on_success": on_success,
            "on_failure": on_failure,
            "on_error": on_error,
            "on_complete": on_complete,
        }
        return await voice_module.start_voice_data(
            self._service(service_id), url_params, callbacks=callbacks
        )

    async def stop_voice(self, service_id: str) -> None:
        await voice_module.stop_voice(self._service(service_id))

    async def start_voice_service(
        self,
        service_id: str,
        pcm_source: VoiceSource,
        sample_rate: int = 8000,
        channels: int = 1,
        url_params: str = "channel=0",
        **callbacks: Any,
    ) -> None:
        """``start_voice``'s name before the seed's 1.3.0."""
        await self.start_voice(
            service_id, pcm_source, sample_rate, channels, url_params, **callbacks
        )

    async def stop_voice_service(self, service_id: str) -> None:
        """``stop_voice``'s name before the seed's 1.3.0."""
        await self.stop_voice(service_id)

    async def start_local_download(
        self,
        service_id: str,
        url_params: str,
        *,
        on_headers_received: DownloadCallback | None = None,
        on_chunk_received: DownloadCallback | None = None,
        on_success: DownloadCallback | None = None,
        on_failure: DownloadCallback | None = None,
        on_error: DownloadCallback | None = None,
        on_complete: DownloadCallback | None = None,
        keep_link: bool = False,
    ) -> None:
        """Download a file from the device: ``url_params`` like
        ``"channel=0&file_name=x.mp4&offset=0"``; resumable with ``offset``. As in the seed,
        the service's link closes by itself once ``on_complete`` has run (the service then
        notifies ``disconnect``), unless ``keep_link``."""
        callbacks = {
            "on_headers_received": on_headers_received,
            "on_chunk_received": on_chunk_received,
            "on_success": on_success,
            "on_failure": on_failure,
            "on_error": on_error,
            "on_complete": on_complete,
        }
        await download_module.start_local_download(
            self._service(service_id), url_params, callbacks, keep_link=keep_link
        )

    async def stop_local_download(self, service_id: str) -> None:
        await download_module.stop_local_download(self._service(service_id))

    async def download_to_file(
        self,
        service_id: str,
        file_name: str,
        path: str | os.PathLike[str] | None = None,
        *,
        channel: int = 0,
        on_progress: ProgressCallback | None = None,
        on_notice: NoticeCallback | None = None,
    ) -> SavedFile:
        """Download ``file_name`` (as ``get_file_list`` names it) into ``path`` (a file, a
        folder, or None: the current folder), resuming a partial left by an earlier call and
        checking the whole file's sha256 against the device's; XP2PError -2701 says why it
        failed. Cancelling it keeps what arrived for the next call."""
        return await file_download.download_to_file(
            self._service(service_id),
            file_name,
            path,
            channel=channel,
            on_progress=on_progress,
            on_notice=on_notice,
        )

    def stream(self, service_id: str, flv: FlvParams | None = None) -> LiveStream:
        """The async-iterator form of start_stream::

            async with module.stream("cam") as chunks:
                async for chunk in chunks:
                    ...

        Leaving the ``async with`` block stops the pull; the iteration ends at eof,
        disconnect or failure. Without ``flv`` the pull is ``start_stream``'s default: the
        one the service's ``StreamInfo.url`` names, else the default live."""
        service = self._any_service(service_id)
        return LiveStream(service, flv or service.info.flv or FlvParams())


def _nat_differs(old: NatBehaviour, new: NatBehaviour) -> bool:
    """A new NAT type or public address. Mapped ports are not compared: every probe uses
    fresh sockets, so a NAT that does not keep ports maps them anew each time."""
    old_ip = old.mapped[0] if old.mapped else None
    new_ip = new.mapped[0] if new.mapped else None
    return old.nat_type != new.nat_type or old_ip != new_ip


def _listed(addresses: frozenset[str]) -> str:
    return ", ".join(sorted(addresses)) or "none"


#: CloudError codes of a cloud that could not be reached or did not answer (-2006).
UNREACHABLE = frozenset({"unreachable", "timeout"})


def _cloud_error(label: str, exc: CloudError) -> XP2PError:
    if exc.status == 0 and exc.code in UNREACHABLE:
        return XP2PError(ErrorCode.CLOUD_UNREACHABLE, f"cloud error for {label}: {exc.message}")
    if exc.code in ("device_offline", "unknown_device"):
        return XP2PError(
            ErrorCode.BAD_XP2P_INFO, f"device {label} is offline or unknown ({exc.code})"
        )
    if exc.code == "device_refused":
        return XP2PError(ErrorCode.START_STREAM_FAILED, f"device {label} refused: {exc.message}")
    return XP2PError(ErrorCode.START_STREAM_FAILED, f"cloud error for {label}: {exc}")
