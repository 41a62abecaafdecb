"""MP3 frames without a decoder: parsing, the check on arrival, silent frames, the lossless join, and decoding
parts of any length. Every part is real MP3 made offline by ffmpeg; ffmpeg and mutagen judge the results."""

from __future__ import annotations

import functools
import math
import random
import subprocess
import tempfile
from array import array
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mutagen.apev2 import APEv2
from mutagen.id3 import ID3, TIT2

from pipeline.media import encode_pcm, ffmpeg_exe
from pipeline.mp3 import (
    NotAudio,
    StreamFormat,
    check_part,
    parse_frames,
)
from tests.fakeserver import FRAME_BYTES, _tone, audio_for

API = StreamFormat("2", 3, 24_000, 1)  # what the speech API answers
CD = StreamFormat("1", 3, 44_100, 2)


# --------------------------------------------------------------------------------------------- parts


def tone(ms: int, rate: int, channels: int = 1, freq: float = 330.0) -> bytes:
    n = rate * ms // 1000
    wave = (int(6000 * math.sin(2 * math.pi * freq * i / rate)) for i in range(n))
    return array("h", (s for s in wave for _ in range(channels))).tobytes()


def ffmpeg_file(pcm: bytes, rate: int, channels: int, *args: str) -> bytes:
    """Encode through a seekable file, so ffmpeg writes its Xing/Info frame with a LAME tag (and an ID3v2)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "part.mp3"
        cmd = [ffmpeg_exe(), "-v", "error", "-f", "s16le", "-ar", str(rate), "-ac", str(channels), "-i", "pipe:0",
               *args, "-y", str(out)]  # fmt: skip
        subprocess.run(cmd, input=pcm, check=True, capture_output=True)
        return out.read_bytes()


@functools.cache
def part(name: str) -> bytes:
    """Parts as servers answer them. Cached per process: hypothesis examples reuse them."""
    if name == "api":  # the fake server: 24 kHz mono 128k CBR, no tags, 384-byte frames, no bit reservoir
        return audio_for("x" * 25, 40.0)
    if name == "piped":  # ffmpeg to a pipe: an ID3v2 tag, no Xing frame, bit reservoir on
        return encode_pcm(tone(700, 24_000), in_rate=24_000)
    if name == "lame":  # ffmpeg to a file: ID3v2, Info frame with a LAME tag (delay, padding), reservoir on
        return ffmpeg_file(tone(900, 24_000), 24_000, 1, "-c:a", "libmp3lame", "-b:a", "128k")
    if name == "one":  # "I.": one frame, which alone decodes
        return _tone()[1][:FRAME_BYTES]
    if name == "tagged":  # the LAME part with ID3v2.3 (a title), APEv2 and ID3v1 at the end
        return add_tags(part("lame"))
    if name == "cd":  # MPEG-1 44.1 kHz stereo CBR
        return ffmpeg_file(tone(800, 44_100, 2), 44_100, 2, "-c:a", "libmp3lame", "-b:a", "128k")
    if name == "cd_vbr":  # MPEG-1 44.1 kHz stereo VBR: a Xing frame, bitrates vary
        return ffmpeg_file(tone(800, 44_100, 2, 440.0), 44_100, 2, "-c:a", "libmp3lame", "-q:a", "2")
    if name == "layer2":
        return ffmpeg_file(tone(500, 24_000), 24_000, 1, "-c:a", "mp2", "-b:a", "64k", "-f", "mp2")
    raise KeyError(name)


def add_tags(data: bytes) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.mp3"
        path.write_bytes(data)
        ape = APEv2()
        ape["Title"] = "APE title"
        ape.save(str(path))
        tags = ID3()
        tags.add(TIT2(encoding=3, text=["A title"]))
        tags.save(str(path), v1=2, v2_version=3)
        return path.read_bytes()


def decode_file(data: bytes) -> tuple[bytes, str]:
    """ffmpeg's own decoding of ``data`` as a file (it probes the format): PCM at the native rate, and stderr.

    A real file, not a pipe: ffmpeg cannot seek a pipe and then trims a LAME tag's encoder delay but not its
    padding (pydub reads through ``cache:pipe:0``, seekable, but that protocol logs errors of its own)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.mp3"
        path.write_bytes(data)
        proc = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "s16le", "pipe:1"],
                              capture_output=True, check=False)  # fmt: skip
    return proc.stdout, proc.stderr.decode(errors="replace")


# --------------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("name", "fmt", "vbr_header", "cbr"),
    [
        ("api", API, None, True),
        ("piped", API, None, True),
        ("lame", API, "Info", True),
        ("tagged", API, "Info", True),
        ("one", API, None, True),
        ("cd", CD, "Info", True),
        ("cd_vbr", CD, "Xing", False),
        ("layer2", StreamFormat("2", 2, 24_000, 1), None, True),
    ],
)
def test_parts_parse_to_their_format_and_frames(name: str, fmt: StreamFormat, vbr_header: str | None, cbr: bool):
    data = part(name)
    info = check_part(data)
    assert info.format == fmt
    assert info.vbr_header == vbr_header
    assert (info.bitrate_kbps is not None) == cbr
    assert info.samples == info.frames * fmt.samples_per_frame
    assert info.duration_ms == round(info.samples * 1000 / fmt.sample_rate)


def test_lame_tag_gives_delay_and_padding_that_ffmpeg_trims():
    data = part("lame")
    info = check_part(data)
    assert (info.encoder_delay, info.encoder_padding) == (576, info.samples - 576 - 24_000 * 900 // 1000)
    pcm, err = decode_file(data)
    assert not err
    assert len(pcm) // 2 == info.samples - info.encoder_delay - info.encoder_padding == 21_600


def test_tags_at_both_ends_are_skipped():
    plain, tagged = parse_frames(part("lame")), parse_frames(part("tagged"))
    assert tagged.count == plain.count
    first = part("lame")[plain.start : plain.end]
    assert part("tagged")[tagged.start : tagged.end] == first
    assert part("tagged")[-128:].startswith(b"TAG")  # ID3v1 last, APEv2 before it: both set aside


def test_id3v24_footer_and_unsynchronisation():
    body = bytes(30) + b"\xff\xe0" + bytes(20)  # tag content as stored, after unsynchronisation
    header = b"ID3\x04\x00" + bytes([0x80 | 0x10]) + bytes([0, 0, 0, len(body)])  # unsync + footer flags
    footer = b"3DI\x04\x00" + bytes([0x90]) + bytes([0, 0, 0, len(body)])
    audio = part("api")
    frames = parse_frames(header + body + footer + audio)
    assert frames.start == 10 + len(body) + 10
    assert frames.count == len(audio) // FRAME_BYTES
    assert frames.junk == 0
    stacked = header + body + footer + b"ID3\x03\x00\x00\x00\x00\x00\x05hello" + audio  # two tags, as WMP writes
    assert parse_frames(stacked).count == frames.count
    appended = audio + header + body + footer  # an ID3v2.4 tag at the end, found by its footer
    assert parse_frames(appended).count == frames.count


def test_one_frame_is_a_valid_part():
    data = part("one")
    info = check_part(data)
    assert info.frames == 1 and info.duration_ms == 24
    assert decode_file(data)[0] == b""  # ffmpeg alone cannot open it


def test_leading_junk_is_skipped_only_before_a_real_stream():
    audio = part("api")
    frames = parse_frames(b"\0\0\xff\xfb junk \xff\xf3" + audio)
    assert frames.count == len(audio) // FRAME_BYTES and frames.junk == 12
    with pytest.raises(NotAudio):
        parse_frames(b"junk" + audio[:FRAME_BYTES])  # a lone frame after junk could be chance
    trailing_zeros = parse_frames(audio + bytes(100))
    assert trailing_zeros.count == len(audio) // FRAME_BYTES and trailing_zeros.junk == 100


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b'{"error": {"message": "upstream provider error", "type": "upstream_error"}}',
        b"<html><body>Service temporarily unavailable</body></html>",
        b"ID3\x03\x00\x00\x00\x00\x00\x05hello",  # a tag and nothing else
        bytes(5000),
        random.Random(1).randbytes(20_000),
        # random bytes salted with valid-looking headers: the resync must not take them for audio
        b"".join(b"\xff\xf3\xc4\xc4" + random.Random(i).randbytes(200) for i in range(50)),
    ],
    ids=["empty", "json", "html", "tag-only", "zeros", "random", "salted"],
)
def test_not_audio_is_refused(body: bytes):
    with pytest.raises(NotAudio):
        check_part(body)


def test_garbage_after_a_valid_start_is_refused():
    audio = part("api")
    with pytest.raises(NotAudio, match="not MPEG audio") as caught:
        check_part(audio[: 3 * FRAME_BYTES] + b"<html>502 Bad Gateway</html>")
    assert caught.value.offset == 3 * FRAME_BYTES


@pytest.mark.parametrize("name", ["api", "lame", "tagged", "cd_vbr", "one"])
def test_a_truncated_last_frame_is_refused(name: str):
    data = part(name)
    frames = parse_frames(data)
    cut = frames.end - 100  # inside the last frame, as a dropped connection leaves it
    with pytest.raises(NotAudio, match="truncated"):
        check_part(data[:cut])
    if name == "tagged":  # the ID3v1 tag stays in place: the last frame runs into it, still refused
        with pytest.raises(NotAudio):
            check_part(data[:cut] + data[-128:])


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(["api", "piped", "lame", "cd_vbr"]), cut=st.integers(min_value=1))
def test_any_cut_is_refused_unless_it_falls_between_frames(name: str, cut: int):
    data = part(name)
    frames = parse_frames(data)
    cut = frames.start + 1 + cut % (frames.end - frames.start - 1)
    boundaries = [*frames.offsets[1:], frames.end]
    if cut in boundaries:
        assert parse_frames(data[:cut]).count == boundaries.index(cut) + 1
    else:
        with pytest.raises(NotAudio):
            parse_frames(data[:cut])


def test_stream_that_changes_format_is_refused():
    cd = parse_frames(part("cd"))
    with pytest.raises(NotAudio, match="changes"):
        check_part(part("api") + part("cd")[cd.start : cd.end])


def test_free_format_and_bad_bitrate_are_not_frames():
    free = bytearray(part("api"))
    for offset in range(0, len(free), FRAME_BYTES):
        free[offset + 2] &= 0x0F  # bitrate index 0: free format
    with pytest.raises(NotAudio, match="free-format"):
        check_part(bytes(free))
    bad = bytearray(part("api"))
    bad[2] |= 0xF0  # bitrate index 15 in the first header: not a frame, so nothing valid starts there
    with pytest.raises(NotAudio):
        check_part(bytes(bad[:FRAME_BYTES]))


def test_orphaned_reservoir_frames_are_counted():
    """A part cut out of a longer stream starts with frames whose main data is in frames it lacks."""
    whole = part("piped")
    frames = parse_frames(whole)
    cut = whole[frames.offsets[1] :]
    assert parse_frames(whole).orphans == 0
    assert check_part(cut).orphans == 1
