"""The device's admission rules and link deadlines (``device.admission``) and the ICE
address filter (``link.ice.unprobeable``), without links or clocks (issue 10 items 5, 11, 14)."""

from __future__ import annotations

import pytest

from xp2p.device.admission import AdmissionLimits, LinkAdmission, LinkWatch, Refused
from xp2p.link.ice import unprobeable


def test_an_app_gets_its_share_and_a_grant_its_links() -> None:
    admission = LinkAdmission(AdmissionLimits(max_links=8, max_pending_links=4))
    a = [admission.admit("a", f"g{n}") for n in range(2)]  # pending share: 2 of 4
    with pytest.raises(Refused) as e:
        admission.admit("a", "g9")
    assert e.value.code == 503 and "this app has 2 connections being set up" in e.value.reason
    b = admission.admit("b", "h0")  # another app is not held up
    for slot in a:
        admission.opened(slot)
    admission.opened(b)
    more = [admission.admit("a", f"g{n}") for n in range(2, 4)]  # 4 of 8 links now
    for slot in more:
        admission.opened(slot)
    with pytest.raises(Refused) as e:
        admission.admit("a", "g9")
    assert "this app holds 4 links" in e.value.reason
    assert admission.held_by("a") == (4, 0)
    admission.release(more[0])
    admission.opened(admission.admit("a", "g9"))  # released room is reusable


def test_a_grant_opens_at_most_max_links_per_grant() -> None:
    admission = LinkAdmission(AdmissionLimits(8, 8, app_link_share=1.0, max_links_per_grant=2))
    for _ in range(2):
        admission.opened(admission.admit("a", "g"))
    with pytest.raises(Refused) as e:
        admission.admit("a", "g")
    assert (e.value.code, e.value.reason) == (
        403,
        "access grant refused: it already opened 2 links",
    )
    admission.admit("a", "other grant")


def test_device_bounds_hold_whoever_asks() -> None:
    admission = LinkAdmission(AdmissionLimits(max_links=2, max_pending_links=2, app_link_share=1))
    admission.admit("a", "g1")
    admission.admit("b", "g2")
    with pytest.raises(Refused) as e:
        admission.admit("c", "g3")
    assert e.value.reason == "busy: too many connections being set up; retry shortly"


def test_a_small_device_still_gives_each_app_one() -> None:
    limits = AdmissionLimits(max_links=1, max_pending_links=1)
    assert (limits.links_per_app, limits.pending_per_app) == (1, 1)


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("max_links", {"max_links": 0}),
        ("max_pending_links", {"max_pending_links": 0}),
        ("app_link_share", {"app_link_share": 0.0}),
        ("app_link_share", {"app_link_share": 1.5}),
        ("app_link_share", {"app_link_share": float("nan")}),
        ("max_links_per_grant", {"max_links_per_grant": 0}),
    ],
)
def test_limits_name_the_bad_field(field: str, kwargs: dict[str, float]) -> None:
    fields: dict[str, float] = {"max_links": 4, "max_pending_links": 2}
    fields.update(kwargs)
    with pytest.raises(ValueError, match=field):
        AdmissionLimits(**fields)  # type: ignore[arg-type]


def test_link_watch_idle_expiry_and_renewal() -> None:
    watch = LinkWatch(idle_timeout=10.0, grant_expires_at=1000.0, last_activity=0.0)
    assert watch.due(now=5.0, wall=900.0) == (None, 5.0)
    assert watch.due(now=10.0, wall=900.0) == ("idle for 10 s", 0.0)
    watch.request_started(10.0)  # a pull in progress is not idle, however long
    assert watch.due(now=500.0, wall=900.0) == (None, 100.0)
    assert watch.due(now=500.0, wall=1000.0) == ("access grant expired", 0.0)
    assert not watch.renew(999.0)  # an older grant extends nothing
    assert watch.renew(2000.0)
    assert watch.due(now=500.0, wall=1000.0) == (None, 1000.0)
    watch.request_ended(500.0)
    assert watch.due(now=505.0, wall=1000.0) == (None, 5.0)


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("203.0.113.7", None),
        ("10.0.0.2", None),
        ("127.0.0.1", None),
        ("2001:db8::1", None),
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "broadcast or reserved"),
        ("240.0.0.1", "broadcast or reserved"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("victim.example", "not an IP address"),
    ],
)
def test_addresses_a_device_never_probes(host: str, why: str | None) -> None:
    assert unprobeable(host) == why
