"""Settings precedence and validation: defaults < file < environment < flags, keys only from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import KEYS, RUN_KEYS, BookOptions, RunOptions, Settings, load_settings
from pipeline.errors import UsageError
from pipeline.models import BackendOptions
from pipeline.tts import registry

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_each_layer_overrides_the_one_below(tmp_path: Path) -> None:
    config = write(
        tmp_path, '[api]\nbase_url = "https://relay.example/v1"\nconcurrency = 3\n[speech]\nvoice = "nova"\n'
    )
    assert load_settings(env={}) == Settings()
    from_file = load_settings(config, env={})
    assert (from_file.backend.base_url, from_file.run.concurrency, from_file.book.voice) == (
        "https://relay.example/v1",
        3,
        "nova",
    )
    env = {"OPENAI_BASE_URL": "http://127.0.0.1:9000/v1", "AUDIOBOOK_VOICE": "echo", "AUDIOBOOK_M4B": "yes"}
    from_env = load_settings(config, env=env)
    assert (from_env.backend.base_url, from_env.book.voice, from_env.run.concurrency, from_env.book.m4b) == (
        "http://127.0.0.1:9000/v1",
        "echo",
        3,
        True,
    )
    flags = load_settings(config, env=env, overrides={"voice": "onyx", "speed": None, "concurrency": 12})
    assert (flags.book.voice, flags.book.speed, flags.run.concurrency, flags.backend.base_url) == (
        "onyx",
        None,
        12,
        from_env.backend.base_url,
    )


def test_the_cache_is_a_folder_or_a_bucket_url_whichever_layer_names_it(
    tmp_path: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Read as a string: a Path would turn s3://bucket/prefix into s3:/bucket/prefix. A folder is expanded.
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_settings(env={}).book.cache_location == str(isolated_env / "audiobook-pipeline")
    assert load_settings(env={}, overrides={"cache_dir": "~/parts"}).book.cache_location == str(tmp_path / "parts")
    assert load_settings(env={}, overrides={"cache_dir": tmp_path / "p"}).book.cache_location == str(tmp_path / "p")
    config = write(tmp_path, 'cache_dir = "s3://team-bucket/from-file"\n')
    assert load_settings(config, env={}).book.cache_location == "s3://team-bucket/from-file"
    env = {"AUDIOBOOK_CACHE_DIR": "s3://team-bucket/from-env"}
    assert load_settings(config, env=env).book.cache_location == "s3://team-bucket/from-env"


def test_every_key_has_one_owner_run_backend_or_book() -> None:
    settings = load_settings(
        env={"AUDIOBOOK_BACKEND": "espeak", "AUDIOBOOK_CONCURRENCY": "5", "AUDIOBOOK_GENRE": "Talk"}
    )
    assert settings.run == RunOptions(concurrency=5)
    assert settings.backend == BackendOptions(name="espeak")
    assert settings.book == BookOptions(genre="Talk")
    assert {"concurrency", "engine", "broker", "redelivery_s"} == RUN_KEYS
    assert {"backend", "base_url", "api_key_env", "timeout", "max_retries"} <= {
        k for k, (owner, _) in KEYS.items() if owner == "backend"
    }
    assert "language" in KEYS and KEYS["language"] == ("book", "language")  # the backend's own is derived


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_numbers_must_be_finite_whichever_layer_gives_them(tmp_path: Path, value: str) -> None:
    with pytest.raises(UsageError, match="'timeout': 'nan' is not a valid float|not a valid float"):
        load_settings(env={"AUDIOBOOK_TIMEOUT": value})
    with pytest.raises(UsageError, match="not a valid float"):
        load_settings(env={}, overrides={"timeout": value})
    with pytest.raises(UsageError, match="not a valid float"):
        load_settings(write(tmp_path, f"connect_timeout = {value}\n"), env={})


@pytest.mark.parametrize("pasted", ["sk-proj-abcdefghijklmnopqrstuvwxyz0123456789", "my key", "OPENAI-KEY", ""])
def test_a_key_pasted_where_its_variable_belongs_is_refused_without_repeating_it(tmp_path: Path, pasted: str) -> None:
    with pytest.raises(UsageError) as caught:
        load_settings(write(tmp_path, f'api_key_env = "{pasted}"\n'), env={})
    assert "name of an environment variable" in str(caught.value)
    assert not pasted or pasted not in str(caught.value)


def test_config_named_by_the_environment_and_the_shipped_configs_load(tmp_path: Path) -> None:
    config = write(tmp_path, 'model = "tts-1"\n')
    assert load_settings(env={"AUDIOBOOK_CONFIG": str(config)}).book.model == "tts-1"
    relay = load_settings(REPO / "configs" / "whatai.toml", env={})
    assert relay.backend.base_url == "https://api.whatai.cc/v1" and relay.backend.api_key_env == "WHATAI_API_KEY"
    assert relay.book.max_chars == 500 and relay.book.model == "gpt-4o-mini-tts"
    assert load_settings(REPO / "configs" / "local.toml", env={}).backend.name == "espeak"
    assert load_settings(REPO / "configs" / "default.toml", env={}) == Settings()


def test_the_key_comes_from_the_variable_the_config_names(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, 'api_key_env = "RELAY_KEY"\n'), env={})
    assert settings.backend.api_key({"RELAY_KEY": " secret ", "OPENAI_API_KEY": "other"}) == "secret"
    assert settings.backend.api_key({"OPENAI_API_KEY": "other"}) is None
    assert "secret" not in repr(settings)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('api_key = "sk-abc"\n', "not read from files"),
        ('[api]\nOPENAI_API_KEY = "sk-abc"\n', "not read from files"),
        ('voise = "nova"\n', "unknown setting 'voise'"),
        ("concurrency = 0\n", "concurrency must be between 1 and 64"),
        ('concurrency = "many"\n', "not a valid int"),
        ("max_chars = 10000\n", "4096"),
        ("speed = 5.0\n", "speed must be between 0.25 and 4, not 5"),
        ("sample_rate = 1\n", "sample_rate must be one MP3 can carry"),
        ('bitrate = "fast"\n', "bitrate must be an MP3 bitrate"),
        ("chapter_pad_ms = -5\n", "chapter_pad_ms must be between 0 and 60000"),
        ("rpm = 0\n", "rpm must be between"),
        ("timeout = 0\n", "timeout must be between"),
        ("connect_timeout = 1e400\n", "not a valid float"),
        ('base_url = "api.openai.com"\n', "http(s) URL"),
        ('backend = "piper"\n', "backend must be one of"),
        ('subtitles = "ass"\n', "subtitles must be one of"),
        ("m4b = 3\n", "not a valid bool"),
        ("this is = not toml\n", "not valid TOML"),
    ],
)
def test_bad_config_is_a_usage_error_naming_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(UsageError, match=None) as err:
        load_settings(write(tmp_path, text), env={})
    assert needle in str(err.value)


def test_bad_environment_values_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="speed"):
        load_settings(env={"AUDIOBOOK_SPEED": "fast"})
    with pytest.raises(UsageError, match="config file not found"):
        load_settings(env={"AUDIOBOOK_CONFIG": "/nonexistent/settings.toml"})


def test_the_offline_voice_is_the_espeak_backend_and_its_old_name_local_still_works(tmp_path: Path) -> None:
    """ "local" named the eSpeak backend until the engines took the word: old config files, job files, the
    environment and flags still say it, and mean the same backend, with the same part keys."""
    old = tmp_path / "old.toml"
    old.write_text('[api]\nbackend = "local"\n', encoding="utf-8")
    assert load_settings(old, env={}).backend.name == "espeak"
    assert load_settings(env={"AUDIOBOOK_BACKEND": "local"}).backend.name == "espeak"
    assert load_settings(env={}, overrides={"backend": "local"}).backend == BackendOptions(name="espeak")
    assert registry.get("local") is registry.get("espeak")
    assert registry.names() == ("openai", "espeak")
    with pytest.raises(UsageError, match="backend must be one of openai, espeak, not 'nope'"):
        load_settings(env={}, overrides={"backend": "nope"})
