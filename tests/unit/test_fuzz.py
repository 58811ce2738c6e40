"""The fuzz tier, bounded: every ``fuzz/fuzz_<name>.py`` target runs for a few seconds from
its seed corpus, one at a time, in its own process (libFuzzer owns the process it runs in).

A target that finds anything (an exception its parser does not document, a broken
round-trip, a hang past ``-timeout``, memory past ``-rss_limit_mb``) fails here with the
crashing input and its traceback; ``python fuzz/fuzz_<name>.py <file>`` replays it. Longer
runs are by hand (fuzz/README.md).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")

ROOT = Path(__file__).resolve().parents[2]
FUZZ = ROOT / "fuzz"
CORPUS = FUZZ / "corpus"
TARGETS = sorted(p.stem.removeprefix("fuzz_") for p in FUZZ.glob("fuzz_*.py"))
#: Seconds of fuzzing per target: with process start-up (imports, instrumentation, the seeds)
#: about 2.5 s each, so about 30 s for the whole tier.
SECONDS = 1
#: A single input that takes longer than this is a hang.
INPUT_TIMEOUT = 10
RSS_LIMIT_MB = 1024


def test_every_target_has_seeds() -> None:
    assert len(TARGETS) >= 11, TARGETS
    for name in TARGETS:
        seeds = list((CORPUS / name).glob("seed-*"))
        assert seeds, f"fuzz/corpus/{name}/ has no seeds: run python fuzz/make_corpus.py"


def _report(name: str, proc: subprocess.CompletedProcess[str], findings: list[Path]) -> str:
    lines = [f"fuzz target {name} found something (exit status {proc.returncode})"]
    for path in findings:
        data = path.read_bytes()
        lines.append(f"{path.name} ({len(data)} bytes): {data[:2000]!r}")
        lines.append(f"  replay: python fuzz/fuzz_{name}.py {path}")
    err = proc.stdout
    start = err.find("=== Uncaught Python exception")
    if start < 0:
        start = max(err.find("==ERROR"), err.find("ERROR: libFuzzer"))
    lines.append(err[start : start + 6000] if start >= 0 else err[-6000:])
    return "\n".join(lines)


@pytest.mark.timeout(SECONDS + 120)
@pytest.mark.parametrize("name", TARGETS)
def test_fuzz_target(name: str, tmp_path: Path) -> None:
    # New inputs go to a scratch corpus (the first directory), never to the committed seeds.
    scratch, artifacts = tmp_path / "corpus", tmp_path / "findings"
    scratch.mkdir()
    artifacts.mkdir()
    command = [
        sys.executable,
        str(FUZZ / f"fuzz_{name}.py"),
        str(scratch),
        str(CORPUS / name),
        f"-max_total_time={SECONDS}",
        f"-timeout={INPUT_TIMEOUT}",
        f"-rss_limit_mb={RSS_LIMIT_MB}",
        f"-artifact_prefix={artifacts}/",
        "-print_final_stats=1",
    ]
    # atheris prints the Python traceback on stdout, libFuzzer its report on stderr: one stream.
    proc = subprocess.run(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=SECONDS + 100,
        check=False,
    )
    findings = sorted(artifacts.iterdir())
    if proc.returncode != 0 or findings:
        pytest.fail(_report(name, proc, findings), pytrace=False)
    runs = [
        line
        for line in proc.stdout.splitlines()
        if line.startswith("stat::number_of_executed_units")
    ]
    assert runs and int(runs[0].split(":")[-1]) > 0, proc.stdout[-2000:]
