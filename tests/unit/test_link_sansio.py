"""Sans-IO parts of the link layer: the conditioner's scheduling core and xp2pInfo."""

from __future__ import annotations

import base64
import json
import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from xp2p.errors import ErrorCode, XP2PError
from xp2p.link import LinkIdentity, Xp2pInfo
from xp2p.link.conditioner import MAX_QUEUE_DELAY, ConditionerCore, Direction
from xp2p.link.config import Conditions

# ---- ConditionerCore ---------------------------------------------------------------------------


def _drops(core: ConditionerCore, n: int) -> list[bool]:
    return [core.delay_for(Direction.OUT, 1200, now=i * 1e-3) is None for i in range(n)]


def test_conditioner_loss_ratio_matches_and_is_seeded() -> None:
    n = 20_000
    core = ConditionerCore(Conditions(loss=0.1, seed=7))
    pattern = _drops(core, n)
    ratio = sum(pattern) / n
    # Binomial sd at n=20000 is 0.0021; the seed makes this exact anyway.
    assert 0.09 < ratio < 0.11
    assert core.dropped == sum(pattern)
    assert core.delivered == n - sum(pattern)
    assert _drops(ConditionerCore(Conditions(loss=0.1, seed=7)), n) == pattern
    assert _drops(ConditionerCore(Conditions(loss=0.1, seed=8)), n) != pattern


def test_conditioner_loss_extremes() -> None:
    assert all(_drops(ConditionerCore(Conditions(loss=1.0, seed=1)), 1000))
    assert not any(_drops(ConditionerCore(Conditions(loss=0.0, seed=1)), 1000))


def test_conditioner_rtt_is_split_between_directions() -> None:
    core = ConditionerCore(Conditions(rtt_ms=100, seed=1))
    assert core.delay_for(Direction.OUT, 1200, now=5.0) == pytest.approx(0.05)
    assert core.delay_for(Direction.IN, 1200, now=5.0) == pytest.approx(0.05)
    assert core.dropped == 0
    assert not Conditions().active
    assert Conditions(rtt_ms=1).active and Conditions(loss=0.1).active
    assert Conditions(rate_bps=1).active


def test_conditioner_rate_paces_a_burst_then_drops_past_the_queue_limit() -> None:
    rate = 8_000_000  # 1 MB/s: a 1100-byte datagram takes 1.1 ms
    tx = 1100 * 8 / rate
    core = ConditionerCore(Conditions(rtt_ms=20, rate_bps=rate, seed=1))
    delays = [core.delay_for(Direction.OUT, 1100, now=0.0) for _ in range(400)]
    delivered = [d for d in delays if d is not None]
    # Datagram i leaves after i+1 serialisation times (plus the one-way delay), as long as it
    # would wait no more than MAX_QUEUE_DELAY in the queue (227 * 1.1 ms = 0.2497 s).
    queue_limit = math.floor(MAX_QUEUE_DELAY / tx) + 1
    assert len(delivered) == queue_limit == 228
    for i, delay in enumerate(delivered):
        assert delay == pytest.approx(0.010 + (i + 1) * tx)
    assert all(d is None for d in delays[queue_limit:])
    assert core.dropped == 400 - queue_limit
    # The other direction has its own queue.
    assert core.delay_for(Direction.IN, 1100, now=0.0) == pytest.approx(0.010 + tx)


def test_conditioner_rate_caps_long_run_throughput() -> None:
    rate = 4_000_000  # 500 kB/s
    core = ConditionerCore(Conditions(rate_bps=rate, seed=1))
    size, seconds = 1000, 10.0
    offered = int(2 * rate / 8 / size * seconds)  # twice what the cap lets through
    sent = 0
    last_arrival = 0.0
    for i in range(offered):
        now = i * seconds / offered
        delay = core.delay_for(Direction.OUT, size, now)
        if delay is not None:
            sent += size
            assert now + delay >= last_arrival - 1e-9  # FIFO: no reordering
            last_arrival = now + delay
    expected = rate / 8 * seconds
    assert expected * 0.98 <= sent <= expected + rate / 8 * MAX_QUEUE_DELAY + size
    assert core.dropped > 0


def test_conditioner_at_the_line_rate_never_queues() -> None:
    core = ConditionerCore(Conditions(rate_bps=8_000_000, seed=1))
    for i in range(5000):
        assert core.delay_for(Direction.OUT, 1000, now=i * 1e-3) == pytest.approx(1e-3)
    assert core.dropped == 0


# ---- xp2pInfo -----------------------------------------------------------------------------------

FINGERPRINT = LinkIdentity.generate().fingerprint


def _info(**overrides: str) -> Xp2pInfo:
    fields = {
        "product_id": "PRODUCT1",
        "device_name": "cam-01",
        "fingerprint": FINGERPRINT,
        "session": "a1b2c3d4",
        "sdk_version": "2.4.0",
    }
    fields.update(overrides)
    return Xp2pInfo(**fields)


def _raw(payload: object, version: str = "2.4.0") -> str:
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    return f"XP2P{body}%{version}"


def _good_payload() -> dict[str, object]:
    return {"v": 1, "p": "P", "d": "D", "f": FINGERPRINT, "s": "S"}


def test_xp2pinfo_round_trip() -> None:
    info = _info()
    text = info.encode()
    assert text.startswith("XP2P") and text.endswith("%2.4.0")
    assert "=" not in text
    assert Xp2pInfo.parse(text) == info
    assert Xp2pInfo.parse(_info(sdk_version="2").encode()).sdk_version == "2"


def _code(text: str) -> int:
    with pytest.raises(XP2PError) as info:
        Xp2pInfo.parse(text)
    return int(info.value.code)


BAD_INFOS = {
    "empty": "",
    "no-prefix": "xp2p" + _info().encode()[4:],
    "too-long": "XP2P" + "A" * 3000 + "%2.4.0",
    "no-version": _info().encode().split("%")[0],
    "bad-version": _info().encode().replace("%2.4.0", "%2.x"),
    "version-newline": _info().encode() + "\n",
    "not-base64": "XP2P!!!!%2.4.0",
    "not-json": "XP2P" + base64.urlsafe_b64encode(b"\xff\xfe").decode() + "%2.4.0",
    "json-list": _raw([1, 2]),
    "wrong-payload-version": _raw({**_good_payload(), "v": 2}),
    "payload-version-true": _raw({**_good_payload(), "v": True}),
    "missing-field": _raw({k: v for k, v in _good_payload().items() if k != "s"}),
    "empty-field": _raw({**_good_payload(), "d": ""}),
    "field-not-str": _raw({**_good_payload(), "p": 5}),
    "bad-fingerprint": _raw({**_good_payload(), "f": "short"}),
    "fingerprint-newline": _raw({**_good_payload(), "f": FINGERPRINT + "\n"}),
    "deep-json": "XP2P" + base64.urlsafe_b64encode(b"[" * 1400).decode() + "%2.4.0",
}


@pytest.mark.parametrize("case", list(BAD_INFOS))
def test_xp2pinfo_malformed_is_bad_xp2p_info(case: str) -> None:
    assert _code(BAD_INFOS[case]) == ErrorCode.BAD_XP2P_INFO


@pytest.mark.parametrize("version", ["1.9", "1", "0.1.2.3", "1.99999"])
def test_xp2pinfo_old_device_is_version_too_low(version: str) -> None:
    assert _code(_info(sdk_version=version).encode()) == ErrorCode.DEVICE_VERSION_TOO_LOW


_ALLOWED = {ErrorCode.BAD_XP2P_INFO, ErrorCode.DEVICE_VERSION_TOO_LOW}


def _parse_or_xp2p_error(text: str) -> None:
    try:
        info = Xp2pInfo.parse(text)
    except XP2PError as exc:
        assert exc.code in _ALLOWED
    else:
        assert info.encode() == text or Xp2pInfo.parse(info.encode()) == info


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=3000))
@example("XP2P%2.0")
@example("XP2P" + "W" * 40 + "%" + "9" * 2000)
def test_xp2pinfo_fuzz_arbitrary_text(text: str) -> None:
    _parse_or_xp2p_error(text)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=3), inner, max_size=6)
    ),
    max_leaves=30,
)
_versions = st.from_regex(r"[0-9]{1,3}(\.[0-9]{1,3}){0,4}\n?", fullmatch=True) | st.text(max_size=8)


@settings(max_examples=400, deadline=None)
@given(
    payload=_json
    | st.fixed_dictionaries(
        {
            "v": st.sampled_from([1, 1.0, True, "1", 2]),
            "p": _json,
            "d": st.text(max_size=5),
            "f": st.sampled_from([FINGERPRINT, FINGERPRINT[:-1], FINGERPRINT + "\n", ""]),
            "s": _json,
        }
    ),
    version=_versions,
    raw_bytes=st.binary(max_size=64),
    use_bytes=st.booleans(),
)
def test_xp2pinfo_fuzz_structured(
    payload: object, version: str, raw_bytes: bytes, use_bytes: bool
) -> None:
    data = raw_bytes if use_bytes else json.dumps(payload).encode()
    body = base64.urlsafe_b64encode(data).decode().rstrip("=")
    _parse_or_xp2p_error(f"XP2P{body}%{version}")


_field = st.text(min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(
    product=_field,
    device=_field,
    session=_field,
    version=st.from_regex(r"[2-9](\.[0-9]{1,3}){0,3}", fullmatch=True),
)
def test_xp2pinfo_round_trip_property(
    product: str, device: str, session: str, version: str
) -> None:
    info = Xp2pInfo(product, device, FINGERPRINT, session, version)
    assert Xp2pInfo.parse(info.encode()) == info
