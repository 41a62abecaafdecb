"""Loudness and seams for the decode path: parts measured while decoded, trimmed, levelled, summed up.

Results are checked by measuring the output again with ffmpeg (``ebur128`` on the PCM, or on the MP3 a chapter
would be), not only by the module's own arithmetic. Signals are speech-like: low-passed noise in syllables.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import random
import re
import subprocess
import tempfile
import time
import warnings
from array import array
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.assembly import LEVELLED_MP3_QUALITY
from pipeline.assembly.decode import decode_part_pcm
from pipeline.assembly.loudness import (
    ACX,
    EBU,
    FLOOR_DB,
    LAME_GAIN_DB,
    TARGETS,
    DecodedPart,
    Ebur128Summary,
    Gain,
    LoudnessTarget,
    PartLevel,
    TrimRule,
    active_rms_db,
    apply_gain,
    chapter_loudness,
    decode_and_measure,
    level_part,
    parse_ebur128_summary,
    part_gain,
    trim_silence,
)
from pipeline.errors import AudioError
from pipeline.media import encode_pcm, ffmpeg_exe
from pipeline.mp3 import NotAudio, parse_frames
from tests.audiocheck import decode
from tests.fakeserver import FRAME_BYTES, audio_for

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

RATE = 24_000


# --------------------------------------------------------------------------------------------- signals


@functools.cache
def speech_like(seconds: float, level_db: float, seed: int = 0) -> bytes:
    """Low-passed Gaussian noise in 250 ms "syllables" with 125 ms gaps; ``level_db`` is the RMS of the
    syllables in dBFS."""
    rnd = random.Random(seed)
    sigma = 32768 * 10 ** (level_db / 20) / 0.5  # the one-pole low-pass below halves the noise's RMS
    out = array("h")
    y = 0.0
    for i in range(int(RATE * seconds)):
        phase = (i % 9000) / 9000  # 375 ms
        envelope = math.sin(math.pi * phase * 1.5) if phase < 2 / 3 else 0.0
        y = 0.75 * y + 0.25 * rnd.gauss(0.0, 1.0) * 1.32
        out.append(max(-32767, min(32767, round(sigma * envelope * y))))
    return out.tobytes()


def silence(ms: int) -> bytes:
    return bytes(2 * (RATE * ms // 1000))


def tone(ms: int, level_db: float = -12.0, freq: float = 440.0) -> bytes:
    amp = 32768 * 10 ** (level_db / 20)
    n = RATE * ms // 1000
    return array("h", (round(amp * math.sin(2 * math.pi * freq * i / RATE)) for i in range(n))).tobytes()


def mp3(pcm: bytes) -> bytes:
    return encode_pcm(pcm, in_rate=RATE)


def measure(pcm: bytes, rate: int = RATE) -> Ebur128Summary:
    """ffmpeg's own EBU R128 measurement of raw PCM: the independent check."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-f", "s16le", "-ar", str(rate), "-ac", "1",
           "-i", "pipe:0", "-af", "ebur128=peak=sample+true:framelog=quiet", "-f", "null", "-"]  # fmt: skip
    proc = subprocess.run(cmd, input=pcm, capture_output=True, check=True)
    return parse_ebur128_summary(proc.stderr.decode())


def rms_db(pcm: bytes) -> float:
    return 20 * math.log10(audioop.rms(pcm, 2) / 32768)


def peak_db(pcm: bytes) -> float:
    return 20 * math.log10(audioop.max(pcm, 2) / 32768)


HARD = dataclasses.replace(EBU, name="ebu-hard", max_limiting_db=0.0)  # no limiter: the gain alone keeps peaks


def encoder(target: LoudnessTarget | None, out: str = "mp3", quality: int | None = None) -> list[str]:
    """The chapter encoder as assemble_chapter runs it, with the target's limiter and, with a target, its LAME
    quality (``quality`` overrides it)."""
    af = target.encoder_filter(RATE) if target is not None else None
    q = quality if quality is not None else LEVELLED_MP3_QUALITY if target is not None else None
    lame = ["-compression_level", str(q)] if q is not None else []
    codec = ["-c:a", "libmp3lame", "-b:a", "128k", *lame, "-f", "mp3"] if out == "mp3" else ["-f", "s16le"]
    return [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "s16le", "-ar", str(RATE), "-ac", "1",
            "-i", "pipe:0", *(["-af", af] if af else []), *codec, "pipe:1"]  # fmt: skip


def heard(pcm: bytes, target: LoudnessTarget | None, quality: int | None = None) -> bytes:
    """What a listener gets: the chapter PCM through the chapter encoder, decoded."""
    cmd = encoder(target, quality=quality)
    return decode_part_pcm(subprocess.run(cmd, input=pcm, capture_output=True, check=True).stdout)


# --------------------------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("chars", [400, 40, 1], ids=["long", "short", "one-frame"])
@pytest.mark.parametrize("rate", [24_000, 16_000])
def test_decode_and_measure_gives_the_samples_decode_part_pcm_gives(chars: int, rate: int) -> None:
    data = audio_for("x" * chars, 60)
    if chars == 1:  # the fake server answers at least two frames; a real server may answer one
        data = data[:FRAME_BYTES]
    part = decode_and_measure(data, "mp3", rate, true_peak=True)
    assert part.pcm == decode_part_pcm(data, rate)
    m = part.measurement
    assert (m.samples, m.rate) == (len(part.pcm) // 2, rate)
    assert m.sample_peak_db == pytest.approx(peak_db(part.pcm))
    assert m.true_peak_db >= m.sample_peak_db
    if chars == 1:  # one frame: 24 ms, far below the 400 ms a gated measurement needs
        assert parse_frames(data).count == 1
        assert m.integrated_lufs is None
    else:
        assert m.integrated_lufs == pytest.approx(measure(part.pcm, rate).integrated_lufs, abs=0.15)


def test_a_part_with_a_lame_tag_is_cut_to_its_real_length() -> None:
    # ffmpeg writes a LAME tag (delay and padding) only to a seekable file: go through one.
    pcm = speech_like(1.0, -20.0)
    tagged = encode_pcm(pcm, in_rate=RATE, fmt="mp3")
    part = decode_and_measure(tagged, "mp3", RATE)
    assert part.pcm == decode_part_pcm(tagged, RATE)


def test_wav_and_raw_pcm_parts() -> None:
    pcm = speech_like(2.0, -24.0)
    wav = decode_and_measure(encode_pcm(pcm, in_rate=RATE, fmt="wav"), "wav", RATE, true_peak=True)
    raw = decode_and_measure(pcm, "pcm", RATE, true_peak=True)
    assert wav.pcm == raw.pcm == pcm
    assert wav.measurement == raw.measurement
    assert wav.measurement.true_peak_db is not None and wav.measurement.true_peak_db >= wav.measurement.sample_peak_db
    assert wav.measurement.integrated_lufs == pytest.approx(measure(pcm).integrated_lufs, abs=0.05)
    assert wav.measurement.rms_db == pytest.approx(rms_db(pcm))
    resampled = decode_and_measure(pcm, "pcm", 16_000)
    assert abs(resampled.measurement.samples - 2 * 16_000) <= 1


def test_the_true_peak_is_measured_only_when_asked() -> None:
    data = mp3(speech_like(1.0, -20.0))
    sample_only = decode_and_measure(data, "mp3", RATE).measurement
    both = decode_and_measure(data, "mp3", RATE, true_peak=True).measurement
    assert sample_only.true_peak_db is None and sample_only.peak_db == sample_only.sample_peak_db
    assert both.true_peak_db is not None and both.peak_db == both.true_peak_db >= both.sample_peak_db
    assert sample_only.integrated_lufs == both.integrated_lufs


def test_bad_parts_are_refused() -> None:
    with pytest.raises(NotAudio):
        decode_and_measure(b'{"error": "quota"}', "mp3", RATE)
    with pytest.raises(NotAudio, match="not a WAV file"):  # our own check, before ffmpeg is asked
        decode_and_measure(b"RIFF\x00\x00\x00\x00garbage", "wav", RATE)


def test_the_ebur128_summary_is_read_as_this_ffmpeg_prints_it() -> None:
    text = (
        "[Parsed_ebur128_0 @ 0x7f] [info] Summary:\n\n  Integrated loudness:\n    I:         -35.7 LUFS\n"
        "    Threshold: -45.7 LUFS\n\n  Loudness range:\n    LRA:         0.1 LU\n\n  Sample peak:\n"
        "    Peak:      -22.7 dBFS\n\n  True peak:\n    Peak:      -22.5 dBFS\n[out#0/s16le @ 0x55] [info] video:0KiB"
    )
    assert parse_ebur128_summary(text) == Ebur128Summary(-35.7, -22.7, -22.5)
    silent = "Summary:\n\n  Integrated loudness:\n    I:         -70.0 LUFS\n  True peak:\n    Peak:       -inf dBFS\n"
    assert parse_ebur128_summary(silent) == Ebur128Summary(None, None, FLOOR_DB)
    with pytest.raises(AudioError, match="no loudness summary"):
        parse_ebur128_summary("[error] Invalid data found when processing input")


# --------------------------------------------------------------------------------------------- gain rule


def test_targets_are_named_data() -> None:
    assert TARGETS == {"ebu": EBU, "acx": ACX}
    assert (EBU.measure, EBU.level_db, EBU.ceiling_db) == ("lufs", -18.0, -1.0)
    assert (ACX.measure, ACX.level_db, ACX.low_db, ACX.high_db, ACX.ceiling_db) == ("rms", -20.0, -23.0, -18.0, -3.0)
    assert ACX.peak_limit_db == -3.5  # the MP3 encoder's overshoot is left room for
    assert EBU.max_limiting_db == ACX.max_limiting_db == EBU.headroom_db == 6.0
    assert (EBU.measures_true_peak, ACX.measures_true_peak, HARD.measures_true_peak) == (False, False, True)
    assert HARD.encoder_filter(RATE) is None
    assert EBU.encoder_filter(RATE) == (
        "aresample=48000,alimiter=level_in=1.995262:limit=0.841395:attack=5:release=50:level=false:latency=true,"
        "aresample=24000"
    )  # true peaks: limited at twice the rate
    assert (
        ACX.encoder_filter(RATE)
        == "alimiter=level_in=1.995262:limit=0.668344:attack=5:release=50:level=false:latency=true"
    )
    with pytest.raises(ValueError, match="max_limiting_db"):
        dataclasses.replace(EBU, max_limiting_db=30.0)


@pytest.mark.parametrize(("target", "error"), [(ACX, 0.5), (EBU, 3.0)], ids=["acx", "ebu-oversampled"])
def test_the_limiter_is_sample_exact_and_leaves_the_rest_untouched(target: LoudnessTarget, error: float) -> None:
    quiet = tone(1000, level_db=-26.0)
    loud = tone(100, level_db=-4.0)  # -4 + 6 of headroom: over the limit
    pcm = quiet + loud + quiet
    out = subprocess.run(encoder(target, out="s16le"), input=pcm, capture_output=True, check=True).stdout
    assert len(out) == len(pcm)
    got, sent = array("h", out), array("h", pcm)
    factor = 10 ** (target.headroom_db / 20)
    untouched = [*range(100, RATE * 900 // 1000), *range(len(sent) - RATE * 800 // 1000, len(sent) - 100)]
    # Rounded only (or resampled there and back): one sample late would be ~380 off on this tone.
    assert max(abs(got[i] - sent[i] * factor) for i in untouched) <= error
    out_peak = measure(out)
    assert peak_db(out) == pytest.approx(target.peak_limit_db, abs=0.1)
    assert out_peak.true_peak_db is not None and out_peak.true_peak_db <= target.peak_limit_db + 0.3


@pytest.mark.parametrize(
    ("level", "peak", "expected"),
    [
        (-28.0, -20.0, Gain(10.0, "target")),  # peak ends at -10: far from the ceiling
        (-12.0, -2.0, Gain(-6.0, "target")),  # too loud: brought down
        (-28.0, -8.0, Gain(6.5, "peak", shortfall_db=3.5)),  # the peak would end at -1.5 + 3.5: limited
        (-50.0, -40.0, Gain(24.0, "boost", shortfall_db=8.0)),  # nearly silence is not blown up by 32 dB
        (-30.0, 0.5, Gain(-2.0, "peak", shortfall_db=14.0)),  # clipped already: brought under the ceiling
        (None, -30.0, Gain(0.0, "silent")),
        (FLOOR_DB, FLOOR_DB, Gain(0.0, "silent")),
    ],
)
def test_part_gain_without_a_limiter(level: float | None, peak: float, expected: Gain) -> None:
    gain = part_gain(level, peak, HARD)
    assert gain.limited_by == expected.limited_by
    assert gain.db == pytest.approx(expected.db)
    assert gain.shortfall_db == pytest.approx(expected.shortfall_db)


def test_with_a_limiter_peaks_may_pass_the_limit_by_the_limiting_allowed() -> None:
    assert part_gain(-28.0, -8.0, EBU) == Gain(10.0, "target")  # peak at +2 - 6 of headroom: the limiter's
    spiky = part_gain(-30.0, 0.5, EBU)
    assert (spiky.db, spiky.limited_by) == (pytest.approx(4.0), "peak")  # -1.5 + 6 - 0.5
    assert spiky.shortfall_db == pytest.approx(8.0)


def test_the_gain_makes_up_for_the_encoder_but_the_peak_limit_is_on_the_pcm() -> None:
    assert part_gain(-28.0, -20.0, EBU, encoder_gain_db=-0.45).db == pytest.approx(10.45)
    limited = part_gain(-28.0, -8.0, HARD, encoder_gain_db=-0.45)
    assert (limited.db, limited.limited_by) == (6.5, "peak")
    assert limited.shortfall_db == pytest.approx(3.95)  # the file ends at -28 + 6.5 - 0.45


@pytest.mark.parametrize("quality", [None, LEVELLED_MP3_QUALITY], ids=["lame-default", "levelled-chapters"])
def test_libmp3lame_plays_back_quieter_by_the_encoder_gain(quality: int | None) -> None:
    pcm = tone(3000, level_db=-10.0, freq=1000.0)
    steady = heard(pcm, None, quality)[2 * RATE : 2 * 2 * RATE]  # a steady second: no edges
    assert rms_db(steady) - rms_db(pcm) == pytest.approx(LAME_GAIN_DB, abs=0.03)


def test_apply_gain_saturates_instead_of_wrapping() -> None:
    pcm = array("h", [20000, -20000, 100]).tobytes()
    assert array("h", apply_gain(pcm, 6.0206)).tolist() == [32767, -32768, 200]
    assert apply_gain(pcm, 0.0) is pcm


# --------------------------------------------------------------------------------------------- levelling


def _level_chapter(parts: list[bytes], target: LoudnessTarget, pause_ms: int = 500) -> tuple[bytes, list[PartLevel]]:
    """Parts through decode, measure, trim, gain as the decode path will run them; the chapter's PCM."""
    levels: list[PartLevel] = []
    out = [silence(pause_ms)]
    for data in parts:
        decoded = decode_and_measure(data, "mp3", RATE, true_peak=target.measures_true_peak)
        part = level_part(decoded, target, previous=levels[-1] if levels else None)
        levels.append(part.level)
        out += [part.pcm, silence(pause_ms)]
    return b"".join(out), levels


def test_two_parts_generated_10_db_apart_end_within_1_lu_of_each_other_and_the_target() -> None:
    loud, quiet = mp3(speech_like(3.0, -16.0, seed=1)), mp3(speech_like(3.0, -26.0, seed=2))
    before = [decode_and_measure(p, "mp3", RATE).measurement.integrated_lufs for p in (loud, quiet)]
    assert before[0] is not None and before[1] is not None
    assert before[0] - before[1] == pytest.approx(10.0, abs=0.5)

    chapter, levels = _level_chapter([loud, quiet], EBU)
    assert [lv.gain.limited_by for lv in levels] == ["target", "target"]
    assert levels[1].gain.db - levels[0].gain.db == pytest.approx(10.0, abs=0.5)

    listened = heard(chapter, EBU)  # measured again, by ffmpeg, on what a listener gets
    spans, at = [], RATE // 2
    for lv in levels:
        spans.append(listened[2 * at : 2 * (at + lv.samples)])
        at += lv.samples + RATE // 2
    after = [measure(span).integrated_lufs for span in spans]
    assert after[0] is not None and after[1] is not None
    assert abs(after[0] - after[1]) <= 1.0
    assert all(abs(lufs - EBU.level_db) <= 1.0 for lufs in after)
    assert all(abs(lufs - EBU.level_db) <= 0.3 for lufs in after)  # the encoder's -0.45 dB made up for
    whole = measure(listened)
    assert whole.integrated_lufs == pytest.approx(EBU.level_db, abs=0.5)
    assert whole.true_peak_db is not None and whole.true_peak_db <= EBU.ceiling_db

    summary = chapter_loudness(levels, silence_samples=3 * RATE // 2, rate=RATE)
    assert summary.integrated_lufs == pytest.approx(whole.integrated_lufs, abs=0.4)  # 1/7 of it is pauses
    assert summary.source_lufs == pytest.approx(10 * math.log10((10 ** (before[0] / 10) + 10 ** (before[1] / 10)) / 2),
                                                abs=0.2)  # fmt: skip
    assert EBU.accepts(summary)
    assert (summary.parts, summary.peak_limited, summary.estimated, summary.silent) == (2, 0, 0, 0)


def test_acx_rms_and_peaks_hold_on_the_encoded_chapter() -> None:
    parts = [mp3(speech_like(3.0, level, seed=i)) for i, level in enumerate((-14.0, -22.0, -30.0))]
    chapter, levels = _level_chapter(parts, ACX, pause_ms=300)
    listened = heard(chapter, ACX)
    assert ACX.low_db <= rms_db(listened) <= ACX.high_db  # ACX's way: unweighted, the whole file, pauses in
    assert peak_db(listened) <= ACX.ceiling_db
    summary = chapter_loudness(levels, silence_samples=4 * RATE * 300 // 1000, rate=RATE)
    assert summary.rms_db == pytest.approx(rms_db(chapter) + ACX.headroom_db + LAME_GAIN_DB, abs=0.05)
    assert summary.rms_db == pytest.approx(rms_db(listened), abs=0.3)
    assert summary.peak_db == pytest.approx(peak_db(listened), abs=0.4)
    assert ACX.accepts(summary) and summary.true_peak_db is None  # ACX counts sample peaks
    for lv in levels:
        if lv.gain.limited_by == "target":
            assert lv.rms_db + LAME_GAIN_DB == pytest.approx(ACX.level_db, abs=0.05)
    assert sum(lv.limiting_db > 0 for lv in levels) == summary.limited >= 1  # peaks of noise: 17 dB over RMS


@pytest.mark.parametrize("target", [HARD, EBU], ids=["no-limiter", "limiter"])
def test_the_peak_ceiling_wins_over_the_target_for_a_spiky_part(target: LoudnessTarget) -> None:
    pcm = bytearray(speech_like(3.0, -34.0, seed=3))
    for at in (RATE // 2, RATE, 2 * RATE):  # three clicks near full scale in quiet speech: 30 dB over it
        pcm[2 * at : 2 * at + 8] = array("h", [28000, -30000, 26000, -12000]).tobytes()
    part = level_part(decode_and_measure(mp3(bytes(pcm)), "mp3", RATE, true_peak=target.measures_true_peak), target)
    gain = part.level.gain
    assert gain.limited_by == "peak" and gain.shortfall_db > 3.0
    assert part.level.limiting_db == pytest.approx(target.max_limiting_db, abs=0.01)
    listened = heard(part.pcm, target)
    out = measure(listened)
    assert out.true_peak_db is not None and out.true_peak_db <= target.ceiling_db
    assert out.integrated_lufs is not None and out.integrated_lufs < target.level_db - 3.0  # quieter, as reported
    summary = chapter_loudness([part.level], silence_samples=0, rate=RATE)
    assert (summary.peak_limited, summary.max_shortfall_db) == (1, pytest.approx(gain.shortfall_db, abs=0.01))
    if not target.max_limiting_db:  # the limiter takes the clicks, which are half this quiet part's loudness
        assert summary.integrated_lufs == pytest.approx(out.integrated_lufs, abs=0.2)
    assert not target.accepts(summary)


SPOKEN = (
    "Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing to do: "
    "once or twice she had peeped into the book her sister was reading, but it had no pictures or conversations "
    "in it, and what is the use of a book, thought Alice, without pictures or conversations?",
    "So she was considering in her own mind, as well as she could, for the hot day made her feel very sleepy "
    "and stupid, whether the pleasure of making a daisy-chain would be worth the trouble of getting up and "
    "picking the daisies, when suddenly a White Rabbit with pink eyes ran close by her.",
)


def spoken(text: str, gain_db: float) -> bytes:
    """A part of real speech, from the offline voice (eSpeak NG), as a request ``gain_db`` louder answers it."""
    from pipeline.tts.espeak import engine

    voice = engine()
    pcm = apply_gain(voice.pcm(text, "en-us", 175), gain_db)
    return encode_pcm(pcm, in_rate=voice.sample_rate, out_rate=RATE)


def test_speech_with_real_peaks_needs_the_limiter_to_reach_the_target_evenly() -> None:
    """Speech peaks ~19 dB over its loudness; the targets leave 17. Without the limiter every part stops
    short of the target; with it, parts from requests 8 dB apart end on it, within a few tenths."""
    parts = [spoken(SPOKEN[0], 0.0), spoken(SPOKEN[1], -8.0)]
    results = {}
    for target in (HARD, EBU):
        chapter, levels = _level_chapter(parts, target)
        listened = heard(chapter, target)
        spans, at = [], RATE // 2
        for lv in levels:
            spans.append(measure(listened[2 * at : 2 * (at + lv.samples)]).integrated_lufs)
            at += lv.samples + RATE // 2
        results[target.name] = (levels, spans, measure(listened))
    levels, spans, whole = results["ebu-hard"]
    assert all(lv.gain.limited_by == "peak" for lv in levels)  # the gain alone stops short ...
    assert all(lufs is not None and lufs < EBU.low_db for lufs in spans)  # ... out of the target's range
    levels, spans, whole = results["ebu"]
    assert all(lv.gain.limited_by == "target" and lv.limiting_db > 2.0 for lv in levels)
    assert all(lufs is not None and abs(lufs - EBU.level_db) <= 0.5 for lufs in spans)
    assert abs(spans[0] - spans[1]) <= 0.5
    assert whole.true_peak_db is not None and whole.true_peak_db <= EBU.ceiling_db
    summary = chapter_loudness(levels, silence_samples=3 * RATE // 2, rate=RATE)
    assert EBU.accepts(summary)
    assert summary.integrated_lufs == pytest.approx(whole.integrated_lufs, abs=0.5)  # the limiter takes ~0.3


def test_a_part_too_short_to_measure_lands_with_its_neighbour() -> None:
    long = level_part(decode_and_measure(mp3(speech_like(3.0, -30.0, seed=4)), "mp3", RATE), EBU)
    short_pcm = speech_like(0.3, -30.0, seed=5)  # one syllable: no 400 ms block
    decoded = decode_and_measure(mp3(short_pcm), "mp3", RATE)
    assert decoded.measurement.integrated_lufs is None
    short = level_part(decoded, EBU, previous=long.level)
    assert short.level.estimated and short.level.gain.limited_by == "target"
    assert short.level.gain.db == pytest.approx(long.level.gain.db, abs=1.5)
    alone = level_part(decoded, EBU)  # no neighbour: offset 0 dB, still not blown up
    assert alone.level.gain.db < long.level.gain.db + 4.0
    assert active_rms_db(short.pcm, RATE) == pytest.approx(active_rms_db(long.pcm, RATE), abs=1.5)


def test_a_one_frame_part_is_levelled_not_blown_up() -> None:
    # One frame (24 ms) from the middle of the fake server's tone (encoded without a bit reservoir, so it
    # stands alone; its first frame is all encoder delay, silence).
    data = audio_for("x" * 10, 60)[5 * FRAME_BYTES : 6 * FRAME_BYTES]
    neighbour = level_part(decode_and_measure(audio_for("x" * 100, 60), "mp3", RATE), EBU)
    part = level_part(decode_and_measure(data, "mp3", RATE), EBU, previous=neighbour.level)
    assert part.level.estimated and part.level.samples == 576
    assert part.level.gain.limited_by in ("target", "peak")
    assert part.level.gain.db <= neighbour.level.gain.db + 6.0
    assert part.level.sample_peak_db <= EBU.peak_limit_db


def test_a_silent_part_is_left_silent_and_short() -> None:
    decoded = decode_and_measure(mp3(silence(2000)), "mp3", RATE)
    assert decoded.measurement.integrated_lufs is None
    part = level_part(decoded, EBU)
    assert part.level.gain == Gain(0.0, "silent")
    assert part.level.samples == 2 * RATE * 40 // 1000  # two margins
    assert audioop.max(part.pcm, 2) == 0
    summary = chapter_loudness([part.level], silence_samples=RATE, rate=RATE)
    assert (summary.integrated_lufs, summary.rms_db, summary.silent) == (None, FLOOR_DB, 1)
    assert not EBU.accepts(summary)


def test_no_target_measures_and_trims_only() -> None:
    pcm = silence(300) + speech_like(2.0, -25.0, seed=6) + silence(300)
    part = level_part(DecodedPart(pcm, decode_and_measure(pcm, "pcm", RATE).measurement), None)
    assert part.level.gain == Gain(0.0, "target")
    assert part.pcm == pcm[2 * part.level.trimmed_lead : len(pcm) - 2 * part.level.trimmed_tail]
    assert part.level.trimmed_lead > 0 and part.level.trimmed_tail > 0


def test_chapter_loudness_weights_energy_by_duration() -> None:
    def level(seconds: float, lufs: float) -> PartLevel:
        gain = Gain(2.0, "target")
        return PartLevel(samples=int(seconds * RATE), rate=RATE, encoder_gain_db=0.0, headroom_db=0.0,
                         trimmed_lead=240, trimmed_tail=0, gain=gain, limiting_db=0.0,
                         lufs_before=lufs - 2.0, rms_db_before=lufs - 2.0, estimated=False, lufs_offset_db=0.0,
                         rms_db=lufs, sample_peak_db=lufs + 10, true_peak_db=lufs + 10.2)  # fmt: skip

    summary = chapter_loudness([level(1, -18.0), level(1, -28.0), level(2, -18.0)], silence_samples=0, rate=RATE)
    assert summary.integrated_lufs == pytest.approx(-18 + 10 * math.log10((3 + 0.1) / 4), abs=0.01)
    assert summary.source_lufs == pytest.approx(summary.integrated_lufs - 2.0, abs=0.01)
    assert summary.rms_db == pytest.approx(summary.integrated_lufs, abs=0.01)
    with_pauses = chapter_loudness([level(1, -18.0)], silence_samples=RATE, rate=RATE)
    assert with_pauses.integrated_lufs == -18.0  # pauses are below the gate
    assert with_pauses.rms_db == pytest.approx(-18 - 3.01, abs=0.01)  # ... but count for RMS, as ACX counts
    assert (summary.true_peak_db, summary.trimmed_ms, summary.duration_ms) == (-7.8, 30, 4000)
    encoded = chapter_loudness([dataclasses.replace(level(1, -18.0), encoder_gain_db=-0.5)], silence_samples=0,
                               rate=RATE)  # fmt: skip
    assert (encoded.integrated_lufs, encoded.rms_db, encoded.peak_db, encoded.source_lufs) == (-18.5, -18.5, -8, -20)


# --------------------------------------------------------------------------------------------- seams


@pytest.mark.parametrize(("lead_ms", "tail_ms"), [(500, 300), (505, 303), (45, 0), (0, 1000)])
def test_trimming_is_exact_to_a_window_and_the_margin(lead_ms: int, tail_ms: int) -> None:
    pcm = silence(lead_ms) + tone(1000) + silence(tail_ms)
    trimmed = trim_silence(pcm, RATE)  # windows of 10 ms, margins of 40 ms
    assert trimmed.lead_ms == max(0, lead_ms // 10 * 10 - 40)
    assert trimmed.tail_ms == max(0, tail_ms // 10 * 10 - 40)
    assert trimmed.pcm == pcm[2 * trimmed.lead_samples : len(pcm) - 2 * trimmed.tail_samples]
    wider = trim_silence(pcm, RATE, TrimRule(margin_ms=100, window_ms=20))
    assert wider.lead_ms == max(0, lead_ms // 20 * 20 - 100)


def test_quiet_noise_is_silence_but_a_soft_onset_is_not() -> None:
    rnd = random.Random(7)
    hiss = array("h", (rnd.randint(-20, 20) for _ in range(RATE // 2))).tobytes()  # -64 dBFS: under the floor
    soft = tone(100, level_db=-50.0)  # 38 dB under the peak: sound
    pcm = hiss + soft + tone(500, level_db=-12.0) + hiss
    trimmed = trim_silence(pcm, RATE)
    assert trimmed.lead_ms == 500 - 40 and trimmed.tail_ms == 500 - 40


def test_trimming_an_encoded_part() -> None:
    pcm = silence(800) + speech_like(1.5, -20.0, seed=8) + silence(600)
    exact = trim_silence(pcm, RATE)
    trimmed = trim_silence(decode_and_measure(mp3(pcm), "mp3", RATE).pcm, RATE)
    # The encoder's delay (~1105 samples, ~46 ms) moves the sound later: more lead, less tail to remove.
    assert exact.lead_ms <= trimmed.lead_ms <= exact.lead_ms + 60
    assert exact.tail_ms - 60 <= trimmed.tail_ms <= exact.tail_ms + 10


def test_a_silent_part_keeps_two_margins_and_nothing_is_invented() -> None:
    assert trim_silence(silence(2000), RATE).pcm == silence(80)
    assert trim_silence(silence(30), RATE).pcm == silence(30)
    assert trim_silence(b"", RATE).pcm == b""


@settings(max_examples=60, deadline=None)
@given(
    lead=st.integers(0, 4000),
    body=st.integers(1, 3000),
    tail=st.integers(0, 4000),
    level=st.integers(-50, -1),
)
def test_trimming_never_cuts_into_sound(lead: int, body: int, tail: int, level: int) -> None:
    """Sound anywhere (here a click pattern at any level above the floor): every loud sample stays, with at
    least the margin of silence before and after it unless the part had less."""
    rnd = random.Random(body)
    sound = array("h", (rnd.choice((-1, 1)) * round(32767 * 10 ** (level / 20)) for _ in range(body))).tobytes()
    pcm = bytes(2 * lead) + sound + bytes(2 * tail)
    trimmed = trim_silence(pcm, RATE)
    assert sound in trimmed.pcm
    margin = RATE * 40 // 1000
    assert trimmed.lead_samples <= max(0, lead - margin) and trimmed.tail_samples <= max(0, tail - margin)
    assert trimmed.lead_samples > lead - margin - RATE // 100  # and no more than a window's worth is kept
    assert trimmed.tail_samples > tail - margin - RATE // 100


# --------------------------------------------------------------------------------------------- benchmark
# Not a test: `python -m tests.test_loudness [--minutes 30] [--repeat 3]` times the decoding path with loudness as
# assemble_chapter would run it (parts decoded, measured, trimmed and levelled one ahead in a helper thread,
# streamed with 250 ms pauses into one MP3 encoder with the target's limiter), against today's pydub path and
# plain decode_part_pcm, on the offline voice's speech and on the fake server's tone. With speech the encoder
# is the critical path (LAME alone at its default quality: ~190x here); the levelled modes encode at the quality
# assemble_chapter gives a levelled chapter (LEVELLED_MP3_QUALITY, 7: 2-2.5x faster), `--lame-q 3` at LAME's own.


def _bench_parts(kind: str, count: int) -> list[bytes]:
    if kind == "tone":  # the fake server's answers, 15-35 s
        return [audio_for("x" * (250 + i * 7919 % 350), 60) for i in range(count)]
    corpus = Path(os.environ.get("AUDIOBOOK_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "corpus"))
    book = corpus / "alice-pg11.txt"
    text = book.read_text(encoding="utf-8")[5000:200_000] if book.is_file() else " ".join(SPOKEN) * 40
    chunks = re.findall(r".{300,480}?[.!?]\s", text, re.S)[:count]  # ~20-30 s each
    return [spoken(" ".join(chunk.split()), -8.0 if i % 3 == 0 else 0.0) for i, chunk in enumerate(chunks)]


def _bench_run(parts: list[bytes], mode: str, out: Path, lame_q: str | None) -> tuple[float, float, float, str]:
    """(audio seconds, wall seconds, CPU seconds of this process and its children, loudness note)."""
    levels: list[PartLevel] = []
    target = TARGETS.get(mode)

    def load(i: int) -> bytes:
        if mode == "pydub":  # what assemble_chapter does today
            return decode(parts[i], "mp3").set_channels(1).set_frame_rate(RATE).set_sample_width(2).raw_data
        if target is None:  # "plain": decode_part_pcm, no loudness
            return decode_part_pcm(parts[i], RATE)
        decoded = decode_and_measure(parts[i], "mp3", RATE, true_peak=target.measures_true_peak)
        part = level_part(decoded, target, previous=levels[-1] if levels else None)
        levels.append(part.level)  # one worker, so in order
        return part.pcm

    af = target.encoder_filter(RATE) if target is not None else None
    if lame_q is None and target is not None:  # as assemble_chapter encodes a levelled chapter
        lame_q = str(LEVELLED_MP3_QUALITY)
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostats", "-loglevel", "error", "-f", "s16le", "-ar", str(RATE),
           "-ac", "1", "-i", "pipe:0", *(["-af", af] if af else []), "-ar", str(RATE), "-ac", "1",
           "-c:a", "libmp3lame", "-b:a", "128k", *(["-compression_level", lame_q] if lame_q else []),
           "-id3v2_version", "0", "-write_xing", "1", "-map_metadata", "-1", "-f", "mp3", "-y", str(out)]  # fmt: skip
    pause = silence(250)
    before, start, samples = os.times(), time.perf_counter(), 0
    enc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    assert enc.stdin is not None
    with ThreadPoolExecutor(max_workers=1) as pool:
        ahead = pool.submit(load, 0)
        for i in range(len(parts)):
            pcm = ahead.result()
            if i + 1 < len(parts):
                ahead = pool.submit(load, i + 1)
            enc.stdin.write(pcm + pause)
            samples += (len(pcm) + len(pause)) // 2
    enc.stdin.close()
    assert enc.wait() == 0
    wall, after = time.perf_counter() - start, os.times()
    cpu = sum(after[k] - before[k] for k in range(4))  # user, system, children's user and system
    note = ""
    if levels:
        s = chapter_loudness(levels, silence_samples=len(parts) * len(pause) // 2, rate=RATE)
        check = [ffmpeg_exe(), "-hide_banner", "-nostats", "-i", str(out), "-af",
                 "ebur128=peak=sample+true:framelog=quiet", "-f", "null", "-"]  # fmt: skip
        got = parse_ebur128_summary(subprocess.run(check, capture_output=True, text=True, check=True).stderr)
        note = (
            f"estimate I {s.integrated_lufs} RMS {s.rms_db} peak {s.peak_db} ({s.limited} parts limited, "
            f"{s.peak_limited} short); file I {got.integrated_lufs} SP {got.sample_peak_db} TP {got.true_peak_db}"
        )
    return samples / RATE, wall, cpu, note


def main() -> None:
    import argparse
    import statistics

    parser = argparse.ArgumentParser(description="Throughput of the decoding path with loudness")
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--modes", default="pydub,plain,ebu,acx")
    parser.add_argument("--sets", default="speech,tone")
    parser.add_argument(
        "--lame-q", help="the encoder's -compression_level (LAME -q; default: assemble_chapter's, 7 when levelling)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.sets.split(","):
            distinct = _bench_parts(kind, 16)
            parts: list[bytes] = []
            seconds = 0.0
            while seconds < args.minutes * 60:
                parts.append(distinct[len(parts) % len(distinct)])
                seconds += len(decode_part_pcm(parts[-1])) / 2 / RATE
            print(f"{kind}: {len(parts)} parts, {seconds / 60:.1f} min; load average {os.getloadavg()[0]:.1f}")
            runs: dict[str, list[tuple[float, float, float, str]]] = {mode: [] for mode in args.modes.split(",")}
            for _ in range(args.repeat):  # interleaved, so a neighbour's load spreads over every mode
                for mode, results in runs.items():
                    results.append(_bench_run(parts, mode, Path(tmp) / "out.mp3", args.lame_q))
            for mode, results in runs.items():
                speeds = [audio / wall for audio, wall, _, _ in results]
                cpu = statistics.median(r[2] for r in results)
                print(
                    f"  {mode:6} median {statistics.median(speeds):5.1f}x, best {max(speeds):5.1f}x real time, "
                    f"CPU {cpu:4.1f} s  {results[-1][3]}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
