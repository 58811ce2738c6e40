"""A synthetic camera: FFmpeg's testsrc2 pattern and a sine tone, encoded live to FLV."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import av
from av.video.frame import PictureType

from xp2p.flv import FlvHeader, FlvTag, encode_tags

from .muxer import FlvCapture
from .source import MediaError, ThreadedSource

_ENCODERS = {
    "h264": ("libx264", "x264-params", "H.264"),
    "hevc": ("libx265", "x265-params", "H.265"),
}


@dataclass(frozen=True)
class TestPatternConfig:
    __test__ = False  # not a pytest test class despite the name

    width: int = 640
    height: int = 360
    fps: int = 25
    bitrate: int = 800_000  # bit/s
    gop: int = 50  # frames between keyframes
    audio: bool = True
    tone_hz: float = 440.0
    sample_rate: int = 44100
    codec: str = "h264"  # or "hevc", sent as FLV codec id 12

    def __post_init__(self) -> None:
        if self.codec not in _ENCODERS:
            raise ValueError(f"codec must be one of {sorted(_ENCODERS)}, not {self.codec!r}")
        if self.width <= 0 or self.height <= 0 or self.width % 2 or self.height % 2:
            raise ValueError("width and height must be positive and even (4:2:0 chroma)")
        if self.fps <= 0 or self.gop <= 0 or self.bitrate <= 0 or self.sample_rate <= 0:
            raise ValueError("fps, gop, bitrate and sample_rate must be positive")

    @property
    def description(self) -> str:
        video = (
            f"test pattern {self.width}x{self.height}@{self.fps} "
            f"{_ENCODERS[self.codec][2]} {self.bitrate // 1000} kbit/s"
        )
        return f"{video} + AAC {self.tone_hz:g} Hz" if self.audio else video


DEFAULT_CONFIG = TestPatternConfig()


def _filter_graph(config: TestPatternConfig, seconds: float | None) -> str:
    # testsrc2 draws a moving pattern and a running frame counter, so a frozen picture is
    # visible at a glance; it is generated per frame, so memory stays flat for hours.
    limit = "" if seconds is None else f":d={seconds}"
    graph = (
        f"testsrc2=size={config.width}x{config.height}:rate={config.fps}{limit},"
        "format=yuv420p[out0]"
    )
    if config.audio:
        graph += (
            f";sine=frequency={config.tone_hz}:sample_rate={config.sample_rate}"
            f":samples_per_frame=1024{limit}[out1]"
        )
    return graph


def _add_video_stream(container: Any, config: TestPatternConfig) -> Any:
    encoder, params_option, _ = _ENCODERS[config.codec]
    gop = config.gop
    # Fixed GOP (no scene-cut keyframes) and no B-frames: chunk boundaries and first-frame
    # latency stay predictable, and dts == pts, as a camera's encoder would give.
    params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0"
    if config.codec == "hevc":
        params += ":log-level=error"
    stream = container.add_stream(
        encoder,
        rate=config.fps,
        # forced-idr: a frame the caller marks I (request_keyframe) becomes an IDR, which a
        # decoder can start from, not just an intra frame.
        options={
            "preset": "ultrafast",
            "tune": "zerolatency",
            "forced-idr": "1",
            params_option: params,
        },
    )
    stream.width = config.width
    stream.height = config.height
    stream.pix_fmt = "yuv420p"
    stream.bit_rate = config.bitrate
    stream.codec_context.gop_size = gop
    return stream


def pattern_items(
    config: TestPatternConfig,
    seconds: float | None = None,
    keyframe_requests: threading.Event | None = None,
) -> Iterator[FlvHeader | FlvTag]:
    """Encode the pattern (forever if ``seconds`` is None) and yield the FLV items, unpaced.

    Setting ``keyframe_requests`` (from any thread) makes the next video frame an IDR."""
    try:
        source = av.open(_filter_graph(config, seconds), format="lavfi")
    except (av.error.FFmpegError, ValueError) as exc:
        raise MediaError(f"cannot start {config.description}: {exc}") from exc
    capture = FlvCapture()
    try:
        video = _add_video_stream(capture.container, config)
        encoders = {source.streams.video[0].index: video}
        if config.audio:
            audio = capture.container.add_stream("aac", rate=config.sample_rate, layout="mono")
            audio.bit_rate = 64_000
            encoders[source.streams.audio[0].index] = audio
        for packet in source.demux():
            encoder = encoders[packet.stream.index]
            for frame in packet.decode():
                if isinstance(frame, av.VideoFrame):
                    # lavfi marks every raw frame as I; x264/x265 would obey and send
                    # nothing but keyframes. Let the encoder's GOP decide, unless asked.
                    frame.pict_type = PictureType.NONE
                    if keyframe_requests is not None and keyframe_requests.is_set():
                        keyframe_requests.clear()
                        frame.pict_type = PictureType.I
                for out_packet in encoder.encode(frame):
                    yield from capture.mux(out_packet)
        for encoder in encoders.values():
            for out_packet in encoder.encode(None):
                yield from capture.mux(out_packet)
        yield from capture.close()
    finally:
        capture.abort()
        source.close()


def make_test_flv(seconds: float, config: TestPatternConfig = DEFAULT_CONFIG) -> bytes:
    """A whole FLV file of the pattern, encoded as fast as the CPU allows."""
    if seconds <= 0:
        raise ValueError("seconds must be positive")
    header = FlvHeader()
    tags: list[FlvTag] = []
    for item in pattern_items(config, seconds):
        if isinstance(item, FlvHeader):
            header = item
        else:
            tags.append(item)
    return encode_tags(header, tags)


class TestPatternSource(ThreadedSource):
    """The pattern, endless and paced in real time."""

    __test__ = False

    def __init__(self, config: TestPatternConfig = DEFAULT_CONFIG, *, queue_size: int = 64) -> None:
        self.config = config
        super().__init__(
            FlvHeader(has_audio=self.config.audio, has_video=True),
            self.config.description,
            queue_size=queue_size,
        )
        self._keyframe_requests = threading.Event()

    def request_keyframe(self) -> None:
        # The worker may run up to ``queue_size`` tags ahead of playback, so the IDR reaches
        # viewers after what is already queued (well under a second at the defaults).
        self._keyframe_requests.set()

    def _produce(self) -> Iterator[FlvHeader | FlvTag]:
        return pattern_items(self.config, keyframe_requests=self._keyframe_requests)
