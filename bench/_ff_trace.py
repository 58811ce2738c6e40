"""Phase timestamps for bench/first_frame.py ``--trace``: where the time to connect and to the
first keyframe goes.

It wraps xp2p's, aioice's and aioquic's own functions (nothing in src/ changes; the plain run
is unpatched) and records ``{"ev": name, "t": time.monotonic(), ...}`` events. Both ends run on
one machine and ``time.monotonic()`` is CLOCK_MONOTONIC there, so the device's events and the
viewer's share one clock. ``tx``/``rx`` events (datagrams QUIC handed out or took, with the
congestion window at that moment) are only kept from a stream request until ``TX_LIMIT``
of them, so a long run does not grow the list.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from typing import Any

Events = list[dict[str, Any]]

#: datagram batches recorded per stream request, on each side
TX_LIMIT = 400


class Recorder:
    def __init__(self) -> None:
        self.events: Events = []
        self.datagrams_left = 0  #: > 0 while tx/rx are being recorded

    def __call__(self, ev: str, **extra: Any) -> None:
        self.events.append({"ev": ev, "t": time.monotonic(), **extra})


def _patch(owner: Any, name: str, make: Callable[[Any], Any]) -> None:
    """Replace ``owner.name`` with ``make(original)``; skip (and say so) if it is gone, so a
    refactor elsewhere in the tree costs a phase of the breakdown, not the bench."""
    original = getattr(owner, name, None)
    if original is None:
        print(f"_ff_trace: {getattr(owner, '__name__', owner)}.{name} not found", file=sys.stderr)
        return
    setattr(owner, name, functools.wraps(original)(make(original)))


def _wrap_async(owner: Any, name: str, label: str, rec: Recorder) -> None:
    def make(original: Any) -> Any:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            rec(f"{label}.start")
            try:
                return await original(*args, **kwargs)
            finally:
                rec(f"{label}.end")

        return wrapper

    _patch(owner, name, make)


def _cc_state(quic: Any) -> dict[str, Any]:
    loss = getattr(quic, "_loss", None)
    if loss is None:
        return {}
    return {
        "cwnd": loss.congestion_window,
        "in_flight": loss.bytes_in_flight,
        "srtt_ms": round(loss._rtt_smoothed * 1000, 1),
    }


def _install_common(rec: Recorder) -> None:
    import aioice.ice
    from aioquic.quic.connection import QuicConnection

    import xp2p.link.connect
    from xp2p.link.ice import IceConnection
    from xp2p.link.link import Link

    _wrap_async(IceConnection, "gather_candidates", "gather", rec)
    _wrap_async(xp2p.link.connect, "connect_ice", "ice", rec)

    def check_start(original: Any) -> Any:
        async def wrapper(self: Any, pair: Any) -> None:
            rec("check.start", pair=repr(pair), controlling=self.ice_controlling)
            await original(self, pair)
            rec("check.end", pair=repr(pair), state=pair.state.name, nominated=pair.nominated)

        return wrapper

    def check_incoming(original: Any) -> Any:
        def wrapper(self: Any, message: Any, addr: Any, protocol: Any) -> None:
            rec("check.in", use_candidate="USE-CANDIDATE" in message.attributes)
            original(self, message, addr, protocol)

        return wrapper

    def start(original: Any) -> Any:
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
            rec("quic.start", **_cc_state(self._quic))
            original(self, *args, **kwargs)

        return wrapper

    def wait_handshake(original: Any) -> Any:
        async def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
            try:
                await original(self, *args, **kwargs)
            finally:
                rec("quic.end", **_cc_state(self._quic))

        return wrapper

    # At aioquic's level, so how the link moves datagrams to the socket does not matter.
    def datagrams_to_send(original: Any) -> Any:
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            datagrams = original(self, *args, **kwargs)
            if datagrams and rec.datagrams_left > 0:
                rec.datagrams_left -= 1
                rec(
                    "tx",
                    n=len(datagrams),
                    bytes=sum(len(d) for d, _addr in datagrams),
                    pacing=getattr(self, "_pacing_at", None) is not None,
                    **_cc_state(self),
                )
            return datagrams

        return wrapper

    def receive_datagram(original: Any) -> Any:
        def wrapper(self: Any, data: bytes, *args: Any, **kwargs: Any) -> None:
            if rec.datagrams_left > 0:
                rec("rx", bytes=len(data))
            original(self, data, *args, **kwargs)

        return wrapper

    _patch(aioice.ice.Connection, "check_start", check_start)
    _patch(aioice.ice.Connection, "check_incoming", check_incoming)
    _patch(Link, "start", start)
    _patch(Link, "wait_handshake", wait_handshake)
    _patch(QuicConnection, "datagrams_to_send", datagrams_to_send)
    _patch(QuicConnection, "receive_datagram", receive_datagram)


def install_viewer_trace() -> Recorder:
    """Viewer side: the cloud calls, gather, ICE, QUIC, and the stream request."""
    from xp2p.link.link import Link
    from xp2p.viewer.cloud_client import CloudClient

    rec = Recorder()
    _install_common(rec)
    for name, label in (
        ("get_p2p_info", "p2p_info"),
        ("get_grant", "grant"),
        ("connect", "signal"),
    ):
        _wrap_async(CloudClient, name, label, rec)

    def request(original: Any) -> Any:
        async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            rec.datagrams_left = TX_LIMIT
            rec("request.start", **_cc_state(self._quic))
            try:
                return await original(self, *args, **kwargs)
            finally:
                rec("request.end", **_cc_state(self._quic))

        return wrapper

    _patch(Link, "request", request)
    return rec


def install_device_trace() -> Events:
    """Device side: the offer, gather, ICE, QUIC, the request and the first writes."""
    from xp2p.device.agent import DeviceAgent
    from xp2p.device.routes import DeviceRoutes
    from xp2p.link.requests import IncomingRequest

    rec = Recorder()
    _install_common(rec)
    _wrap_async(DeviceAgent, "_on_offer", "offer", rec)

    def handle(original: Any) -> Any:
        async def wrapper(self: Any, request: Any, *args: Any, **kwargs: Any) -> None:
            rec.datagrams_left = TX_LIMIT
            rec("request.in", **_cc_state(request.link._quic))
            await original(self, request, *args, **kwargs)

        return wrapper

    def write(original: Any) -> Any:
        async def wrapper(self: Any, data: bytes, *args: Any, **kwargs: Any) -> None:
            count = getattr(self, "_ff_writes", 0)
            if count < 2:  # the GOP-cache start, then the first live batch
                self._ff_writes = count + 1
                rec("write", size=len(data), index=count, **_cc_state(self.link._quic))
            await original(self, data, *args, **kwargs)

        return wrapper

    _patch(DeviceRoutes, "handle", handle)
    _patch(IncomingRequest, "write", write)
    return rec.events


# ---- analysis -------------------------------------------------------------------------------

#: Datagram bytes that are not stream payload (QUIC short header, AEAD tag, frame headers,
#: the odd ACK): used to map a stream offset to the datagram that carried it.
PAYLOAD_SHARE = 0.96


def _first(events: Events, ev: str, after: float = 0.0, **match: Any) -> dict[str, Any] | None:
    for event in events:
        if (
            event["ev"] == ev
            and event["t"] >= after
            and all(event.get(k) == v for k, v in match.items())
        ):
            return event
    return None


def _span(events: Events, label: str, after: float = 0.0) -> float | None:
    start = _first(events, f"{label}.start", after)
    if start is None:
        return None
    end = _first(events, f"{label}.end", start["t"])
    return None if end is None else (end["t"] - start["t"]) * 1000


def _ms(a: dict[str, Any] | float | None, b: dict[str, Any] | float | None) -> float | None:
    if a is None or b is None:
        return None
    ta = a["t"] if isinstance(a, dict) else a
    tb = b["t"] if isinstance(b, dict) else b
    return (tb - ta) * 1000


def connect_phases(trace: dict[str, Any]) -> dict[str, float | None]:
    """Where the time from start_p2p_service to ``connected`` went, in ms."""
    v, d, t0 = trace["viewer"], trace.get("device", []), trace["t_service"]
    phases: dict[str, float | None] = {
        "cloud p2p-info (loopback HTTP)": _span(v, "p2p_info"),
        "cloud grant (loopback HTTP)": _span(v, "grant"),
        "gather, viewer (host + STUN)": _span(v, "gather"),
        "offer/answer through the cloud": _span(v, "signal"),
        "  of it: device on_offer": _span(d, "offer", t0),
        "  of it: device gather": _span(d, "gather", t0),
        "ICE checks, viewer": _span(v, "ice"),
        "QUIC handshake, viewer": _span(v, "quic"),
    }
    total = (trace["t_connected"] - t0) * 1000
    top = [x for k, x in phases.items() if not k.startswith(" ")]
    phases["rest (viewer CPU, set-up, notify)"] = (
        None if None in top else total - sum(x for x in top if x is not None)
    )
    phases["= connected"] = total
    checks = [e for e in v if e["ev"] == "check.start"]
    first_ok = _first(v, "check.end", state="SUCCEEDED")
    phases["first ICE check, start to success"] = (
        None if not checks or first_ok is None else _ms(checks[0], first_ok)
    )
    phases["ICE checks the viewer started"] = float(len(checks))
    phases["device ICE done, after viewer's"] = _ms(_first(v, "ice.end"), _first(d, "ice.end", t0))
    phases["device QUIC done, after viewer's"] = _ms(
        _first(v, "quic.end"), _first(d, "quic.end", t0)
    )
    return phases


def _write0(trace: dict[str, Any]) -> dict[str, Any] | None:
    return _first(trace.get("device", []), "write", trace["t_stream"], index=0)


def keyframe_phases(trace: dict[str, Any]) -> dict[str, float | None]:
    """Where the time from start_stream to the first complete keyframe went, in ms."""
    v, d, t1 = trace["viewer"], trace.get("device", []), trace["t_stream"]
    request = _first(v, "request.start", t1)
    headers = _first(v, "request.end", t1)
    arrived = _first(d, "request.in", t1)
    write0 = _write0(trace)
    phases: dict[str, float | None] = {
        "start_stream to request sent": _ms(t1, request),
        "request to device (one way)": _ms(request, arrived),
        "device: handler to first write": _ms(arrived, write0),
        "first write to headers at viewer": _ms(write0, headers),
        "headers to first body byte": _ms(headers, trace["t_first_byte"]),
        "first body byte to keyframe complete": _ms(trace["t_first_byte"], trace["t_keyframe"]),
        "= first keyframe": _ms(t1, trace["t_keyframe"]),
        "keyframe tag, bytes": float(trace["keyframe_size"]),
        "keyframe end, stream offset": float(trace["keyframe_end"]),
    }
    if write0 is not None:
        phases["GOP-cache start bytes, first write"] = float(write0["size"])
        phases["device cwnd at first write, bytes"] = float(write0.get("cwnd", 0))
        phases["device in flight at first write"] = float(write0.get("in_flight", 0))
        phases["device srtt at first write, ms"] = write0.get("srtt_ms")
        sends = keyframe_sends(trace)
        if sends:
            phases["device: first write to keyframe's last datagram"] = _ms(write0, sends[-1])
            phases["device sends held by the pacer (of them)"] = float(
                sum(1 for s in sends if s.get("pacing"))
            )
            phases["device cwnd when keyframe sent, bytes"] = float(sends[-1].get("cwnd", 0))
    return phases


def keyframe_sends(trace: dict[str, Any]) -> list[dict[str, Any]]:
    """The device's datagram batches from the first write until the keyframe's end was sent."""
    write0 = _write0(trace)
    if write0 is None:
        return []
    out, sent = [], 0
    for event in trace.get("device", []):
        if event["ev"] != "tx" or event["t"] < write0["t"]:
            continue
        out.append(event)
        sent += event["bytes"]
        if sent * PAYLOAD_SHARE >= trace["keyframe_end"]:
            break
    return out


def _median(values: list[float]) -> float | None:
    import statistics

    return statistics.median(values) if values else None


def print_breakdown(results: Any) -> None:
    from bench._common import print_table

    for title, phases_of in (
        ("connected: where the time goes (median of runs, ms)", connect_phases),
        ("first keyframe: where the time goes (median of runs, ms)", keyframe_phases),
    ):
        per_rtt = []
        for result in results:
            runs = [phases_of(r.trace) for r in result.p2p if r.trace is not None]
            names = list(runs[0]) if runs else []
            per_rtt.append(
                {n: _median([x for r in runs if (x := r.get(n)) is not None]) for n in names}
            )
        names = list(dict.fromkeys(n for p in per_rtt for n in p))
        print_table(
            [(n, *(p.get(n) for p in per_rtt)) for n in names],
            ("phase", *(f"rtt {r.rtt_ms:g}" for r in results)),
            title,
        )
    for result in results:
        traced = [r for r in result.p2p if r.trace is not None]
        if not traced:
            continue
        ordered = sorted(traced, key=lambda r: r.keyframe_ms)
        shown = [("median", ordered[len(ordered) // 2])]
        if len(ordered) > 2:
            shown.append(("slowest", ordered[-1]))
        for which, run in shown:
            _print_sends(result.rtt_ms, which, run)


def _print_sends(rtt_ms: float, which: str, run: Any) -> None:
    from bench._common import print_table

    assert run.trace is not None
    write0 = _write0(run.trace)
    rows, sent = [], 0
    for event in keyframe_sends(run.trace):
        sent += event["bytes"]
        rows.append(
            (
                _ms(write0, event),
                event["n"],
                sent,
                event.get("cwnd"),
                event.get("in_flight"),
                "yes" if event.get("pacing") else "",
            )
        )
    print_table(
        rows,
        ("ms after write", "datagrams", "sent bytes", "cwnd", "in flight", "pacer waits"),
        f"device sends until the keyframe end ({run.trace['keyframe_end']} B) is out, "
        f"{which} run at rtt {rtt_ms:g} ms (first keyframe {run.keyframe_ms:.1f} ms)",
    )
