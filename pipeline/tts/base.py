"""The synthesizer protocol shared by the HTTP client and the offline engine."""

from __future__ import annotations

from typing import Protocol

from pipeline.models import SpeechResult, VoiceSpec


class Synthesizer(Protocol):
    def identity(self) -> str:
        """What, besides the VoiceSpec and the text, decides the sound: part of every cache key.

        For the HTTP client it is the endpoint (host and path, never the key); for an offline engine its name
        and version. Two synthesizers with the same identity must produce interchangeable audio."""
        ...

    async def synthesize(self, text: str, spec: VoiceSpec) -> SpeechResult:
        """Return one complete audio file for ``text``.

        Raises ``FatalAPIError`` when no retry can help and ``SynthesisError`` when retries are exhausted."""
        ...

    async def aclose(self) -> None: ...
