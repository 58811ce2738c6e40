"""CloudConfig: TOML loading, validation messages, the demo defaults, the grant key."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from xp2p.cloud import AppConfig, CloudConfig, ConfigError, DeviceConfig, TurnServerConfig

FULL = """
host = "0.0.0.0"
port = 9000
public_host = "203.0.113.5"
stun_port = 3478
stun_alt_port = 3479
grant_ttl = 120
connect_timeout = 2
offer_rate = 0.5
offer_burst = 4
grant_key_file = "keys/grant.pem"

[[apps]]
key = "my-app"
secret = "my-app-secret-123"
products = ["P1", "P2"]

[[apps]]
key = "all"
secret = "all-products-secret"

[[devices]]
product_id = "P1"
device_name = "cam-1"
secret = "device-secret-0001"

[[turn]]
urls = ["turn:turn.example.com:3478?transport=udp"]
shared_secret = "coturn-static-secret"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cloud.toml"
    path.write_text(text)
    return path


def test_full_file(tmp_path: Path) -> None:
    config = CloudConfig.from_toml(_write(tmp_path, FULL))
    assert (config.host, config.port, config.advertised_host) == ("0.0.0.0", 9000, "203.0.113.5")
    assert (config.stun_port, config.stun_alt_port, config.grant_ttl) == (3478, 3479, 120)
    assert config.connect_timeout == 2.0
    assert (config.offer_rate, config.offer_burst) == (0.5, 4)
    assert config.grant_key_file == tmp_path / "keys" / "grant.pem"
    assert config.apps == (
        AppConfig("my-app", "my-app-secret-123", ("P1", "P2")),
        AppConfig("all", "all-products-secret", ("*",)),
    )
    assert config.devices == (DeviceConfig("P1", "cam-1", "device-secret-0001"),)
    assert config.turn == (
        TurnServerConfig(("turn:turn.example.com:3478?transport=udp",), "coturn-static-secret"),
    )
    assert config.app("my-app") is config.apps[0] and config.app("x") is None
    assert config.device("P1", "cam-1") is config.devices[0]
    assert config.apps[0].allows("P2") and not config.apps[0].allows("P3")
    assert config.apps[1].allows("anything")
    text = repr(config)
    for secret in ("my-app-secret-123", "device-secret-0001", "coturn-static-secret"):
        assert secret not in text


def test_cloud_section_and_defaults(tmp_path: Path) -> None:
    config = CloudConfig.from_toml(_write(tmp_path, "[cloud]\nport = 0\n\n[device]\nx = 1\n"))
    assert config.port == 0 and config.host == "127.0.0.1" and config.stun_port == 3478
    assert config.advertised_host == "127.0.0.1"
    assert config.apps == () and config.turn == () and config.grant_ttl == 300
    assert config.connect_timeout == 5.0 and config.stun_alt_port is None
    assert (config.offer_rate, config.offer_burst) == (2.0, 20)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("port = 70000", "port"),
        ("port = true", "port"),
        ('port = "80"', "port"),
        ("stun_port = 3478\nstun_alt_port = 3478", "stun_alt_port"),
        ("grant_ttl = 0", "grant_ttl"),
        ("connect_timeout = -1", "connect_timeout"),
        ("offer_rate = 0", "offer_rate"),
        ('offer_rate = "fast"', "offer_rate"),
        ("offer_burst = 0", "offer_burst"),
        ("offer_burst = 2.5", "offer_burst"),
        ('host = ""', "host"),
        ("colour = 1", "colour"),
        ("[[apps]]\nkey = 'a'", "apps[0].secret"),
        ("[[apps]]\nkey = 'a'\nsecret = 'short'", "apps[0].secret"),
        ("[[apps]]\nkey = 'a b'\nsecret = 'long-enough-1234'", "apps[0].key"),
        ("[[apps]]\nkey = 'a'\nsecret = 'long-enough-1234'\nproducts = []", "apps[0].products"),
        (
            "[[apps]]\nkey = 'a'\nsecret = 'long-enough-1234'\nproducts = ['x/y']",
            "apps[0].products[0]",
        ),
        ("[[apps]]\nkey = 'a'\nsecret = 'long-enough-1234'\ncolour = 1", "apps[0].colour"),
        (
            "[[apps]]\nkey = 'a'\nsecret = 'long-enough-1234'\n[[apps]]\nkey = 'a'\nsecret = 'long-enough-1234'",  # noqa: E501
            "apps[1].key",
        ),
        ("[[devices]]\nproduct_id = 'P'\nsecret = 'long-enough-1234'", "devices[0].device_name"),
        (
            "[[devices]]\nproduct_id='P'\ndevice_name='d'\nsecret='long-enough-1234'\n" * 2,
            "devices[1]",
        ),
        ("[[turn]]\nurls = ['stun:x']\nshared_secret = 'long-enough'", "turn[0].urls[0]"),
        ("[[turn]]\nurls = ['turn:x']\nshared_secret = 'long-enough'\nttl = 1", "turn[0].ttl"),
        ("apps = 5", "apps"),
        ("cloud = 5", "cloud"),
    ],
)
def test_errors_name_the_field(tmp_path: Path, text: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        CloudConfig.from_toml(_write(tmp_path, text))
    assert str(info.value).startswith(f"{field}:"), str(info.value)
    assert "long-enough" not in str(info.value) and "short" not in str(info.value).split(":")[0]


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        CloudConfig.from_toml(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        CloudConfig.from_toml(_write(tmp_path, "port = = 1"))


def test_validation_applies_to_configs_built_in_code() -> None:
    with pytest.raises(ConfigError, match=r"^devices\[0\]\.secret:"):
        CloudConfig(devices=(DeviceConfig("P", "d", "x"),))


def test_demo() -> None:
    one, two = CloudConfig.demo(), CloudConfig.demo(port=0)
    assert one.apps[0].key == "demo-app" and one.apps[0].products == ("*",)
    assert (one.devices[0].product_id, one.devices[0].device_name) == ("DEMO", "cam1")
    assert one.apps[0].secret != two.apps[0].secret  # generated, not a well-known default
    assert one.devices[0].secret != two.devices[0].secret
    assert (one.port, two.port, one.stun_port) == (8080, 0, 3478)
    assert one.apps[0].secret not in repr(one) and one.devices[0].secret not in repr(one)


def test_grant_key_file(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    (tmp_path / "grant.pem").write_bytes(pem)
    config = CloudConfig.from_toml(_write(tmp_path, 'grant_key_file = "grant.pem"'))
    loaded = config.load_grant_key()
    assert loaded.public_key().public_bytes_raw() == key.public_key().public_bytes_raw()
    assert CloudConfig().load_grant_key() is not None  # generated in memory
    (tmp_path / "grant.pem").write_text("not a key")
    with pytest.raises(ConfigError, match=r"^grant_key_file:"):
        config.load_grant_key()
    with pytest.raises(ConfigError, match=r"^grant_key_file: cannot read"):
        CloudConfig(grant_key_file=tmp_path / "nope.pem").load_grant_key()
