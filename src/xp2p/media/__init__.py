"""Sources that yield FLV tags: a test pattern, files, and network streams, all via PyAV.

Encoding and demuxing are blocking FFmpeg work, so each source runs it on its own worker
thread and hands tags to asyncio through a bounded queue, paced to real time.
"""

from __future__ import annotations

from .remux import FileSource, UrlSource, remux_items
from .source import MediaError, MediaSource, ThreadedSource
from .testpattern import TestPatternConfig, TestPatternSource, make_test_flv, pattern_items

__all__ = [
    "FileSource",
    "MediaError",
    "MediaSource",
    "TestPatternConfig",
    "TestPatternSource",
    "ThreadedSource",
    "UrlSource",
    "make_test_flv",
    "pattern_items",
    "remux_items",
]
