"""Speech synthesizers. Every backend satisfies ``Synthesizer``, so the pool, cache, retries, progress and
assembly are the same code whatever makes the sound."""

from pipeline.tts.base import Synthesizer

__all__ = ["Synthesizer"]
