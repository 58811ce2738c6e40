"""Files and network streams remuxed to FLV without re-encoding."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from fractions import Fraction
from typing import Any

import av

from xp2p.flv import FlvHeader, FlvTag

from .muxer import FlvCapture
from .source import MediaError, ThreadedSource, redact_url, scrub

_DEFAULT_FRAME_GAP = Fraction(1, 25)


def _frame_gap(stream: Any) -> Fraction:
    """Duration to assume for a packet that carries none (some FLV and RTSP inputs)."""
    if stream.type == "video":
        rate = stream.average_rate or stream.guessed_rate
        if rate:
            return 1 / Fraction(rate)
    elif stream.type == "audio":
        ctx = stream.codec_context
        if ctx.sample_rate and ctx.frame_size:
            return Fraction(ctx.frame_size, ctx.sample_rate)
    return _DEFAULT_FRAME_GAP


def _presentation_span(packet: Any, gap: Fraction) -> tuple[Fraction, Fraction]:
    """When the packet is shown and when it stops being shown, in seconds.

    Loops are spliced on presentation time, not decode time: with B-frames the first dts is
    below the first pts, and splicing on it would leave a hole of the reorder delay.
    """
    pts = packet.pts if packet.pts is not None else packet.dts
    start = pts * packet.time_base
    duration = packet.duration * packet.time_base if packet.duration else gap
    return start, start + duration


def _select_streams(container: Any, name: str) -> list[Any]:
    # FLV carries one video and one audio track; the first of each is what players show.
    selected = [*container.streams.video[:1], *container.streams.audio[:1]]
    if not selected:
        raise MediaError(f"{name} has no audio or video stream")
    return selected


def remux_items(
    open_input: Callable[[], Any], *, loop: bool = False, name: str = "input"
) -> Iterator[FlvHeader | FlvTag]:
    """Demux ``open_input()`` and mux to FLV, unpaced; with ``loop``, reopen it at its end.

    Each pass is shifted by the media duration of the passes before it (from the first
    presentation time to the end of the last frame shown), so timestamps keep rising across
    loops and the one FLV muxer sees a single continuous stream: no second header, no jump
    back.
    """
    capture = FlvCapture()
    outputs: dict[int, Any] = {}
    shift = Fraction(0)  # seconds added to this pass
    try:
        while True:
            source = open_input()
            try:
                selected = _select_streams(source, name)
                if not outputs:
                    for stream in selected:
                        outputs[stream.index] = capture.container.add_stream_from_template(stream)
                elif sorted(s.index for s in selected) != sorted(outputs):
                    raise MediaError(f"{name}: streams changed between loops")
                gaps = {s.index: _frame_gap(s) for s in selected}
                first: Fraction | None = None
                end: Fraction | None = None
                for packet in source.demux(selected):
                    if packet.dts is None and packet.pts is None:
                        continue  # the demuxer's end-of-stream marker
                    time_base = packet.time_base
                    start, stop = _presentation_span(packet, gaps[packet.stream.index])
                    first = start if first is None else min(first, start)
                    end = stop if end is None else max(end, stop)
                    offset = round(shift / time_base)
                    if offset:
                        if packet.pts is not None:
                            packet.pts += offset
                        if packet.dts is not None:
                            packet.dts += offset
                    stream_index = packet.stream.index
                    packet.stream = outputs[stream_index]
                    yield from capture.mux(packet)
            finally:
                source.close()
            if not loop:
                break
            if first is None or end is None or end <= first:
                raise MediaError(f"cannot loop {name}: it has no timed packets")
            shift += end - first
        yield from capture.close()
    except (av.error.FFmpegError, OSError) as exc:
        raise MediaError(f"{name}: {exc}") from exc
    finally:
        capture.abort()


def _guess_header(path: str) -> FlvHeader:
    try:
        with av.open(path) as container:
            return FlvHeader(
                has_audio=bool(container.streams.audio), has_video=bool(container.streams.video)
            )
    except (av.error.FFmpegError, OSError) as exc:
        raise MediaError(f"cannot open {path}: {exc}") from exc


class FileSource(ThreadedSource):
    """An FLV or MP4 (anything FFmpeg demuxes into FLV-compatible codecs), looped by default.

    The file is probed in the constructor, so a missing or unreadable file fails at once.
    """

    def __init__(self, path: str | os.PathLike[str], loop: bool = True) -> None:
        self.path = os.fspath(path)
        self.loop = loop
        header = _guess_header(self.path)
        name = os.path.basename(self.path)
        super().__init__(header, f"file {name}" + (" (looped)" if loop else ""))

    def _produce(self) -> Iterator[FlvHeader | FlvTag]:
        return remux_items(lambda: av.open(self.path), loop=self.loop, name=self.path)


class UrlSource(ThreadedSource):
    """A network stream (rtsp://, rtmp://, http(s)://, srt://...) remuxed to FLV.

    ``open_timeout`` bounds connecting and probing; ``read_timeout`` bounds each read once
    playing, so a dead camera ends the stream with MediaError instead of hanging. RTSP
    defaults to TCP: interleaved RTP survives NATs and loss where UDP often does not.
    """

    def __init__(
        self,
        url: str,
        *,
        open_timeout: float = 10.0,
        read_timeout: float = 10.0,
        options: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url
        self.open_timeout = open_timeout
        self.read_timeout = read_timeout
        defaults = {"rtsp_transport": "tcp"} if url.lower().startswith("rtsp") else {}
        self.options = {**defaults, **(options or {})}
        # The join deadline covers a worker blocked in a read that is about to time out.
        self.join_timeout = max(1.0, read_timeout + 1.0)
        super().__init__(FlvHeader(), f"url {redact_url(url)}")

    def _open(self) -> Any:
        try:
            return av.open(
                self.url,
                options=self.options,
                timeout=(self.open_timeout, self.read_timeout),
            )
        except (av.error.FFmpegError, OSError) as exc:
            # FFmpeg's message may quote the URL, password included.
            # No chained cause: its text (and any traceback of it) quotes the full URL.
            message = scrub(str(exc), self.url)
            raise MediaError(f"cannot open {redact_url(self.url)}: {message}") from None

    def _produce(self) -> Iterator[FlvHeader | FlvTag]:
        # FFmpeg's read errors quote the URL too: every error leaves here scrubbed.
        try:
            yield from remux_items(self._open, name=redact_url(self.url))
        except MediaError as exc:
            raise MediaError(scrub(str(exc), self.url)) from None
        except Exception as exc:
            raise MediaError(f"{self.description}: {scrub(str(exc), self.url)}") from None


def remux_flv_to_mp4(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Write ``src`` (a recording's FLV) as MP4, streams copied, not re-encoded: what a phone
    saves to its gallery, which takes no FLV (the guide's FAQ 7.1).

    The MP4 is written to ``dst.part`` and renamed at the end, so ``dst`` is never a half
    file; ``+faststart`` puts the index first, so a player starts before the whole file.
    """
    dst = os.fspath(dst)
    part = dst + ".part"
    name = os.path.basename(os.fspath(src))
    try:
        with (
            av.open(os.fspath(src)) as source,
            av.open(part, "w", format="mp4", options={"movflags": "+faststart"}) as sink,
        ):
            selected = _select_streams(source, name)
            outputs = {s.index: sink.add_stream_from_template(s) for s in selected}
            for packet in source.demux(selected):
                if packet.dts is None and packet.pts is None:
                    continue  # the demuxer's end-of-stream marker
                packet.stream = outputs[packet.stream.index]
                sink.mux(packet)
        os.replace(part, dst)
    except (av.error.FFmpegError, OSError) as exc:
        with contextlib.suppress(OSError):
            os.unlink(part)
        raise MediaError(f"cannot remux {name} to MP4: {exc}") from exc
    except MediaError:
        with contextlib.suppress(OSError):
            os.unlink(part)
        raise
