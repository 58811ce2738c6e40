"""The independent decoder the tests check streams with: FFmpeg's ffprobe."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

FFPROBE = shutil.which("ffprobe")


def decodes_h264(path: Path) -> bool:
    """ffprobe finds an H.264 video stream in the file and decodes at least one frame of it."""
    if FFPROBE is None:
        raise RuntimeError("ffprobe missing: scripts/setup.sh installs ffmpeg")
    argv = [FFPROBE, "-v", "error", "-count_frames", "-select_streams", "v:0"]
    argv += ["-show_entries", "stream=codec_name,nb_read_frames", "-of", "json", str(path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    streams = json.loads(done.stdout or "{}").get("streams", [])
    return (
        bool(streams)
        and streams[0].get("codec_name") == "h264"
        and (int(streams[0].get("nb_read_frames", 0)) > 0)
    )
