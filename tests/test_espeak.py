"""The offline voice: real eSpeak NG speech, decoded and measured (no network)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from pipeline.errors import FatalAPIError
from pipeline.models import VoiceSpec
from pipeline.tts.espeak import ENGINE_IDENTITY, OPENAI_VOICES, EspeakSynth, VoiceInfo, list_voices
from tests.audiocheck import decode, is_mp3

if TYPE_CHECKING:  # importing pydub directly warns (audioop); pipeline.media imports it quietly
    from pydub import AudioSegment

ENGLISH = "The quick brown fox jumps over the lazy dog, and then it runs far away into the woods. "
CHINESE = "今天天气很好，我们一起去公园散步吧。"
MIXED = "我今天学习了 Python programming，还有 machine learning。"


def speak(text: str, voice: str = "alloy", synth: EspeakSynth | None = None, **spec: object) -> bytes:
    synth = synth or EspeakSynth()
    return asyncio.run(synth.synthesize(text, VoiceSpec("tts-1", voice, **spec))).audio  # type: ignore[arg-type]


def seconds(audio: AudioSegment) -> float:
    return len(audio) / 1000


@pytest.mark.parametrize("text", [ENGLISH, CHINESE, MIXED], ids=["english", "chinese", "mixed"])
def test_speech_is_audible_mp3_at_24khz_mono(text: str) -> None:
    data = speak(text)
    assert is_mp3(data)
    audio = decode(data)
    assert (audio.frame_rate, audio.channels) == (24_000, 1)
    assert seconds(audio) > 1.5
    assert audio.dBFS > -35  # speech, not silence (silence decodes to -inf)


@pytest.mark.parametrize("text", [ENGLISH, CHINESE], ids=["english", "chinese"])
def test_duration_follows_the_text(text: str) -> None:
    once, four_times = decode(speak(text)), decode(speak(text * 4))
    assert 3.0 < seconds(four_times) / seconds(once) < 5.0


def test_chinese_text_is_read_in_mandarin_not_spelled_out_by_the_english_voice() -> None:
    # The English voice reads each Han character as a long "Chinese letter ..." phrase.
    mandarin = decode(speak(CHINESE, "alloy"))
    english = decode(speak(CHINESE, "en-us"))
    assert seconds(english) > 1.5 * seconds(mandarin)
    assert mandarin.rms > 300


def test_speed_changes_duration() -> None:
    normal = seconds(decode(speak(ENGLISH * 2)))
    fast = seconds(decode(speak(ENGLISH * 2, speed=2.0)))
    slow = seconds(decode(speak(ENGLISH * 2, speed=0.6)))
    assert fast < 0.65 * normal
    assert slow > 1.4 * normal


def test_concurrent_calls_give_the_same_audio_as_sequential_ones() -> None:
    # eSpeak NG carries waveform phase from one call to the next, so repeated calls differ by a few samples
    # and bytes cannot be compared; durations that differ this much between texts show any cross-talk.
    synth = EspeakSynth()
    texts = [ENGLISH, CHINESE, ENGLISH * 3, "Short one.", CHINESE * 2, MIXED, "One, two, three, four, five."]
    sequential = [seconds(decode(speak(t, synth=synth))) for t in texts]

    async def together() -> list[bytes]:
        results = await asyncio.gather(*(synth.synthesize(t, VoiceSpec("tts-1", "nova")) for t in texts))
        return [r.audio for r in results]

    concurrent = [seconds(decode(audio)) for audio in asyncio.run(together())]
    assert concurrent == pytest.approx(sequential, abs=0.06)
    ordered = sorted(sequential)
    assert min(b - a for a, b in zip(ordered, ordered[1:], strict=False)) > 0.2  # distinct enough to tell apart


def test_wav_when_asked() -> None:
    data = speak(ENGLISH, response_format="wav")
    assert data[:4] == b"RIFF"
    audio = decode(data, "wav")
    assert (audio.frame_rate, audio.channels, audio.sample_width) == (24_000, 1, 2)
    assert seconds(audio) > 1.5


def test_sample_rate_is_configurable() -> None:
    audio = decode(speak(ENGLISH, synth=EspeakSynth(sample_rate=16_000, bitrate="64k")))
    assert audio.frame_rate == 16_000


def test_unsupported_format_is_fatal() -> None:
    with pytest.raises(FatalAPIError, match="mp3 or wav"):
        speak(ENGLISH, response_format="opus")


def test_unknown_voice_is_fatal_and_says_how_to_list_voices() -> None:
    with pytest.raises(FatalAPIError, match=r"unknown voice 'no-such-voice'.*audiobook voices"):
        speak(ENGLISH, "no-such-voice")


@pytest.mark.parametrize(
    ("voice", "text", "expected"),
    [
        ("alloy", ENGLISH, "en-us"),
        ("shimmer", CHINESE, "cmn"),
        ("auto", MIXED, "cmn"),
        ("en-us", CHINESE, "en-us"),  # an explicit eSpeak voice wins over the script
        ("yue", CHINESE, "yue"),
        ("EN-US", ENGLISH, "en-us"),
        ("gmw/en-US", ENGLISH, "en-us"),
        ("English (America)", ENGLISH, "en-us"),
        ("zh", ENGLISH, "cmn"),  # languages resolve to their best voice, where SetVoiceByName would fail
        ("en-gb", ENGLISH, "en"),
        ("fr", ENGLISH, "fr"),
    ],
)
def test_voice_names_resolve(voice: str, text: str, expected: str) -> None:
    assert EspeakSynth().voice_for(text, voice) == expected


def test_book_language_hint_chooses_the_default_voice() -> None:
    chinese_book = EspeakSynth(default_language="zh-CN")
    assert chinese_book.voice_for("1984。", "alloy") == "cmn"  # no letters: the book's language decides
    assert chinese_book.voice_for(ENGLISH, "alloy") == "en-us"  # an English passage in a Chinese book
    assert chinese_book.voice_for(CHINESE, "alloy") == "cmn"
    assert EspeakSynth(default_language="zh-HK").voice_for(CHINESE, "nova") == "yue"
    french_book = EspeakSynth(default_language="fr")
    assert french_book.voice_for("Bonjour à tous.", "nova") == "fr"
    assert french_book.voice_for(CHINESE, "nova") == "cmn"
    assert EspeakSynth(default_language="fr").voice_for(ENGLISH, "en-us") == "en-us"


def test_identity_names_the_engine_and_any_language_hint() -> None:
    assert ENGINE_IDENTITY.startswith("espeak-ng:1.52")
    assert EspeakSynth().identity() == ENGINE_IDENTITY
    assert EspeakSynth(default_language="en").identity() == ENGINE_IDENTITY  # same sound as no hint
    assert EspeakSynth(default_language="qq-zz").identity() == ENGINE_IDENTITY
    assert EspeakSynth(default_language="zh").identity() == ENGINE_IDENTITY + ";cmn"
    assert EspeakSynth(default_language="zh-CN").identity() == EspeakSynth(default_language="zh").identity()


def test_list_voices_is_sorted_unique_and_every_name_works() -> None:
    voices = list_voices()
    names = [v.name for v in voices]
    assert names == sorted(names)
    assert len(names) == len(set(names))
    assert {"en-us", "en", "cmn", "yue", *OPENAI_VOICES} <= set(names)
    assert len(voices) > 100  # eSpeak ships 100+ languages
    assert VoiceInfo("cmn", "cmn", "Chinese (Mandarin, latin as English)") in voices
    synth = EspeakSynth()
    for name in names:
        synth.voice_for("text", name)  # raises FatalAPIError for a name it cannot use


@pytest.mark.parametrize("text", ["", "...", "<speak>not markup</speak> a\0b", "—"])
def test_odd_text_still_gives_a_valid_file(text: str) -> None:
    audio = decode(speak(text))
    assert seconds(audio) >= 0.1
