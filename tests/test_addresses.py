"""One truth for "is this address this machine" and for what a base URL is: the server's bind check, the
client's "a server here may need no key", the config's validation and the HTTP client all read the same table."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.addresses import BaseUrl, Reach, endpoint, parse_base_url, reach
from pipeline.config import load_settings
from pipeline.errors import UsageError
from pipeline.limits import Governor
from pipeline.models import BackendOptions
from pipeline.server import check_access
from pipeline.tts import openai_http
from pipeline.tts.openai_http import OpenAISpeech

LOOP, EVERY, ELSE = Reach.LOOPBACK, Reach.EVERY_INTERFACE, Reach.ELSEWHERE

# host, where it leads. The server serves without a key only on LOOPBACK; the client goes without a key
# to LOOPBACK and EVERY_INTERFACE (a connection to 0.0.0.0 or :: reaches this machine).
HOSTS = [
    ("127.0.0.1", LOOP),
    ("127.0.0.2", LOOP),  # the whole 127.0.0.0/8 is loopback, not only .1
    ("127.255.255.254", LOOP),
    ("localhost", LOOP),
    ("LocalHost", LOOP),
    ("localhost.", LOOP),
    ("::1", LOOP),
    ("[::1]", LOOP),
    ("::ffff:127.0.0.1", LOOP),
    ("0.0.0.0", EVERY),
    ("::", EVERY),
    ("[::]", EVERY),
    ("", EVERY),
    ("192.168.1.20", ELSE),
    ("10.0.0.1", ELSE),
    ("::ffff:10.0.0.1", ELSE),
    ("2001:db8::1", ELSE),
    ("myhost.example", ELSE),
    ("localhost.example.com", ELSE),
    ("127.0.0.1.example.com", ELSE),
    ("127.1", ELSE),  # short forms are read differently by different resolvers: not taken as loopback
]


@pytest.mark.parametrize(("host", "where"), HOSTS)
def test_the_table(host: str, where: Reach) -> None:
    assert reach(host) is where


@pytest.mark.parametrize(("host", "where"), [(h, w) for h, w in HOSTS if h])
def test_the_server_serves_without_a_key_only_on_loopback(host: str, where: Reach) -> None:
    if where is LOOP:
        check_access(host, None)
    else:
        with pytest.raises(UsageError, match="without a key"):
            check_access(host, None)


def build_without_a_key(base_url: str) -> OpenAISpeech:
    options = BackendOptions(base_url=base_url, api_key_env="NO_SUCH_KEY_VARIABLE")
    return openai_http.BACKEND.build(options, 1, {}, Governor(1))  # type: ignore[return-value]


@pytest.mark.parametrize(("host", "where"), [(h, w) for h, w in HOSTS if h and h != "[::]"])
def test_the_client_goes_without_a_key_only_to_this_machine(host: str, where: Reach) -> None:
    netloc = f"[{host.strip('[]')}]" if ":" in host else host
    base_url = f"http://{netloc}:8000/v1"
    if where is ELSE:
        with pytest.raises(UsageError, match="no API key: set the environment variable NO_SUCH_KEY_VARIABLE"):
            build_without_a_key(base_url)
    else:
        assert build_without_a_key(base_url).identity() == f"openai:{netloc.lower()}:8000/v1"


@pytest.mark.parametrize(
    ("base_url", "normal"),
    [
        ("https://api.openai.com/v1", BaseUrl("https", "api.openai.com", None, "/v1")),
        ("  HTTPS://API.OpenAI.com/v1/ ", BaseUrl("https", "api.openai.com", None, "/v1")),
        ("https://api.openai.com:443/v1", BaseUrl("https", "api.openai.com", None, "/v1")),  # the default port
        ("http://relay.local:80", BaseUrl("http", "relay.local", None, "")),
        ("https://relay.local:80/", BaseUrl("https", "relay.local", 80, "")),
        ("http://127.0.0.1:8880/v1//", BaseUrl("http", "127.0.0.1", 8880, "/v1")),
        ("http://[::1]:8000/v1", BaseUrl("http", "::1", 8000, "/v1")),
        ("https://user:secret@relay.example/tts", BaseUrl("https", "relay.example", None, "/tts")),
        (
            "http://relay.local:8080/openai/v1/?api-version=2",
            BaseUrl("http", "relay.local", 8080, "/openai/v1", "api-version=2"),
        ),
    ],  # fmt: skip
)
def test_base_url_normal_form(base_url: str, normal: BaseUrl) -> None:
    assert parse_base_url(base_url) == normal


@pytest.mark.parametrize(
    ("base_url", "where", "speech"),
    [
        ("https://api.openai.com:443/v1/", "api.openai.com/v1", "https://api.openai.com/v1/audio/speech"),
        ("http://[::1]:8000/v1", "[::1]:8000/v1", "http://[::1]:8000/v1/audio/speech"),
        ("https://u:p@relay.example/x?k=1", "relay.example/x", "https://relay.example/x/audio/speech?k=1"),
    ],
)
def test_the_backend_the_client_and_the_request_name_one_endpoint(base_url: str, where: str, speech: str) -> None:
    options = BackendOptions(base_url=base_url)
    client = OpenAISpeech(base_url, "sk-0123456789abcdef")
    # The backend's identity keys the cache and the rate governor; the client's names it in messages.
    assert (
        openai_http.BACKEND.identity(options)
        == client.identity()
        == f"openai:{where}"
        == f"openai:{endpoint(base_url)}"
    )
    assert parse_base_url(base_url).url("/audio/speech") == speech


BAD = [
    ("", "it is empty"),
    ("api.openai.com/v1", "http:// or https://"),
    ("localhost:8000/v1", "http:// or https://"),
    ("ftp://host/v1", "http:// or https://"),
    ("http:/host/v1", "http:// or https://"),
    ("http:///v1", "names no host"),
    ("http://:8000/v1", "names no host"),
    ("https://user@/v1", "names no host"),
    ("http://host:99999/v1", "port"),
    ("http://host:port/v1", "port"),
    ("http://ho st/v1", "space"),
    ("http://host/v1\x00", "control character"),
]


@pytest.mark.parametrize(("base_url", "why"), BAD)
def test_a_bad_base_url_is_refused_alike_by_the_config_and_the_client(base_url: str, why: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError) as by_config:
        load_settings(env={}, overrides={"base_url": base_url})
    with pytest.raises(UsageError) as by_client:
        OpenAISpeech(base_url, "sk-0123456789abcdef")
    assert str(by_config.value) == f"invalid setting: {by_client.value}"
    assert str(by_client.value).startswith("base_url must be an http(s) URL such as https://api.openai.com/v1")
    assert why in str(by_client.value) and "\n" not in str(by_client.value)
