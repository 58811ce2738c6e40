"""1vN swarm: the simulator's figures at N = 100 and 1,000, and the cost of chunk signatures.

`python -m bench.swarm_sim [--quick] [--json PATH] [--duration S] [--seed N] [--no-signing]`

Runs `xp2p.swarm.sim` (the real `ChunkScheduler` in every simulated viewer, the edge's real
`Tracker` picking every neighbour list and the seeds) with churn (exponential sessions,
mean 120 s) and a flash crowd (50 joins in 5 s), and prints the rows {metric, value, unit,
baseline, target}: the baseline of offload is the theoretical bound
1 - max(r, N r - Σu) / (N r), that of edge egress the no-P2P case (N copies). Then it times
per-chunk Ed25519 signatures against a signed batch root (`xp2p.swarm.signing` explains the
choice). `--quick`: N = 100 and 300 for 60 simulated seconds, under a minute.
"""

from __future__ import annotations

import hashlib
import os
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench._common import Row, log, print_rows, standard_arguments, write_json
from xp2p.swarm.metrics import report_rows
from xp2p.swarm.sim import SimConfig, Simulation


def simulate(peers: int, duration: float, seed: int) -> list[Row]:
    config = SimConfig(peers=peers, duration=duration, warmup=min(30.0, duration / 3), seed=seed)
    report = Simulation(config).run()
    log(
        f"N={peers}: {report.events} events in {report.wall_seconds:.0f} s wall, "
        f"mean {report.peers_mean:.0f} online, upload {report.upload_mean:.2f} x bitrate, "
        f"{report.sessions} sessions measured"
    )
    return [Row(**row) for row in report_rows(report)]


def signing_rows(chunk_bytes: int = 82_500, batch: int = 8, n: int = 400) -> list[Row]:
    """Per chunk: sha256 + sign at the edge, sha256 + verify at a viewer; the batch root
    signs (and a viewer verifies) one manifest of `batch` hashes instead."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    payload = os.urandom(chunk_bytes)
    header = bytes(60)

    def timed(fn: object, count: int = n) -> float:
        start = time.perf_counter()
        for _ in range(count):
            fn()  # type: ignore[operator]
        return (time.perf_counter() - start) / count * 1e6

    sha = timed(lambda: hashlib.sha256(payload).digest())
    message = header + hashlib.sha256(payload).digest()
    sign = timed(lambda: key.sign(message))
    signature = key.sign(message)
    verify = timed(lambda: public.verify(signature, message))
    root = bytes(32 * batch)
    root_hash = timed(lambda: hashlib.sha256(root).digest())
    per_edge, per_viewer = sha + sign, sha + verify
    batch_edge = sha + (sign + root_hash) / batch
    batch_viewer = sha + (verify + root_hash) / batch
    return [
        Row("sha256_per_chunk", sha, "us"),
        Row("edge_sign_per_chunk", per_edge, "us", baseline=batch_edge),
        Row("viewer_verify_per_chunk", per_viewer, "us", baseline=batch_viewer),
        Row("edge_sign_cpu_share_per_room", per_edge * 3 / 1e6, "core"),
        Row("viewer_verify_cpu_share", per_viewer * 3 / 1e6, "core"),
    ]


def main() -> int:
    parser = standard_arguments(__doc__ or "")
    parser.add_argument("--duration", type=float, default=None, help="simulated seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-signing", action="store_true")
    args = parser.parse_args()
    sizes = (100, 300) if args.quick else (100, 1000)
    duration = args.duration or (60.0 if args.quick else 600.0)
    started = time.perf_counter()
    rows: list[Row] = []
    for peers in sizes:
        rows += simulate(peers, duration, args.seed)
    if not args.no_signing:
        rows += signing_rows(n=100 if args.quick else 1000)
    print_rows(rows, f"swarm simulator, {duration:.0f} s simulated, seed {args.seed}")
    log(f"run time {time.perf_counter() - started:.0f} s")
    if args.json:
        write_json(args.json, "swarm_sim", rows, duration=duration, seed=args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
