"""Helpers every bench shares: statistics, the result row, the table, the JSON file.

A bench prints a table and, with ``--json PATH``, writes
``{"bench": NAME, "rows": [{"metric", "value", "unit", "baseline", "target"}], ...}``
(docs/architecture.md, "Benchmarks"). ``baseline`` is the value of the same-run comparison, or None.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import platform
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web

    from xp2p.device.channel import LiveChannel


@dataclass(frozen=True)
class Row:
    metric: str
    value: float | None
    unit: str
    baseline: float | None = None
    target: str | float | None = None  #: e.g. ">= 0.80" or a number the value should reach


def median(values: Sequence[float]) -> float:
    if not values:
        return math.nan
    return float(statistics.median(values))


def p95(values: Sequence[float]) -> float:
    """The 95th percentile by the nearest-rank method (the maximum below 20 samples)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(0.95 * len(ordered)))
    return float(ordered[rank - 1])


def machine() -> dict[str, Any]:
    """What the numbers were measured on, for the JSON file and bench/README.md."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def print_table(rows: Iterable[Sequence[object]], header: Sequence[str], title: str = "") -> None:
    """A plain aligned text table (also valid Markdown, so it can go into bench/README.md)."""
    cells = [[str(h) for h in header]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    if title:
        print(f"\n{title}")
    for n, row in enumerate(cells):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def print_rows(rows: Sequence[Row], title: str = "") -> None:
    print_table(
        [(r.metric, r.value, r.unit, r.baseline, r.target) for r in rows],
        ("metric", "value", "unit", "baseline", "target"),
        title,
    )


def write_json(path: str | Path, bench: str, rows: Sequence[Row], **extra: Any) -> None:
    """Write the result file; NaN (a missing measurement) becomes null."""
    out = []
    for row in rows:
        item = asdict(row)
        for key in ("value", "baseline"):
            item[key] = clean(item[key])
        out.append(item)
    doc = {"bench": bench, "rows": out, "machine": machine(), **extra}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")


def clean(value: float | None) -> float | None:
    """NaN is not JSON: report a missing measurement as None."""
    if value is None or math.isnan(value):
        return None
    return value


def standard_arguments(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="smoke run, under a minute")
    parser.add_argument("--json", metavar="PATH", help="write the rows as JSON to PATH")
    return parser


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def serve_live_channel(live: LiveChannel, request: web.Request) -> web.StreamResponse:
    """The HTTP-FLV-over-TCP baseline: what a link viewer gets from the same LiveChannel (the
    GOP-cache start, then batches), written to a plain aiohttp response."""
    from aiohttp import web

    start, subscription = live.subscribe()
    response = web.StreamResponse(
        headers={"Content-Type": "video/x-flv", "Cache-Control": "no-store"}
    )
    try:
        await response.prepare(request)
        await response.write(start)
        while batch := await subscription.next_batch():
            await response.write(b"".join(tag.encode() for tag in batch))
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        subscription.close()
    return response
