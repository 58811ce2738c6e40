"""Talk-back audio with PyAV: PCM s16le in and out, AAC in FLV audio tags.

Talk-back travels either as raw PCM (signed 16-bit little-endian, interleaved; 8 kHz mono by
default, docs/protocol.md §9) or as FLV with AAC audio tags. ``AacEncoder`` and ``AacDecoder``
are sans-IO (bytes and tags in, tags and bytes out); they do blocking FFmpeg work, so asyncio
callers run them on a worker thread, one call at a time. ``tone_pcm`` and ``file_pcm`` turn
FFmpeg's sine source or any file FFmpeg reads into PCM of the format asked for.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import av

from xp2p.flv import FlvHeader, FlvTag, SoundFormat, TagType

#: FLV's first audio byte for AAC is always 0xAF (the rate/size/channel bits are fixed for
#: AAC; the real ones are in the AudioSpecificConfig).
AAC_FLAGS = (SoundFormat.AAC << 4) | 0x0F
AAC_SEQUENCE_HEADER = 0
AAC_RAW = 1
#: Samples per AAC-LC frame.
AAC_FRAME_SAMPLES = 1024


class AudioError(ValueError):
    """Audio that cannot be used: a non-AAC tag, a frame before its config, undecodable data."""


@dataclass(frozen=True, slots=True)
class PcmFormat:
    """Raw PCM: signed 16-bit little-endian samples, channels interleaved."""

    sample_rate: int = 8000
    channels: int = 1

    def __post_init__(self) -> None:
        if not 8000 <= self.sample_rate <= 48000:
            raise ValueError(f"sample rate must be 8000-48000 Hz, not {self.sample_rate}")
        if self.channels not in (1, 2):
            raise ValueError(f"channels must be 1 or 2, not {self.channels}")

    @property
    def layout(self) -> str:
        return "mono" if self.channels == 1 else "stereo"

    @property
    def frame_bytes(self) -> int:
        """Bytes of one sample on every channel."""
        return 2 * self.channels

    @property
    def bytes_per_second(self) -> int:
        return self.sample_rate * self.frame_bytes

    def seconds(self, nbytes: int) -> float:
        return nbytes / self.bytes_per_second

    def __str__(self) -> str:
        return f"{self.sample_rate} Hz {self.layout}"


TALK_FORMAT = PcmFormat()  #: docs/protocol.md §9's default: 8 kHz mono


def _pcm_frame(pcm: bytes, fmt: PcmFormat) -> Any:
    samples = len(pcm) // fmt.frame_bytes
    frame = av.AudioFrame(format="s16", layout=fmt.layout, samples=samples, align=1)
    frame.planes[0].update(pcm[: samples * fmt.frame_bytes])
    frame.sample_rate = fmt.sample_rate
    return frame


def _frame_bytes(frame: Any) -> bytes:
    """PCM of a packed s16 frame (the plane may carry alignment padding past the samples)."""
    size = frame.samples * 2 * frame.layout.nb_channels
    return bytes(frame.planes[0])[:size]


class _ToPcm:
    """Any decoded audio frame to PCM s16le of one format."""

    def __init__(self, fmt: PcmFormat) -> None:
        self._resampler = av.AudioResampler(format="s16", layout=fmt.layout, rate=fmt.sample_rate)

    def convert(self, frame: Any) -> bytes:
        return b"".join(_frame_bytes(out) for out in self._resampler.resample(frame))

    def flush(self) -> bytes:
        return b"".join(_frame_bytes(out) for out in self._resampler.resample(None))


def tone_pcm(hz: float, seconds: float, fmt: PcmFormat = TALK_FORMAT) -> bytes:
    """A sine tone from FFmpeg's ``sine`` source (amplitude 1/8 of full scale) as PCM."""
    if hz <= 0 or seconds <= 0:
        raise ValueError("frequency and duration must be positive")
    graph = f"sine=frequency={hz:g}:sample_rate={fmt.sample_rate}:duration={seconds:g}"
    convert = _ToPcm(fmt)
    with av.open(graph, format="lavfi") as source:
        out = [convert.convert(frame) for frame in source.decode(audio=0)]
    out.append(convert.flush())
    return b"".join(out)


def file_pcm(path: str, fmt: PcmFormat = TALK_FORMAT) -> Iterator[bytes]:
    """Decode the first audio stream of anything FFmpeg reads, resampled to ``fmt``."""
    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError) as exc:
        raise AudioError(f"cannot open {path}: {exc}") from exc
    with container:
        if not container.streams.audio:
            raise AudioError(f"{path} has no audio stream")
        convert = _ToPcm(fmt)
        try:
            for frame in container.decode(audio=0):
                if pcm := convert.convert(frame):
                    yield pcm
        except av.error.FFmpegError as exc:
            raise AudioError(f"cannot decode {path}: {exc}") from exc
        if tail := convert.flush():
            yield tail


class AacEncoder:
    """PCM s16le in, AAC-LC FLV audio tags out (FFmpeg's native AAC encoder).

    The first tags of a stream are ``header_bytes()``: the FLV header (audio only) and the
    AAC sequence header. Tag timestamps count encoded frames, so they start at 0 and rise by
    exactly one frame's duration, whatever the input chunking.
    """

    def __init__(self, fmt: PcmFormat = TALK_FORMAT, bit_rate: int = 24_000) -> None:
        self.format = fmt
        context = av.CodecContext.create("aac", "w")
        context.sample_rate = fmt.sample_rate
        context.layout = fmt.layout
        context.format = "fltp"
        context.bit_rate = bit_rate
        context.open()
        self._context = context
        # The encoder wants whole 1024-sample planar float frames; the resampler cuts them.
        self._resampler = av.AudioResampler(
            format="fltp", layout=fmt.layout, rate=fmt.sample_rate, frame_size=AAC_FRAME_SAMPLES
        )
        self._pending = b""  # a partial sample left over from the last chunk
        self._frames = 0
        config = context.extradata
        if not config:
            raise AudioError("the AAC encoder gave no AudioSpecificConfig")
        self.sequence_header = FlvTag(
            TagType.AUDIO, 0, bytes((AAC_FLAGS, AAC_SEQUENCE_HEADER)) + bytes(config)
        )

    def header_bytes(self) -> bytes:
        return FlvHeader(has_audio=True, has_video=False).encode() + self.sequence_header.encode()

    def encode(self, pcm: bytes) -> list[FlvTag]:
        data = self._pending + pcm
        whole = len(data) - len(data) % self.format.frame_bytes
        self._pending = data[whole:]
        if not whole:
            return []
        return self._tags(self._resampler.resample(_pcm_frame(data[:whole], self.format)))

    def flush(self) -> list[FlvTag]:
        """The last frames (the final one padded with silence) and the encoder's tail."""
        tags = self._tags(self._resampler.resample(None))
        return tags + self._packets_to_tags(self._context.encode(None))

    def _tags(self, frames: list[Any]) -> list[FlvTag]:
        tags: list[FlvTag] = []
        for frame in frames:
            frame.pts = None  # the encoder numbers its own packets; we time tags by count
            tags += self._packets_to_tags(self._context.encode(frame))
        return tags

    def _packets_to_tags(self, packets: list[Any]) -> list[FlvTag]:
        tags = []
        for packet in packets:
            ms = self._frames * AAC_FRAME_SAMPLES * 1000 // self.format.sample_rate
            self._frames += 1
            tags.append(FlvTag(TagType.AUDIO, ms, bytes((AAC_FLAGS, AAC_RAW)) + bytes(packet)))
        return tags


def encode_aac_flv(pcm: bytes, fmt: PcmFormat = TALK_FORMAT, bit_rate: int = 24_000) -> bytes:
    """A whole audio-only FLV stream of ``pcm`` (header, sequence header, every frame)."""
    encoder = AacEncoder(fmt, bit_rate)
    tags = encoder.encode(pcm) + encoder.flush()
    return encoder.header_bytes() + b"".join(tag.encode() for tag in tags)


class AacDecoder:
    """FLV audio tags in, PCM s16le out, at the rate and channels of the stream's config.

    ``format`` is None until the first frame has been decoded. Errors (a tag that is not
    AAC, a frame before the sequence header, data FFmpeg cannot decode) raise AudioError.
    """

    def __init__(self) -> None:
        self._context: Any = None
        self._to_pcm: _ToPcm | None = None
        self.format: PcmFormat | None = None

    def decode(self, tag: FlvTag) -> bytes:
        if not tag.is_audio:
            return b""
        if tag.sound_format != SoundFormat.AAC:
            raise AudioError(f"audio tag with sound format {tag.sound_format}, expected AAC (10)")
        if len(tag.data) < 2:
            raise AudioError("AAC tag without a packet type")
        if tag.data[1] == AAC_SEQUENCE_HEADER:
            self._configure(tag.data[2:])
            return b""
        if tag.data[1] != AAC_RAW:
            raise AudioError(f"unknown AAC packet type {tag.data[1]}")
        if self._context is None:
            raise AudioError("AAC frame before the AAC sequence header")
        try:
            frames = self._context.decode(av.Packet(tag.data[2:]))
        except (av.error.FFmpegError, ValueError) as exc:
            raise AudioError(f"undecodable AAC frame at {tag.timestamp} ms: {exc}") from exc
        return b"".join(self._convert(frame) for frame in frames)

    def _convert(self, frame: Any) -> bytes:
        # FFmpeg knows the output rate only once it has decoded a frame (HE-AAC doubles it).
        if self._to_pcm is None:
            try:
                self.format = PcmFormat(frame.sample_rate, frame.layout.nb_channels)
            except ValueError as exc:
                raise AudioError(f"unsupported talk-back audio: {exc}") from exc
            self._to_pcm = _ToPcm(self.format)
        return self._to_pcm.convert(frame)

    def _configure(self, config: bytes) -> None:
        if self._context is not None:
            return  # a repeated sequence header (a pusher restarting) changes nothing
        if not 2 <= len(config) <= 64:
            raise AudioError(f"AAC sequence header of {len(config)} bytes")
        context = av.CodecContext.create("aac", "r")
        context.extradata = config
        try:
            context.open()  # checks the AudioSpecificConfig
        except (av.error.FFmpegError, NotImplementedError) as exc:
            raise AudioError(f"unusable AAC config {config.hex()}: {exc}") from exc
        self._context = context
