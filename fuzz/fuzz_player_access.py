"""The local player's access checks (``xp2p.player.access``) on the request headers a web
page or a local program chooses: ``Host``, ``Origin``, ``Sec-Fetch-Site``, the ``token``
query value and the device path. They never raise; a request passes only with an allowed
Host, no foreign Origin, a same-origin/none (or allowed-origin) fetch site, the exact token
and a served device. ``normalise_origin`` refuses with ``AccessConfigError`` alone.

An input is lines of text: ``Name: value`` header lines, ``?T`` the token given, ``/P/D``
the device asked for; the first line also goes to ``normalise_origin``."""

from __future__ import annotations

import dataclasses

import atheris
import harness

with atheris.instrument_imports(include=["xp2p.player.access"]):
    from xp2p.player.access import AccessConfigError, PlayerAccess, normalise_origin

TOKEN = "x" * 43
#: a loopback player with one allowed origin, and a public one on port 80 (no port in Host)
ACCESS = tuple(
    dataclasses.replace(access, token=TOKEN)
    for access in (
        PlayerAccess.create(
            port=8000, devices=["DEMO/cam1"], allow_origins=["https://app.example"]
        ),
        PlayerAccess.create(host="192.0.2.1", port=80, devices=["DEMO/cam1"], public=True),
    )
)


def TestOneInput(data: bytes) -> None:
    lines = harness.text(data).split("\n")
    try:
        origin = normalise_origin(lines[0])
    except AccessConfigError:
        pass
    else:
        assert normalise_origin(origin) == origin, (lines[0], origin)
    headers: dict[str, str] = {}
    token: str | None = None
    device = "DEMO/cam1"
    for line in lines:
        if line.startswith("?"):
            token = line[1:]
        elif line.startswith("/"):
            device = line[1:]
        else:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().title()] = value.strip()
    for access in ACCESS:
        refusal = access.check_request(headers)
        if refusal is None:
            assert headers.get("Host", "").lower() in access.allowed_hosts()
            if "Origin" in headers:
                assert access.origin_allowed(headers["Origin"])
        else:
            assert refusal.status in (403, 421) and "\n" in refusal.message
        if access.cors_origin(headers) is not None:
            assert access.origin_allowed(headers["Origin"])
        token_refusal = access.check_token(token)
        assert (token_refusal is None) == (token == TOKEN)
        assert (access.check_device(device) is None) == (device == "DEMO/cam1")


if __name__ == "__main__":
    harness.main(TestOneInput)
