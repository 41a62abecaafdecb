"""The transcript check's client: ``POST {base_url}/audio/transcriptions``, as the official SDK sends it.

openai-python (``resources/audio/transcriptions.py``) sends ``multipart/form-data``: the audio as the ``file``
part with its file name, and ``model``, ``language``, ``response_format`` as plain form fields. So do we, through
the speech client's own connections, retries and error mapping (``OpenAISpeech.attempts``): a 5xx, 429 or a
dropped connection is retried, a 401 stops the run, a 200 whose body is a JSON error (as relays answer) is
retried like any failed answer. Transcription has its own limits at OpenAI, so its requests go through a
governor of their own, keyed by the endpoint, the key and the transcription model.

Answers are kept by part: the transcript of a part, for one model and language, is a small entry in the part
store next to the part (``<key>.transcript.json``), so a rerun never pays to hear a part again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from pipeline.addresses import endpoint
from pipeline.errors import RetryableError, UsageError
from pipeline.limits import Governor, SharedLimits
from pipeline.models import BackendOptions
from pipeline.store import PartStore
from pipeline.tts.openai_http import ApiRequest, OpenAISpeech, server_message

log = logging.getLogger("audiobook")

DEFAULT_MODEL = "gpt-4o-mini-transcribe"
# US dollars per minute of audio, OpenAI's list (openai.com/api/pricing: gpt-4o-mini-transcribe "estimated
# $0.003 / minute", gpt-4o-transcribe $0.006, whisper-1 $0.006 billed to the second). For the plan only.
PRICE_PER_MINUTE = {"gpt-4o-mini-transcribe": 0.003, "gpt-4o-transcribe": 0.006, "whisper-1": 0.006}
DEFAULT_PRICE_PER_MINUTE = 0.006  # an unknown model: the dearer of the known ones
CACHE_FORMAT = "transcript.json"  # the store's "format" suffix of a cached transcript
TRANSCRIPT_KEY_VERSION = 1


def transcription_cost(options: BackendOptions, minutes: float) -> float:
    """What transcribing ``minutes`` of audio costs, in US dollars, at the configured or listed price."""
    price = options.transcribe_price_per_minute
    if price is None:
        price = PRICE_PER_MINUTE.get(options.transcribe_model, DEFAULT_PRICE_PER_MINUTE)
    return max(0.0, minutes) * price


# Speech per minute at speed 1, to estimate a book's minutes before any audio exists: OpenAI's voices read about
# 900 characters of English a minute (15 a second, spaces included), and about 5 CJK characters a second.
CHARS_PER_MINUTE = {"latin": 900.0, "cjk": 300.0}


def expected_minutes(characters: int, *, cjk: bool = False, speed: float | None = None) -> float:
    """About how many minutes of audio ``characters`` of text make, for the plan's estimate."""
    return characters / CHARS_PER_MINUTE["cjk" if cjk else "latin"] / (speed or 1.0)


def iso639_1(language: str | None) -> str | None:
    """The language as the transcription API takes it: ``en-GB`` and ``EN`` are ``en``; None or empty: None."""
    code = (language or "").replace("_", "-").split("-")[0].strip().lower()
    return code or None


def transcript_key(part_key: str, audio: bytes, model: str, language: str | None) -> str:
    """The store key of a part's transcript: the part's audio heard by ``model`` in ``language``. The audio's
    own hash is in it, not only the part's key: a part made again (a suspect one) keeps its key, not its
    sound, and must be heard again."""
    sound = hashlib.sha256(audio).hexdigest()
    blob = json.dumps({"v": TRANSCRIPT_KEY_VERSION, "part": part_key, "audio": sound, "model": model,
                       "language": language}, sort_keys=True, separators=(",", ":"))  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()


def governor_key(options: BackendOptions, env: Mapping[str, str]) -> str:
    """Which governor paces transcriptions: the endpoint, the key (its hash) and the model."""
    return f"transcribe:{endpoint(options.base_url)} key:{options.key_id(env)} model:{options.transcribe_model}"


def transcription_governor(
    options: BackendOptions, connections: int, *, shared: SharedLimits | None = None
) -> Governor:
    """A governor for the transcript check's requests: ``transcribe_rpm`` when known, else what the headers
    teach; the rate-limit patience as for speech."""
    return Governor(connections, rpm=options.transcribe_rpm, patience=options.rate_limit_patience, shared=shared)


class Transcriber:
    """Transcribes parts through ``speech``'s connections and retries, paced by ``governor``; ``store`` (when
    given) keeps each part's transcript. Safe to share between tasks."""

    def __init__(
        self,
        speech: OpenAISpeech,
        *,
        model: str = DEFAULT_MODEL,
        governor: Governor | None = None,
        store: PartStore | None = None,
        on_request: Callable[[int], None] | None = None,
    ) -> None:
        if not model.strip():
            raise UsageError("transcribe_model must not be empty")
        self.model = model
        self._speech = speech
        self._url = httpx.URL(str(speech._endpoint).replace("/audio/speech", "/audio/transcriptions", 1))
        self.governor = governor or Governor(speech._connections, sleep=speech._sleep)
        self.store = store
        self._on_request = on_request  # told the attempts of each request sent (the run's counters)
        self.requests = 0  # transcriptions asked of the server (cache hits not counted)

    def cached(self, part_key: str, audio: bytes, *, language: str | None) -> str | None:
        """The stored transcript of the part's ``audio``, or None."""
        language = iso639_1(language)
        if self.store is None:
            return None
        data = self.store.get(transcript_key(part_key, audio, self.model, language), CACHE_FORMAT)
        if data is None:
            return None
        try:
            text = json.loads(data)["text"]
        except (ValueError, KeyError, TypeError):  # a damaged entry: heard again
            return None
        return text if isinstance(text, str) else None

    async def transcribe(self, audio: bytes, *, language: str | None, part_key: str | None = None) -> str:
        """What ``audio`` (an MP3 part) says. With ``part_key`` and a store, a transcript kept earlier of these
        very bytes is returned without a request, and a new one is kept. ``language`` may be a tag (``en-GB``,
        ``zh_Hans``): the API takes ISO 639-1, its first part."""
        language = iso639_1(language)
        if part_key is not None:
            kept = self.cached(part_key, audio, language=language)
            if kept is not None:
                return kept
        data = {"model": self.model, "response_format": "json"}
        if language:
            data["language"] = language
        body: dict[str, Any] = {"files": {"file": ("part.mp3", audio, "audio/mpeg")}, "data": data}
        headers = {"Accept": "application/json"}
        request = ApiRequest("transcription", self._url, headers, body, self._accept, 0, self.governor)
        text, tally = await self._speech.attempts(request)
        self.requests += 1
        if self._on_request is not None:
            self._on_request(tally.attempts)
        if part_key is not None:
            self.keep(part_key, audio, text, language=language)
        return text

    def keep(self, part_key: str, audio: bytes, text: str, *, language: str | None) -> None:
        """Keep the part's transcript in the store (a blocking write: a caller on an event loop with a remote
        store runs it in a thread, as ``cached``)."""
        language = iso639_1(language)
        if self.store is None:
            return
        entry = json.dumps({"text": text, "model": self.model, "language": language}, ensure_ascii=False)
        try:
            self.store.put(transcript_key(part_key, audio, self.model, language), entry.encode(), CACHE_FORMAT)
        except OSError as exc:  # the transcript is still good for this run; the store names its failure
            log.warning("cannot keep a transcript in %s: %s", self.store.location, exc.strerror or exc)

    def _accept(self, response: httpx.Response) -> str:
        """The transcript of a 200, or the error it is (a JSON error body or no text: retried)."""
        if response.status_code != 200:
            self._speech.refuse(response)
        where = self._speech._where
        content_type = response.headers.get("content-type", "").lower()
        try:
            payload = json.loads(response.content)
        except ValueError:
            payload = None
        if isinstance(payload, dict) and isinstance(payload.get("text"), str) and "error" not in payload:
            return str(payload["text"])
        message, _ = server_message(response.content, content_type)
        raise RetryableError(
            self._speech._scrub(f"{where} answered 200 without a transcript: {message or 'an empty body'}")
        )
