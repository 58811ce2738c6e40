"""App request authentication as the cloud and the edge run it: headers (one ``Name: value``
a line), then an empty line and the body, into one long-lived ``RequestVerifier`` (so the
replay cache, the rate buckets and the failure throttle fill up across inputs, as they do
under attack). ``data[0]`` picks the client's address. The only refusal is ``AuthError``; an
accepted request names the configured app, a throttle refusal carries a positive
``retry_after``, and the throttle's table stays bounded."""

from __future__ import annotations

import atheris
import harness

with atheris.instrument_imports(include=["xp2p.auth"]):
    from xp2p.auth import MAX_TRACKED_KEYS, AuthError, RequestVerifier

APP, SECRET = "fuzz-app", "fuzz-app-secret-0123456789"
NOW = 1_764_720_000
PATH = "/api/v1/app/session"
_SOURCES = ("198.51.100.7", "2001:db8::7", "::ffff:192.0.2.1", "not an address")
_VERIFIER = RequestVerifier({APP: SECRET}, max_nonces=64, failure_limit=3, request_burst=50)


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    source = _SOURCES[data[0] & 3]
    head, _, body = data[1:].partition(b"\n\n")
    headers: dict[str, str] = {}
    for line in harness.text(head).splitlines():
        name, sep, value = line.partition(": ")
        if sep:
            headers[name] = value
    try:
        app = _VERIFIER.verify("POST", PATH, headers, body, NOW, source=source)
    except AuthError as exc:
        assert exc.code == exc.reason.value
        assert exc.status in (401, 429)
        assert (exc.retry_after is not None and exc.retry_after > 0) == (exc.status == 429)
        return
    assert app == APP
    assert _VERIFIER.remembered_nonces <= 64
    assert len(_VERIFIER._failures) <= MAX_TRACKED_KEYS


if __name__ == "__main__":
    harness.main(TestOneInput)
