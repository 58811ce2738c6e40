"""The cloud's configuration: one dataclass, loaded from TOML or built for the demo.

A TOML file holds the keys below at top level, or inside a ``[cloud]`` table so that one file
can configure several parts::

    host = "0.0.0.0"
    port = 8080
    public_host = "203.0.113.5"     # what clients are told to use for STUN
    stun_port = 3478
    stun_alt_port = 3479            # optional second STUN port, for NAT probing
    stun_alt_host = "203.0.113.6"   # optional second IP of this machine: with it, STUN
                                    # listens on both IPs x both ports (RFC 5780), and
                                    # host (or public_host) must be an IP of this machine
    grant_ttl = 300
    connect_timeout = 5.0
    grant_key_file = "grant.pem"    # Ed25519 private key (PEM, unencrypted); relative paths
                                    # are taken from the config file's directory

    [[apps]]
    key = "my-app"
    secret = "..."
    products = ["*"]                # or a list of product ids

    [[devices]]
    product_id = "DEMO"
    device_name = "cam1"
    secret = "..."

    [[turn]]
    urls = ["turn:turn.example.com:3478?transport=udp"]
    shared_secret = "..."           # coturn static-auth-secret
    ttl = 3600

Validation happens when the dataclass is built, so a config made in code is checked as
strictly as one read from a file. Errors name the offending field and never quote secrets.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

#: Product ids and device names: they appear in URL paths and logs, so keep them plain.
NAME_RE = re.compile(r"[A-Za-z0-9_.:@-]{1,64}")
#: Shorter secrets are refused: HMAC keys this short are guessable offline.
MIN_SECRET_LENGTH = 8
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


class ConfigError(ValueError):
    """The configuration is invalid; the message names the field."""


@dataclass(frozen=True)
class AppConfig:
    key: str
    secret: str = field(repr=False)
    products: tuple[str, ...] = ("*",)

    def allows(self, product_id: str) -> bool:
        return "*" in self.products or product_id in self.products


@dataclass(frozen=True)
class DeviceConfig:
    product_id: str
    device_name: str
    secret: str = field(repr=False)


@dataclass(frozen=True)
class TurnServerConfig:
    urls: tuple[str, ...]
    shared_secret: str = field(repr=False)
    ttl: int = 3600


@dataclass(frozen=True)
class CloudConfig:
    host: str = "127.0.0.1"
    port: int = 8080  # 0 = pick a free port
    public_host: str | None = None  # None = host
    stun_port: int = 3478  # 0 = pick a free port
    stun_alt_port: int | None = None
    stun_alt_host: str | None = None
    apps: tuple[AppConfig, ...] = ()
    devices: tuple[DeviceConfig, ...] = ()
    grant_ttl: int = 300
    connect_timeout: float = 5.0
    turn: tuple[TurnServerConfig, ...] = ()
    grant_key_file: Path | None = None
    #: Connection attempts (offers) one app may make to one device: ``offer_burst`` at once,
    #: then ``offer_rate`` per second; beyond that 429 rate_limited (each costs the device).
    offer_rate: float = 2.0
    offer_burst: int = 20

    def __post_init__(self) -> None:
        _check(bool(self.host), "host", "must not be empty")
        _check_port(self.port, "port")
        _check_port(self.stun_port, "stun_port")
        if self.stun_alt_port is not None:
            _check_port(self.stun_alt_port, "stun_alt_port")
            _check(
                self.stun_alt_port == 0 or self.stun_alt_port != self.stun_port,
                "stun_alt_port",
                "must differ from stun_port",
            )
        _check(self.public_host is None or bool(self.public_host), "public_host", "is empty")
        if self.stun_alt_host is not None:
            _check(
                _is_ip(self.stun_alt_host) and self.stun_alt_host not in WILDCARD_HOSTS,
                "stun_alt_host",
                "must be an IP address of this machine",
            )
            _check(self.stun_alt_port is not None, "stun_alt_host", "needs stun_alt_port")
            # Four sockets need two specific addresses: a wildcard would take the alternate
            # IP's ports too, and the answers must leave from the address that was asked.
            _check(
                _is_ip(self.stun_host) and self.stun_host not in WILDCARD_HOSTS,
                "stun_alt_host",
                "needs host, or public_host when host is a wildcard, to be an IP address",
            )
            _check(
                ipaddress.ip_address(self.stun_alt_host) != ipaddress.ip_address(self.stun_host),
                "stun_alt_host",
                "must differ from the primary STUN address",
            )
        _check_int(self.grant_ttl, "grant_ttl", 1, 86400)
        _check(
            _is_number(self.connect_timeout) and 0 < self.connect_timeout <= 120,
            "connect_timeout",
            "must be a number of seconds in (0, 120]",
        )
        _check(
            _is_number(self.offer_rate) and 0 < self.offer_rate <= 1000,
            "offer_rate",
            "must be a number of offers per second in (0, 1000]",
        )
        _check_int(self.offer_burst, "offer_burst", 1, 10000)
        keys: set[str] = set()
        for i, app in enumerate(self.apps):
            where = f"apps[{i}]"
            _check(isinstance(app, AppConfig), where, "must be an AppConfig")
            _check_name(app.key, f"{where}.key")
            _check(app.key not in keys, f"{where}.key", "duplicates another app")
            keys.add(app.key)
            _check_secret(app.secret, f"{where}.secret")
            _check(bool(app.products), f"{where}.products", "must not be empty")
            for j, product in enumerate(app.products):
                if product != "*":
                    _check_name(product, f"{where}.products[{j}]")
        seen: set[tuple[str, str]] = set()
        for i, dev in enumerate(self.devices):
            where = f"devices[{i}]"
            _check(isinstance(dev, DeviceConfig), where, "must be a DeviceConfig")
            _check_name(dev.product_id, f"{where}.product_id")
            _check_name(dev.device_name, f"{where}.device_name")
            ident = (dev.product_id, dev.device_name)
            _check(ident not in seen, where, "duplicates another device")
            seen.add(ident)
            _check_secret(dev.secret, f"{where}.secret")
        for i, turn in enumerate(self.turn):
            where = f"turn[{i}]"
            _check(isinstance(turn, TurnServerConfig), where, "must be a TurnServerConfig")
            _check(bool(turn.urls), f"{where}.urls", "must not be empty")
            for j, url in enumerate(turn.urls):
                _check(
                    isinstance(url, str) and url.startswith(("turn:", "turns:")),
                    f"{where}.urls[{j}]",
                    "must be a turn: or turns: URL",
                )
            _check_secret(turn.shared_secret, f"{where}.shared_secret")
            _check_int(turn.ttl, f"{where}.ttl", 60, 7 * 86400)

    @property
    def advertised_host(self) -> str:
        """The address clients are told to use (STUN, and HTTP when bound to a wildcard).

        A wildcard bind address means nothing to a client, so without ``public_host`` the
        loopback address stands in: right for the demo, and a clear hint otherwise.
        """
        if self.public_host:
            return self.public_host
        return "127.0.0.1" if self.host in WILDCARD_HOSTS else self.host

    @property
    def stun_host(self) -> str:
        """Where the STUN responder's primary sockets bind: ``host``, except that with an
        alternate IP a wildcard ``host`` gives way to the advertised address."""
        if self.stun_alt_host is not None and self.host in WILDCARD_HOSTS:
            return self.advertised_host
        return self.host

    def app(self, key: str) -> AppConfig | None:
        return next((a for a in self.apps if a.key == key), None)

    def device(self, product_id: str, device_name: str) -> DeviceConfig | None:
        return next(
            (
                d
                for d in self.devices
                if d.product_id == product_id and d.device_name == device_name
            ),
            None,
        )

    def load_grant_key(self) -> Ed25519PrivateKey:
        """The grant-signing key from ``grant_key_file``, or a fresh one kept in memory.

        A fresh key means grants issued before a restart stop verifying after it, which is
        fine for short-lived grants and the demo.
        """
        if self.grant_key_file is None:
            return Ed25519PrivateKey.generate()
        try:
            data = self.grant_key_file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"grant_key_file: cannot read: {exc.strerror}") from None
        try:
            key = load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise ConfigError("grant_key_file: not an unencrypted PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError("grant_key_file: must hold an Ed25519 private key")
        return key

    @classmethod
    def demo(cls, **overrides: Any) -> CloudConfig:
        """The embedded default: app ``demo-app`` and device ``DEMO/cam1``, fresh secrets."""
        base: dict[str, Any] = {
            "apps": (AppConfig("demo-app", secrets.token_urlsafe(24)),),
            "devices": (DeviceConfig("DEMO", "cam1", secrets.token_urlsafe(24)),),
        }
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_toml(cls, path: str | Path) -> CloudConfig:
        path = Path(path)
        doc = read_toml(path)
        section = doc.get("cloud", doc)
        if not isinstance(section, dict):
            raise ConfigError("cloud: must be a table")
        return cls.from_dict(section, base_dir=path.parent)

    @classmethod
    def from_dict(cls, doc: dict[str, Any], *, base_dir: Path | None = None) -> CloudConfig:
        """Build from a parsed document, checking each field's type before ``__post_init__``."""
        known = {
            "host", "port", "public_host", "stun_port", "stun_alt_port", "stun_alt_host",
            "apps", "devices",
            "grant_ttl", "connect_timeout", "turn", "grant_key_file", "offer_rate", "offer_burst",
        }  # fmt: skip
        # The 1vN edge's table shares the file (`xp2p.cloud.edge.config.EdgeConfig`).
        unknown = sorted(set(doc) - known - {"edge"})
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown setting")
        kw: dict[str, Any] = {}
        for name in ("host", "public_host", "stun_alt_host"):
            if name in doc:
                kw[name] = _typed(doc[name], str, name)
        for name in ("port", "stun_port", "stun_alt_port", "grant_ttl", "offer_burst"):
            if name in doc:
                kw[name] = _typed(doc[name], int, name)
        for name in ("connect_timeout", "offer_rate"):
            if name in doc:
                value = doc[name]
                _check(_is_number(value), name, "must be a number")
                kw[name] = float(value)
        if "grant_key_file" in doc:
            key_path = Path(_typed(doc["grant_key_file"], str, "grant_key_file"))
            if base_dir is not None and not key_path.is_absolute():
                key_path = base_dir / key_path
            kw["grant_key_file"] = key_path
        kw["apps"] = tuple(
            AppConfig(
                key=_typed(t.get("key"), str, f"{w}.key"),
                secret=_typed(t.get("secret"), str, f"{w}.secret"),
                products=tuple(_str_list(t.get("products", ["*"]), f"{w}.products")),
            )
            for w, t in _tables(doc, "apps", {"key", "secret", "products"})
        )
        kw["devices"] = tuple(
            DeviceConfig(
                product_id=_typed(t.get("product_id"), str, f"{w}.product_id"),
                device_name=_typed(t.get("device_name"), str, f"{w}.device_name"),
                secret=_typed(t.get("secret"), str, f"{w}.secret"),
            )
            for w, t in _tables(doc, "devices", {"product_id", "device_name", "secret"})
        )
        kw["turn"] = tuple(
            TurnServerConfig(
                urls=tuple(_str_list(t.get("urls"), f"{w}.urls")),
                shared_secret=_typed(t.get("shared_secret"), str, f"{w}.shared_secret"),
                ttl=_typed(t.get("ttl", 3600), int, f"{w}.ttl"),
            )
            for w, t in _tables(doc, "turn", {"urls", "shared_secret", "ttl"})
        )
        return cls(**kw)


def _check(ok: bool, where: str, problem: str) -> None:
    if not ok:
        raise ConfigError(f"{where}: {problem}")


def _is_ip(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_int(value: object, where: str, lo: int, hi: int) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi
    _check(ok, where, f"must be an integer in [{lo}, {hi}]")


def _check_port(value: object, where: str) -> None:
    _check_int(value, where, 0, 65535)


def _check_name(value: object, where: str) -> None:
    ok = isinstance(value, str) and NAME_RE.fullmatch(value) is not None
    _check(ok, where, "must be 1-64 characters of letters, digits and _ . : @ -")


def _check_secret(value: object, where: str) -> None:
    ok = isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH
    _check(ok, where, f"must be a string of at least {MIN_SECRET_LENGTH} characters")


def _typed(value: Any, kind: type, where: str) -> Any:
    if value is None:
        raise ConfigError(f"{where}: missing")
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: must be of type {kind.__name__}")
    return value


def _str_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: must be a list of strings")
    return value


def _tables(doc: dict[str, Any], name: str, keys: set[str]) -> list[tuple[str, dict[str, Any]]]:
    items = doc.get(name, [])
    if not isinstance(items, list):
        raise ConfigError(f"{name}: must be an array of tables ([[{name}]])")
    out = []
    for i, item in enumerate(items):
        where = f"{name}[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: must be a table")
        unknown = sorted(set(item) - keys)
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}: unknown setting")
        out.append((where, item))
    return out


def read_toml(path: Path) -> dict[str, Any]:
    """A config file's document; ConfigError (naming the file) when unreadable or not TOML."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
