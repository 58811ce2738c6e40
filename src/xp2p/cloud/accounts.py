"""The apps and devices the cloud knows: what every request and every sign-in checks.

``Accounts`` is one consistent version of them, replaced whole when the registry changes
(``xp2p.cloud.account_db`` reloads it within a second of an admin change, on every node), so
a request never sees half an update. Without ``--db`` it is the TOML config's, for the life
of the process, as before.

Two kinds of device: one seeded from TOML with a shared ``secret`` (it signs in with an
HMAC over the challenge, and the welcome carries a MAC under that secret), and one
provisioned by the admin API with a key pair, of which the cloud holds only the public key
(it signs in with an Ed25519 signature; the welcome is signed with the cloud's grant key,
which the device pins). A copy of the database then cannot sign in as that camera.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from xp2p.cloud.config import AppConfig, CloudConfig

#: Called with the identities whose sign-in credentials changed (rotated, disabled, removed):
#: their live sessions are closed, so an old key stops working at once.
DeviceChanges = Callable[[frozenset[tuple[str, str]]], None]


@dataclass(frozen=True)
class DeviceAccount:
    product_id: str
    device_name: str
    #: the shared secret of a TOML-seeded device (HMAC proof), else None
    secret: str | None = field(default=None, repr=False)
    #: the raw 32-byte Ed25519 public key of a provisioned device, else None
    public_key: bytes | None = None

    @property
    def ident(self) -> tuple[str, str]:
        return (self.product_id, self.device_name)


class _Secrets(Mapping[str, str]):
    """App key -> secret of the current version: the request verifier reads it per call."""

    def __init__(self, accounts: Accounts) -> None:
        self._accounts = accounts

    def __getitem__(self, key: str) -> str:
        app = self._accounts.app(key)
        if app is None:
            raise KeyError(key)
        return app.secret

    def __iter__(self) -> Iterator[str]:
        return iter(self._accounts._apps)

    def __len__(self) -> int:
        return len(self._accounts._apps)


class Accounts:
    """Enabled apps and devices (disabled ones are simply not here)."""

    def __init__(
        self, apps: Iterable[AppConfig] = (), devices: Iterable[DeviceAccount] = ()
    ) -> None:
        self._apps: dict[str, AppConfig] = {}
        self._devices: dict[tuple[str, str], DeviceAccount] = {}
        self._listeners: list[DeviceChanges] = []
        self.app_secrets: Mapping[str, str] = _Secrets(self)
        self.replace(apps, devices)

    @classmethod
    def from_config(cls, config: CloudConfig) -> Accounts:
        devices = (DeviceAccount(d.product_id, d.device_name, d.secret) for d in config.devices)
        return cls(config.apps, devices)

    @property
    def apps(self) -> tuple[AppConfig, ...]:
        return tuple(self._apps.values())

    @property
    def devices(self) -> tuple[DeviceAccount, ...]:
        return tuple(self._devices.values())

    def app(self, key: str) -> AppConfig | None:
        return self._apps.get(key)

    def device(self, product_id: str, device_name: str) -> DeviceAccount | None:
        return self._devices.get((product_id, device_name))

    def on_device_change(self, listener: DeviceChanges) -> None:
        self._listeners.append(listener)

    def replace(self, apps: Iterable[AppConfig], devices: Iterable[DeviceAccount]) -> None:
        """Swap in a new version; devices whose credentials changed or went are reported."""
        new_devices = {d.ident: d for d in devices}
        changed = frozenset(
            ident
            for ident, old in self._devices.items()
            if (new := new_devices.get(ident)) is None
            or (new.secret, new.public_key) != (old.secret, old.public_key)
        )
        self._apps = {a.key: a for a in apps}
        self._devices = new_devices
        if changed:
            for listener in self._listeners:
                listener(changed)
