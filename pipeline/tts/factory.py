"""Choose and build the synthesizer a Settings object asks for."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from pipeline.config import Settings
from pipeline.errors import UsageError
from pipeline.tts.base import Synthesizer

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]", "0.0.0.0"}


def endpoint(base_url: str) -> str:
    """Host and path of an endpoint, without scheme, credentials, query or trailing slash."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return host + parts.path.rstrip("/")


def identity_for(settings: Settings) -> str:
    """The synthesizer identity that goes into cache keys, known without building the synthesizer."""
    if settings.backend == "local":
        from pipeline.tts.espeak import EspeakSynth

        return EspeakSynth(default_language=settings.language).identity()
    return "openai:" + endpoint(settings.base_url)


def is_local_endpoint(base_url: str) -> bool:
    return (urlsplit(base_url).hostname or "") in LOCAL_HOSTS


def make_synthesizer(
    settings: Settings,
    env: Mapping[str, str] | None = None,
    *,
    on_retry: Callable[[Any], None] | None = None,
) -> Synthesizer:
    if settings.backend == "local":
        from pipeline.tts.espeak import EspeakSynth

        # The voice follows each segment's script, and the book's language for Latin-script text.
        return EspeakSynth(
            sample_rate=settings.sample_rate, bitrate=settings.bitrate, default_language=settings.language
        )
    key = settings.api_key(env)
    if key is None and not is_local_endpoint(settings.base_url):
        raise UsageError(
            f"no API key: set the environment variable {settings.api_key_env} "
            f"(or use --backend local for the offline voice)"
        )
    from pipeline.tts.openai_http import OpenAISpeech

    return OpenAISpeech(
        settings.base_url,
        key or "",
        timeout=settings.timeout,
        connect_timeout=settings.connect_timeout,
        max_retries=settings.max_retries,
        concurrency=settings.concurrency,
        on_retry=on_retry,
    )


def synth_factory(*, on_retry: Callable[[Any], None] | None = None) -> Callable[[Settings], Synthesizer]:
    """``settings -> synthesizer``, building one per distinct endpoint or offline voice: every book of a run
    that speaks through the same one shares it (and its connections)."""
    made: dict[tuple[Any, ...], Synthesizer] = {}

    def synth_for(s: Settings) -> Synthesizer:
        key = (
            s.backend,
            s.base_url,
            s.api_key_env,
            s.timeout,
            s.connect_timeout,
            s.max_retries,
            s.concurrency,
            s.sample_rate,
            s.bitrate,
            s.language if s.backend == "local" else None,  # the offline voice follows the book's language
        )
        if key not in made:
            made[key] = make_synthesizer(s, on_retry=on_retry)
        return made[key]

    return synth_for
