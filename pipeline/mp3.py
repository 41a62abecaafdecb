"""MPEG audio at the frame level: check a part on arrival, make silence, join parts without re-encoding.

An MP3 file is a sequence of self-describing frames, each a fixed number of samples (``samples_per_frame``),
wrapped in optional tags. When every part of a chapter shares one stream format (MPEG version, layer, sample
rate, channel count), the chapter is just the parts' frames in order, with pauses made of silent frames of
the same format: no decoder, no second encode, nothing held but the part being copied. Durations are whole
frames, so every timing here is an exact sample count::

    info = check_part(body)                  # on arrival; NotAudio for a garbage 200, a truncated answer
    with open(tmp, "wb") as fh:
        writer = LosslessWriter(fh)
        writer.add_silence(500)
        span = writer.add_part(part)         # FormatMismatch: the caller falls back to the decode path
        result = writer.close()              # fills in the Xing/Info header: frame count, bytes, seek table

What a part may hold, and what is kept: ID3v2 tags in front (as many as there are) and ID3v1, APEv2,
Lyrics3v2 tags or zero bytes at the end are skipped; a Xing/Info/VBRI header frame is dropped (it describes
the part, not the chapter), its LAME encoder delay and padding are reported but the audio frames are copied
as they are, edges included (as ffmpeg's concat demuxer does). Anything else that is not a whole frame of
the stream is refused: leading junk is skipped only when at least four consistent frames follow it (so
stray ``0xFFE`` bytes in garbage are not taken for audio), and a last frame cut short by a dropped
connection is refused. A part that is one frame long is valid.

The joined file starts with its own Info (CBR) or Xing (VBR) frame, without a LAME extension: players then
count every frame, so the file plays for exactly ``frames * samples_per_frame`` samples, the sum the
writer reports.

``decoder_input`` makes any valid part, however short, ready for the one decoder (``assembly.decode``):
ffmpeg's MP3 demuxer wants two consecutive frames before it opens a stream (with or without ``-f mp3``), so
the part's frames go in with two silent frames after them, which are cut off again. Nothing here runs ffmpeg:
this module reads and writes frames only, so it is our own judge of whether a part is audio.
"""

from __future__ import annotations

import contextlib
import functools
import struct
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pipeline.errors import AudioError

__all__ = [
    "FormatMismatch",
    "Frames",
    "JoinResult",
    "LosslessWriter",
    "NotAudio",
    "PartInfo",
    "PartSpan",
    "Silence",
    "StreamFormat",
    "check_part",
    "DecoderInput",
    "decoder_input",
    "frames_for_ms",
    "join",
    "parse_frames",
    "silence",
    "silent_frame",
]


class NotAudio(AudioError):
    """The bytes are not a complete MPEG audio stream: no frames, garbage among them, or a truncated end.

    ``offset`` is the byte where the stream stops making sense, when there is one.
    """

    def __init__(self, message: str, *, offset: int | None = None):
        super().__init__(message)
        self.offset = offset


class FormatMismatch(AudioError):
    """A valid part that cannot join this chapter frame for frame (another format, or not Layer III).

    Nothing of it was written: the caller assembles the chapter through the decode path instead.
    """

    def __init__(self, message: str, *, expected: StreamFormat | None, found: StreamFormat):
        super().__init__(message)
        self.expected = expected
        self.found = found


# --------------------------------------------------------------------------------------------- headers

_VERSIONS = {0: "2.5", 2: "2", 3: "1"}  # header bits 20-19; 0b01 is reserved
_VERSION_BITS = {v: k for k, v in _VERSIONS.items()}
_LAYERS = {1: 3, 2: 2, 3: 1}  # header bits 18-17; 0b00 is reserved
_LAYER_BITS = {v: k for k, v in _LAYERS.items()}
_RATES = {"1": (44100, 48000, 32000), "2": (22050, 24000, 16000), "2.5": (11025, 12000, 8000)}
_LSF_II_III = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
_KBPS: dict[tuple[str, int], tuple[int, ...]] = {  # index 0 is free format, 15 is invalid
    ("1", 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    ("1", 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    ("1", 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    ("2", 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    ("2", 2): _LSF_II_III,
    ("2", 3): _LSF_II_III,
}
for _layer in (1, 2, 3):
    _KBPS[("2.5", _layer)] = _KBPS[("2", _layer)]

_SYNC = 0xFFE00000
_SAME_STREAM = 0xFFFE0C00  # sync, version, layer, sample rate: what may not change inside a stream
_STYLE = 0x000000CF  # channel mode, copyright, original, emphasis: copied from a part into our frames
_MONO = 3
_JOINT_STEREO = 1
_HEADER = struct.Struct(">I")
_MIN_CHAIN = 4  # consistent frames that must follow skipped junk before it counts as a stream start
_DECODER_DELAY = 529  # samples; ffmpeg's mp3 decoder (528 + 1), which its LAME-tag trimming assumes
_LAME_ENCODERS = (b"LAME", b"Lavf", b"Lavc")  # whose delay/padding ffmpeg honours (mp3dec.c)


@dataclass(frozen=True)
class StreamFormat:
    """What must match for frames to be joined: MPEG version ("1", "2", "2.5"), layer, rate, channels."""

    version: str
    layer: int
    sample_rate: int
    channels: int

    @property
    def samples_per_frame(self) -> int:
        if self.layer == 1:
            return 384
        if self.layer == 3 and self.version != "1":
            return 576
        return 1152

    def __str__(self) -> str:
        layout = "mono" if self.channels == 1 else "stereo"
        return (
            f"MPEG-{self.version} Layer {'I' * self.layer if self.layer < 3 else 'III'} {self.sample_rate} Hz {layout}"
        )


@dataclass(frozen=True, slots=True)
class _Header:
    value: int
    format: StreamFormat
    kbps: int
    length: int  # bytes, padding included
    crc: bool
    side_info: int  # bytes of Layer III side information (0 for layers I and II)

    @property
    def stream(self) -> int:
        """Equal for headers of one stream: version, layer, rate and mono-or-not."""
        return (self.value & _SAME_STREAM) | (self.format.channels == 1)


def _frame_length(version: str, layer: int, kbps: int, rate: int, padding: int) -> int:
    if layer == 1:
        return (12_000 * kbps // rate + padding) * 4
    if layer == 3 and version != "1":
        return 72_000 * kbps // rate + padding
    return 144_000 * kbps // rate + padding


def _side_info(version: str, layer: int, channels: int) -> int:
    if layer != 3:
        return 0
    if version == "1":
        return 17 if channels == 1 else 32
    return 9 if channels == 1 else 17


@functools.lru_cache(maxsize=4096)
def _header(value: int) -> _Header | None:
    """The decoded header, or None when ``value`` is not a usable frame header.

    Free format (bitrate index 0) is refused like the invalid index 15: its frame length is not in the
    header, and ffmpeg's decoder does not support it. Reserved versions, layers, rates and emphasis too.
    """
    if value & _SYNC != _SYNC:
        return None
    version = _VERSIONS.get((value >> 19) & 3)
    layer = _LAYERS.get((value >> 17) & 3)
    bitrate_index, rate_index = (value >> 12) & 15, (value >> 10) & 3
    if version is None or layer is None or bitrate_index in (0, 15) or rate_index == 3 or value & 3 == 2:
        return None
    rate = _RATES[version][rate_index]
    kbps = _KBPS[(version, layer)][bitrate_index]
    channels = 1 if (value >> 6) & 3 == _MONO else 2
    fmt = StreamFormat(version, layer, rate, channels)
    length = _frame_length(version, layer, kbps, rate, (value >> 9) & 1)
    return _Header(value, fmt, kbps, length, not (value >> 16) & 1, _side_info(version, layer, channels))


def _build_header(fmt: StreamFormat, kbps: int, style: int) -> int:
    try:
        bitrate_index = _KBPS[(fmt.version, fmt.layer)].index(kbps, 1)
        rate_index = _RATES[fmt.version].index(fmt.sample_rate)
        version_bits = _VERSION_BITS[fmt.version]
    except (KeyError, ValueError):
        raise ValueError(f"no {kbps} kbps frame exists for {fmt}") from None
    mode = style & 0xC0
    if (mode == 0xC0) != (fmt.channels == 1):  # the style's channel mode must say the format's channel count
        mode = 0xC0 if fmt.channels == 1 else _JOINT_STEREO << 6
    return (
        _SYNC
        | version_bits << 19
        | _LAYER_BITS[fmt.layer] << 17
        | 1 << 16  # no CRC
        | bitrate_index << 12
        | rate_index << 10
        | mode
        | (style & 0x0F)
    )


def _crc16(data: bytes) -> int:
    """The CRC of a protected frame: CRC-16 (polynomial 0x8005, initial 0xFFFF) of the header's last two
    bytes and the side information."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005 if crc & 0x8000 else crc << 1) & 0xFFFF
    return crc


def _silenced(frame: bytes, side_info: int) -> bytes:
    """``frame`` with all side information zero: it decodes to silence and takes nothing from the bit
    reservoir, but its payload stays, as the following frames may take their main data from it."""
    out = bytearray(frame)
    at = 4 if frame[1] & 1 else 6  # protection bit 0: a CRC sits between header and side information
    out[at : at + side_info] = bytes(side_info)
    if at == 6:
        out[4:6] = _crc16(bytes(out[2:4]) + bytes(side_info)).to_bytes(2, "big")
    return bytes(out)


# --------------------------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Frames:
    """The audio frames of one part, found by ``parse_frames``.

    ``offsets[i]`` is where frame ``i`` starts in the part's bytes; frames are contiguous, so frame ``i`` ends
    where ``i + 1`` starts and the last one at ``end``. A Xing/Info/VBRI header frame is not among them
    (``vbr_header`` names the one dropped). ``encoder_delay``/``encoder_padding`` come from a LAME tag written
    by LAME or ffmpeg, else None. ``orphans`` counts leading frames whose main data begins before the part's
    first frame (a stream cut out of a longer one): no decoder can decode them, and after another part they
    would decode that part's bytes as noise. The writer zeroes their side information, which makes them
    silent yet keeps their payload, where the following frames' main data may begin.
    """

    format: StreamFormat
    offsets: array[int]
    end: int
    bitrates: frozenset[int]  # kbps of the audio frames: one value means CBR
    first_header: int
    vbr_header: str | None = None
    encoder_delay: int | None = None
    encoder_padding: int | None = None
    orphans: int = 0
    junk: int = 0  # bytes skipped that were neither tags nor frames (leading junk, trailing zeros)

    @property
    def count(self) -> int:
        return len(self.offsets)

    @property
    def samples(self) -> int:
        return self.count * self.format.samples_per_frame

    @property
    def start(self) -> int:
        return self.offsets[0]

    def spans(self) -> Iterator[tuple[int, int]]:
        """(offset, length) of every audio frame, in order."""
        offsets = self.offsets
        for i in range(len(offsets) - 1):
            yield offsets[i], offsets[i + 1] - offsets[i]
        yield offsets[-1], self.end - offsets[-1]


def _syncsafe(raw: bytes) -> int | None:
    if any(b & 0x80 for b in raw):
        return None
    return raw[0] << 21 | raw[1] << 14 | raw[2] << 7 | raw[3]


def _skip_id3v2(data: bytes) -> int:
    """Where the bytes after the leading ID3v2 tags start (some writers stack several).

    The size field counts the tag as stored, after unsynchronisation, so it is skipped as is; a v2.4 footer
    adds ten bytes the size does not count.
    """
    pos = 0
    while data[pos : pos + 3] == b"ID3" and len(data) >= pos + 10:
        major, revision, flags = data[pos + 3], data[pos + 4], data[pos + 5]
        size = _syncsafe(data[pos + 6 : pos + 10])
        if major not in (2, 3, 4) or revision == 0xFF or size is None:
            break
        total = 10 + size + (10 if major == 4 and flags & 0x10 else 0)
        if pos + total > len(data):
            raise NotAudio(f"the ID3v2 tag at byte {pos} claims {total} bytes but only {len(data) - pos} remain "
                           "(truncated?)", offset=pos)  # fmt: skip
        pos += total
    return pos


def _tag_ends(data: bytes, start: int) -> list[int]:
    """Every place the audio may end: the end of the data, and before each trailing tag, outermost first.

    Recognised from the end (ID3v1 with TAG+, APEv2 or APEv1, Lyrics3v2, an appended ID3v2.4 with footer).
    The frame walk must stop exactly at one of them; the list, not one guess, keeps a coincidental "TAG"
    inside the last frame from cutting it short.
    """
    end = len(data)
    ends = [end]
    while end > start:
        if end - 128 >= start and data[end - 128 : end - 125] == b"TAG":
            end -= 128
            if end - 227 >= start and data[end - 227 : end - 223] == b"TAG+":
                end -= 227
        elif end - 32 >= start and data[end - 32 : end - 24] == b"APETAGEX":
            size = int.from_bytes(data[end - 20 : end - 16], "little")
            flags = int.from_bytes(data[end - 12 : end - 8], "little")
            total = size + (32 if flags & 0x80000000 else 0)  # size counts items and footer, not the header
            if size < 32 or end - total < start:
                break
            end -= total
        elif end - 15 >= start and data[end - 9 : end] == b"LYRICS200" and data[end - 15 : end - 9].isdigit():
            total = int(data[end - 15 : end - 9]) + 15
            if end - total < start or data[end - total : end - total + 11] != b"LYRICSBEGIN":
                break
            end -= total
        elif end - 10 >= start and data[end - 10 : end - 7] == b"3DI":
            footer = _syncsafe(data[end - 4 : end])
            if footer is None or end - footer - 20 < start:
                break
            end -= footer + 20
        else:
            break
        ends.append(end)
    return ends


def _chain(data: bytes, pos: int, ends: list[int], need: int) -> bool:
    """Whether ``need`` consistent whole frames run from ``pos``, or fewer that end exactly where audio may."""
    stream = None
    for n in range(need):
        if n and pos in ends:
            return True
        head = _header(_HEADER.unpack_from(data, pos)[0]) if pos + 4 <= len(data) else None
        if head is None or pos + head.length > len(data) or (stream is not None and head.stream != stream):
            return False
        stream = head.stream
        pos += head.length
    return True


def _sync(data: bytes, start: int, ends: list[int]) -> int:
    """Where the first frame is: ``start`` when a stream begins there, else the first place after junk that
    ``_MIN_CHAIN`` consistent frames follow (random bytes often hold ``0xFFE``; four chained headers, not)."""
    if _chain(data, start, ends, _MIN_CHAIN):
        return start
    pos = data.find(b"\xff", start + 1)
    while pos != -1:
        if _chain(data, pos, [], _MIN_CHAIN):  # no short chains after junk
            return pos
        pos = data.find(b"\xff", pos + 1)
    if start + 4 <= len(data):
        value = _HEADER.unpack_from(data, start)[0]
        if _header(value) is not None:
            return start  # a stream starts here but goes wrong: the walk says where and how
        if value & _SYNC == _SYNC and (value >> 12) & 15 == 0:
            raise NotAudio("free-format MPEG audio (no bitrate in the header) is not supported", offset=start)
    if start >= len(data):
        raise NotAudio("no MPEG audio frames: the data is empty or only tags")
    raise NotAudio(f"no MPEG audio frames in {len(data) - start} bytes (they start {data[start : start + 12]!r})")


def _vbr_header(data: bytes, head: _Header, pos: int) -> tuple[str, int | None, int | None] | None:
    """("Xing" | "Info" | "VBRI", encoder delay, padding) when the frame at ``pos`` is a VBR header frame."""
    if head.format.layer != 3:
        return None
    end = pos + head.length
    # ffmpeg and mutagen look for the tag right after the side information, CRC or not; some writers skip it.
    for off in (4 + head.side_info, 6 + head.side_info) if head.crc else (4 + head.side_info,):
        tag = data[pos + off : pos + off + 4]
        if tag in (b"Xing", b"Info"):
            flags = int.from_bytes(data[pos + off + 4 : pos + off + 8], "big")
            lame = pos + off + 8 + 4 * bool(flags & 1) + 4 * bool(flags & 2) + 100 * bool(flags & 4)
            lame += 4 * bool(flags & 8)
            delay = padding = None
            if data[lame : lame + 4] in _LAME_ENCODERS and lame + 24 <= end:
                both = int.from_bytes(data[lame + 21 : lame + 24], "big")
                delay, padding = both >> 12, both & 0xFFF
            return tag.decode(), delay, padding
    if data[pos + 36 : pos + 40] == b"VBRI" and data[pos + 40 : pos + 42] == b"\x00\x01":
        return "VBRI", None, None
    return None


def _orphans(data: bytes, offsets: array[int], end: int, head: _Header) -> int:
    """How many leading frames have a main_data_begin reaching before the part's first frame (Layer III)."""
    if head.format.layer != 3:
        return 0
    lsf = head.format.version != "1"
    reach = 255 if lsf else 511  # the most main_data_begin can say
    available = orphans = 0
    for i, pos in enumerate(offsets):
        side = pos + 4 + 2 * (not data[pos + 1] & 1)  # after the CRC, when there is one
        begin = data[side] if lsf else (data[side] << 1 | data[side + 1] >> 7)
        if begin > available:
            orphans = i + 1
        available += (offsets[i + 1] if i + 1 < len(offsets) else end) - side - head.side_info
        if available >= reach:
            break
    return orphans


def parse_frames(data: bytes) -> Frames:
    """The audio frames of a whole MPEG audio part (tags and a Xing/Info/VBRI frame set aside).

    Raises NotAudio when the bytes are not one complete stream: no frames, bytes that are not frames after a
    valid start, a format change inside the part, or a last frame cut short (what a dropped connection
    leaves). Only a dropped connection that happens to fall between two frames goes unnoticed here; the
    HTTP client's Content-Length check catches that one.
    """
    start = _skip_id3v2(data)
    ends = _tag_ends(data, start)
    first = _sync(data, start, ends)
    head = _header(_HEADER.unpack_from(data, first)[0])
    assert head is not None  # _sync found a header there
    stream = head.stream
    vbr = _vbr_header(data, head, first) if first + head.length <= len(data) else None

    # The hot loop: one dict lookup per frame (a stream has a handful of distinct header values).
    lengths: dict[int, int] = {}  # header value -> frame length, 0 when it is not a frame of this stream
    kbps: dict[int, int] = {}  # header value -> bitrate, for the audio frames' headers
    offsets: array[int] = array("Q")
    unpack, size = _HEADER.unpack_from, len(data)
    pos = first + head.length if vbr is not None else first
    while pos + 4 <= size:
        value = unpack(data, pos)[0]
        length = lengths.get(value)
        if length is None:
            h = _header(value)
            length = lengths[value] = h.length if h is not None and h.stream == stream else 0
            if h is not None and length:
                kbps[value] = h.kbps
        if not length or pos + length > size:
            break
        offsets.append(pos)
        pos += length

    junk = first - start
    if pos not in ends:
        if pos + 4 <= size and (h := _header(unpack(data, pos)[0])) is not None:
            if h.stream != stream:
                raise NotAudio(f"the stream changes from {head.format} to {h.format} at byte {pos}", offset=pos)
            raise NotAudio(f"truncated: the last frame, at byte {pos}, needs {h.length} bytes and {size - pos} "
                           "remain (a dropped connection?)", offset=pos)  # fmt: skip
        tail = min((e for e in ends if e >= pos), default=size)
        if data[pos:tail].count(0) != tail - pos:
            if size - pos < 4 and data[pos:size].startswith(b"\xff"):
                raise NotAudio(f"truncated: {size - pos} bytes of a frame header at byte {pos}", offset=pos)
            raise NotAudio(f"{tail - pos} bytes after the frames, at byte {pos}, are not MPEG audio "
                           f"(they start {data[pos : pos + 12]!r})", offset=pos)  # fmt: skip
        junk += tail - pos  # zero bytes after the last frame: harmless, dropped
    if not offsets:
        raise NotAudio(f"no audio frames, only a {vbr[0] if vbr else 'header'} frame", offset=first)
    kind, delay, padding = vbr if vbr is not None else (None, None, None)
    return Frames(
        format=head.format,
        offsets=offsets,
        end=pos,
        bitrates=frozenset(kbps.values()),
        first_header=unpack(data, offsets[0])[0],
        vbr_header=kind,
        encoder_delay=delay,
        encoder_padding=padding,
        orphans=_orphans(data, offsets, pos, head),
        junk=junk,
    )


# --------------------------------------------------------------------------------------------- parts


@dataclass(frozen=True)
class PartInfo:
    """What ``check_part`` learned about a valid part. ``samples`` counts every audio frame, as a lossless
    join plays them; a player that honours the LAME tag plays ``samples - delay - padding``."""

    format: StreamFormat
    frames: int
    samples: int
    duration_ms: int
    bitrate_kbps: int | None  # None when the frames' bitrates differ (VBR)
    vbr_header: str | None
    encoder_delay: int | None
    encoder_padding: int | None
    orphans: int


def _ms(samples: int, rate: int) -> int:
    """Samples to whole milliseconds, rounded half up, from the exact count (no drift over a chapter)."""
    return (2000 * samples + rate) // (2 * rate)


def check_part(data: bytes) -> PartInfo:
    """Accept ``data`` as a part or raise NotAudio saying why (see ``parse_frames``). Reads headers only."""
    frames = parse_frames(data)
    rate = frames.format.sample_rate
    return PartInfo(
        format=frames.format,
        frames=frames.count,
        samples=frames.samples,
        duration_ms=_ms(frames.samples, rate),
        bitrate_kbps=next(iter(frames.bitrates)) if len(frames.bitrates) == 1 else None,
        vbr_header=frames.vbr_header,
        encoder_delay=frames.encoder_delay,
        encoder_padding=frames.encoder_padding,
        orphans=frames.orphans,
    )


# --------------------------------------------------------------------------------------------- silence


def _smallest_kbps(fmt: StreamFormat, need: int) -> int:
    """The lowest bitrate whose frame (without padding) holds ``need`` bytes."""
    for kbps in _KBPS[(fmt.version, fmt.layer)][1:]:
        if _frame_length(fmt.version, fmt.layer, kbps, fmt.sample_rate, 0) >= need:
            return kbps
    raise ValueError(f"no {fmt} frame holds {need} bytes")


def _check_layer3(fmt: StreamFormat) -> None:
    if fmt.layer != 3:
        raise ValueError(f"silent frames are built for Layer III only, not {fmt}")


def silent_frame(fmt: StreamFormat, kbps: int | None = None, *, style: int = 0) -> bytes:
    """One Layer III frame that decodes to digital silence, on its own.

    All side information is zero: main_data_begin 0 (it takes nothing from the bit reservoir, so it may
    follow any frame) and part2_3_length 0 in every granule and channel (no coded values, so every sample
    is exactly 0). ``kbps`` defaults to the smallest bitrate that fits the header and side information:
    the payload is only zeros, so a bigger frame buys nothing. ``style`` carries the channel mode,
    copyright, original and emphasis bits of a header to copy (see ``LosslessWriter``).
    """
    _check_layer3(fmt)
    side = _side_info(fmt.version, 3, fmt.channels)
    kbps = kbps if kbps is not None else _smallest_kbps(fmt, 4 + side)
    value = _build_header(fmt, kbps, style or (0xC0 if fmt.channels == 1 else _JOINT_STEREO << 6))
    length = _frame_length(fmt.version, 3, kbps, fmt.sample_rate, 0)
    if length < 4 + side:
        raise ValueError(f"a {kbps} kbps frame of {fmt} is too small to hold its side information")
    return _HEADER.pack(value) + bytes(length - 4)


def frames_for_ms(fmt: StreamFormat, ms: int) -> int:
    """Whole frames nearest to ``ms`` milliseconds (half a frame rounds up)."""
    if ms < 0:
        raise ValueError(f"negative duration: {ms} ms")
    per_frame = 1000 * fmt.samples_per_frame
    return (2 * ms * fmt.sample_rate + per_frame) // (2 * per_frame)


def silence(fmt: StreamFormat, ms: int, kbps: int | None = None) -> bytes:
    """``ms`` milliseconds of silence as whole silent frames (nearest count; see ``silent_frame``)."""
    return silent_frame(fmt, kbps) * frames_for_ms(fmt, ms)


# --------------------------------------------------------------------------------------------- the join


@dataclass(frozen=True)
class Silence:
    """A pause in a ``join``: ``ms`` milliseconds of silent frames (rounded to whole frames)."""

    ms: int


@dataclass(frozen=True)
class PartSpan:
    """Where a part sits in the joined stream: samples from the first audio frame, and the same in ms."""

    index: int
    frames: int
    start_sample: int
    end_sample: int
    start_ms: int
    end_ms: int
    encoder_delay: int | None  # the part's LAME tag: its sound starts about delay + 529 samples into the span
    encoder_padding: int | None  # and ends about padding - 529 samples before its end


@dataclass(frozen=True)
class JoinResult:
    """What ``LosslessWriter.close`` wrote: exact totals, and where each part is."""

    format: StreamFormat
    frames: int  # audio frames, the Xing/Info frame not counted (as its own frame count says)
    samples: int
    duration_ms: int
    bytes: int  # the whole MPEG stream written, the Xing/Info frame included
    bitrate_kbps: int | None  # None when the stream is VBR (tagged "Xing"); else CBR (tagged "Info")
    parts: tuple[PartSpan, ...]


class _SeekIndex:
    """Byte offsets of every ``stride``-th frame in bounded memory: when full, every other entry goes and the
    stride doubles. The TOC wants 100 points, so keeping 2,048 to 4,096 is precise for any chapter length."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self.stride = 1
        self.offsets: array[int] = array("Q")

    def add(self, first: int, count: int, offset_of: Callable[[int], int]) -> None:
        """Frames ``first`` to ``first + count - 1``; ``offset_of(i)`` is where frame ``first + i`` starts."""
        frame = len(self.offsets) * self.stride
        while frame < first + count:
            self.offsets.append(offset_of(frame - first))
            if len(self.offsets) >= self.limit:
                self.offsets = self.offsets[::2]
                self.stride *= 2
            frame = len(self.offsets) * self.stride

    def at(self, frame: int) -> int:
        """Where ``frame`` starts, or the nearest recorded frame before it."""
        return self.offsets[min(frame // self.stride, len(self.offsets) - 1)]


_XING_BYTES = 4 + 4 + 4 + 4 + 100  # tag, flags, frame count, byte count, TOC


class LosslessWriter:
    """Writes one MPEG Layer III stream to ``out`` (binary, seekable), part by part, in constant memory.

    The first part fixes the format, unless ``fmt`` is given. Silence waits until the first part arrives, so
    silent frames copy its header's channel mode and flags: ffmpeg opens a stream only where two consecutive
    frames agree on them. A part of another format (or not Layer III) raises FormatMismatch before anything
    of it is written: the writer stays usable and the caller can switch to the decode path. ``close`` seeks
    back to fill in the Info/Xing frame written first, and leaves the position at the end. A stream of a
    single frame gets a silent one after it (counted in the result): ffmpeg cannot open fewer than two.

    Pauses are silent frames at the bitrate of the first part's first frame, so parts encoded at a constant
    bitrate make a constant-bitrate file, which every player seeks by plain proportion, and which is marked
    "Info" as LAME does. ``silence_kbps`` chooses another bitrate: the smallest (8 kbps at 24 kHz) saves
    about 94 % of a pause's bytes at 128 kbps, a few percent of a chapter, and makes the file VBR ("Xing").
    A part's ``orphans`` (see ``Frames``) are silenced in place.
    """

    def __init__(self, out: BinaryIO, fmt: StreamFormat | None = None, *, silence_kbps: int | None = None):
        if not out.seekable():
            raise ValueError("LosslessWriter needs a seekable output: the Info/Xing frame is filled in last")
        if fmt is not None:
            _check_layer3(fmt)
        self._out = out
        self._expected = fmt
        self._fmt: StreamFormat | None = None  # set when the header frame is written
        self._silence_kbps = silence_kbps
        self._silent = b""
        self._silent_kbps = 0
        self._pending: list[int] = []  # ms of silence added before the first part
        self._header_at = 0
        self._xing = b""
        self._frames = 0
        self._audio_bytes = 0
        self._kbps: set[int] = set()
        self._index = _SeekIndex()
        self._parts: list[PartSpan] = []
        self._closed = False

    @property
    def format(self) -> StreamFormat | None:
        return self._fmt or self._expected

    def add_part(self, data: bytes) -> PartSpan:
        """Append a part's audio frames. Raises NotAudio for a bad part, FormatMismatch for a foreign one."""
        self._check_open()
        frames = parse_frames(data)
        expected = self.format
        if frames.format.layer != 3:
            raise FormatMismatch(f"{frames.format} cannot be joined frame by frame (Layer III only)",
                                 expected=expected, found=frames.format)  # fmt: skip
        if expected is not None and frames.format != expected:
            raise FormatMismatch(f"the part is {frames.format}, the chapter {expected}",
                                 expected=expected, found=frames.format)  # fmt: skip
        if self._fmt is None:
            self._begin(frames.format, frames.first_header)
        fmt = self._fmt
        assert fmt is not None
        start, offsets, end = self._frames, frames.offsets, frames.end
        first, base, count = offsets[0], self._audio_bytes, len(offsets)
        self._index.add(self._frames, count, lambda i: base + offsets[i] - first)
        body = memoryview(data)[first:end]
        if frames.orphans:  # silenced in place (see Frames); sizes and so offsets unchanged
            stop = offsets[frames.orphans] if frames.orphans < count else end
            side = _side_info(fmt.version, 3, fmt.channels)
            for i in range(frames.orphans):
                nxt = offsets[i + 1] if i + 1 < count else end
                self._out.write(_silenced(data[offsets[i] : nxt], side))
            body = memoryview(data)[stop:end]
        self._out.write(body)
        self._frames += count
        self._audio_bytes += end - first
        self._kbps |= frames.bitrates
        spf, rate = fmt.samples_per_frame, fmt.sample_rate
        span = PartSpan(
            index=len(self._parts),
            frames=frames.count,
            start_sample=start * spf,
            end_sample=self._frames * spf,
            start_ms=_ms(start * spf, rate),
            end_ms=_ms(self._frames * spf, rate),
            encoder_delay=frames.encoder_delay,
            encoder_padding=frames.encoder_padding,
        )
        self._parts.append(span)
        return span

    def add_silence(self, ms: int) -> None:
        """Append ``ms`` milliseconds of silence, rounded to the nearest whole frame (see ``frames_for_ms``)."""
        self._check_open()
        if ms < 0:
            raise ValueError(f"negative pause: {ms} ms")
        if self._fmt is None:
            self._pending.append(ms)
        else:
            self._write_silence(frames_for_ms(self._fmt, ms))

    def close(self) -> JoinResult:
        """Fill in the Info/Xing frame and return the totals. The caller closes ``out``."""
        self._check_open()
        if self._fmt is None and self._expected is not None:  # silence only
            self._begin(self._expected, 0)
        fmt = self._fmt
        if fmt is None or not self._frames:
            raise AudioError("nothing to write: a chapter needs at least one frame of audio or silence")
        if self._frames < 2:  # ffmpeg opens a stream only where two frames follow the header frame
            self._write_silence(1)
        self._closed = True
        total = len(self._xing) + self._audio_bytes
        # TOC entry i: where the frame at i % of the duration starts, relative to the first audio frame, in
        # 256ths of the byte count (ffmpeg reads it so; others measure from the header frame, one frame off).
        toc = bytes(min(255, 256 * self._index.at(i * self._frames // 100) // total) for i in range(100))
        cbr = len(self._kbps) == 1
        xing = bytearray(self._xing)
        at = 4 + _side_info(fmt.version, 3, fmt.channels)
        xing[at : at + _XING_BYTES] = (b"Info" if cbr else b"Xing") + struct.pack(">III", 7, self._frames, total) + toc
        end = self._out.tell()
        self._out.seek(self._header_at)
        self._out.write(xing)
        self._out.seek(end)
        self._out.flush()
        samples = self._frames * fmt.samples_per_frame
        return JoinResult(
            format=fmt,
            frames=self._frames,
            samples=samples,
            duration_ms=_ms(samples, fmt.sample_rate),
            bytes=total,
            bitrate_kbps=next(iter(self._kbps)) if cbr else None,
            parts=tuple(self._parts),
        )

    def __enter__(self) -> LosslessWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # After an error nothing is finalized: the output is a temporary file the caller removes.
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("LosslessWriter is closed")

    def _begin(self, fmt: StreamFormat, first_header: int) -> None:
        """Fix the format, write the placeholder header frame, then the silence that waited for it."""
        self._fmt = fmt
        style = first_header & _STYLE
        first = _header(first_header) if first_header else None
        kbps = self._silence_kbps or (first.kbps if first is not None else None)
        self._silent = silent_frame(fmt, kbps, style=style)
        self._silent_kbps = _KBPS[(fmt.version, 3)][(_HEADER.unpack_from(self._silent)[0] >> 12) & 15]
        need = 4 + _side_info(fmt.version, 3, fmt.channels) + _XING_BYTES
        fits = kbps is not None and _frame_length(fmt.version, 3, kbps, fmt.sample_rate, 0) >= need
        self._xing = silent_frame(fmt, kbps if fits else _smallest_kbps(fmt, need), style=style)
        self._header_at = self._out.tell()
        self._out.write(self._xing)  # silent until close() writes the tag into it
        for ms in self._pending:
            self._write_silence(frames_for_ms(fmt, ms))
        self._pending.clear()

    def _write_silence(self, count: int) -> None:
        if not count:
            return
        frame, base = self._silent, self._audio_bytes
        self._index.add(self._frames, count, lambda i: base + i * len(frame))
        block = max(1, 65536 // len(frame))  # a long pause is written in 64 KiB pieces, never built whole
        for done in range(0, count, block):
            self._out.write(frame * min(block, count - done))
        self._frames += count
        self._audio_bytes += count * len(frame)
        self._kbps.add(self._silent_kbps)


def join(out: Path | BinaryIO, pieces: Iterable[bytes | Silence], fmt: StreamFormat | None = None) -> JoinResult:
    """Write ``pieces`` (parts' bytes and ``Silence`` pauses, in order) as one stream to ``out``.

    A path is written directly (the caller picks a temporary name and renames). Raises as
    ``LosslessWriter.add_part`` does; a half-written path is then the caller's to remove.
    """
    with contextlib.ExitStack() as stack:
        fh = stack.enter_context(open(out, "wb")) if isinstance(out, Path) else out
        writer = stack.enter_context(LosslessWriter(fh, fmt))
        for piece in pieces:
            if isinstance(piece, Silence):
                writer.add_silence(piece.ms)
            else:
                writer.add_part(piece)
        return writer.close()


# --------------------------------------------------------------------------------------------- decoding


@dataclass(frozen=True)
class DecoderInput:
    """What ffmpeg is given to decode a part to exactly its samples (``assembly.decode`` runs it): ``stream``,
    the part's frames with two frames after them, and ``filters`` that cut those off again by sample count
    (and mix stereo to mono as the average of the two channels).

    ffmpeg's MP3 demuxer wants two consecutive frames before it opens a stream, so the shortest part needs the
    extra frames, which also flush the last frame's tail. With ``trim``, the samples kept are what ffmpeg gives
    when it decodes the part as a file: when a LAME tag gives the encoder delay and padding, it drops
    ``delay + 529`` samples at the start (529 is its decoder's delay) and ends ``padding - 529`` before the
    last frame's end; without one it gives every frame.
    """

    stream: bytes
    filters: tuple[str, ...]
    format: StreamFormat
    start: int  # the first sample kept, of every frame's samples
    stop: int

    @property
    def samples(self) -> int:
        return self.stop - self.start

    def expected(self, rate: int) -> tuple[int, int]:
        """The sample count a decode at ``rate`` must give, and by how many it may miss: at the part's own rate
        the count is exact; ffmpeg's resampler ends on the floor or the ceiling of ``samples * rate / rate_in``
        depending on its filter state (measured), so then the nearest count, within one sample."""
        own = self.format.sample_rate
        if rate == own:
            return self.samples, 0
        return (2 * self.samples * rate + own) // (2 * own), 1


def decoder_input(data: bytes, *, trim: bool = True) -> DecoderInput:
    """The part made ready for ffmpeg (see ``DecoderInput``). Raises NotAudio for a bad part."""
    frames = parse_frames(data)
    fmt = frames.format
    total = frames.samples
    start, stop = 0, total
    if trim and frames.encoder_delay is not None and frames.encoder_padding is not None:
        start = min(total, frames.encoder_delay + _DECODER_DELAY)
        stop = max(start, total - frames.encoder_padding + _DECODER_DELAY)
    if fmt.layer == 3:
        tail = silent_frame(fmt, style=frames.first_header & _STYLE) * 2
    else:  # layers I/II have no delay or reservoir: repeat the part's first frame, then cut it off
        first_len = (frames.offsets[1] if frames.count > 1 else frames.end) - frames.offsets[0]
        tail = data[frames.offsets[0] : frames.offsets[0] + first_len] * 2
    stream = memoryview(data)[frames.offsets[0] : frames.end].tobytes() + tail
    filters = [f"atrim=start_sample={start}:end_sample={stop}"]
    if fmt.channels == 2:
        filters.append("pan=mono|c0=0.5*c0+0.5*c1")
    return DecoderInput(stream, tuple(filters), fmt, start, stop)
