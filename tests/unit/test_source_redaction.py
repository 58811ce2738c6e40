"""Source URL credentials: redacted completely in logs, inserted in memory only (issue 10
item 13)."""

from __future__ import annotations

import pytest

from xp2p.media.source import (
    has_userinfo,
    parse_credentials,
    redact_url,
    scrub,
    with_credentials,
)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("rtsp://admin:hunter2@cam.local:554/live", "rtsp://***@cam.local:554/live"),
        ("rtsp://admin:p@ss@cam.local/live", "rtsp://***@cam.local/live"),
        ("rtsp://admin:pa/ss@cam.local/live", "rtsp://***@cam.local/live"),
        ("rtsp://admin:a:b:c@cam.local/live", "rtsp://***@cam.local/live"),
        ("rtsp://admin:p%40ss%2Fw@cam.local/live", "rtsp://***@cam.local/live"),
        ("rtsp://admin:@/:x@y@10.0.0.2:554/ch1?subtype=0", "rtsp://***@10.0.0.2:554/ch1?subtype=0"),
        ("RTSP://only-user@cam/live", "RTSP://***@cam/live"),
        ("http://u:p@[::1]:8080/live.flv", "http://***@[::1]:8080/live.flv"),
        ("rtsp://cam.local/live", "rtsp://cam.local/live"),
        ("testpattern", "testpattern"),
        ("/videos/a@b.mp4", "/videos/a@b.mp4"),
    ],
)
def test_redaction_hides_all_of_the_userinfo(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert has_userinfo(url) == (shown != url)


def test_an_at_sign_past_the_host_is_over_redacted_rather_than_leaking() -> None:
    # There is no telling rtsp://cam/s@1 from a password holding "/": hide more, never less.
    assert redact_url("rtsp://cam.local/stream@1") == "rtsp://***@1"


def test_credentials_are_percent_encoded_into_the_url_and_scrubbed_back_out() -> None:
    url = with_credentials("rtsp://cam.local:554/live", ("admin", "p@ss/w:rd%40"))
    assert url == "rtsp://admin:p%40ss%2Fw%3Ard%2540@cam.local:554/live"
    assert redact_url(url) == "rtsp://***@cam.local:554/live"
    message = f"Server returned 401 for '{url}' (user admin:p@ss/w:rd%40, p%40ss%2Fw%3Ard%2540)"
    cleaned = scrub(message, url)
    assert "p@ss" not in cleaned and "p%40ss" not in cleaned and "rd%40" not in cleaned
    assert "rtsp://***@cam.local:554/live" in cleaned


def test_credentials_need_a_url_and_one_place() -> None:
    with pytest.raises(ValueError, match="URL source"):
        with_credentials("testpattern", ("a", "b"))
    with pytest.raises(ValueError, match="already holds"):
        with_credentials("rtsp://x:y@cam/live", ("a", "b"))


def test_the_credentials_line_is_user_colon_password() -> None:
    assert parse_credentials("admin:p@ss/w:rd\n", "FILE") == ("admin", "p@ss/w:rd")
    assert parse_credentials("admin:", "FILE") == ("admin", "")
    for bad in ("admin", ":pw", "a:b\nc:d\n", ""):
        with pytest.raises(ValueError, match="FILE: expected user:password"):
            parse_credentials(bad, "FILE")
