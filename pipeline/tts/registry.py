"""The backends, by name. Each lives in its own module, which defines ``BACKEND``; it is imported only when
asked for (the offline voice loads a C library, the HTTP client its TLS context).

Adding a backend is one new module and one line in ``_MODULES``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from pipeline import limits
from pipeline.errors import UsageError
from pipeline.limits import Governor, SharedLimits
from pipeline.models import BackendOptions
from pipeline.tts.base import Backend, Synthesizer

_MODULES = {
    "openai": "pipeline.tts.openai_http",  # any OpenAI-compatible /audio/speech endpoint
    "espeak": "pipeline.tts.espeak",  # the embedded offline voice
}
# Old names still accepted in config files, job files, the environment and flags. "local" was the offline
# voice's name until the engines took the word (``--engine local``: this process).
ALIASES = {"local": "espeak"}


def names() -> tuple[str, ...]:
    return tuple(_MODULES)


def canonical(name: str) -> str:
    """The backend's name for ``name``, an old one included; an unknown name is returned as it is."""
    return ALIASES.get(name, name)


def get(name: str) -> Backend:
    name = canonical(name)
    if name not in _MODULES:
        raise UsageError(f"invalid setting: backend must be one of {', '.join(_MODULES)}, not {name!r}")
    backend: Backend = importlib.import_module(_MODULES[name]).BACKEND
    return backend


def backend_for(options: BackendOptions) -> Backend:
    return get(options.name)


def governor_key(options: BackendOptions, env: Mapping[str, str] | None = None) -> str:
    """The name of an endpoint and key's rate governor (and of the limit remembered for it): the endpoint and
    the key's hash, never the key."""
    return f"{backend_for(options).identity(options)} key:{options.key_id(os.environ if env is None else env)}"


class Synthesizers:
    """One synthesizer per distinct backend options, built on first use and shared by every book of a run
    that speaks through it (and so its connections). ``connections`` is the run's limit on requests in
    flight, which the pool owns: a synthesizer never needs more connections than that.

    Each endpoint and key has one rate governor, whichever synthesizers use them (books may differ in
    timeouts, never in the key's limit): the first options seen for a key give its configured limits.
    ``shared`` makes the store that governors on other machines share a key's budget through, from the
    governor's name (the endpoint and the key's hash, never the key): e.g. ``lambda where: RedisLimits(client,
    where)``."""

    def __init__(
        self,
        connections: int,
        env: Mapping[str, str] | None = None,
        memory: Path | None = None,
        shared: Callable[[str], SharedLimits] | None = None,
    ):
        self.connections = connections
        self._env = os.environ if env is None else env
        self._memory = memory  # where limits learned from headers are kept for the next run
        self._shared = shared
        self._made: dict[BackendOptions, Synthesizer] = {}
        self.governors: dict[str, Governor] = {}

    def __call__(self, options: BackendOptions) -> Synthesizer:
        if options not in self._made:
            backend = backend_for(options)
            self._made[options] = backend.build(options, self.connections, self._env, self.governor(options))
        return self._made[options]

    def governor(self, options: BackendOptions) -> Governor:
        where = governor_key(options, self._env)
        if where not in self.governors:
            earlier = limits.recall(self._memory, where) if self._memory else None
            self.governors[where] = limits.Governor(
                self.connections,
                rpm=options.rpm,
                cpm=options.cpm,
                remembered_rpm=earlier,
                patience=options.rate_limit_patience,
                shared=self._shared(where) if self._shared is not None else None,
            )
        return self.governors[where]

    def remember(self) -> None:
        """Keep the limits this run read in headers, so the next run paces from its first request."""
        learned = {where: g.learned_rpm for where, g in self.governors.items() if g.learned_rpm is not None}
        if self._memory is not None and learned:
            with contextlib.suppress(OSError):  # a head start only: never worth failing a run over
                limits.remember(self._memory, learned)

    def stop(self) -> None:
        """The run is stopping: no governor releases another request (those in flight land)."""
        for governor in self.governors.values():
            governor.stop()

    def rate_status(self) -> str | None:
        """The progress line's word on the rate limit: what holds the run back now, else None."""
        held = [g.stats() for g in self.governors.values()]
        return next((s.line() for s in held if s.throttled or s.refused_s >= limits.QUIET_S), None)

    async def aclose(self) -> None:
        made, self._made = list(self._made.values()), {}
        for synth in made:
            await synth.aclose()
        for governor in self.governors.values():
            await governor.flush()  # a last pause or limit told to the other workers lands
