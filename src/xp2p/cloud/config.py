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
    viewer_token_ttl = 600          # seconds a viewer token lives when the backend asks no ttl
    viewer_token_max_ttl = 3600     # the longest viewer token the cloud mints (400 beyond)
    connect_timeout = 5.0
    offer_rate = 2.0                # offers per second one app may send one device...
    offer_burst = 20                # ...after this many at once (429 rate_limited)
    request_rate = 200.0            # signed requests per second per app...
    request_burst = 1000            # ...after this many at once (429 rate_limited)
    nonce_quota = 100000            # request nonces remembered per app (replay cache)
    clock_skew = 30                 # seconds a request may be stamped ahead of the cloud
    auth_failure_limit = 20         # bad signatures per source (and per app key) in...
    auth_failure_window = 60.0      # ...this many seconds, then 429 too_many_failures
    stun_rate = 50.0                # STUN answers per second per source address...
    stun_burst = 200                # ...after this many at once (the rest are dropped)
    header_timeout = 10.0           # seconds a new connection has to send its request headers
    keepalive_timeout = 20.0        # seconds an idle keep-alive connection stays open
    max_connections_per_source = 256  # open HTTP connections per client address
    grant_key_file = "grant.pem"    # Ed25519 private key (PEM, unencrypted); relative paths
                                    # are taken from the config file's directory
    tls_cert_file = "cloud.pem"     # serve HTTPS/WSS with this certificate chain (PEM) and
    tls_key_file = "cloud-key.pem"  # key; required unless host is a loopback address (plain
                                    # HTTP is then allowed, with a warning: demo and tests)

    [[apps]]
    key = "my-app"
    secret = "..."
    products = ["*"]                # or a list of product ids
    permissions = ["live", "playback", "download", "voice", "command"]
                                    # what its grants may allow (default: all of these); a
                                    # grant request asking for more is refused 403
    cors_origins = ["https://app.example"]
                                    # web pages that may call the browser routes with this
                                    # app's viewer tokens (default: none); exact origins,
                                    # lowercase, no path, no wildcard

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from xp2p.auth import (
    DEFAULT_FAILURE_LIMIT,
    DEFAULT_FAILURE_WINDOW,
    DEFAULT_REQUEST_BURST,
    DEFAULT_REQUEST_RATE,
    FUTURE_SKEW,
    MAX_REMEMBERED_NONCES,
    PERMISSIONS,
    RequestVerifier,
)

#: Product ids and device names: they appear in URL paths and logs, so keep them plain.
NAME_RE = re.compile(r"[A-Za-z0-9_.:@-]{1,64}")
#: Shorter secrets are refused: an HMAC key this short is guessable offline from one proof.
MIN_SECRET_LENGTH = 16
#: coturn's static-auth-secret never leaves the operator's machines; kept at the old floor.
MIN_TURN_SECRET_LENGTH = 8
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
#: A browser's Origin header as it sends it: scheme, lowercase host (or [IPv6]), maybe a port.
ORIGIN_RE = re.compile(r"https?://([a-z0-9-]+(\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])(:[0-9]{1,5})?")
ALL_PERMISSIONS: tuple[str, ...] = tuple(sorted(PERMISSIONS))


class ConfigError(ValueError):
    """The configuration is invalid; the message names the field."""


@dataclass(frozen=True)
class AppConfig:
    key: str
    secret: str = field(repr=False)
    products: tuple[str, ...] = ("*",)
    #: What this app's grants may allow: the operator's ceiling on every grant request.
    permissions: tuple[str, ...] = ALL_PERMISSIONS
    #: Origins (``scheme://host[:port]``) whose pages may use this app's viewer tokens: CORS.
    cors_origins: tuple[str, ...] = ()

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
    #: Viewer tokens (`xp2p.cloud.viewer_token`): the default and the longest lifetime.
    viewer_token_ttl: int = 600
    viewer_token_max_ttl: int = 3600
    connect_timeout: float = 5.0
    turn: tuple[TurnServerConfig, ...] = ()
    grant_key_file: Path | None = None
    #: Connection attempts (offers) one app may make to one device: ``offer_burst`` at once,
    #: then ``offer_rate`` per second; beyond that 429 rate_limited (each costs the device).
    offer_rate: float = 2.0
    offer_burst: int = 20
    #: Signed requests one app may make (all its users together): ``request_burst`` at once,
    #: then ``request_rate`` per second; beyond that 429 rate_limited.
    request_rate: float = DEFAULT_REQUEST_RATE
    request_burst: int = DEFAULT_REQUEST_BURST
    #: Request nonces remembered per app; past it that app's own window tightens.
    nonce_quota: int = MAX_REMEMBERED_NONCES
    #: Seconds a request's timestamp may be ahead of the cloud's clock.
    clock_skew: int = FUTURE_SKEW
    #: Bad signatures one source (or one app key) may send in ``auth_failure_window`` s
    #: before further attempts are refused unverified (429 too_many_failures).
    auth_failure_limit: int = DEFAULT_FAILURE_LIMIT
    auth_failure_window: float = DEFAULT_FAILURE_WINDOW
    #: STUN answers per source address: ``stun_burst`` at once, then ``stun_rate`` a second.
    stun_rate: float = 50.0
    stun_burst: int = 200
    #: HTTP connection limits (:class:`xp2p.httpd.ConnectionLimits`).
    header_timeout: float = 10.0
    keepalive_timeout: float = 20.0
    max_connections_per_source: int = 256
    #: HTTPS/WSS certificate chain and key (PEM); both or neither.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    def __post_init__(self) -> None:
        _check(bool(self.host), "host", "must not be empty")
        _check(
            (self.tls_cert_file is None) == (self.tls_key_file is None),
            "tls_cert_file" if self.tls_cert_file is None else "tls_key_file",
            "tls_cert_file and tls_key_file go together",
        )
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
        _check_int(self.viewer_token_max_ttl, "viewer_token_max_ttl", 1, 86400)
        _check_int(self.viewer_token_ttl, "viewer_token_ttl", 1, 86400)
        _check(
            self.viewer_token_ttl <= self.viewer_token_max_ttl,
            "viewer_token_ttl",
            "must not exceed viewer_token_max_ttl",
        )
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
        for name, hi in (
            ("request_rate", 1e6),
            ("auth_failure_window", 86400),
            ("stun_rate", 1e6),
            ("header_timeout", 3600),
            ("keepalive_timeout", 3600),
        ):
            value = getattr(self, name)
            _check(_is_number(value) and 0 < value <= hi, name, f"must be a number in (0, {hi:g}]")
        _check_int(self.request_burst, "request_burst", 1, 1_000_000)
        _check_int(self.nonce_quota, "nonce_quota", 1, 10_000_000)
        _check_int(self.clock_skew, "clock_skew", 0, 300)
        _check_int(self.auth_failure_limit, "auth_failure_limit", 1, 1_000_000)
        _check_int(self.stun_burst, "stun_burst", 1, 1_000_000)
        _check_int(self.max_connections_per_source, "max_connections_per_source", 1, 1_000_000)
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
            _check(bool(app.permissions), f"{where}.permissions", "must not be empty")
            for j, perm in enumerate(app.permissions):
                _check(
                    perm in PERMISSIONS,
                    f"{where}.permissions[{j}]",
                    f"must be one of {', '.join(ALL_PERMISSIONS)}",
                )
            for j, origin in enumerate(app.cors_origins):
                _check(
                    isinstance(origin, str) and ORIGIN_RE.fullmatch(origin) is not None,
                    f"{where}.cors_origins[{j}]",
                    "must be an exact origin like https://app.example[:port]: lowercase, "
                    "no path, no wildcard",
                )
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
            _check_secret(turn.shared_secret, f"{where}.shared_secret", MIN_TURN_SECRET_LENGTH)
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

    def request_verifier(self, app_secrets: Mapping[str, str] | None = None) -> RequestVerifier:
        """The app request verifier with this config's limits (the cloud and a standalone
        edge build theirs here, so both enforce the same ones); ``app_secrets`` is a live
        view of the registry's (``Accounts.app_secrets``), else this config's apps."""
        return RequestVerifier(
            {a.key: a.secret for a in self.apps} if app_secrets is None else app_secrets,
            future_skew=self.clock_skew,
            max_nonces=self.nonce_quota,
            request_rate=self.request_rate,
            request_burst=self.request_burst,
            failure_limit=self.auth_failure_limit,
            failure_window=self.auth_failure_window,
        )

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def loopback_only(self) -> bool:
        """Whether ``host`` is a loopback address (or ``localhost``), reachable from here only."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def check_transport(self) -> None:
        """Plain HTTP only on loopback: elsewhere a relay on the path could pose as the cloud
        to devices and apps (issue 10 item 3). ConfigError naming ``host`` otherwise."""
        _check(
            self.tls or self.loopback_only,
            "host",
            f"listening on {self.host!r} needs TLS (tls_cert_file and tls_key_file, or "
            "--tls-cert/--tls-key, or --tls-self-signed); plain HTTP is allowed on loopback only",
        )

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
            "grant_ttl", "viewer_token_ttl", "viewer_token_max_ttl", "connect_timeout", "turn",
            "grant_key_file", "offer_rate", "offer_burst",
            "request_rate", "request_burst", "nonce_quota", "clock_skew", "auth_failure_limit",
            "auth_failure_window", "stun_rate", "stun_burst", "header_timeout",
            "keepalive_timeout", "max_connections_per_source", "tls_cert_file", "tls_key_file",
        }  # fmt: skip
        # The 1vN edge's table shares the file (`xp2p.cloud.edge.config.EdgeConfig`).
        unknown = sorted(set(doc) - known - {"edge"})
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown setting")
        kw: dict[str, Any] = {}
        for name in ("host", "public_host", "stun_alt_host"):
            if name in doc:
                kw[name] = _typed(doc[name], str, name)
        for name in (
            "port", "stun_port", "stun_alt_port", "grant_ttl", "viewer_token_ttl",
            "viewer_token_max_ttl", "offer_burst", "request_burst",
            "nonce_quota", "clock_skew", "auth_failure_limit", "stun_burst",
            "max_connections_per_source",
        ):  # fmt: skip
            if name in doc:
                kw[name] = _typed(doc[name], int, name)
        for name in (
            "connect_timeout", "offer_rate", "request_rate", "auth_failure_window", "stun_rate",
            "header_timeout", "keepalive_timeout",
        ):  # fmt: skip
            if name in doc:
                value = doc[name]
                _check(_is_number(value), name, "must be a number")
                kw[name] = float(value)
        for name in ("grant_key_file", "tls_cert_file", "tls_key_file"):
            if name in doc:
                file_path = Path(_typed(doc[name], str, name))
                if base_dir is not None and not file_path.is_absolute():
                    file_path = base_dir / file_path
                kw[name] = file_path
        kw["apps"] = tuple(
            AppConfig(
                key=_typed(t.get("key"), str, f"{w}.key"),
                secret=_typed(t.get("secret"), str, f"{w}.secret"),
                products=tuple(_str_list(t.get("products", ["*"]), f"{w}.products")),
                permissions=tuple(
                    _str_list(t.get("permissions", list(ALL_PERMISSIONS)), f"{w}.permissions")
                ),
                cors_origins=tuple(_str_list(t.get("cors_origins", []), f"{w}.cors_origins")),
            )
            for w, t in _tables(
                doc, "apps", {"key", "secret", "products", "permissions", "cors_origins"}
            )
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


def _check_secret(value: object, where: str, minimum: int = MIN_SECRET_LENGTH) -> None:
    ok = isinstance(value, str) and len(value) >= minimum
    _check(ok, where, f"must be a string of at least {minimum} characters")


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
