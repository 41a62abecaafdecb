"""Verification: is a part the speech of its text? The timing check, always on and nearly free.

Two halves, apart because they run in different places:

- **Measuring** (``measure``, ``measured``) where a part arrives (the executor's worker, any machine): one
  decode with the assembly's decoder, 20 ms frame levels with ``audioop``, voiced time and silences. The
  measure is kept beside the part in the store (a ``<key>.<fmt>.measure.json`` sidecar), so a cached part is
  never measured twice, and a part met without one is measured before it is trusted.
- **Judging** (``Judge``) where results come together (the runner): the book's speech rate per voice,
  language script and speed is a running estimate, and a part far outside it, or holding a long silence, is
  suspect and made again.

Thresholds are those of the calibration on 2,222 real offline-voice parts (README, Verification): 0 false
alarms, 97 % of parts cut to half and every part repeated or holding 4 s of silence caught.
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import warnings
from dataclasses import asdict, dataclass, field, replace

from pipeline.assembly.decode import RAW_PCM_RATE, decode_part
from pipeline.models import PartMeasure, Verdict
from pipeline.store import FileStore, PartStore
from pipeline.textfacts import CJK_CHAR, is_cjk
from pipeline.transcript import COVERAGE_MIN, GAP_MIN_CHARS, GAP_MIN_WORDS, Coverage

with warnings.catch_warnings():
    # Deprecated on Python 3.11-3.12 (audioop-lts provides it from 3.13).
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

FRAME_S = 0.020
FLOOR_DB = -45.0  # a frame below this is never speech (noise, MP3 hiss)
RELATIVE_DB = 35.0  # nor one this far below the part's own P95 level (a quiet voice is not silence)
# Characters a voiced second at speed 1: the estimate's seed, worth three parts, until the book's own parts
# take over. eSpeak reads 17.4 non-space Latin and 3.8-4.2 CJK; API voices 13-17 and 4-6.
PRIOR_RATE = {"latin": 16.0, "cjk": 5.0}
PRIOR_WEIGHT = 3
MIN_CHARS_FOR_RATE = 20  # shorter parts vary too much to move the estimate
MIN_CHARS_FOR_SPREAD = 40
SPREAD_PARTS = 8  # parts of >= 40 characters before the stream's own spread is used
WARM_SPREAD = 0.08  # until then: a half-width of 0.40
BAND_MIN, BAND_MAX = 0.30, 0.70  # half-width of the band, in log rate: 5 sigma, clamped
SLACK_S = 0.2  # for short parts, whose spread is two to three times larger
SILENCE_S = 2.5  # at speed 1; clean parts reach 0.69 s (x speed), 3.6x under it
CJK_WEIGHT = 3  # a CJK character takes about as long as 3 Latin non-space characters (16/5)
# An emoji is said as a word or two ("Christmas tree", "face with tears of joy": 0.6 to 1.2 s by the offline
# voice), not as one character; an engine that leaves it unsaid leaves the part within the band's lower side.
EMOJI_WEIGHT = 10
SIDECAR = "measure.json"
TRANSCRIPT_STEP = 1.0  # badness of a try its transcript finds suspect, beyond its timing (see transcript_badness)
_WIDTH = 2


# --- measuring ---------------------------------------------------------------------------------------------


def count_chars(text: str) -> tuple[int, str]:
    """(count, script) as the rate is measured: non-space characters in a Latin-script part; letters and digits
    in a CJK one (full-width punctuation is not spoken and only adds noise). In mixed text the part's script is
    that of most of its letters; the other script's characters are weighted by how long they take to say (a
    CJK character in Latin text counts 3, three Latin letters in CJK text count 1)."""
    cjk = sum(1 for ch in text if ch.isalnum() and _is_cjk_char(ch))
    emoji = sum(1 for ch in text if _is_pictograph(ch))
    glue = sum(1 for ch in text if _is_emoji_glue(ch))
    if is_cjk(text):
        latin = sum(1 for ch in text if ch.isalnum() and not _is_cjk_char(ch))
        return cjk + math.ceil(latin / CJK_WEIGHT) + math.ceil(emoji * EMOJI_WEIGHT / CJK_WEIGHT), "cjk"
    nonspace = sum(1 for ch in text if not ch.isspace())
    return nonspace + (CJK_WEIGHT - 1) * cjk + (EMOJI_WEIGHT - 1) * emoji - glue, "latin"


def _is_pictograph(ch: str) -> bool:
    code = ord(ch)
    return 0x1F000 <= code <= 0x1FAFF and not 0x1F3FB <= code <= 0x1F3FF or 0x2600 <= code <= 0x27BF


def _is_emoji_glue(ch: str) -> bool:
    """What joins or dresses an emoji and is not said: the zero-width joiner, variation selectors, skin tones."""
    code = ord(ch)
    return code == 0x200D or 0xFE00 <= code <= 0xFE0F or 0x1F3FB <= code <= 0x1F3FF


def _is_cjk_char(ch: str) -> bool:
    return CJK_CHAR.match(ch) is not None


def measure(audio: bytes, fmt: str, text: str) -> PartMeasure:
    """Decode a part once and measure its voiced time and silences (~1 ms of analysis after the decode)."""
    # At 24 kHz whatever the part's rate (OpenAI's and eSpeak's parts are 24 kHz: no resampling).
    pcm = decode_part(audio, fmt, RAW_PCM_RATE).pcm
    rate = RAW_PCM_RATE
    chars, script = count_chars(text)
    return analyse(pcm, rate, chars, script, size=len(audio))


def analyse(pcm: bytes, rate: int, chars: int, script: str, size: int = 0) -> PartMeasure:
    """The measure of s16le mono PCM at ``rate``."""
    step = max(1, round(rate * FRAME_S)) * _WIDTH
    levels = [_db(audioop.rms(pcm[at : at + step], _WIDTH)) for at in range(0, len(pcm) - step + 1, step)]
    duration = len(pcm) / _WIDTH / rate
    if not levels:
        return PartMeasure(chars, script, round(duration, 3), 0.0, 0.0, round(duration, 3), 0.0, size)
    p95 = sorted(levels)[min(len(levels) - 1, int(0.95 * len(levels)))]
    threshold = max(FLOOR_DB, p95 - RELATIVE_DB)
    voiced = [level > threshold for level in levels]
    if not any(voiced):
        return PartMeasure(chars, script, round(duration, 3), 0.0, 0.0, round(duration, 3), 0.0, size)
    first = voiced.index(True)
    last = len(voiced) - 1 - voiced[::-1].index(True)
    longest = run = 0
    for v in voiced[first : last + 1]:
        run = 0 if v else run + 1
        longest = max(longest, run)
    frame = step / _WIDTH / rate
    return PartMeasure(
        chars=chars,
        script=script,
        duration_s=round(duration, 3),
        voiced_s=round(sum(voiced) * frame, 3),
        inner_silence_s=round(longest * frame, 3),
        lead_s=round(first * frame, 3),
        trail_s=round(max(0.0, duration - (last + 1) * frame), 3),
        size=size,
    )


def _db(rms: int) -> float:
    return 20 * math.log10(rms / 32768) if rms > 0 else -120.0


def _sidecar(fmt: str) -> str:
    return f"{fmt}.{SIDECAR}"


def load(store: PartStore, key: str, fmt: str) -> PartMeasure | None:
    """The measure kept beside a part, or None when there is none or it belongs to another copy of the part."""
    raw = store.get(key, _sidecar(fmt))
    if raw is None:
        return None
    try:
        found = PartMeasure(**json.loads(raw))
    except (ValueError, TypeError):
        return None  # unreadable: measured again
    if isinstance(store, FileStore):  # a stat is free: a part replaced without its measure is caught
        try:
            if store.path(key, fmt).stat().st_size != found.size:
                return None
        except OSError:
            return None
    return found


def save(store: PartStore, key: str, fmt: str, found: PartMeasure) -> None:
    """Keep a part's measure beside it (an atomic write, as the part's own)."""
    store.put(key, json.dumps(asdict(found), separators=(",", ":")).encode(), _sidecar(fmt))


def measured(store: PartStore, key: str, fmt: str, text: str) -> PartMeasure | None:
    """A stored part's measure: kept, or taken now (and kept) when it has none. None when the part is gone."""
    found = load(store, key, fmt)
    if found is not None:
        # The audio's measure is kept; its text is counted again (how it is counted may have changed since).
        chars, script = count_chars(text)
        return found if (found.chars, found.script) == (chars, script) else replace(found, chars=chars, script=script)
    audio = store.get(key, fmt)
    if audio is None:
        return None
    found = measure(audio, fmt, text)
    with contextlib.suppress(OSError):  # not kept: measured again next time; the part itself is fine
        save(store, key, fmt, found)
    return found


# --- judging -----------------------------------------------------------------------------------------------


def silence_limit(speed: float | None) -> float:
    return SILENCE_S / (speed or 1.0)


def longest_silence(found: PartMeasure) -> float:
    return max(found.inner_silence_s, found.lead_s, found.trail_s)


def badness(found: PartMeasure, expected_s: float, limit_s: float) -> float:
    """How far a try is from what its text should take: log distance of its voiced time from the expected,
    plus its silence beyond the limit. The lower, the better; the best try of a part is kept."""
    off = abs(math.log(max(found.voiced_s, 0.01) / max(expected_s, 0.01)))
    return off + max(0.0, longest_silence(found) - limit_s)


@dataclass(eq=False)
class _Stream:
    rates: list[float] = field(default_factory=list)  # parts of >= 20 characters
    spread_rates: list[float] = field(default_factory=list)  # log rates of parts of >= 40 characters


class Judge:
    """The book's running estimate of its speech rate, per voice + language script + speed, and the verdicts
    against it. ``judge`` rates a part and adds its rate to the estimate (a median: a few bad parts do not
    move it)."""

    def __init__(self) -> None:
        self._streams: dict[tuple[str, str, float], _Stream] = {}

    def expected_rate(self, voice: str, script: str, speed: float | None) -> tuple[float, float]:
        """(characters a voiced second, half-width of the band in log rate) for a stream now."""
        speed = speed or 1.0
        stream = self._streams.get((voice, script, speed), _Stream())
        prior = PRIOR_RATE.get(script, PRIOR_RATE["latin"]) * speed
        estimate = statistics.median([prior] * PRIOR_WEIGHT + stream.rates)
        sigma = WARM_SPREAD
        if len(stream.spread_rates) >= SPREAD_PARTS:
            centre = statistics.median(stream.spread_rates)
            sigma = 1.4826 * statistics.median(abs(r - centre) for r in stream.spread_rates)
        return estimate, min(BAND_MAX, max(BAND_MIN, 5 * sigma))

    def judge(self, found: PartMeasure, voice: str, speed: float | None, *, learn: bool = True) -> Verdict:
        estimate, width = self.expected_rate(voice, found.script, speed)
        expected = found.chars / estimate
        low, high = expected * math.exp(-width) - SLACK_S, expected * math.exp(width) + SLACK_S
        limit = silence_limit(speed)
        reasons: list[str] = []
        if found.voiced_s < low:
            reasons.append("cut short")
        if found.voiced_s > high:
            reasons.append("runs on")
        if found.inner_silence_s > limit:
            reasons.append(f"{found.inner_silence_s:.1f} s of silence inside")
        edge = max(found.lead_s, found.trail_s)
        if edge > limit:
            reasons.append(f"{edge:.1f} s of silence at an edge")
        rate = found.chars / found.voiced_s if found.voiced_s > 0 else 0.0
        if learn and found.voiced_s > 0:
            stream = self._streams.setdefault((voice, found.script, speed or 1.0), _Stream())
            if found.chars >= MIN_CHARS_FOR_RATE:
                stream.rates.append(rate)
            if found.chars >= MIN_CHARS_FOR_SPREAD:
                stream.spread_rates.append(math.log(rate))
        return Verdict(
            ok=not reasons,
            reasons=tuple(reasons),
            voiced_s=found.voiced_s,
            expected_s=round(expected, 3),
            low_s=round(max(0.0, low), 3),
            high_s=round(high, 3),
            rate=round(rate, 2),
            expected_rate=round(estimate, 2),
            longest_silence_s=longest_silence(found),
            silence_limit_s=round(limit, 3),
        )


def with_transcript(verdict: Verdict, heard: Coverage | None) -> Verdict:
    """Fold a part's transcript check (``transcript.compare``) into its timing verdict. None: no transcript
    (the check is off, or could not run), the verdict stands."""
    if heard is None:
        return verdict
    reason = transcript_reason(heard)
    reasons = verdict.reasons + ((reason,) if reason else ())
    return Verdict(**{**asdict(verdict), "ok": not reasons, "reasons": reasons, "coverage": round(heard.coverage, 4)})


def transcript_reason(heard: Coverage) -> str | None:
    """Why a transcript makes its part suspect, or None when it does not."""
    if not heard.suspect:
        return None
    gap_min = GAP_MIN_CHARS if heard.by_char else GAP_MIN_WORDS
    if heard.coverage >= COVERAGE_MIN and heard.longest_gap < gap_min:
        return f"says more than its text ({heard.describe()})"
    return f"left out words ({heard.describe()})"


def transcript_badness(heard: Coverage | None) -> float:
    """What a transcript adds to a try's ``badness``: the share unsaid and the share extra, plus a step for a
    suspect one, so a try the transcript condemns ranks below any the timing check alone finds near."""
    if heard is None:
        return 0.0
    return (1.0 - heard.coverage) + heard.extra + (TRANSCRIPT_STEP if heard.suspect else 0.0)
