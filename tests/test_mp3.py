"""MP3 frames without a decoder: parsing, the check on arrival, silent frames, the lossless join, and decoding
parts of any length. Every part is real MP3 made offline by ffmpeg; ffmpeg and mutagen judge the results."""

from __future__ import annotations

import functools
import io
import math
import random
import struct
import subprocess
import tempfile
from array import array
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mutagen.apev2 import APEv2
from mutagen.id3 import ID3, TIT2
from mutagen.mp3 import MP3

from pipeline import mp3
from pipeline.assembly.decode import decode_part_pcm
from pipeline.errors import AudioError
from pipeline.media import encode_pcm, ffmpeg_exe
from pipeline.mp3 import (
    FormatMismatch,
    LosslessWriter,
    NotAudio,
    Silence,
    StreamFormat,
    check_part,
    frames_for_ms,
    join,
    parse_frames,
    silence,
    silent_frame,
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


def crc_protected(data: bytes) -> bytes:
    """The fake server's frames re-made with a CRC: every frame has 13 spare bytes at its end (no reservoir),
    so the side information and main data move two bytes down and the frame keeps its length."""
    frames = parse_frames(data)
    out = bytearray()
    for offset, length in frames.spans():
        frame = data[offset : offset + length]
        assert frame[-2:] == b"\0\0"
        header = bytes([frame[0], frame[1] & 0xFE, frame[2], frame[3]])  # protection bit 0: CRC follows
        side = frame[4:13]
        out += header + mp3._crc16(header[2:] + side).to_bytes(2, "big") + frame[4:-2]
    return bytes(out)


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
    # Every audio frame counted, the header frame not: ffmpeg decodes exactly that many samples untrimmed.
    assert len(decode_part_pcm(data, trim=False)) == 2 * info.samples


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
    assert decode_file(data)[0] == b""  # what ffmpeg alone makes of it
    pcm = decode_part_pcm(data)
    two_frames, _ = decode_file(_tone()[1][: 2 * FRAME_BYTES])
    assert pcm == two_frames[: 2 * 576]  # a frame's output depends on it and the frames before, not after
    assert any(pcm)


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
    with pytest.raises(NotAudio, match="changes"):
        check_part(part("api") + silence(CD, 200))


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


def test_crc_protected_frames():
    protected = crc_protected(part("api"))
    frames = parse_frames(protected)
    assert frames.count == len(part("api")) // FRAME_BYTES
    pcm, err = decode_file(protected)
    assert not err
    assert pcm == decode_file(part("api"))[0]  # the same audio, now with CRCs
    joined = io.BytesIO()
    join(joined, [protected, Silence(100), part("api")])
    assert not decode_file(joined.getvalue())[1]


def test_orphaned_reservoir_frames_are_silenced_in_place():
    """A part cut out of a longer stream starts with frames whose main data is in frames it lacks."""
    whole = part("piped")
    frames = parse_frames(whole)
    cut = whole[frames.offsets[1] :]
    assert parse_frames(whole).orphans == 0
    assert check_part(cut).orphans == 1
    out = io.BytesIO()
    result = join(out, [part("lame"), cut])
    pcm, err = decode_file(out.getvalue())
    assert not err
    span = result.parts[1]
    first_frame = array("h", pcm[2 * span.start_sample : 2 * (span.start_sample + 576)])
    assert max(map(abs, first_frame)) < 50  # silence, not the other part's bytes decoded as noise
    # Its payload stayed: the next frames, whose main data starts in it, decode as in the part alone.
    alone = decode_part_pcm(cut, trim=False)
    assert pcm[2 * span.start_sample + 2 * 1152 : 2 * span.end_sample] == alone[2 * 1152 :]


# --------------------------------------------------------------------------------------------- silence

FORMATS = [
    StreamFormat("1", 3, 44_100, 2),
    StreamFormat("1", 3, 48_000, 1),
    StreamFormat("1", 3, 32_000, 2),
    StreamFormat("2", 3, 24_000, 1),
    StreamFormat("2", 3, 22_050, 2),
    StreamFormat("2", 3, 16_000, 1),
    StreamFormat("2.5", 3, 12_000, 2),
    StreamFormat("2.5", 3, 11_025, 1),
    StreamFormat("2.5", 3, 8_000, 1),
]


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_silent_frames_decode_to_digital_silence_of_the_exact_length(fmt: StreamFormat):
    for kbps in (None, 64):
        data = silence(fmt, 500, kbps)
        frames = parse_frames(data)
        assert frames.format == fmt and frames.count == frames_for_ms(fmt, 500)
        pcm, err = decode_file(data)
        assert not err
        assert len(pcm) == 2 * fmt.channels * frames.count * fmt.samples_per_frame
        assert not any(pcm)


def test_silent_frame_is_as_small_as_the_format_allows():
    assert len(silent_frame(API)) == 24  # 8 kbps at 24 kHz: 4 header bytes, 9 of side information, padding
    assert len(silent_frame(API, 128)) == FRAME_BYTES
    assert len(silent_frame(CD)) == 104  # 32 kbps at 44.1 kHz
    with pytest.raises(ValueError, match="Layer III"):
        silent_frame(StreamFormat("1", 2, 44_100, 2))
    with pytest.raises(ValueError):
        silent_frame(API, 320)  # no such bitrate in MPEG-2


def test_frames_for_ms_rounds_to_the_nearest_frame():
    assert [frames_for_ms(API, ms) for ms in (0, 11, 12, 24, 35, 36, 500)] == [0, 0, 1, 1, 1, 2, 21]
    assert frames_for_ms(CD, 1000) == 38  # 1000 / 26.12 ms = 38.28
    with pytest.raises(ValueError):
        frames_for_ms(API, -1)


# --------------------------------------------------------------------------------------------- the join


def read_xing(data: bytes) -> tuple[bytes, int, int, bytes]:
    """(tag, frames, bytes, toc) of the Xing/Info frame a joined stream starts with."""
    head = mp3._header(struct.unpack(">I", data[:4])[0])
    assert head is not None
    at = 4 + head.side_info
    tag = data[at : at + 4]
    flags, frames, nbytes = struct.unpack(">III", data[at + 4 : at + 16])
    assert flags == 7
    return tag, frames, nbytes, data[at + 16 : at + 116]


def test_join_is_frame_exact_and_plays_cleanly(tmp_path: Path):
    pieces: list[bytes | Silence] = [Silence(300)]
    for name in ["api", "piped", "lame", "one", "tagged", "api"]:
        pieces += [part(name), Silence(250)]
    path = tmp_path / "chapter.mp3"
    result = join(path, pieces)
    data = path.read_bytes()

    silent = frames_for_ms(API, 300) + 6 * frames_for_ms(API, 250)
    audio = sum(check_part(p).frames for p in pieces if isinstance(p, bytes))
    assert result.frames == audio + silent and result.samples == 576 * result.frames
    assert result.duration_ms == round(result.samples / 24)
    assert result.bytes == len(data) and result.bitrate_kbps == 128

    tag, frames, nbytes, toc = read_xing(data)
    assert (tag, frames, nbytes) == (b"Info", result.frames, len(data))
    pcm, err = decode_file(data)
    assert err == ""
    assert len(pcm) == 2 * result.samples  # no LAME tag: players count every frame, parts' edges included
    info = MP3(path).info  # mutagen reads the Info frame's frame count
    assert info is not None
    assert info.length == pytest.approx(result.samples / 24_000) and info.sample_rate == 24_000

    # Spans: exact sample offsets, each part after its pause, the ms rounded from them.
    at = 576 * frames_for_ms(API, 300)
    for span, piece in zip(result.parts, [p for p in pieces if isinstance(p, bytes)], strict=True):
        assert span.start_sample == at and span.end_sample == at + check_part(piece).samples
        assert (span.start_ms, span.end_ms) == (round(at / 24), round(span.end_sample / 24))
        # After a pause the decoder holds nothing of the previous part: each part decodes bit for bit alone.
        assert pcm[2 * span.start_sample : 2 * span.end_sample] == decode_part_pcm(piece, trim=False)
        at = span.end_sample + 576 * frames_for_ms(API, 250)


def test_join_mpeg1_stereo_vbr_gets_a_xing_frame(tmp_path: Path):
    path = tmp_path / "cd.mp3"
    result = join(path, [part("cd"), Silence(400), part("cd_vbr"), part("cd")])
    assert result.format == CD and result.bitrate_kbps is None
    data = path.read_bytes()
    tag, frames, _, toc = read_xing(data)
    assert (tag, frames) == (b"Xing", result.frames)
    pcm, err = decode_file(data)
    assert err == "" and len(pcm) == 2 * 2 * result.samples
    info = MP3(path).info
    assert info is not None and info.length == pytest.approx(result.samples / 44_100)
    assert list(toc) == sorted(toc) and toc[0] == 0


def test_silence_at_the_smallest_bitrate_makes_a_vbr_file_with_a_true_toc():
    out = io.BytesIO()
    writer = LosslessWriter(out, silence_kbps=8)
    for _ in range(4):
        writer.add_part(part("api"))
        writer.add_silence(2000)
    result = writer.close()
    data = out.getvalue()
    tag, frames, nbytes, toc = read_xing(data)
    assert tag == b"Xing" and result.bitrate_kbps is None
    header_frame = mp3._header(struct.unpack(">I", data[:4])[0])
    assert header_frame is not None and header_frame.kbps == 48  # the smallest that holds the tag at 24 kHz
    spans = list(parse_frames(data[header_frame.length :]).spans())
    assert len(spans) == frames
    for i in range(100):  # entry i: where the frame at i % of the duration starts, in 256ths of the bytes
        offset = spans[i * frames // 100][0]
        assert toc[i] == min(255, 256 * offset // nbytes)
    assert not decode_file(data)[1]


def test_seek_index_stays_small_and_precise():
    index = mp3._SeekIndex(limit=64)
    sizes = [random.Random(7).choice((24, 384, 417)) for _ in range(100_000)]
    starts = [0]
    for size in sizes:
        starts.append(starts[-1] + size)
    done = 0
    for run in (1, 999, 30_000, 69_000):  # parts and pauses of any size
        index.add(done, run, lambda i, done=done: starts[done + i])
        done += run
    assert len(index.offsets) < 64
    for frame in range(0, 100_000, 997):
        assert starts[max(0, frame - index.stride + 1)] <= index.at(frame) <= starts[frame]


def test_part_of_another_format_is_refused_and_the_writer_goes_on():
    out = io.BytesIO()
    writer = LosslessWriter(out)
    writer.add_part(part("api"))
    written = out.tell()
    with pytest.raises(FormatMismatch) as caught:
        writer.add_part(part("cd"))
    assert (caught.value.expected, caught.value.found) == (API, CD)
    with pytest.raises(FormatMismatch, match="Layer III only"):
        writer.add_part(part("layer2"))
    assert out.tell() == written  # nothing of the refused parts
    writer.add_part(part("api"))
    assert writer.close().frames == 2 * len(part("api")) // FRAME_BYTES
    with pytest.raises(FormatMismatch):
        LosslessWriter(io.BytesIO(), API).add_part(part("cd"))
    with pytest.raises(NotAudio):
        LosslessWriter(io.BytesIO()).add_part(b"<html></html>")


def test_silence_before_the_first_part_waits_for_its_header():
    out = io.BytesIO()
    writer = LosslessWriter(out)
    writer.add_silence(24)  # one frame: ffmpeg opens a stream only where two frames agree on their header
    span = writer.add_part(part("piped"))
    writer.close()
    assert span.start_sample == 576
    pcm, err = decode_file(out.getvalue())
    assert not err and len(pcm) == 2 * span.end_sample


def test_silence_only_needs_a_format_and_nothing_is_an_error():
    out = io.BytesIO()
    writer = LosslessWriter(out, API)
    writer.add_silence(1000)
    result = writer.close()
    assert result.frames == 42 and result.parts == ()
    pcm, err = decode_file(out.getvalue())
    assert not err and len(pcm) == 2 * 42 * 576 and not any(pcm)
    with pytest.raises(AudioError, match="nothing to write"):
        LosslessWriter(io.BytesIO()).close()
    with pytest.raises(AudioError, match="nothing to write"):
        join(io.BytesIO(), [Silence(500)])


def test_a_one_frame_chapter_gets_a_second_frame_so_it_opens():
    out = io.BytesIO()
    result = join(out, [part("one")])
    assert result.frames == 2 and result.parts[0].end_sample == 576
    pcm, err = decode_file(out.getvalue())
    assert not err and len(pcm) == 2 * 1152
    assert pcm[: 2 * 576] == decode_part_pcm(part("one"))


def test_writer_needs_a_seekable_output():
    class Pipe(io.RawIOBase):
        def writable(self) -> bool:
            return True

    with pytest.raises(ValueError, match="seekable"):
        LosslessWriter(Pipe())


POOL = ["api", "piped", "lame", "one", "tagged"]


@settings(max_examples=20, deadline=None)
@given(
    st.lists(
        st.one_of(st.sampled_from(POOL), st.integers(min_value=0, max_value=700).map(Silence)), min_size=1, max_size=8
    ).filter(lambda pieces: any(isinstance(p, str) for p in pieces))
)
def test_any_sequence_of_parts_and_pauses_joins_exactly(names: list[str | Silence]):
    pieces = [p if isinstance(p, Silence) else part(p) for p in names]
    out = io.BytesIO()
    result = join(out, pieces)
    data = out.getvalue()
    expected = sum(check_part(p).frames if isinstance(p, bytes) else frames_for_ms(API, p.ms) for p in pieces)
    expected = max(2, expected)  # one frame alone gets a silent one: ffmpeg opens no stream of one frame
    assert result.frames == expected
    assert parse_frames(data).count == expected  # the Info/Xing frame read as such and set aside
    tag, frames, nbytes, toc = read_xing(data)
    assert frames == expected and nbytes == len(data) and list(toc) == sorted(toc)
    pcm, err = decode_file(data)
    assert err == "" and len(pcm) == 2 * 576 * expected
    assert [s.index for s in result.parts] == list(range(len(result.parts)))
    assert all(a.end_sample <= b.start_sample for a, b in zip(result.parts, result.parts[1:], strict=False))


# --------------------------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("name", ["api", "piped", "lame", "tagged", "cd", "cd_vbr", "layer2"])
def test_decode_part_is_what_ffmpeg_makes_of_the_file(name: str):
    pcm, _ = decode_file(part(name))
    mono = decode_part_pcm(part(name))
    if check_part(part(name)).format.channels == 2:
        stereo = array("h", pcm)
        pcm = array("h", ((stereo[i] + stereo[i + 1]) // 2 for i in range(0, len(stereo), 2))).tobytes()
        assert len(mono) == len(pcm)
        assert max(abs(a - b) for a, b in zip(array("h", mono), array("h", pcm), strict=True)) <= 1
    else:
        assert mono == pcm


@pytest.mark.parametrize("rate", [8_000, 16_000, 22_050, 44_100, 48_000])
def test_decode_part_resamples_to_an_exact_length(rate: int):
    for name in ("lame", "one", "cd_vbr"):
        info = check_part(part(name))
        samples = info.samples - (info.encoder_delay or 0) - (info.encoder_padding or 0)
        pcm = decode_part_pcm(part(name), rate)
        assert len(pcm) == 2 * round(samples * rate / info.format.sample_rate)


def test_decode_part_refuses_garbage():
    with pytest.raises(NotAudio):
        decode_part_pcm(b"<html></html>")
