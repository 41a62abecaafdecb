"""The OpenAI-compatible speech client: request shape, the SDK's retry policy, error messages, key hygiene.

Units run against ``httpx.MockTransport``; the retry scenarios run against the real ``FakeSpeechServer`` on
127.0.0.1. No test really sleeps for a backoff: the client gets a sleep that only records its argument."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from pipeline import mp3
from pipeline.errors import (
    AuthError,
    BadRequestError,
    FatalAPIError,
    KeyResting,
    QuotaError,
    RetryableError,
    SynthesisError,
    UsageError,
)
from pipeline.limits import parse_retry_after
from pipeline.models import VoiceSpec
from pipeline.tts.openai_http import (
    MAX_RETRY_DELAY,
    OpenAISpeech,
    backoff_delay,
    retry_wait,
    server_message,
    too_long,
)
from tests.audiocheck import is_mp3
from tests.fakeserver import FakeSpeechServer, Fault, audio_for

KEY = "sk-test-0123456789abcdef"
SPEC = VoiceSpec(model="tts-1", voice="alloy")
MP3 = audio_for("hello there", ms_per_char=50)


class RecordingSleep:
    """Stands in for asyncio.sleep: returns at once, remembers every requested delay, and moves ``clock``
    (virtual seconds) on by it, so the rate governor sees its pauses pass."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.now = 1000.0

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)

    def clock(self) -> float:
        return self.now


Handler = Callable[[httpx.Request], httpx.Response]


def mock_client(handler: Handler, **kwargs: Any) -> tuple[OpenAISpeech, list[httpx.Request], RecordingSleep]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    sleep = RecordingSleep()
    kwargs.setdefault("sleep", sleep)
    kwargs.setdefault("clock", sleep.clock)
    client = OpenAISpeech(
        kwargs.pop("base_url", "https://api.example.com/v1"), kwargs.pop("api_key", KEY),
        transport=httpx.MockTransport(record), **kwargs,
    )  # fmt: skip
    return client, seen, sleep


def synth(client: OpenAISpeech, text: str = "Hello there.", spec: VoiceSpec = SPEC) -> Any:
    async def go() -> Any:
        try:
            return await client.synthesize(text, spec)
        finally:
            await client.aclose()

    return asyncio.run(go())


def audio_ok(_: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=MP3, headers={"content-type": "audio/mpeg"})


def sequence(*responses: httpx.Response) -> Handler:
    """Answer with these responses in turn, then audio for ever after."""
    pending = list(responses)
    return lambda request: pending.pop(0) if pending else audio_ok(request)


def openai_error(status: int, message: str, code: str | None = None, **headers: str) -> httpx.Response:
    body = {"error": {"message": message, "type": code or "invalid_request_error", "param": None, "code": code}}
    return httpx.Response(status, json=body, headers=headers)


# --- the request -----------------------------------------------------------------------------------------


def test_request_sends_only_the_fields_that_are_set() -> None:
    client, seen, _ = mock_client(audio_ok)
    result = synth(client, "Plain.")
    assert result.audio == MP3 and result.attempts == 1
    request = seen[0]
    assert request.method == "POST" and request.url == "https://api.example.com/v1/audio/speech"
    assert json.loads(request.content) == {"model": "tts-1", "input": "Plain.", "voice": "alloy"}
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert "audio/mpeg" in request.headers["accept"]
    assert request.headers["content-type"] == "application/json"


def test_request_sends_optional_fields_when_set() -> None:
    wav = httpx.Response(200, content=b"RIFF" + b"\0" * 40, headers={"content-type": "audio/wav"})
    client, seen, _ = mock_client(lambda r: wav, base_url="http://relay.local:8080/openai/v1/?api-version=2")
    spec = VoiceSpec("gpt-4o-mini-tts", "coral", instructions="Calm.", speed=1.25, response_format="wav")
    synth(client, "Fancy.", spec)
    body = json.loads(seen[0].content)
    assert body == {
        "model": "gpt-4o-mini-tts", "input": "Fancy.", "voice": "coral",
        "instructions": "Calm.", "speed": 1.25, "response_format": "wav",
    }  # fmt: skip
    assert seen[0].url == "http://relay.local:8080/openai/v1/audio/speech?api-version=2"


def test_no_authorization_header_without_a_key() -> None:
    client, seen, _ = mock_client(audio_ok, api_key="")
    synth(client)
    assert "authorization" not in seen[0].headers


@pytest.mark.parametrize(
    ("base_url", "identity"),
    [
        ("https://api.openai.com/v1", "openai:api.openai.com/v1"),
        ("https://API.openai.com/v1/", "openai:api.openai.com/v1"),
        ("http://127.0.0.1:8880/v1", "openai:127.0.0.1:8880/v1"),
        ("https://user:secret@relay.example/tts", "openai:relay.example/tts"),
    ],
)
def test_identity_is_host_and_path_only(base_url: str, identity: str) -> None:
    client = OpenAISpeech(base_url, KEY)
    assert client.identity() == identity
    assert KEY not in client.identity()


@pytest.mark.parametrize("base_url", ["api.openai.com/v1", "ftp://host/v1", "http:///v1", ""])
def test_a_base_url_that_is_not_http_is_a_usage_error(base_url: str) -> None:
    with pytest.raises(UsageError, match="base_url"):
        OpenAISpeech(base_url, KEY)


def test_aclose_closes_the_transport() -> None:
    closed: list[bool] = []

    class Transport(httpx.MockTransport):
        async def aclose(self) -> None:
            closed.append(True)

    client = OpenAISpeech("https://api.example.com/v1", KEY, transport=Transport(audio_ok))
    synth(client)
    assert closed == [True]


# --- the retry policy as pure functions ------------------------------------------------------------------

NOW = 1_695_997_597.0  # Fri, 29 Sep 2023 14:26:37 GMT: the frozen clock for HTTP dates


def http_date(offset: float) -> str:
    return email.utils.formatdate(NOW + offset, usegmt=True)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "20"}, 20.0),
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"retry-after": " 7 "}, 7.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "20"}, 0.25),
        ({"retry-after-ms": "soon", "retry-after": "4"}, 4.0),
        ({"retry-after": http_date(20)}, 20.0),
        ({"retry-after": http_date(60)}, 60.0),
        ({"retry-after": http_date(-10)}, -10.0),
        ({"retry-after": "Fri, 29 Smarch 2023 14:26:57 GMT"}, None),
        ({"retry-after": "Zun, 29 Sep 2023 14:26:57 GMT"}, 20.0),  # like the SDK, the weekday is not checked
        ({"retry-after": "soon"}, None),
        ({"retry-after": ""}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers, now=NOW) == expected


SDK_NOW = 1_696_004_797.0  # Fri, 29 Sep 2023 16:26:37 GMT: the SDK's frozen clock in its own table


# openai-python 3.3.1, tests/test_client.py::test_parse_retry_after_header, row for row: (remaining retries of
# max_retries=3, the retry-after header, the wait). Ours counts retries done: 3 - remaining.
@pytest.mark.parametrize(
    ("remaining", "header", "expected"),
    [
        (3, "20", 20),
        (3, "0", 0.5),
        (3, "-10", 0.5),
        (3, "60", 60),
        (3, "61", 61),
        (3, "120", 120),
        (3, "121", 0.5),
        (3, "Fri, 29 Sep 2023 16:26:57 GMT", 20),
        (3, "Fri, 29 Sep 2023 16:26:37 GMT", 0.5),
        (3, "Fri, 29 Sep 2023 16:26:27 GMT", 0.5),
        (3, "Fri, 29 Sep 2023 16:27:37 GMT", 60),
        (3, "Fri, 29 Sep 2023 16:27:38 GMT", 61),
        (3, "Fri, 29 Sep 2023 16:28:37 GMT", 120),
        (3, "Fri, 29 Sep 2023 16:28:38 GMT", 0.5),
        (3, "99999999999999999999999999999999999", 0.5),
        (3, "inf", 0.5),
        (3, "nan", 0.5),
        (3, "Zun, 29 Sep 2023 16:26:27 GMT", 0.5),
        (3, "Fri, 29 Sep 100000 16:26:57 GMT", 0.5),
        (3, "", 0.5),
        (2, "", 0.5 * 2.0),
        (1, "", 0.5 * 4.0),
        (-1100, "", 8),  # a huge retry count does not overflow
    ],
)
def test_retry_wait_is_the_sdks_table(remaining: int, header: str, expected: float) -> None:
    assert retry_wait(3 - remaining, parse_retry_after({"retry-after": header}, now=SDK_NOW), rand=0.0) == expected


# openai-python 3.3.1, tests/test_client.py::test_retry_after_max_delay: over two minutes is not retried at all.
@pytest.mark.parametrize(
    ("headers", "retried"),
    [
        ({"retry-after": "120"}, True),
        ({"retry-after": "121"}, False),
        ({"retry-after-ms": "120000"}, True),
        ({"retry-after-ms": "120001"}, False),
        ({"retry-after": "Fri, 29 Sep 2023 16:28:37 GMT"}, True),
        ({"retry-after": "Fri, 29 Sep 2023 16:28:38 GMT"}, False),
        ({"retry-after": "inf"}, True),  # not finite: the backoff, as the SDK
        ({"retry-after": "Fri, 29 Sep 100000 16:26:57 GMT"}, True),  # unreadable: the backoff
    ],
)
def test_a_retry_after_over_two_minutes_is_not_retried(headers: dict[str, str], retried: bool) -> None:
    assert too_long(parse_retry_after(headers, now=SDK_NOW)) is not retried


def test_a_server_delay_up_to_two_minutes_is_waited_out() -> None:
    client, seen, sleep = mock_client(sequence(openai_error(503, "busy", **{"retry-after": "90"})))
    assert synth(client).attempts == 2 and sleep.calls == [90.0]  # was the 0.5 s backoff past 60 s

    limited = openai_error(429, "Rate limit reached", "rate_limit_exceeded", **{"retry-after": "110"})
    client, seen, sleep = mock_client(sequence(limited))
    result = synth(client)
    assert result.rate_limited == 1 and sum(sleep.calls) == pytest.approx(110.0)  # was cut to 60 s


@pytest.mark.parametrize(
    "response",
    [
        openai_error(429, "Rate limit reached for requests", "rate_limit_exceeded", **{"retry-after": "86400"}),
        openai_error(503, "down for maintenance", **{"retry-after": "7200", "x-should-retry": "true"}),
    ],
)
def test_a_retry_after_of_hours_stops_at_once_saying_when(response: httpx.Response) -> None:
    client, seen, sleep = mock_client(lambda r: response)
    with pytest.raises(KeyResting, match=r"tried again in (1 day 0 h|2 h 0 min) \(until 20\d\d-\d\d-\d\d ") as caught:
        synth(client)
    assert len(seen) == 1 and sleep.calls == [] and caught.value.attempts == 1
    assert caught.value.rate_limited == (1 if response.status_code == 429 else 0)  # a 429 is no retry


@pytest.mark.parametrize(("retries_done", "base"), [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)])
def test_backoff_doubles_up_to_the_cap_with_up_to_a_quarter_jitter(retries_done: int, base: float) -> None:
    assert backoff_delay(retries_done, 0.0) == base
    assert backoff_delay(retries_done, 0.5) == base * 0.875
    low = backoff_delay(retries_done, 0.999999)
    assert 0.75 * base < low < base
    assert backoff_delay(10_000, 0.0) == MAX_RETRY_DELAY


def retry_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]


def test_client_waits_follow_the_backoff_and_each_retry_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    failing = openai_error(500, "boom", "server_error")
    client, seen, sleep = mock_client(lambda r: failing, max_retries=5)
    with caplog.at_level(logging.INFO, logger="audiobook"), pytest.raises(RetryableError) as caught:
        synth(client)
    assert len(seen) == 6 and len(sleep.calls) == 5 and caught.value.attempts == 6
    for n, waited in enumerate(sleep.calls):
        base = min(0.5 * 2**n, 8.0)
        assert 0.75 * base <= waited <= base
    logged = retry_logs(caplog)
    assert [m.split()[1] for m in logged] == ["1", "2", "3", "4", "5"]  # "attempt N failed, retrying in ..."
    assert all("boom" in m and "500" in m for m in logged)


@pytest.mark.parametrize(
    ("body", "content_type", "message", "codes"),
    [
        (b'{"error": {"message": "Bad voice", "type": "invalid_request_error", "param": "voice"}}',
         "application/json", "Bad voice (param: voice)", {"invalid_request_error"}),
        (b'{"error": {"message": "No money", "type": "insufficient_quota", "code": "insufficient_quota"}}',
         "application/json", "No money", {"insufficient_quota"}),
        (b'{"error": "model not found"}', "application/json", "model not found", set()),
        (b'{"message": "relay says no", "code": 7}', "application/json", "relay says no", {"7"}),
        (b'{"detail": "Not authenticated"}', "application/json", "Not authenticated", set()),
        (b'{"detail": [{"loc": ["body", "voice"], "msg": "field required"}]}', "application/json",
         "field required", set()),
        (b"upstream timed out\n  please retry", "text/plain", "upstream timed out please retry", set()),
        (b"<html><head><title>502 Bad Gateway</title></head></html>", "text/html", "502 Bad Gateway", set()),
        (b"", "", None, set()),
    ],
)  # fmt: skip
def test_server_message_reads_every_error_shape(
    body: bytes, content_type: str, message: str | None, codes: set[str]
) -> None:
    assert server_message(body, content_type) == (message, frozenset(codes))


# --- what is retried and what is not ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "quoted", "kind"),
    [
        (
            openai_error(400, "Invalid value for 'voice': 'bogus'.", "invalid_value"),
            "Invalid value for 'voice'",
            BadRequestError,
        ),
        (httpx.Response(401, json={"error": "bad key"}), "bad key", AuthError),
        (httpx.Response(403, json={"message": "region not supported"}), "region not supported", AuthError),
        (httpx.Response(404, text="no such route"), "no such route", BadRequestError),
        (httpx.Response(422, json={"detail": [{"msg": "input too long"}]}), "input too long", BadRequestError),
        (
            openai_error(429, "You exceeded your current quota.", "insufficient_quota"),
            "exceeded your current quota",
            QuotaError,
        ),
    ],
)
def test_non_retryable_failures_raise_at_once_typed_with_the_server_message(
    response: httpx.Response, quoted: str, kind: type[FatalAPIError]
) -> None:
    client, seen, sleep = mock_client(lambda r: response)
    with pytest.raises(kind) as caught:
        synth(client)
    assert len(seen) == 1 and sleep.calls == [] and caught.value.attempts == 1
    assert caught.value.stops_run == (kind in (AuthError, QuotaError))
    assert quoted in str(caught.value)
    assert caught.value.status == response.status_code
    assert "\n" not in str(caught.value)


def test_401_names_the_variable_the_key_was_read_from() -> None:
    refused = openai_error(401, "Incorrect API key provided.", "invalid_api_key")
    client, _, _ = mock_client(lambda r: refused)
    with pytest.raises(AuthError, match=r"check the key in \$OPENAI_API_KEY"):
        synth(client)
    client, _, _ = mock_client(lambda r: refused, key_env="RELAY_KEY")
    with pytest.raises(AuthError, match=r"check the key in \$RELAY_KEY"):
        synth(client)
    # A local server reached with no key at all (the variable was empty): say which one to set.
    client, seen, _ = mock_client(lambda r: refused, api_key="", key_env="RELAY_KEY", base_url="http://127.0.0.1:8/v1")
    with pytest.raises(AuthError, match=r"no key was sent: set \$RELAY_KEY"):
        synth(client)
    assert "authorization" not in seen[0].headers


@pytest.mark.parametrize("status", [408, 409, 500, 502, 503, 504, 529])
def test_transient_statuses_are_retried(status: int) -> None:
    client, seen, sleep = mock_client(sequence(openai_error(status, "later")))
    result = synth(client)
    assert result.attempts == 2 and len(seen) == 2 and len(sleep.calls) == 1


def test_a_rate_limit_429_waits_for_the_governor_and_uses_no_retry() -> None:
    # max_retries=0: a 429 of the rate limit is not a failed attempt, so the segment still gets through.
    limited = openai_error(429, "Rate limit reached for requests", "rate_limit_exceeded", **{"retry-after": "3"})
    client, seen, sleep = mock_client(sequence(limited, limited), max_retries=0)
    result = synth(client)
    assert len(seen) == 3 and result.attempts == 1 and result.rate_limited == 2
    assert sum(sleep.calls) == pytest.approx(6.0, abs=0.1) and result.waited_s == pytest.approx(6.0, abs=0.1)
    stats = client.governor.stats()
    assert stats.rate_limited == 2 and stats.concurrency == 2  # halved at each refused wave, from 8


def test_a_rate_limit_that_never_lets_a_request_through_is_given_up() -> None:
    limited = openai_error(429, "Rate limit reached", "rate_limit_exceeded", **{"retry-after-ms": "10"})
    client, seen, _ = mock_client(lambda r: limited)
    with pytest.raises(SynthesisError, match=r"refused by the rate limit 30 times") as caught:
        synth(client)
    assert len(seen) == 30 and caught.value.rate_limited == 30 and caught.value.attempts == 1
    assert not isinstance(caught.value, RetryableError)  # the segment fails; no retry starts it all over


def test_x_should_retry_overrides_the_status() -> None:
    client, seen, _ = mock_client(sequence(openai_error(400, "try again", **{"x-should-retry": "true"})))
    assert synth(client).attempts == 2

    client, seen, sleep = mock_client(lambda r: openai_error(503, "gone for good", **{"x-should-retry": "false"}))
    with pytest.raises(SynthesisError, match="gone for good") as caught:
        synth(client)
    assert not isinstance(caught.value, RetryableError) and len(seen) == 1 and sleep.calls == []


def test_retry_after_ms_is_used_as_the_wait() -> None:
    client, _, sleep = mock_client(sequence(openai_error(503, "slow down", **{"retry-after-ms": "1200"})))
    synth(client)
    assert sleep.calls == [1.2]


@pytest.mark.parametrize(
    ("response", "quoted"),
    [
        (httpx.Response(200, json={"error": {"message": "upstream quota exceeded"}}), "upstream quota"),
        (httpx.Response(200, content=b'{"error": "relay broke"}', headers={"content-type": "audio/mpeg"}),
         "relay broke"),
        (httpx.Response(200, content=b"", headers={"content-type": "audio/mpeg"}), "empty body"),
        (httpx.Response(200, content=b"<html>login</html>", headers={"content-type": "audio/mpeg"}),
         "not mp3 audio"),
    ],
)  # fmt: skip
def test_a_200_that_is_not_audio_is_a_failed_attempt(response: httpx.Response, quoted: str) -> None:
    client, seen, _ = mock_client(sequence(response))
    assert synth(client).attempts == 2 and len(seen) == 2

    client, _, _ = mock_client(lambda r: response, max_retries=0)
    with pytest.raises(RetryableError, match="after 1 attempt;") as caught:
        synth(client)
    assert quoted in str(caught.value)


@pytest.mark.parametrize("label", ["text/html", "application/octet-stream", "audio/mp3", ""])
def test_audio_under_a_wrong_label_is_still_audio(label: str) -> None:
    client, seen, _ = mock_client(lambda r: httpx.Response(200, content=MP3, headers={"content-type": label}))
    result = synth(client)
    assert result.audio == MP3 and result.attempts == 1 and len(seen) == 1


def test_mp3_where_wav_was_asked_stops_the_book_at_once() -> None:
    client, seen, sleep = mock_client(audio_ok)  # MP3 bytes where WAV was asked for: no retry can change that
    with pytest.raises(BadRequestError, match=r"answers mp3 audio when wav is asked for.*response_format"):
        synth(client, spec=VoiceSpec("tts-1", "alloy", response_format="wav"))
    assert len(seen) == 1 and sleep.calls == []


WAV = audio_for("hello there, a wave", ms_per_char=50, fmt="wav")


def test_wav_where_mp3_was_asked_is_converted_once_never_retried(caplog: pytest.LogCaptureFixture) -> None:
    wav = httpx.Response(200, content=WAV, headers={"content-type": "audio/wav"})
    client, seen, sleep = mock_client(lambda r: wav)

    async def go() -> list[Any]:
        try:
            return [await client.synthesize(text, SPEC) for text in ("One.", "Two.")]
        finally:
            await client.aclose()

    with caplog.at_level(logging.WARNING, logger="audiobook"):
        results = asyncio.run(go())
    assert len(seen) == 2 and sleep.calls == [] and [r.attempts for r in results] == [1, 1]
    for result in results:
        info = mp3.check_part(result.audio)  # an MP3 part like the API's own, ready for the lossless join
        assert (info.format.sample_rate, info.format.channels, info.bitrate_kbps) == (24_000, 1, 128)
        assert abs(info.duration_ms - len("hello there, a wave") * 50) < 100
    warned = [r.getMessage() for r in caplog.records if "answers wav audio" in r.getMessage()]
    assert len(warned) == 1  # said once, not once a part


def test_a_broken_wav_is_retried_like_any_answer_that_is_not_audio() -> None:
    broken = httpx.Response(200, content=b"RIFF\x00\x00\x00\x00WAVEjunk", headers={"content-type": "audio/wav"})
    client, seen, _ = mock_client(sequence(broken))
    assert synth(client).attempts == 2 and len(seen) == 2


def test_fatal_after_a_retry_stops_there() -> None:
    client, seen, _ = mock_client(sequence(openai_error(503, "busy"), openai_error(401, "revoked")))
    with pytest.raises(FatalAPIError, match="revoked"):
        synth(client)
    assert len(seen) == 2


# --- the key never leaks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response",
    [
        openai_error(401, f"Incorrect API key provided: {KEY}", "invalid_api_key"),
        openai_error(500, f"internal error for key {KEY}"),
        httpx.Response(200, json={"error": f"key {KEY} is over its limit"}),
        httpx.Response(502, text=f"proxy rejected Bearer {KEY}"),
    ],
)
def test_the_key_never_appears_in_messages_events_or_logs(
    response: httpx.Response, caplog: pytest.LogCaptureFixture
) -> None:
    client, _, _ = mock_client(lambda r: response, max_retries=2)
    with caplog.at_level(logging.DEBUG), pytest.raises(SynthesisError) as caught:
        synth(client)
    assert KEY not in str(caught.value)
    assert "***" in str(caught.value)
    assert all(KEY not in record.getMessage() for record in caplog.records)


def test_the_key_never_appears_when_the_server_is_unreachable(free_port: int) -> None:
    client = OpenAISpeech(f"http://127.0.0.1:{free_port}/v1", KEY, max_retries=1, sleep=RecordingSleep())
    with pytest.raises(RetryableError) as caught:
        synth(client)
    assert KEY not in repr(caught.value) and KEY not in str(caught.value.__cause__)


# --- against the real fake server ------------------------------------------------------------------------


@pytest.fixture
def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server() -> Iterator[FakeSpeechServer]:
    with FakeSpeechServer(api_key=KEY) as srv:
        yield srv


def live(srv: FakeSpeechServer, **kwargs: Any) -> tuple[OpenAISpeech, RecordingSleep]:
    sleep = RecordingSleep()
    kwargs.setdefault("sleep", sleep)
    kwargs.setdefault("clock", sleep.clock)
    return OpenAISpeech(srv.url, kwargs.pop("api_key", KEY), **kwargs), sleep


def test_live_success_is_mp3(server: FakeSpeechServer) -> None:
    client, sleep = live(server)
    result = synth(client, "A sentence to speak.")
    assert result.attempts == 1 and is_mp3(result.audio) and sleep.calls == []
    assert server.served_inputs() == ["A sentence to speak."]


def test_live_rate_limit_waits_the_retry_after_then_succeeds(server: FakeSpeechServer) -> None:
    server.inject(Fault.rate_limit(retry_after=7))
    client, sleep = live(server)
    result = synth(client)
    assert result.attempts == 1 and result.rate_limited == 1 and sleep.calls == [pytest.approx(7.0)]
    assert [r.status for r in server.requests] == [429, 200]


@pytest.mark.parametrize("status", [500, 502, 503])
def test_live_server_errors_are_retried_with_backoff(server: FakeSpeechServer, status: int) -> None:
    server.inject(Fault.status(status), Fault.status(status))
    client, sleep = live(server)
    assert synth(client).attempts == 3
    assert len(sleep.calls) == 2 and 0.375 <= sleep.calls[0] <= 0.5 and 0.75 <= sleep.calls[1] <= 1.0
    assert [r.status for r in server.requests] == [status, status, 200]


def test_live_dropped_connection_is_retried(server: FakeSpeechServer) -> None:
    server.inject(Fault.drop())
    client, sleep = live(server)
    assert synth(client, "Again.").attempts == 2
    assert [(r.status, r.fault) for r in server.requests] == [(None, "drop"), (200, None)]
    assert server.served_inputs() == ["Again."]


def test_live_answer_slower_than_the_timeout_is_retried(server: FakeSpeechServer) -> None:
    server.inject(Fault.slow(5.0))
    client, sleep = live(server, timeout=0.3)
    assert synth(client, "Patience.").attempts == 2
    assert len(sleep.calls) == 1
    assert server.served_inputs() == ["Patience."]  # the late answer to the first request does not count


def test_live_many_kinds_of_trouble_then_success(server: FakeSpeechServer, caplog: pytest.LogCaptureFixture) -> None:
    server.inject(Fault.rate_limit(retry_after=1), Fault.json_200(), Fault.drop(), Fault.garbage_200(),
                  Fault.empty_200(), Fault.status(502))  # fmt: skip
    client, sleep = live(server, max_retries=6)
    with caplog.at_level(logging.INFO, logger="audiobook"):
        result = synth(client)
    logged = retry_logs(caplog)
    assert result.attempts == 6 and result.rate_limited == 1 and len(logged) == 5
    assert sleep.calls[0] == pytest.approx(1.0)  # the 429's retry-after, waited in the governor
    assert "quota exceeded" in logged[0]  # the JSON-200 message is quoted


def test_live_retries_exhausted_says_how_many_attempts(server: FakeSpeechServer) -> None:
    server.inject(*[Fault.status(503, "The engine is currently overloaded")] * 3)
    client, sleep = live(server, max_retries=2)
    with pytest.raises(RetryableError, match=r"after 3 attempts; last error: .*503.*currently overloaded"):
        synth(client)
    assert len(server.requests) == 3 and len(sleep.calls) == 2


def test_live_wrong_key_stops_after_one_request(server: FakeSpeechServer) -> None:
    client, sleep = live(server, api_key="sk-wrong-key-000000")
    with pytest.raises(AuthError, match=r"HTTP 401.*Incorrect API key.*OPENAI_API_KEY") as caught:
        synth(client)
    assert len(server.requests) == 1 and sleep.calls == []
    assert "sk-wrong-key-000000" not in str(caught.value)


def test_live_quota_stops_after_one_request(server: FakeSpeechServer) -> None:
    server.inject(Fault.quota())
    client, sleep = live(server)
    with pytest.raises(QuotaError, match="exceeded your current quota"):
        synth(client)
    assert len(server.requests) == 1 and sleep.calls == []


def test_live_bad_request_is_fatal_with_the_param(server: FakeSpeechServer) -> None:
    client, _ = live(server)
    with pytest.raises(BadRequestError, match=r"Invalid 'speed': 9\.0.*\(param: speed\)"):
        synth(client, spec=VoiceSpec("tts-1", "alloy", speed=9.0))
    assert len(server.requests) == 1


def test_unreachable_server_names_the_host(free_port: int) -> None:
    sleep = RecordingSleep()
    client = OpenAISpeech(f"http://127.0.0.1:{free_port}/v1", KEY, max_retries=2, sleep=sleep)
    with pytest.raises(RetryableError, match=rf"after 3 attempts.*server at 127\.0\.0\.1:{free_port} could not"):
        synth(client)
    assert len(sleep.calls) == 2


def gather_live(client: OpenAISpeech, texts: list[str]) -> list[Any]:
    async def go() -> list[Any]:
        try:
            return await asyncio.gather(*(client.synthesize(text, SPEC) for text in texts))
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_connections_bound_requests_in_flight(server: FakeSpeechServer) -> None:
    server.latency = 0.2
    client, _ = live(server, connections=4)
    results = gather_live(client, [f"line {i}" for i in range(12)])
    assert all(r.attempts == 1 for r in results)
    assert sorted(server.served_inputs()) == sorted(f"line {i}" for i in range(12))
    assert server.max_in_flight <= 4


def test_connections_above_one_shard_are_fully_used(server: FakeSpeechServer) -> None:
    # 12 connections are split over two httpx clients (6 + 6); choosing the shard with the most free
    # connections must still put all 12 requests in flight together, and never more than 12.
    server.latency = 1.0  # long enough that 12 requests sent at once overlap
    client, _ = live(server, connections=12)
    gather_live(client, [f"part {i}" for i in range(24)])
    assert len(server.served_inputs()) == 24
    assert server.max_in_flight == 12


def test_live_a_server_that_answers_wav_costs_one_request_a_text(server: FakeSpeechServer) -> None:
    """It used to cost five (each answer refused as 'not mp3', retried four times) and fail every segment."""
    server.inject_for(lambda body: True, Fault.wrong_format("wav"))
    client, sleep = live(server)
    texts = [f"Text number {n} to speak." for n in range(10)]

    async def go() -> list[Any]:
        try:
            return await asyncio.gather(*(client.synthesize(text, SPEC) for text in texts))
        finally:
            await client.aclose()

    results = asyncio.run(go())
    assert len(server.requests) == 10 and sleep.calls == []
    assert all(r.attempts == 1 and mp3.check_part(r.audio).frames > 0 for r in results)
    assert all(r.body is not None and "response_format" not in r.body for r in server.requests)  # MP3 asked
