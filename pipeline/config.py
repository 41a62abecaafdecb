"""Settings: defaults < config file (TOML) < environment < command-line flags.

A config file is TOML whose keys are the field names of ``Settings``; they may sit at the top level or inside
any table (``[api]``, ``[tts]``, ...), which only groups them for readers. API keys are never read from a file:
``api_key_env`` names the environment variable that holds the key.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline.errors import UsageError
from pipeline.models import VoiceSpec

BACKENDS = ("openai", "local")
SUBTITLE_FORMATS = ("srt", "vtt")

# Rough list prices in US dollars per million input characters, for the plan's estimate only.
# gpt-4o-mini-tts is billed by tokens; OpenAI quotes about $0.015 a minute, ~900 characters of English.
PRICE_PER_MILLION_CHARS = {"gpt-4o-mini-tts": 15.0, "tts-1": 15.0, "tts-1-hd": 30.0}


@dataclass(frozen=True)
class Settings:
    backend: str = "openai"  # "openai": any OpenAI-compatible HTTP endpoint; "local": the offline engine
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str = "OPENAI_API_KEY"  # the variable holding the key; the key itself is never stored
    model: str = "gpt-4o-mini-tts"
    voice: str = "alloy"
    instructions: str | None = None
    speed: float | None = None
    response_format: str | None = None  # None: not sent, the server answers MP3
    language: str | None = None  # overrides the book's own language
    max_chars: int = 500
    concurrency: int = 8
    max_retries: int = 4
    timeout: float = 120.0  # seconds to wait for one answer
    connect_timeout: float = 10.0
    cache_dir: Path | None = None  # None: $XDG_CACHE_HOME/audiobook-pipeline or ~/.cache/audiobook-pipeline
    sample_rate: int = 24_000
    bitrate: str = "128k"
    sentence_pause_ms: int = 250
    paragraph_pause_ms: int = 700
    title_pause_ms: int = 1000
    chapter_pad_ms: int = 500  # silence before the first and after the last segment of a chapter
    announce_titles: bool = True
    include_matter: bool = False  # read front/back matter (title page, contents, licence) too
    subtitles: str | None = None  # "srt" or "vtt"
    m4b: bool = False
    genre: str = "Audiobook"
    price_per_million_chars: float | None = None  # None: PRICE_PER_MILLION_CHARS by model, else 15

    @property
    def voice_spec(self) -> VoiceSpec:
        return VoiceSpec(self.model, self.voice, self.instructions, self.speed, self.response_format)

    @property
    def part_format(self) -> str:
        return self.response_format or "mp3"

    @property
    def resolved_cache_dir(self) -> Path:
        if self.cache_dir is not None:
            return Path(self.cache_dir).expanduser()
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(base) / "audiobook-pipeline"

    def estimated_cost(self, characters: int) -> float:
        if self.backend == "local":
            return 0.0
        price = self.price_per_million_chars
        if price is None:
            price = PRICE_PER_MILLION_CHARS.get(self.model, 15.0)
        return characters * price / 1_000_000

    def api_key(self, env: Mapping[str, str] | None = None) -> str | None:
        value = (os.environ if env is None else env).get(self.api_key_env, "").strip()
        return value or None

    def replace(self, **changes: Any) -> Settings:
        return load_settings(overrides={**dataclasses.asdict(self), **changes}, env={})


_FIELDS = {f.name: f for f in fields(Settings)}
_SECRET_KEYS = {"api_key", "key", "openai_api_key", "token"}


def _coerce(name: str, value: Any) -> Any:
    """Turn a TOML, environment or flag value into the field's type; UsageError when it does not fit."""
    kind = str(_FIELDS[name].type)
    if value is None or (isinstance(value, str) and value == "" and "None" in kind):
        return None
    try:
        if kind.startswith("bool"):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind.startswith("int"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if kind.startswith("float"):
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if kind.startswith("Path"):
            return Path(str(value)).expanduser()
        if isinstance(value, (dict, list)):
            raise ValueError(value)
        return str(value)
    except (TypeError, ValueError):
        raise UsageError(f"setting {name!r}: {value!r} is not a valid {kind.split(' ')[0]}") from None


def _flatten(table: Mapping[str, Any], source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name.lower() in _SECRET_KEYS:
            raise UsageError(
                f"{source}: API keys are not read from files; remove {key!r} and set api_key_env to the "
                "name of the environment variable that holds the key"
            )
        if isinstance(value, dict):
            out.update(_flatten(value, source))
        elif name in _FIELDS:
            out[name] = value
        else:
            raise UsageError(f"{source}: unknown setting {key!r} (known: {', '.join(sorted(_FIELDS))})")
    return out


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from None
    return _flatten(data, str(path))


def settings_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """OPENAI_BASE_URL as the official SDK reads it, and AUDIOBOOK_<FIELD> for every field."""
    out: dict[str, Any] = {}
    if env.get("OPENAI_BASE_URL"):
        out["base_url"] = env["OPENAI_BASE_URL"]
    for name in _FIELDS:
        value = env.get("AUDIOBOOK_" + name.upper())
        if value is not None and value != "":
            out[name] = value
    return out


def _validate(s: Settings) -> None:
    def bad(msg: str) -> UsageError:
        return UsageError(f"invalid setting: {msg}")

    if s.backend not in BACKENDS:
        raise bad(f"backend must be one of {', '.join(BACKENDS)}, not {s.backend!r}")
    parts = urlsplit(s.base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise bad(f"base_url must be an http(s) URL such as https://api.openai.com/v1, not {s.base_url!r}")
    if not s.model.strip() or not s.voice.strip():
        raise bad("model and voice must not be empty")
    if not 20 <= s.max_chars <= 4096:
        raise bad(f"max_chars must be between 20 and 4096 (the API's limit), not {s.max_chars}")
    if not 1 <= s.concurrency <= 64:
        raise bad(f"concurrency must be between 1 and 64, not {s.concurrency}")
    if not 0 <= s.max_retries <= 20:
        raise bad(f"max_retries must be between 0 and 20, not {s.max_retries}")
    if s.speed is not None and not 0.25 <= s.speed <= 4.0:
        raise bad(f"speed must be between 0.25 and 4.0, not {s.speed}")
    if s.timeout <= 0 or s.connect_timeout <= 0:
        raise bad("timeouts must be positive")
    if s.subtitles is not None and s.subtitles not in SUBTITLE_FORMATS:
        raise bad(f"subtitles must be one of {', '.join(SUBTITLE_FORMATS)}, not {s.subtitles!r}")
    if s.response_format not in (None, "mp3", "wav"):
        raise bad(f"response_format must be mp3 or wav, not {s.response_format!r}")
    if min(s.sentence_pause_ms, s.paragraph_pause_ms, s.title_pause_ms, s.chapter_pad_ms) < 0:
        raise bad("pauses must not be negative")
    if not s.api_key_env.strip():
        raise bad("api_key_env must name an environment variable")


def load_settings(
    config: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Merge the layers in order; ``overrides`` holds the flags that were given (None means not given)."""
    env = os.environ if env is None else env
    merged: dict[str, Any] = {}
    if config is None and env.get("AUDIOBOOK_CONFIG"):
        config = Path(env["AUDIOBOOK_CONFIG"])
    if config is not None:
        merged.update(read_config_file(Path(config)))
    merged.update(settings_from_env(env))
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    unknown = set(merged) - set(_FIELDS)
    if unknown:
        raise UsageError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    settings = Settings(**{k: _coerce(k, v) for k, v in merged.items()})
    _validate(settings)
    return settings
