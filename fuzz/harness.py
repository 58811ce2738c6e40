"""What every fuzz target shares: the libFuzzer entry point and input-shaping helpers.

A target is ``fuzz/fuzz_<name>.py``: it imports the parsers it feeds inside
``atheris.instrument_imports`` (so coverage guides the fuzzer through them), defines
``TestOneInput(data: bytes)`` that lets through only the parser's documented errors, and
ends with ``harness.main(TestOneInput)``. Anything else that escapes (an exception, an
assertion about the result, a hang past ``-timeout``, memory past ``-rss_limit_mb``) is a
finding, which libFuzzer saves as ``crash-<sha1>`` (or ``timeout-``, ``oom-``).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from pathlib import Path

import atheris

#: The share of a split-up input one piece may take: small pieces exercise the parsers'
#: "wait for more bytes" paths, which whole inputs never reach.
_MAX_PIECE = 64


def main(test_one_input: Callable[[bytes], None], *, dictionary: str | None = None) -> None:
    """Run libFuzzer with this process's command line (``-max_total_time=N``, corpus dirs).

    ``dictionary`` names a file beside this one of tokens libFuzzer splices into inputs
    (``json.dict`` for the JSON parsers), unless the command line gives its own ``-dict``.
    """
    argv = list(sys.argv)
    if dictionary is not None and not any(a.startswith("-dict=") for a in argv):
        argv.append(f"-dict={Path(__file__).resolve().parent / dictionary}")
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


def pieces(data: bytes) -> list[bytes]:
    """``data[2:]`` cut at chosen points: bytes as a socket delivers them.

    ``data[0]`` bounds the cut sizes (1 to 64; 0 keeps the stream whole) and ``data[1]``
    seeds where the cuts fall, so the stream bytes themselves stay as the seed corpus wrote
    them (``b"\\0\\0" + stream`` is the stream whole) while the fuzzer still varies the cuts.
    """
    if len(data) < 2:
        return [data]
    bound, seed, stream = data[0] % (_MAX_PIECE + 1), data[1], data[2:]
    if bound == 0:
        return [stream]
    rng = random.Random(seed)
    out: list[bytes] = []
    pos = 0
    while pos < len(stream):
        size = rng.randint(1, bound)
        out.append(stream[pos : pos + size])
        pos += size
    return out


def text(data: bytes) -> str:
    """Network text as the shells hand it over: UTF-8, with what does not decode replaced
    (aiohttp's WebSocket and the link's header decoding never pass on a lone surrogate; a
    JSON ``\\ud800`` escape still can, and the JSON targets feed bytes to reach that)."""
    return data.decode("utf-8", "replace")
