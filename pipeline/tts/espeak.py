"""The offline voice: eSpeak NG through ctypes, from the library and data the ``espeakng-loader`` wheel ships.

Nothing outside pip is needed and nothing leaves the machine. The sound is robotic but clear, and it is fast
(hundreds of times real time), which makes it the voice for trying a book end to end, for tests and for
people without an API key.

eSpeak NG keeps its state in process-wide globals (current voice, rate, output callback), so there is one
engine per process and every synthesis holds ``_Engine.lock`` from choosing the voice to collecting the last
sample. MP3 encoding happens outside the lock, so concurrent requests still overlap on that part.

Voice names a user may pass (``audiobook voices`` lists them):

- an OpenAI voice name (``alloy``, ``nova``...) or ``auto``: the default voice for the text's script,
  Mandarin (``cmn``) when the text is mostly CJK, American English (``en-us``) otherwise, or the voice of
  the book's language when one was given (``EspeakSynth(default_language="fr")``);
- an eSpeak voice: its file name (``en-us``, ``cmn``, ``yue``), identifier (``gmw/en-US``), full name
  (``English (America)``) or a language it speaks (``zh``, ``en-gb``: the best voice for that language).
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.errors import BadRequestError, FatalAPIError
from pipeline.limits import Governor
from pipeline.media import BITRATE, SAMPLE_RATE, encode_pcm
from pipeline.models import BackendOptions, SpeechResult, VoiceSpec
from pipeline.textfacts import CJK_CHAR, is_cjk
from pipeline.tts.base import OPENAI_VOICES, Backend, VoiceInfo

log = logging.getLogger("audiobook")  # one logger: the CLI formats it for terminals and cron

AUTO_VOICES = frozenset((*OPENAI_VOICES, "auto", "default"))
ENGLISH_VOICE = "en-us"
CHINESE_VOICE = "cmn"
_CJK_VOICES = frozenset({"cmn", "yue", "ja", "ko", "cmn-latn-pinyin", "yue-latn-jyutping"})

BASE_RATE_WPM = 175  # eSpeak's own default rate: speed 1.0
# eSpeak NG clamps below 80 wpm; above 450 it speeds up through its bundled sonic, measured fine to 700+.
MIN_RATE_WPM, MAX_RATE_WPM = 80, 800
_NON_CJK_WORD = re.compile(f"(?:(?!{CJK_CHAR.pattern})[^\\W\\d_])+")
MIN_SILENCE_S = 0.1  # a text with nothing to say still gives a short, valid file

# From speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # report errors instead of calling exit()
_CHARS_UTF8 = 1  # plain UTF-8 text: no SSML, so "<" in a book is just a character
_POS_CHARACTER = 1
_PARAM_RATE = 1
_EE_OK = 0

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _EspeakVoice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # (priority byte, NUL-terminated code) pairs, ended by a 0 byte
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


@dataclass(frozen=True)
class _Voice:
    identifier: str  # "gmw/en-US": what SetVoiceByName is given
    name: str  # "English (America)"
    languages: tuple[tuple[int, str], ...]  # (priority, code); a lower priority is a better match

    @property
    def short(self) -> str:
        """The voice's file name, lowercased: "en-us", "cmn"."""
        return self.identifier.rsplit("/", 1)[-1].lower()


def _load_library() -> ctypes.CDLL:
    import espeakng_loader

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
        ctypes.c_void_p, ctypes.c_void_p,
    ]  # fmt: skip
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synchronize.argtypes = []
    lib.espeak_Synchronize.restype = ctypes.c_int
    lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_EspeakVoice))
    return lib


try:
    _LIB: ctypes.CDLL | None = _load_library()
    _LOAD_ERROR = ""
except (ImportError, OSError, AttributeError) as exc:  # a broken install must not break importing the CLI
    _LIB, _LOAD_ERROR = None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__

# The engine's name and version: part of every cache key of parts it made (known without starting it).
ENGINE_VERSION = _LIB.espeak_Info(None).decode() if _LIB is not None else "unavailable"
ENGINE_IDENTITY = f"espeak-ng:{ENGINE_VERSION}"


class _Engine:
    """The process-wide eSpeak NG instance. Use ``engine()``; every call holds ``lock``."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        import espeakng_loader

        self.lock = threading.Lock()
        self._lib = lib
        self._chunks: list[bytes] = []
        data = espeakng_loader.get_data_path().encode()
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise FatalAPIError(f"eSpeak NG could not start with its data at {data.decode()}: "
                                "reinstall the espeakng-loader package")  # fmt: skip
        self.sample_rate: int = rate
        # ctypes does not keep the callback alive for the C side: without this reference it is collected.
        self._callback = _SynthCallback(self._collect)
        lib.espeak_SetSynthCallback(self._callback)
        self.voices = self._list_voices()

    def _collect(self, samples: ctypes.Array[ctypes.c_short], count: int, _events: int | None) -> int:
        if samples and count > 0:
            self._chunks.append(ctypes.string_at(samples, count * 2))
        return 0  # 0: go on; 1 would abort the synthesis

    def _list_voices(self) -> tuple[_Voice, ...]:
        found = []
        table = self._lib.espeak_ListVoices(None)
        i = 0
        while table[i]:
            entry = table[i].contents
            languages, address = [], entry.languages
            while address and (priority := ctypes.c_ubyte.from_address(address).value):
                code = ctypes.string_at(address + 1)
                languages.append((priority, code.decode().lower()))
                address += len(code) + 2
            if entry.identifier:
                found.append(_Voice(entry.identifier.decode(), (entry.name or b"").decode(), tuple(languages)))
            i += 1
        return tuple(found)

    def pcm(self, text: str, identifier: str, rate_wpm: int) -> bytes:
        """16-bit mono PCM at ``sample_rate`` for ``text`` spoken by the voice ``identifier``."""
        data = text.replace("\0", " ").encode()
        with self.lock:
            if self._lib.espeak_SetVoiceByName(identifier.encode()) != _EE_OK:
                raise FatalAPIError(f"eSpeak NG could not load its voice {identifier!r}")
            self._lib.espeak_SetParameter(_PARAM_RATE, rate_wpm, 0)
            self._chunks = []
            try:
                status = self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
                self._lib.espeak_Synchronize()
                if status != _EE_OK:
                    raise FatalAPIError(f"eSpeak NG failed on a text of {len(text)} characters (error {status})")
                return b"".join(self._chunks)
            finally:
                self._chunks = []


_engine: _Engine | None = None
_engine_guard = threading.Lock()


def engine() -> _Engine:
    """Start eSpeak NG on first use (about 10 ms) and return the one instance."""
    global _engine
    with _engine_guard:
        if _engine is None:
            if _LIB is None:
                raise FatalAPIError(f"the offline voice is unavailable ({_LOAD_ERROR}): "
                                    "install the espeakng-loader package")  # fmt: skip
            _engine = _Engine(_LIB)
        return _engine


def _lookup(name: str, voices: tuple[_Voice, ...]) -> _Voice | None:
    """The eSpeak voice a user means by ``name``: file name, identifier, full name, then language."""
    key = name.strip().lower()
    for voice in voices:
        if key in (voice.short, voice.identifier.lower(), voice.name.lower()):
            return voice
    speakers = [(p, len(v.identifier), v.identifier, v) for v in voices for p, code in v.languages if code == key]
    return min(speakers, key=lambda s: s[:3])[3] if speakers else None


def _language_voice(language: str, voices: tuple[_Voice, ...]) -> _Voice | None:
    """The voice for a book language ("en", "zh-CN", "fr"...): exact tag first, then its primary subtag.
    Bare English is American English and any Chinese but Cantonese is Mandarin, as for text without a hint."""
    tag = language.strip().lower().replace("_", "-")
    primary = tag.split("-", 1)[0]
    if tag == "en":
        tag = ENGLISH_VOICE
    elif primary == "zh" and tag not in ("zh-yue", "zh-hk", "zh-mo"):
        tag = CHINESE_VOICE
    elif tag in ("zh-yue", "zh-hk", "zh-mo"):
        tag = "yue"
    return _lookup(tag, voices) or _lookup(primary, voices)


def _reads_as_cjk(text: str) -> bool:
    """Mostly CJK by letters, or by spoken words: a Han character is about a syllable, a Latin word several
    letters, so "我学习了 Python programming" is Chinese. Mandarin reads Latin words as English; the English
    voice reads each Han character as "Chinese letter" and its code, so a tie goes to Mandarin."""
    if is_cjk(text):
        return True
    cjk = len(CJK_CHAR.findall(text))
    return cjk > 0 and cjk >= len(_NON_CJK_WORD.findall(text))


def list_voices() -> list[VoiceInfo]:
    """Every voice name the offline engine accepts, sorted: the eSpeak voices and the OpenAI names."""
    infos = {v.short: VoiceInfo(v.short, v.languages[0][1] if v.languages else "", v.name) for v in engine().voices}
    for alias in OPENAI_VOICES:
        infos[alias] = VoiceInfo(
            alias,
            "auto",
            f"OpenAI name: {CHINESE_VOICE} for Chinese text, else {ENGLISH_VOICE} or the book's language",
        )
    return sorted(infos.values(), key=lambda v: v.name)


def language_voices(language: str | None) -> list[str]:
    """The eSpeak voices that speak ``language`` (its primary subtag: "en" -> en-us, en, en-gb-scotland...;
    Chinese -> Mandarin and Cantonese), the language's default first; English when none is given."""
    primary = (language or "en").strip().lower().replace("_", "-").split("-")[0]
    families = {"zh": ("zh", "cmn", "yue"), "cmn": ("zh", "cmn", "yue"), "yue": ("zh", "cmn", "yue")}
    wanted = families.get(primary, (primary,))
    voices = engine().voices
    found = [v.short for v in voices if any(code.split("-")[0] in wanted for _, code in v.languages)]
    first = _language_voice(language or "en", voices)
    if first is not None and first.short in found:
        found.remove(first.short)
        found.insert(0, first.short)
    return found


class EspeakSynth:
    """The offline ``Synthesizer``: eSpeak NG speech encoded to MP3 (or WAV) at ``sample_rate``.

    ``spec.voice`` picks the voice (see the module docstring), ``spec.speed`` the rate (175 words a minute
    times speed, kept within what eSpeak can do); ``spec.model`` and ``spec.instructions`` are ignored.
    ``default_language`` is the book's language: the voice of the OpenAI names for text that is not CJK.
    An unknown language is ignored (the text's script decides), so a book's odd metadata never stops a run.
    """

    def __init__(
        self,
        *,
        sample_rate: int = SAMPLE_RATE,
        bitrate: str = BITRATE,
        default_language: str | None = None,
    ) -> None:
        self.sample_rate = sample_rate
        self.bitrate = bitrate
        self._engine = engine()
        self._hint: _Voice | None = None
        if default_language:  # a language it has no voice for is said once, in the plan (see _caveats)
            self._hint = _language_voice(default_language, self._engine.voices)

    def identity(self) -> str:
        # A language hint changes which voice reads non-CJK text, so it is part of the identity.
        if self._hint is None or self._hint.short == ENGLISH_VOICE:
            return ENGINE_IDENTITY
        return f"{ENGINE_IDENTITY};{self._hint.short}"

    def voice_for(self, text: str, voice: str) -> str:
        """The eSpeak voice (its file name) that will read ``text`` when asked for ``voice``."""
        return self._resolve(text, voice).short

    def _resolve(self, text: str, voice: str) -> _Voice:
        voices = self._engine.voices
        if voice.strip().lower() not in AUTO_VOICES:
            found = _lookup(voice, voices)
            if found is None:
                raise BadRequestError(
                    f"unknown voice {voice!r} for the offline engine: run `audiobook voices` for the list "
                    f"(OpenAI names such as alloy; eSpeak voices such as {ENGLISH_VOICE}, {CHINESE_VOICE})"
                )
            return found
        hint = self._hint
        if _reads_as_cjk(text):
            chosen = hint.short if hint is not None and hint.short in _CJK_VOICES else CHINESE_VOICE
        elif hint is not None and not (hint.short in _CJK_VOICES and any(c.isalpha() for c in text)):
            # The book's voice, except that a CJK voice does not read a mostly Latin segment.
            chosen = hint.short
        else:
            chosen = ENGLISH_VOICE
        found = _lookup(chosen, voices)
        if found is None:  # only if the shipped data lost its English or Mandarin voice
            raise FatalAPIError(f"eSpeak NG has no {chosen!r} voice: reinstall the espeakng-loader package")
        return found

    def _pcm(self, text: str, spec: VoiceSpec) -> bytes:
        voice = self._resolve(text, spec.voice)
        speed = spec.speed if spec.speed is not None else 1.0
        rate = max(MIN_RATE_WPM, min(MAX_RATE_WPM, round(BASE_RATE_WPM * speed)))
        pcm = self._engine.pcm(text, voice.identifier, rate)
        minimum = int(self._engine.sample_rate * MIN_SILENCE_S) * 2
        return pcm + bytes(max(0, minimum - len(pcm)))

    async def synthesize(self, text: str, spec: VoiceSpec) -> SpeechResult:
        fmt = spec.response_format or "mp3"
        if fmt not in ("mp3", "wav"):
            raise BadRequestError(f"the offline voice answers mp3 or wav, not {fmt!r}: change response_format")
        pcm = await asyncio.to_thread(self._pcm, text, spec)
        audio = await asyncio.to_thread(
            encode_pcm,
            pcm,
            in_rate=self._engine.sample_rate,
            out_rate=self.sample_rate,
            bitrate=self.bitrate,
            fmt=fmt,
        )
        return SpeechResult(audio)

    async def aclose(self) -> None:
        """Nothing to release: the engine lives as long as the process."""


def _build(options: BackendOptions, _connections: int, _env: Mapping[str, str], _governor: Governor) -> EspeakSynth:
    # Parts are always 24 kHz MP3, what the speech API answers too; the chapter encoder resamples if asked.
    # No rate limit: the governor is never asked, so it costs nothing.
    return EspeakSynth(default_language=options.language)


def _identity(options: BackendOptions) -> str:
    return EspeakSynth(default_language=options.language).identity()


def _caveats(options: BackendOptions) -> list[str]:
    if options.language and _language_voice(options.language, engine().voices) is None:
        return [
            f"the offline voice has no voice for language {options.language!r}: each segment is read by the voice "
            f"of its script ({ENGLISH_VOICE} for Latin letters, {CHINESE_VOICE} for Chinese); see `audiobook voices`"
        ]
    return []


BACKEND = Backend(
    name="espeak",
    build=_build,
    identity=_identity,
    describe=_identity,
    cost=lambda _options, _model, _characters: 0.0,
    voices=list_voices,
    # The voice of the OpenAI names follows the book's language for text that is not CJK.
    adapt=lambda options, language: dataclasses.replace(options, language=language),
    caveats=_caveats,
    packs=False,  # no rate limit to save requests for; a segment per paragraph keeps the voice's pauses exact
    sample_voices=language_voices,
)
