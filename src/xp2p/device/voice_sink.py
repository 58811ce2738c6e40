"""Where talk-back audio goes on the device: the sink interface and the default sinks.

A device maker sets ``DeviceConfig.voice_sink`` to a factory ``(channel, sample_rate,
channels) -> VoiceSink``; the device calls it once per talk session, when the audio format is
known, then ``write(pcm)`` with PCM s16le (whole samples, channels interleaved) and ``close()``
at the end, however the session ended. Both are plain calls on the event loop: a sink that
needs slow I/O hands it to a task or a thread itself, as ``PlayerPipe`` does.

The default (``VoiceFiles``) writes one WAV file per session and may also pipe the PCM to a
player command such as ``aplay`` or ``ffplay``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from xp2p.tasks import TaskSet

logger = logging.getLogger("xp2p.device")

#: PCM the player may fall behind by before we drop audio (it is live speech: late is useless).
PLAYER_QUEUE_BYTES = 256 * 1024
#: How long a player may take to finish after its stdin closed, before it is killed.
PLAYER_EXIT_TIMEOUT = 5.0

#: e.g. ``("aplay", "-q", "-t", "raw", "-f", "S16_LE", "-r", "{rate}", "-c", "{channels}")``
#: or ``("ffplay", "-nodisp", "-autoexit", "-f", "s16le", "-ar", "{rate}",
#: "-ch_layout", "{layout}", "-")``: ``{rate}``, ``{channels}`` and ``{layout}`` are filled in.
PlayerCommand = Sequence[str]


class VoiceSink(Protocol):
    def write(self, pcm: bytes) -> None: ...

    def close(self) -> None: ...


#: ``(channel, sample_rate, channels) -> VoiceSink``; called once per talk session.
VoiceSinkFactory = Callable[[int, int, int], VoiceSink]

#: The players' feeding tasks, process-wide: a PlayerPipe is made by a sink factory, which
#: has no device to hand them to; ``wait_players`` lets them finish at shutdown.
_players = TaskSet("voice")


class WavSink:
    """One WAV file (PCM s16le) per session; the header is completed on ``close``."""

    def __init__(self, path: Path, sample_rate: int, channels: int) -> None:
        self.path = path
        self._wav = wave.open(str(path), "wb")  # stays open for the session; close() ends it
        self._wav.setnchannels(channels)
        self._wav.setsampwidth(2)
        self._wav.setframerate(sample_rate)
        self._closed = False

    def write(self, pcm: bytes) -> None:
        if not self._closed:
            self._wav.writeframes(pcm)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._wav.close()


class PlayerPipe:
    """Feeds PCM to a player's stdin from a task; a player that will not start, dies or falls
    more than ``PLAYER_QUEUE_BYTES`` behind costs audio, never the session."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._queued = 0
        self._broken = False
        self.dropped = 0
        _players.spawn(self._run(), "player")

    def write(self, pcm: bytes) -> None:
        if self._broken:
            return
        if self._queued + len(pcm) > PLAYER_QUEUE_BYTES:
            if not self.dropped:
                logger.warning("talk-back player %s falls behind: dropping audio", self.argv[0])
            self.dropped += len(pcm)
            return
        self._queued += len(pcm)
        self._queue.put_nowait(pcm)

    def close(self) -> None:
        self._queue.put_nowait(None)

    async def _run(self) -> None:
        try:
            process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        except OSError as exc:
            self._broken = True
            logger.warning("cannot start talk-back player %s: %s", self.argv[0], exc)
            return
        assert process.stdin is not None
        try:
            while (pcm := await self._queue.get()) is not None:
                self._queued -= len(pcm)
                process.stdin.write(pcm)
                await process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            self._broken = True
            logger.warning("talk-back player %s exited early", self.argv[0])
        finally:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), PLAYER_EXIT_TIMEOUT)
            except (TimeoutError, asyncio.CancelledError):
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()


async def wait_players(timeout: float = PLAYER_EXIT_TIMEOUT + 1) -> None:
    """Let players finish the audio they were given (device shutdown)."""
    await _players.wait(timeout)


class _Tee:
    def __init__(self, sinks: list[VoiceSink]) -> None:
        self._sinks = sinks

    def write(self, pcm: bytes) -> None:
        for sink in self._sinks:
            sink.write(pcm)

    def close(self) -> None:
        for sink in self._sinks:
            sink.close()


class DiscardSink:
    """What a device with nowhere to put talk-back uses: it counts the audio and drops it."""

    def __init__(self) -> None:
        self.received = 0

    def write(self, pcm: bytes) -> None:
        self.received += len(pcm)

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class VoiceFiles:
    """The default sink factory: a WAV file per session in ``folder`` (None: no file), named
    ``voice-ch<N>-<local time>.wav``, and the PCM piped to ``player`` if given.

    The folder has its own retention, applied when a session opens (the recorder's does not
    look in it): only the newest ``keep`` files stay, none older than ``max_age`` seconds,
    and the oldest go until the rest plus ``session_bytes`` (room for the session opening,
    whose size the device caps) fit in ``max_bytes``. The device's default sink sets these
    from ``DeviceConfig`` (``voice_retention_bytes``, ``voice_max_bytes``, ``retention_days``).
    """

    folder: Path | None
    player: PlayerCommand | None = None
    keep: int = 100
    max_bytes: int | None = None
    session_bytes: int = 0
    max_age: float | None = None

    def __call__(self, channel: int, sample_rate: int, channels: int) -> VoiceSink:
        sinks: list[VoiceSink] = []
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._prune()
            sinks.append(WavSink(self._new_path(channel), sample_rate, channels))
        if self.player:
            fields = {
                "rate": sample_rate,
                "channels": channels,
                "layout": "mono" if channels == 1 else "stereo",
            }
            sinks.append(PlayerPipe([part.format(**fields) for part in self.player]))
        if not sinks:
            return DiscardSink()
        return sinks[0] if len(sinks) == 1 else _Tee(sinks)

    def _prune(self) -> None:
        assert self.folder is not None
        # Names sort by time within a channel; mtime orders across channels.
        stats = []
        for path in self.folder.glob("voice-ch*.wav"):
            with contextlib.suppress(OSError):
                stats.append((path, path.stat()))
        stats.sort(key=lambda item: item[1].st_mtime)
        now = time.time()
        total = sum(st.st_size for _p, st in stats)
        budget = None if self.max_bytes is None else self.max_bytes - self.session_bytes
        for index, (path, st) in enumerate(stats):
            too_many = len(stats) - index > self.keep - 1
            too_old = self.max_age is not None and now - st.st_mtime > self.max_age
            too_big = budget is not None and total > budget
            if not (too_many or too_old or too_big):
                break  # oldest first: the rest are newer, and fit
            path.unlink(missing_ok=True)
            total -= st.st_size

    def _new_path(self, channel: int) -> Path:
        assert self.folder is not None
        now = time.time()
        stamp = (
            time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + f"-{int(now * 1000) % 1000:03d}"
        )
        path = self.folder / f"voice-ch{channel}-{stamp}.wav"
        n = 1
        while path.exists():
            n += 1
            path = self.folder / f"voice-ch{channel}-{stamp}-{n}.wav"
        return path
