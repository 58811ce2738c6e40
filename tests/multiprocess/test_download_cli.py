"""``xp2p download`` as a real subprocess against a real cloud and device (in this process):
fresh download, Ctrl-C and resume, foreign partials, a device file that changed, a corrupt
partial caught by the sha256 check, refusals, and no secret in any output."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.devices import IdleSource
from tests.support.ffprobe import FFPROBE
from tests.support.recordings import pattern_flv
from tests.support.stack import Stack
from xp2p.cloud.app import CloudServer
from xp2p.cloud.config import CloudConfig
from xp2p.device import ChannelConfig, DeviceAgent
from xp2p.link import Conditions, LinkConfig

pytestmark = pytest.mark.multiprocess

MB = 1024 * 1024


@dataclass
class Cli:
    stack: Stack
    folder: Path  #: the device's <recordings_dir>/ch0
    out: Path  #: where the downloads go

    def put(self, name: str, data: bytes) -> str:
        (self.folder / name).write_bytes(data)
        return hashlib.sha256(data).hexdigest()

    def argv(self, *args: str) -> list[str]:
        app = self.stack.config.apps[0]
        return [
            "download",
            "DEMO/cam1",
            *args,
            "--cloud",
            self.stack.cloud.url,
            "--app-key",
            app.key,
        ]

    async def start(self, *args: str) -> asyncio.subprocess.Process:
        env = {**os.environ, "XP2P_APP_SECRET": self.stack.config.apps[0].secret}
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "xp2p",
            *self.argv(*args),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )

    async def run(self, *args: str, timeout: float = 60) -> tuple[int, str, str]:
        proc = await self.start(*args)
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        text_out, text_err = out.decode(), err.decode()
        for secret in (self.stack.config.apps[0].secret, self.stack.config.devices[0].secret):
            assert secret not in text_out + text_err
        assert "Traceback" not in text_err, text_err
        assert proc.returncode is not None
        return proc.returncode, text_out, text_err


@pytest.fixture
async def cli(cloud: tuple[CloudServer, CloudConfig], tmp_path: Path) -> AsyncIterator[Cli]:
    server, config = cloud
    stack = Stack(server, config, device=None)  # type: ignore[arg-type]
    recordings = tmp_path / "recordings"
    (recordings / "ch0").mkdir(parents=True)
    # A rate cap at the device (40 Mbit/s) so that a transfer lasts long enough to interrupt.
    link = LinkConfig(conditions=Conditions(rate_bps=40_000_000, seed=1))
    device = DeviceAgent(
        stack.device_config(
            recordings_dir=recordings, channels={0: ChannelConfig(default=IdleSource)}, link=link
        )
    )
    await device.start()
    await device.wait_signed_in(timeout=10)
    stack.device = device
    out = tmp_path / "out"
    out.mkdir()
    yield Cli(stack, recordings / "ch0", out)
    await device.close()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".part", ".part.json")))


@pytest.mark.timeout(90)
async def test_download_verifies_and_saves(cli: Cli) -> None:
    data = os.urandom(3 * MB + 7)
    digest = cli.put("clip.flv", data)
    code, out, err = await cli.run("clip.flv", "-o", str(cli.out))
    assert code == 0, err
    saved = cli.out / "clip.flv"
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == digest
    assert out.strip() == f"saved {saved} ({len(data)} bytes, sha256 verified)"
    assert "100.0%" in err and "ETA" in err  # plain progress lines: stderr is not a terminal
    assert "\r" not in err
    assert leftovers(cli.out) == []


@pytest.mark.timeout(120)
async def test_mp4_is_the_recording_remuxed(cli: Cli) -> None:
    """``--mp4`` (the guide's FAQ 7.1: phones save MP4, not FLV): the verified FLV and beside
    it an MP4 with the same H.264 and AAC, frame for frame, as FFmpeg's own decoder reads it."""
    data = pattern_flv(3)
    cli.put("rec.flv", data)
    code, out, err = await cli.run("rec.flv", "-o", str(cli.out), "--mp4")
    assert code == 0, err
    flv, mp4 = cli.out / "rec.flv", cli.out / "rec.mp4"
    assert flv.read_bytes() == data
    assert out.splitlines()[-1] == f"saved {mp4} ({mp4.stat().st_size} bytes, remuxed from rec.flv)"
    assert leftovers(cli.out) == []
    assert probe(mp4)["format"]["format_name"].startswith("mov,mp4")
    assert [s["codec_name"] for s in probe(mp4)["streams"]] == ["h264", "aac"]
    assert frames(mp4) == frames(flv) > 0
    assert abs(float(probe(mp4)["format"]["duration"]) - 3.0) < 0.2
    # A file that is no media: the FLV is saved and verified, the MP4 is a clear failure.
    cli.put("notes.flv", b"not a video at all" * 100)
    code, out, err = await cli.run("notes.flv", "-o", str(cli.out), "--mp4")
    assert code == 1 and "xp2p download: cannot remux notes.flv to MP4:" in err, err
    assert (cli.out / "notes.flv").exists() and not (cli.out / "notes.mp4").exists()
    assert leftovers(cli.out) == []


def probe(path: Path) -> dict[str, Any]:
    argv = [FFPROBE or "ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json"]
    done = subprocess.run([*argv, str(path)], capture_output=True, text=True, timeout=30)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def frames(path: Path) -> int:
    argv = [FFPROBE or "ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0"]
    argv += ["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    return int(done.stdout.strip())


@pytest.mark.timeout(120)
async def test_interrupted_then_resumed(cli: Cli) -> None:
    data = os.urandom(24 * MB)
    digest = cli.put("big.bin", data)
    target = cli.out / "big.bin"
    part = cli.out / "big.bin.part"
    proc = await cli.start("big.bin", "-o", str(target))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not (part.exists() and part.stat().st_size >= 2 * MB):
        assert loop.time() < deadline and proc.returncode is None, "no partial appeared"
        await asyncio.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1, err.decode()
    assert "interrupted; run the same command again to resume" in err.decode()
    kept = part.stat().st_size
    assert 0 < kept < len(data) and not target.exists()
    assert part.read_bytes() == data[:kept]  # what was kept is exactly the file's start
    note = json.loads((cli.out / "big.bin.part.json").read_text())
    assert note == {
        "source": {"device": "DEMO/cam1", "channel": 0, "file": "big.bin"},
        "sha256": digest,
        "size": len(data),
    }

    code, _, err2 = await cli.run("big.bin", "-o", str(target))
    assert code == 0, err2
    assert f"resuming {part} at byte {kept}" in err2
    assert hashlib.sha256(target.read_bytes()).hexdigest() == digest
    assert leftovers(cli.out) == []


@pytest.mark.timeout(90)
async def test_foreign_partial_is_continued_or_restarted(cli: Cli) -> None:
    data = os.urandom(2 * MB)
    digest = cli.put("clip.flv", data)
    target = cli.out / "clip.flv"
    # A partial PATH from elsewhere (no .part): continued from its size.
    target.write_bytes(data[:777_777])
    code, _, err = await cli.run("clip.flv", "-o", str(target))
    assert code == 0, err
    assert f"resuming {target} at byte 777777" in err
    assert hashlib.sha256(target.read_bytes()).hexdigest() == digest
    # Longer than the device's file: the device refuses the offset, and it starts over.
    target.write_bytes(data + b"trailing junk")
    code, _, err = await cli.run("clip.flv", "-o", str(target))
    assert code == 0, err
    assert "starting over" in err
    assert hashlib.sha256(target.read_bytes()).hexdigest() == digest
    assert leftovers(cli.out) == []


@pytest.mark.timeout(90)
async def test_device_file_changed_since_the_partial(cli: Cli) -> None:
    old = os.urandom(MB)
    old_digest = hashlib.sha256(old).hexdigest()
    new = os.urandom(2 * MB)
    digest = cli.put("clip.flv", new)
    part = cli.out / "clip.flv.part"
    part.write_bytes(old[:500_000])
    source = {"device": "DEMO/cam1", "channel": 0, "file": "clip.flv"}
    note = {"source": source, "sha256": old_digest, "size": len(old)}
    (cli.out / "clip.flv.part.json").write_text(json.dumps(note))
    code, _, err = await cli.run("clip.flv", "-o", str(cli.out))
    assert code == 0, err
    assert "the device's file changed since the partial download began; starting over" in err
    assert hashlib.sha256((cli.out / "clip.flv").read_bytes()).hexdigest() == digest
    assert leftovers(cli.out) == []


@pytest.mark.timeout(90)
async def test_corrupt_partial_fails_the_check_and_is_deleted(cli: Cli) -> None:
    data = os.urandom(2 * MB)
    digest = cli.put("clip.flv", data)
    part = cli.out / "clip.flv.part"
    bad = bytearray(data[:MB])
    bad[1234] ^= 0xFF  # one flipped byte in what was "already downloaded"
    part.write_bytes(bytes(bad))
    source = {"device": "DEMO/cam1", "channel": 0, "file": "clip.flv"}
    note = {"source": source, "sha256": digest, "size": len(data)}
    (cli.out / "clip.flv.part.json").write_text(json.dumps(note))
    code, out, err = await cli.run("clip.flv", "-o", str(cli.out))
    assert code == 1
    assert out == ""
    assert f"sha256 mismatch: got {hashlib.sha256(bytes(bad) + data[MB:]).hexdigest()}" in err
    assert f"the device says {digest}; deleted {part}" in err
    assert list(cli.out.iterdir()) == []
    code, _, err = await cli.run("clip.flv", "-o", str(cli.out))  # a clean retry works
    assert code == 0, err
    assert hashlib.sha256((cli.out / "clip.flv").read_bytes()).hexdigest() == digest


@pytest.mark.timeout(90)
async def test_refusals_exit_1_and_leave_nothing(cli: Cli) -> None:
    code, out, err = await cli.run("nope.flv", "-o", str(cli.out))
    assert (code, out) == (1, "")
    assert "xp2p download: the device refused (404): no such file: nope.flv" in err
    code, out, err = await cli.run("../etc/passwd", "-o", str(cli.out))
    assert (code, out) == (1, "")
    assert "the device refused (400): bad file name" in err
    code, out, err = await cli.run("x.flv", "-o", str(cli.out), "--channel", "3")
    assert (code, out) == (1, "")
    assert "the device refused (404): no channel 3" in err
    cli.put("x.flv", b"x" * 1000)
    nowhere = cli.out / "missing" / "x.flv"
    code, out, err = await cli.run("x.flv", "-o", str(nowhere))
    assert (code, out) == (1, "")
    assert f"xp2p download: cannot write {nowhere}.part: [Errno 2] No such file" in err
    assert list(cli.out.iterdir()) == []


async def test_help_and_missing_secret() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "xp2p", "download", "--help", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    text = out.decode()
    for words in ("PRODUCT/DEVICE", "FILE", "--output", "--channel", "Resuming", "sha256"):
        assert words in text
    env = {k: v for k, v in os.environ.items() if k != "XP2P_APP_SECRET"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "xp2p",
        "download",
        "DEMO/cam1",
        "x.flv",
        "--app-key",
        "k",
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 1
    assert "no app secret: set XP2P_APP_SECRET or pass --secret-file" in err.decode()


def test_progress_on_a_terminal_and_as_lines() -> None:
    import io

    from xp2p.cli.download import ProgressDisplay

    lines = io.StringIO()
    plain = ProgressDisplay(lines, tty=False)
    plain(500_000, 0)  # kept so far, before the device answered: nothing to show yet
    assert lines.getvalue() == ""
    plain(500_000, 2_000_000)  # the answer: the first line shows at once
    plain.started -= 2.0  # two seconds in
    plain(1_500_000, 2_000_000)  # too soon after the last line: not written
    plain.finish()
    written = lines.getvalue().splitlines()
    assert len(written) == 2 and "\r" not in lines.getvalue()
    assert written[1] == " 75.0%  1.5 MB / 2.0 MB  500.0 kB/s  ETA 0:01"
    empty = io.StringIO()
    nothing = ProgressDisplay(empty, tty=False)
    nothing(0, 0)
    nothing.finish()
    assert empty.getvalue() == "100.0%  0 B / 0 B  0 B/s  ETA --:--\n"

    tty = io.StringIO()
    bar = ProgressDisplay(tty, tty=True)
    bar(0, 2_000_000)
    bar(1_000_000, 2_000_000)
    bar(2_000_000, 2_000_000)
    bar.finish()
    drawn = tty.getvalue()
    assert "\r" in drawn and "2.0/2.0 MB" in drawn and "100%" in drawn
