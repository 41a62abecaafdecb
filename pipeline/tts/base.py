"""What every speech backend provides: the ``Synthesizer`` protocol, and the ``Backend`` record that the
registry (``pipeline.tts.registry``) keeps for it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from pipeline.limits import Governor
from pipeline.models import BackendOptions, SpeechResult, VoiceSpec

# The voice names of OpenAI's speech API (the offline voice takes each to mean "the default for this text").
OPENAI_VOICES = (
    "alloy", "ash", "ballad", "cedar", "coral", "echo", "fable", "marin", "nova", "onyx", "sage", "shimmer",
    "verse",
)  # fmt: skip


class Synthesizer(Protocol):
    def identity(self) -> str:
        """What, besides the VoiceSpec and the text, decides the sound: part of every cache key.

        For the HTTP client it is the endpoint (host and path, never the key); for an offline engine its name
        and version. Two synthesizers with the same identity must produce interchangeable audio."""
        ...

    async def synthesize(self, text: str, spec: VoiceSpec) -> SpeechResult:
        """Return one complete audio file for ``text``.

        Raises a ``FatalAPIError`` subclass when no retry can help and ``SynthesisError`` when retries are
        exhausted; both carry the number of attempts made."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class VoiceInfo:
    """A voice name a user can pass to a backend."""

    name: str  # what to pass as the voice
    language: str  # the language it speaks ("auto" when it follows the text)
    description: str


@dataclass(frozen=True)
class Backend:
    """One way of making speech, registered once. Everything the rest of the program needs to know about a
    backend is asked here, so no code outside ``tts/`` compares backend names."""

    name: str
    # Build a synthesizer that will have at most ``connections`` requests in flight (the pool's limit) and
    # paces them through ``governor`` (its endpoint and key's). ``env`` is where keys are read from; a missing
    # key is a UsageError naming the variable.
    build: Callable[[BackendOptions, int, Mapping[str, str], Governor], Synthesizer]
    # The synthesizer's identity (see Synthesizer.identity), known without building it.
    identity: Callable[[BackendOptions], str]
    # Where the voice comes from, for plans and reports: an endpoint, or the engine.
    describe: Callable[[BackendOptions], str]
    # Estimated US dollars for ``characters`` sent with ``model``.
    cost: Callable[[BackendOptions, str, int], float]
    voices: Callable[[], list[VoiceInfo]]
    # The options this backend uses for a book in ``language`` (the offline voice follows it).
    adapt: Callable[[BackendOptions, str | None], BackendOptions] = lambda options, _language: options
    # What a user should know before paying for a run with these options (a language the voice lacks...).
    caveats: Callable[[BackendOptions], list[str]] = lambda _options: []
    # Whether a book's sentences are packed across paragraphs into as few requests as fit (a key's rate limit
    # makes each request count); a backend without one may keep a segment per paragraph.
    packs: bool = True
    # The voices ``audiobook voices --sample`` makes a sample of when none are named, for text in a language;
    # None: every voice ``voices`` lists.
    sample_voices: Callable[[str | None], list[str]] | None = None
