"""The fake speech server checks requests like the real API, answers real MP3 sized by the text, misbehaves
exactly as told, and keeps up with many concurrent slow requests."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from pipeline.limits import RateLimitInfo, parse_duration
from tests.audiocheck import decode, is_mp3
from tests.conftest import REPO
from tests.fakeserver import FRAME_MS, MAX_INPUT, FakeSpeechServer, Fault, ServerStats, go_duration

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def srv() -> Iterator[FakeSpeechServer]:
    with FakeSpeechServer(api_key=KEY) as server:
        yield server


@pytest.fixture
def http(srv: FakeSpeechServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        yield client


def speak(http: httpx.Client, headers: dict[str, str] | None = AUTH, **body: Any) -> httpx.Response:
    payload = {"model": "tts-1", "voice": "alloy", "input": "Hello."} | body
    return http.post("/audio/speech", json=payload, headers=headers)


def error_of(response: httpx.Response) -> dict[str, Any]:
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}  # OpenAI's shape, always
    return dict(error)


# --- checks like the real API ----------------------------------------------------------------------------


def test_missing_key_is_401(http: httpx.Client) -> None:
    response = speak(http, headers=None)
    assert response.status_code == 401
    assert "didn't provide an API key" in error_of(response)["message"]


def test_wrong_key_is_401_without_echoing_it(http: httpx.Client) -> None:
    response = speak(http, headers={"Authorization": "Bearer sk-not-the-right-one"})
    error = error_of(response)
    assert response.status_code == 401 and error["code"] == "invalid_api_key"
    assert "sk-not-the-right-one" not in response.text


@pytest.mark.parametrize("field", ["instructions", "speed", "response_format", "model"])
def test_a_null_field_is_400_naming_it(http: httpx.Client, field: str) -> None:
    response = speak(http, **{field: None})
    assert response.status_code == 400 and error_of(response)["param"] == field


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": ""}, "model"),
        ({"voice": 3}, "voice"),
        ({"input": "   "}, "input"),
        ({"input": "x" * (MAX_INPUT + 1)}, "input"),
        ({"speed": 0.2}, "speed"),
        ({"speed": 4.5}, "speed"),
        ({"speed": "fast"}, "speed"),
        ({"response_format": "ogg"}, "response_format"),
        ({"temperature": 0.3}, "temperature"),
    ],
)
def test_invalid_bodies_are_400_naming_the_param(http: httpx.Client, body: dict[str, Any], param: str) -> None:
    response = speak(http, **body)
    assert response.status_code == 400 and error_of(response)["param"] == param


def test_missing_required_field_and_non_json_are_400(http: httpx.Client) -> None:
    response = http.post("/audio/speech", json={"model": "tts-1", "input": "Hi."}, headers=AUTH)
    assert response.status_code == 400 and error_of(response)["param"] == "voice"
    response = http.post("/audio/speech", content=b"not json", headers=AUTH)
    assert response.status_code == 400


def test_limits_are_inclusive(http: httpx.Client) -> None:
    assert speak(http, input="x" * MAX_INPUT).status_code == 200
    assert speak(http, speed=0.25).status_code == 200
    assert speak(http, speed=4).status_code == 200


def test_only_post_speech_and_transcriptions_and_get_models_exist(http: httpx.Client) -> None:
    assert http.get("/audio/speech", headers=AUTH).status_code == 404
    assert http.get("/audio/transcriptions", headers=AUTH).status_code == 404
    assert http.post("/audio/translations", json={}, headers=AUTH).status_code == 404
    assert http.post("/audio/transcriptions", json={}, headers=AUTH).status_code == 400  # not multipart
    response = http.get("/models", headers=AUTH)
    assert response.status_code == 200
    assert "tts-1" in [m["id"] for m in response.json()["data"]]
    assert http.get("/models").status_code == 401


# --- audio -----------------------------------------------------------------------------------------------


def test_answers_mp3_whose_duration_follows_the_text(srv: FakeSpeechServer, http: httpx.Client) -> None:
    short, long = speak(http, input="A" * 20), speak(http, input="A" * 200)
    assert short.headers["content-type"] == "audio/mpeg" and is_mp3(short.content)
    short_audio, long_audio = decode(short.content), decode(long.content)
    assert (short_audio.frame_rate, short_audio.channels) == (24_000, 1)
    assert abs(len(short_audio) - 20 * 50) <= FRAME_MS
    assert abs(len(long_audio) - 200 * 50) <= FRAME_MS
    assert short_audio.max > 0  # a tone, not silence: level-based checks downstream see sound

    srv.ms_per_char = 10
    faster = decode(speak(http, input="A" * 200, speed=2.0).content)
    assert abs(len(faster) - 200 * 10 / 2) <= FRAME_MS


def test_one_character_still_gives_decodable_audio(http: httpx.Client) -> None:
    assert len(decode(speak(http, input="A").content)) > 0


def test_wav_and_pcm_formats(http: httpx.Client) -> None:
    wav = speak(http, input="B" * 40, response_format="wav")
    assert wav.headers["content-type"] == "audio/wav"
    audio = decode(wav.content, "wav")
    assert audio.frame_rate == 24_000 and abs(len(audio) - 40 * 50) <= FRAME_MS
    pcm = speak(http, input="B" * 40, response_format="pcm")
    assert len(pcm.content) == len(audio.raw_data)


# --- faults ----------------------------------------------------------------------------------------------


def test_injected_faults_hit_the_next_requests_in_order(srv: FakeSpeechServer, http: httpx.Client) -> None:
    srv.inject(Fault.rate_limit(retry_after=3), Fault.status(503), Fault.quota(), Fault.unauthorized())
    first = speak(http, input="one")
    assert first.status_code == 429 and first.headers["retry-after"] == "3"
    assert error_of(first)["code"] == "rate_limit_exceeded"
    assert speak(http, input="two").status_code == 503
    third = speak(http, input="three")
    assert third.status_code == 429 and error_of(third)["code"] == "insufficient_quota"
    assert speak(http, input="four").status_code == 401
    assert speak(http, input="five").status_code == 200
    assert [(r.input, r.status, r.fault) for r in srv.requests] == [
        ("one", 429, "rate_limit"), ("two", 503, "status"), ("three", 429, "quota"),
        ("four", 401, "unauthorized"), ("five", 200, None),
    ]  # fmt: skip
    assert srv.served_inputs() == ["five"]
    assert srv.requests[0].body == {"model": "tts-1", "voice": "alloy", "input": "one"}


def test_status_fault_options(srv: FakeSpeechServer, http: httpx.Client) -> None:
    srv.inject(
        Fault.status(502),
        Fault.status(500, "kaput", should_retry=False),
        Fault.rate_limit(None, retry_after_ms=1500),
    )
    gateway = speak(http)
    assert gateway.status_code == 502 and gateway.headers["content-type"] == "text/html"
    final = speak(http)
    assert final.status_code == 500 and final.headers["x-should-retry"] == "false"
    assert error_of(final)["message"] == "kaput"
    limited = speak(http)
    assert limited.headers["retry-after-ms"] == "1500" and "retry-after" not in limited.headers


def test_bad_request_fault_names_its_param(srv: FakeSpeechServer, http: httpx.Client) -> None:
    srv.inject(Fault.bad_request("Voice 'x' is not available.", param="voice"))
    response = speak(http)
    assert response.status_code == 400
    assert error_of(response)["message"] == "Voice 'x' is not available." and error_of(response)["param"] == "voice"


def test_200_faults_are_not_audio(srv: FakeSpeechServer, http: httpx.Client) -> None:
    srv.inject(Fault.json_200("relay quota exceeded"), Fault.empty_200(), Fault.garbage_200())
    as_json = speak(http)
    assert as_json.status_code == 200 and error_of(as_json)["message"] == "relay quota exceeded"
    empty = speak(http)
    assert empty.status_code == 200 and empty.content == b""
    garbage = speak(http)
    assert garbage.status_code == 200 and garbage.content and not is_mp3(garbage.content)
    assert srv.served_inputs() == []


def test_drop_closes_without_an_answer(srv: FakeSpeechServer, http: httpx.Client) -> None:
    srv.inject(Fault.drop())
    with pytest.raises(httpx.RemoteProtocolError):
        speak(http, input="dropped")
    assert speak(http, input="next").status_code == 200
    assert [(r.status, r.fault) for r in srv.requests] == [(None, "drop"), (200, None)]


def test_slow_answers_after_the_client_gave_up(srv: FakeSpeechServer, http: httpx.Client) -> None:
    srv.inject(Fault.slow(5.0))
    with pytest.raises(httpx.ReadTimeout):
        http.post("/audio/speech", json={"model": "m", "voice": "v", "input": "late"}, headers=AUTH, timeout=0.2)
    assert speak(http, input="on time").status_code == 200
    assert srv.served_inputs() == ["on time"]


def test_inject_for_matches_bodies_a_limited_number_of_times(srv: FakeSpeechServer, http: httpx.Client) -> None:
    srv.inject_for(lambda body: "cursed" in body["input"], Fault.status(500), times=2)
    srv.inject_for(lambda body: body["input"].startswith("poor"), Fault.quota())
    statuses = [speak(http, input=text).status_code for text in ("cursed a", "fine", "cursed b", "cursed c")]
    assert statuses == [500, 200, 500, 200]
    assert [speak(http, input="poor me").status_code for _ in range(3)] == [429, 429, 429]


def test_faults_do_not_apply_to_unauthorized_requests(srv: FakeSpeechServer, http: httpx.Client) -> None:
    srv.inject(Fault.status(503))
    assert speak(http, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert speak(http).status_code == 503


# --- concurrency and the command line --------------------------------------------------------------------


def test_64_concurrent_slow_requests_are_all_answered_at_once(srv: FakeSpeechServer) -> None:
    srv.latency = 1.0  # long enough that all 64 overlap: a server that serialized them would show 1

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=srv.url, limits=limits, timeout=30, headers=AUTH) as client:
            body = {"model": "tts-1", "voice": "alloy"}
            return await asyncio.gather(
                *(client.post("/audio/speech", json=body | {"input": f"line {i}"}) for i in range(64))
            )

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 64
    assert all(is_mp3(r.content) for r in responses)
    assert sorted(srv.served_inputs()) == sorted(f"line {i}" for i in range(64))
    assert srv.max_in_flight == 64


def test_main_prints_its_url_and_serves_until_terminated() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakeserver", "--port", "0", "--latency", "0", "--api-key", "k-123"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        response = httpx.post(
            url + "/audio/speech", json={"model": "m", "voice": "v", "input": "Hi there."},
            headers={"Authorization": "Bearer k-123"}, timeout=10,
        )  # fmt: skip
        assert response.status_code == 200 and is_mp3(response.content)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "1 requests, 1 served" in err


def test_main_enforces_a_rate_limit_and_reports_refusals_after_the_old_fields() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakeserver", "--port", "0", "--api-key", "k-123", "--rpm", "6", "--burst", "1"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        with httpx.Client(base_url=url, headers={"Authorization": "Bearer k-123"}, timeout=10) as client:
            body = {"model": "m", "voice": "v", "input": "Hi there."}
            first, second = client.post("/audio/speech", json=body), client.post("/audio/speech", json=body)
        # 6 per minute: the second request would need a token 10 s later, so no test timing can let it through.
        assert first.status_code == 200 and first.headers["x-ratelimit-limit-requests"] == "6"
        assert second.status_code == 429 and 9 <= float(second.headers["retry-after"]) <= 10
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    last = err.strip().splitlines()[-1]
    assert last == "fakeserver: 2 requests, 1 served, max 1 in flight, 1 rate-limited"
    # bench/run.py's pattern still reads the first fields.
    assert re.search(r"(\d+) requests, (\d+) served, max (\d+) in flight", last)


# --- the rate limit --------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.0004, "1ms"), (0.012, "12ms"), (0.25, "250ms"), (1, "1s"), (59.5, "59.5s"), (360, "6m0s"),
     (3723.5, "1h2m3.5s"), (3600, "1h0m0s"), (61.25, "1m1.25s")],
)  # fmt: skip
def test_go_duration_writes_reset_values_as_openai_does(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(max(seconds, 0.001) if seconds else 0)


def test_the_bucket_advertises_itself_and_refuses_when_empty() -> None:
    clock = FakeClock()
    with FakeSpeechServer(api_key=KEY, rpm=60, burst=3, clock=clock) as srv, httpx.Client(base_url=srv.url) as http:
        answers = [speak(http, input=f"line {i}") for i in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert [RateLimitInfo.from_headers(a.headers) for a in answers[:3]] == [
            RateLimitInfo(limit_requests=60, remaining_requests=left, reset_requests=float(3 - left))
            for left in (2, 1, 0)
        ]
        refused = answers[3]
        error = error_of(refused)
        assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
        assert error["message"].startswith("Rate limit reached for tts-1 on requests per min (RPM): Limit 60.")
        assert refused.headers["retry-after-ms"] == "1000" and refused.headers["retry-after"] == "1"
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        assert refused.headers["x-ratelimit-reset-requests"] == "3s"

        clock.now += 0.5  # half a token refilled, and the refusal takes it: refused ones count, as at OpenAI
        assert speak(http, input="too soon").headers["retry-after-ms"] == "1000"
        clock.now += 1.0
        assert speak(http, input="in time").status_code == 200
        assert srv.stats() == ServerStats(requests=6, served=4, max_in_flight=1, rate_limited=2)
        assert [r.fault for r in srv.requests] == [None, None, None, "rpm", "rpm", None]


def test_every_authorized_speech_answer_carries_the_headers(srv: FakeSpeechServer) -> None:
    with (
        FakeSpeechServer(api_key=KEY, rpm=600, clock=FakeClock()) as limited,
        httpx.Client(base_url=limited.url) as http,
    ):
        limited.inject(Fault.status(503))
        answers = [speak(http, input="x"), speak(http, speed=9), speak(http, input="y")]
        assert [a.status_code for a in answers] == [503, 400, 200]
        assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == ["9", "8", "7"]  # burst: 1 s worth
        assert "x-ratelimit-limit-requests" not in speak(http, headers=None).headers  # no key, no key's limit
    with httpx.Client(base_url=srv.url) as http:
        assert not any(name.startswith("x-ratelimit") for name in speak(http).headers)  # unlimited: silent


def test_an_unadvertised_limit_still_says_when_to_retry() -> None:
    clock = FakeClock()
    server = FakeSpeechServer(api_key=KEY, rpm=120, burst=1, rate_headers=False, clock=clock)
    with server as srv, httpx.Client(base_url=srv.url) as http:
        ok, refused = speak(http), speak(http)
    assert ok.status_code == 200 and refused.status_code == 429
    assert not any(name.startswith("x-ratelimit") for name in (*ok.headers, *refused.headers))
    assert refused.headers["retry-after-ms"] == "500" and refused.headers["retry-after"] == "1"


def test_a_tokens_per_minute_bucket_refuses_long_inputs_first() -> None:
    clock = FakeClock()
    with FakeSpeechServer(api_key=KEY, tpm=600, clock=clock) as srv, httpx.Client(base_url=srv.url) as http:
        first = speak(http, input="x" * MAX_INPUT)  # 1024 tokens at 4 characters each: the whole bucket
        refused = speak(http, input="x" * 40)
        assert first.status_code == 200 and refused.status_code == 429
        assert (
            first.headers["x-ratelimit-limit-tokens"] == "600" and first.headers["x-ratelimit-remaining-tokens"] == "0"
        )
        assert "x-ratelimit-limit-requests" not in first.headers
        assert error_of(refused)["type"] == "tokens" and refused.headers["retry-after-ms"] == "1000"  # 10 tokens
        clock.now += 1.0
        assert speak(http, input="x" * 40).status_code == 200
        assert srv.stats().rate_limited == 1 and srv.requests[1].fault == "tpm"
