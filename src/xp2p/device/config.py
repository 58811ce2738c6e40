"""Configuration of a device agent, as dataclasses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from xp2p.device.voice_sink import VoiceSinkFactory
from xp2p.link import LinkConfig
from xp2p.media import MediaSource
from xp2p.trust import CloudTrust

SourceFactory = Callable[[], MediaSource]


@dataclass(frozen=True)
class ChannelConfig:
    """Sources of one channel by quality; ``default`` serves every quality not listed."""

    default: SourceFactory
    by_quality: dict[str, SourceFactory] = field(default_factory=dict)
    #: The channel's DeviceName in ``get_nvr_list`` (an NVR's camera); "" = ``<device>-ch<N>``.
    name: str = ""


@dataclass(frozen=True)
class DeviceConfig:
    cloud_url: str
    product_id: str
    device_name: str
    #: The shared secret of a device the cloud's TOML names; "" for a provisioned one, which
    #: signs in with ``device_key`` (``xp2p admin device add`` writes both into its file).
    device_secret: str = field(repr=False)
    #: The cloud's grant-signing public key, pinned at provisioning (``xp2p cloud
    #: --export-grant-key``). Required: a device never learns it from the network, so a
    #: relay cannot make it accept grants it signed. `DeviceAgent` refuses to start without.
    grant_public_key: Ed25519PublicKey | None = None
    #: How the cloud's https:// certificate is verified (system store, pinned CA, fingerprint).
    cloud_trust: CloudTrust = field(default_factory=CloudTrust)
    #: A provisioned device's private key (its public half is all the cloud holds).
    device_key: Ed25519PrivateKey | None = field(default=None, repr=False)
    channels: dict[int, ChannelConfig] = field(default_factory=dict)
    link: LinkConfig = field(default_factory=LinkConfig)
    #: How far behind live a viewer may fall before it skips to the next keyframe.
    max_lag: float = 3.0
    #: Viewers that may pull live video at once; more get 503 (docs/protocol.md §12).
    max_viewers: int = 4
    #: Links being set up at once (ICE, TURN, QUIC handshake: the costly part); more get 503.
    max_pending_links: int = 8
    #: Open links, pulling or not (commands, talk-back); more get 503.
    max_links: int = 32
    #: The part of ``max_links`` and of ``max_pending_links`` one app may hold (at least one
    #: each), so one app cannot keep the device busy for the others (``device.admission``);
    #: 1.0 = no per-app limit.
    app_link_share: float = 0.5
    #: Links one access grant may open (pending or open); more get 403.
    max_links_per_grant: int = 4
    #: A link that served no request for this long, and runs none now, is closed (s).
    link_idle_timeout: float = 120.0
    #: Recordings live in ``<recordings_dir>/ch<N>/``; None = no recording, no files.
    recordings_dir: Path | None = None
    #: Length of one recorded segment file, and what the recorder keeps.
    segment_seconds: float = 60.0
    retention_bytes: int = 2 * 1024**3
    retention_days: float = 7.0
    #: Where talk-back audio goes (``xp2p.device.voice_sink``): called once per talk session;
    #: None = ``VoiceFiles``: a WAV file per session in ``<recordings_dir>/voice/``.
    voice_sink: VoiceSinkFactory | None = None
    #: Bounds on one talk session (``device.voice``): seconds of audio and body bytes taken;
    #: past either the session ends with 413.
    voice_max_seconds: float = 600.0
    voice_max_bytes: int = 20 * 1024 * 1024
    #: Audio arriving faster than this multiple of real time, after ``voice_rate_grace``
    #: seconds of audio, ends the session with 429 (talk-back is live speech, not uploads).
    voice_max_speed: float = 2.0
    voice_rate_grace: float = 5.0
    #: What the default sink's ``<recordings_dir>/voice/`` folder may hold, in bytes; files
    #: older than ``retention_days`` go too (``voice_sink.VoiceFiles``).
    voice_retention_bytes: int = 256 * 1024 * 1024
    #: Handler of ``action=user_define`` commands; None = the default PTZ simulator.
    user_command_handler: Callable[..., Any] | None = None

    @property
    def label(self) -> str:
        return f"{self.product_id}/{self.device_name}"
