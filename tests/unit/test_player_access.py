"""The local player's access policy, sans-IO (issue 10 item 1): Host, cross-site, token,
devices, and the settings' validation."""

from __future__ import annotations

import dataclasses

import pytest

from xp2p.player.access import (
    AccessConfigError,
    PlayerAccess,
    is_loopback,
    normalise_origin,
)

ACCESS = PlayerAccess.create(
    port=8000, devices=["DEMO/cam1"], allow_origins=["https://App.example"]
)


def status(headers: dict[str, str]) -> int | None:
    refusal = ACCESS.check_request(headers)
    return None if refusal is None else refusal.status


@pytest.mark.parametrize(
    "host", ["127.0.0.1:8000", "localhost:8000", "LOCALHOST:8000", "[::1]:8000"]
)
def test_its_own_loopback_names_pass(host: str) -> None:
    assert status({"Host": host}) is None


@pytest.mark.parametrize(
    "host", ["attacker.example:8000", "127.0.0.1:8001", "127.0.0.1", "", "127.0.0.1.nip.io:8000"]
)
def test_any_other_host_is_421(host: str) -> None:
    assert status({"Host": host}) == 421


@pytest.mark.parametrize(
    ("headers", "want"),
    [
        ({}, None),  # ffplay, VLC, mpv, ffprobe
        ({"Sec-Fetch-Site": "none"}, None),  # typed into the address bar
        ({"Sec-Fetch-Site": "same-origin", "Origin": "http://127.0.0.1:8000"}, None),
        ({"Sec-Fetch-Site": "cross-site"}, 403),  # <video src>, no-cors fetch
        ({"Sec-Fetch-Site": "same-site"}, 403),  # another port of localhost
        ({"Origin": "https://attacker.example"}, 403),
        ({"Origin": "null"}, 403),  # sandboxed frames, file:// pages
        ({"Origin": "https://app.example", "Sec-Fetch-Site": "cross-site"}, None),
        ({"Origin": "https://app.example:443"}, None),
        ({"Origin": "http://app.example"}, 403),  # another scheme is another origin
    ],
)
def test_cross_site_requests_need_a_configured_origin(
    headers: dict[str, str], want: int | None
) -> None:
    assert status({"Host": "127.0.0.1:8000", **headers}) == want


def test_the_token_is_long_per_start_and_compared_whole() -> None:
    other = PlayerAccess.create(port=8000)
    assert len(ACCESS.token) >= 43 and other.token != ACCESS.token  # 256 bits, per start
    assert ACCESS.check_token(ACCESS.token) is None
    for wrong in (None, "", ACCESS.token[:-1], ACCESS.token + "x", other.token, "é" * 43):
        refusal = ACCESS.check_token(wrong)
        assert refusal is not None and refusal.status == 403
        assert ACCESS.token not in refusal.message
    assert ACCESS.token not in repr(ACCESS)


def test_only_its_devices() -> None:
    assert ACCESS.check_device("DEMO/cam1") is None
    refusal = ACCESS.check_device("DEMO/cam2")
    assert refusal is not None and refusal.status == 404


def test_beyond_loopback_needs_public_and_answers_its_own_address() -> None:
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1")
    with pytest.raises(AccessConfigError, match=r"host: '0\.0\.0\.0'"):
        PlayerAccess.create(host="0.0.0.0")
    public = PlayerAccess.create(host="192.0.2.1", port=8000, public=True)
    assert public.check_request({"Host": "192.0.2.1:8000"}) is None
    assert public.check_request({"Host": "attacker.example:8000"}) is not None
    anywhere = PlayerAccess.create(host="0.0.0.0", port=8000, public=True)
    assert anywhere.check_request({"Host": "cam-viewer.lan:8000"}) is None  # the token guards
    with pytest.raises(AccessConfigError, match="max_playbacks"):
        PlayerAccess.create(max_playbacks=0)


def test_port_80_also_answers_a_host_without_port() -> None:
    access = dataclasses.replace(ACCESS, port=80)
    assert access.check_request({"Host": "localhost"}) is None


@pytest.mark.parametrize(
    ("text", "origin"),
    [
        ("https://App.Example", "https://app.example"),
        ("http://localhost:3000/", "http://localhost:3000"),
        ("http://[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_origins_are_normalised(text: str, origin: str) -> None:
    assert normalise_origin(text) == origin


@pytest.mark.parametrize(
    "text",
    [
        "null",
        "app.example",
        "ftp://app.example",
        "https://app.example/path",
        "https://u:p@app.example",
        "https://app.example:99999",
        "http://[x",  # urlsplit's ValueError (a fuzz finding)
        "https://\x00\x00\x12 :",  # a control-character host (a fuzz finding)
    ],
)
def test_what_is_not_an_origin_is_refused_naming_the_setting(text: str) -> None:
    with pytest.raises(AccessConfigError, match="allow_origin"):
        normalise_origin(text)
    assert status({"Host": "127.0.0.1:8000", "Origin": text}) == 403
