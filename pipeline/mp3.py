"""MPEG audio at the frame level: check a part on arrival, make silence, join parts without re-encoding.

An MP3 file is a sequence of self-describing frames, each a fixed number of samples (``samples_per_frame``),
wrapped in optional tags. When every part of a chapter shares one stream format (MPEG version, layer, sample
rate, channel count), the chapter is just the parts' frames in order, with pauses made of silent frames of
the same format: no decoder, no second encode, nothing held but the part being copied. Durations are whole
frames, so every timing here is an exact sample count. This module reads frames without decoding them::

    info = check_part(body)                  # on arrival; NotAudio for a garbage 200, a truncated answer

What a part may hold, and what is kept: ID3v2 tags in front (as many as there are) and ID3v1, APEv2,
Lyrics3v2 tags or zero bytes at the end are skipped; a Xing/Info/VBRI header frame is dropped (it describes
the part, not the chapter), its LAME encoder delay and padding are reported but the audio frames are copied
as they are, edges included (as ffmpeg's concat demuxer does). Anything else that is not a whole frame of
the stream is refused: leading junk is skipped only when at least four consistent frames follow it (so
stray ``0xFFE`` bytes in garbage are not taken for audio), and a last frame cut short by a dropped
connection is refused. A part that is one frame long is valid.
"""

from __future__ import annotations

import functools
import struct
from array import array
from collections.abc import Iterator
from dataclasses import dataclass

from pipeline.errors import AudioError

__all__ = [
    "Frames",
    "NotAudio",
    "PartInfo",
    "StreamFormat",
    "check_part",
    "parse_frames",
]


class NotAudio(AudioError):
    """The bytes are not a complete MPEG audio stream: no frames, garbage among them, or a truncated end.

    ``offset`` is the byte where the stream stops making sense, when there is one.
    """

    def __init__(self, message: str, *, offset: int | None = None):
        super().__init__(message)
        self.offset = offset


# --------------------------------------------------------------------------------------------- headers

_VERSIONS = {0: "2.5", 2: "2", 3: "1"}  # header bits 20-19; 0b01 is reserved
_LAYERS = {1: 3, 2: 2, 3: 1}  # header bits 18-17; 0b00 is reserved
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
_MONO = 3
_HEADER = struct.Struct(">I")
_MIN_CHAIN = 4  # consistent frames that must follow skipped junk before it counts as a stream start
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


# --------------------------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Frames:
    """The audio frames of one part, found by ``parse_frames``.

    ``offsets[i]`` is where frame ``i`` starts in the part's bytes; frames are contiguous, so frame ``i`` ends
    where ``i + 1`` starts and the last one at ``end``. A Xing/Info/VBRI header frame is not among them
    (``vbr_header`` names the one dropped). ``encoder_delay``/``encoder_padding`` come from a LAME tag written
    by LAME or ffmpeg, else None. ``orphans`` counts leading frames whose main data begins before the part's
    first frame (a stream cut out of a longer one): no decoder can decode them, and after another part they
    would decode that part's bytes as noise.
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
