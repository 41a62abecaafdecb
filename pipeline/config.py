"""Settings: defaults < config file (TOML) < environment < command-line flags.

A config file is TOML whose keys are the settings' names; they may sit at the top level or inside any table
(``[api]``, ``[speech]``, ...), which only groups them for readers. API keys are never read from a file:
``api_key_env`` names the environment variable that holds the key.

The keys are flat, but each belongs to one of three owners, by what it changes:

- ``RunOptions`` (in ``options``): the run as a whole (the pool every book shares). A job file sets them
  once, never per book.
- ``BackendOptions`` (in ``models``, as part requests carry it): how to reach a voice (endpoint, key
  variable, timeouts, retries). Books whose backend options are equal share one synthesizer.
- ``BookOptions`` (in ``options``, which the assembly stage reads without this loader): what one book sounds
  like and what is written for it (voice, model, format, pauses, ...).
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline.addresses import parse_base_url
from pipeline.errors import UsageError
from pipeline.models import TARGETS, BackendOptions

# Re-exported (``as``): callers that load settings take the options from here too.
from pipeline.options import BookOptions as BookOptions
from pipeline.options import RunOptions as RunOptions
from pipeline.options import default_cache_dir as default_cache_dir
from pipeline.selection import parse_chapters
from pipeline.store import is_url
from pipeline.tts import registry

SUBTITLE_FORMATS = ("srt", "vtt")
LOUDNESS_TARGETS = tuple(TARGETS)
OUTPUT_FORMATS = ("mp3", "m4b", "both")


ENGINES = ("local", "celery")
VERIFY_MODES = ("timing", "off", "transcribe")  # what pipeline.verify does: off, timing, timing + transcript


LIMITS_FILE = "rate-limits.json"


def limits_file(stores: Iterable[str] = ()) -> Path:
    """Where a run keeps the rate limits keys' headers told it (by endpoint and key hash, never the key): beside
    the parts, in the first of its stores (``BookOptions.cache_location``) that is a folder. A bucket is not
    used: the file is one machine's head start, read once and rewritten whole, which machines sharing a bucket
    would race over (the celery workers share limits through Redis). Without a folder store: the user's cache
    folder."""
    folder = next((Path(s) for s in stores if not is_url(s)), default_cache_dir())
    return folder / LIMITS_FILE


@dataclass(frozen=True)
class Settings:
    run: RunOptions = RunOptions()
    backend: BackendOptions = BackendOptions()
    book: BookOptions = BookOptions()

    def replace(self, **changes: Any) -> Settings:
        """A copy with some keys changed, by their config names (``voice=...``), validated again."""
        parts: dict[str, Any] = {"run": self.run, "backend": self.backend, "book": self.book}
        for key, value in changes.items():
            if key not in KEYS:
                raise UsageError(f"unknown setting {key!r}")
            part, name = KEYS[key]
            value = _coerce(key, value)
            if key == "backend" and value is not None:
                value = registry.canonical(value)  # an old name ("local") becomes today's ("espeak")
            parts[part] = replace(parts[part], **{name: value})
        settings = Settings(**parts)
        _validate(settings)
        return settings


# Config key -> (owner, field name). Fields without a key are derived, never read from a file.
_OWNERS: tuple[tuple[str, type[Any]], ...] = (("run", RunOptions), ("backend", BackendOptions), ("book", BookOptions))
KEYS: dict[str, tuple[str, str]] = {
    f.metadata.get("key", f.name): (owner, f.name)
    for owner, cls in _OWNERS
    for f in fields(cls)
    if f.metadata.get("key", f.name) is not None
}
RUN_KEYS = frozenset(key for key, (owner, _) in KEYS.items() if owner == "run")
_TYPES = {
    f.metadata.get("key", f.name): str(f.type) for _, cls in _OWNERS for f in fields(cls) if f.metadata.get("key", 1)
}
_SECRET_KEYS = {"api_key", "key", "openai_api_key", "token"}


def _coerce(name: str, value: Any) -> Any:
    """Turn a TOML, environment or flag value into the key's type; UsageError when it does not fit."""
    kind = _TYPES[name]
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
            number = float(value)
            if not math.isfinite(number):
                raise ValueError(value)
            return number
        if kind.startswith("Path"):
            return Path(str(value)).expanduser()
        if isinstance(value, (dict, list)):
            raise ValueError(value)
        return str(value)
    except (TypeError, ValueError, OverflowError):
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
        elif name in KEYS:
            out[name] = value
        else:
            raise UsageError(f"{source}: unknown setting {key!r} (known: {', '.join(sorted(KEYS))})")
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
    """OPENAI_BASE_URL as the official SDK reads it, and AUDIOBOOK_<KEY> for every key."""
    out: dict[str, Any] = {}
    if env.get("OPENAI_BASE_URL"):
        out["base_url"] = env["OPENAI_BASE_URL"]
    for name in KEYS:
        value = env.get("AUDIOBOOK_" + name.upper())
        if value is not None and value != "":
            out[name] = value
    return out


# Every number a setting may hold, in one place: (low, high) inclusive; floats are also finite (see _coerce).
RANGES: dict[str, tuple[float, float]] = {
    "concurrency": (1, 64),
    "redelivery_s": (5, 86_400),
    "max_chars": (20, 4096),  # the API takes at most 4096 characters an input
    "max_retries": (0, 20),
    "speed": (0.25, 4.0),
    "timeout": (0.1, 3600),
    "connect_timeout": (0.1, 600),
    "rpm": (0.01, 1_000_000),
    "rate_limit_patience": (1, 7 * 86_400),
    "cpm": (1, 1_000_000_000),
    "price_per_million_chars": (0, 10_000),
    "transcribe_rpm": (0.01, 1_000_000),
    "transcribe_price_per_minute": (0, 100),
    "sentence_pause_ms": (0, 60_000),
    "paragraph_pause_ms": (0, 60_000),
    "title_pause_ms": (0, 60_000),
    "chapter_pad_ms": (0, 60_000),
    "verify_retries": (0, 10),
    "preview_seconds": (1, 3600),
}
# What MP3 (MPEG-1, 2 and 2.5 Layer III) can carry; anything else fails only in ffmpeg, after the requests.
SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
_BITRATE = re.compile(r"(8|16|24|32|40|48|56|64|80|96|112|128|144|160|192|224|256|320)k")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def _validate(s: Settings) -> None:
    def bad(msg: str) -> UsageError:
        return UsageError(f"invalid setting: {msg}")

    api, book = s.backend, s.book
    registry.get(api.name)  # an unknown backend is a UsageError naming the known ones
    if s.run.engine not in ENGINES:
        raise bad(f"engine must be one of {', '.join(ENGINES)}, not {s.run.engine!r}")
    if s.run.broker is not None and urlsplit(s.run.broker).scheme not in ("redis", "rediss"):
        raise bad("broker must be a Redis URL such as redis://HOST:6379/0")
    for key, (low, high) in RANGES.items():
        owner, name = KEYS[key]
        value = getattr({"run": s.run, "backend": api, "book": book}[owner], name)
        if value is not None and not low <= value <= high:
            raise bad(f"{key} must be between {low:g} and {high:g}, not {value:g}")
    try:
        parse_base_url(api.base_url)  # the check the HTTP client makes: one rule for what a base URL is
    except UsageError as exc:
        raise bad(str(exc)) from None
    if not api.transcribe_model.strip():
        raise bad("transcribe_model must not be empty")
    if not book.model.strip() or not book.voice.strip():
        raise bad("model and voice must not be empty")
    if book.sample_rate not in SAMPLE_RATES:
        rates = ", ".join(map(str, SAMPLE_RATES))
        raise bad(f"sample_rate must be one MP3 can carry ({rates}), not {book.sample_rate}")
    if not _BITRATE.fullmatch(book.bitrate):
        raise bad(f"bitrate must be an MP3 bitrate such as 64k or 128k, not {book.bitrate!r}")
    if book.subtitles is not None and book.subtitles not in SUBTITLE_FORMATS:
        raise bad(f"subtitles must be one of {', '.join(SUBTITLE_FORMATS)}, not {book.subtitles!r}")
    if book.loudness is not None and book.loudness not in LOUDNESS_TARGETS:
        raise bad(f"loudness must be one of {', '.join(LOUDNESS_TARGETS)}, not {book.loudness!r}")
    if book.format is not None and book.format not in OUTPUT_FORMATS:
        raise bad(f"format must be one of {', '.join(OUTPUT_FORMATS)}, not {book.format!r}")
    if book.verify not in VERIFY_MODES:
        raise bad(f"verify must be one of {', '.join(VERIFY_MODES)}, not {book.verify!r}")
    if book.response_format not in (None, "mp3", "wav"):
        raise bad(f"response_format must be mp3 or wav, not {book.response_format!r}")
    if book.chapters is not None:
        parse_chapters(book.chapters)  # its form now; its numbers when the book is planned
    if not _ENV_NAME.fullmatch(api.api_key_env):
        # Often a key pasted where its variable's name belongs: never repeat the value, it may be the secret.
        raise bad(
            "api_key_env must be the name of an environment variable (letters, digits and _, such as "
            "OPENAI_API_KEY), not a key: put the key itself in that variable"
        )


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
    unknown = set(merged) - set(KEYS)
    if unknown:
        raise UsageError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    return Settings().replace(**merged)
