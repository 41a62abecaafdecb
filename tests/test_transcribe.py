"""The transcript check's client (pipeline/tts/transcribe.py) against the fake server's transcription route,
and that route itself: it tells what an answer really says, a dropped sentence included."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.config import load_settings
from pipeline.errors import AuthError, RetryableError, UsageError
from pipeline.limits import Governor
from pipeline.models import BackendOptions, VoiceSpec
from pipeline.store import FileStore, ObjectStore, PartStore, part_key
from pipeline.transcript import compare
from pipeline.tts.openai_http import OpenAISpeech
from pipeline.tts.transcribe import (
    CACHE_FORMAT,
    Transcriber,
    expected_minutes,
    governor_key,
    iso639_1,
    transcript_key,
    transcription_cost,
    transcription_governor,
)
from tests.fakeserver import TRANSCRIPTIONS, FakeSpeechServer, Fault, sentences
from tests.test_openai_http import KEY, RecordingSleep

SPEC = VoiceSpec(model="tts-1", voice="alloy")
TEXT = (
    "The lighthouse stood at the end of the long stone pier. Every night the keeper climbed its hundred steps. "
    "He trimmed the wick and polished the great glass lens. Ships far out at sea watched for its slow white beam."
)


@pytest.fixture
def server() -> Iterator[FakeSpeechServer]:
    with FakeSpeechServer(api_key=KEY) as srv:
        yield srv


def clients(srv: FakeSpeechServer, **kwargs: Any) -> tuple[OpenAISpeech, Transcriber, RecordingSleep]:
    sleep = RecordingSleep()
    speech = OpenAISpeech(srv.url, KEY, sleep=sleep, clock=sleep.clock, max_retries=kwargs.pop("max_retries", 4))
    governor = Governor(8, sleep=sleep, clock=sleep.clock)
    return speech, Transcriber(speech, governor=governor, **kwargs), sleep


def run(speech: OpenAISpeech, work: Any) -> Any:
    async def go() -> Any:
        try:
            return await work
        finally:
            await speech.aclose()

    return asyncio.run(go())


def spoken_and_heard(srv: FakeSpeechServer, text: str = TEXT, **kwargs: Any) -> tuple[bytes, str, Transcriber]:
    speech, transcriber, _ = clients(srv, **kwargs)

    async def both() -> tuple[bytes, str]:
        audio = (await speech.synthesize(text, SPEC)).audio
        return audio, await transcriber.transcribe(audio, language="en")

    audio, heard = run(speech, both())
    return audio, heard, transcriber


def transcriptions(srv: FakeSpeechServer) -> list[Any]:
    return [r for r in srv.requests if r.path == TRANSCRIPTIONS]


def test_the_multipart_fields_are_sent_as_the_sdk_sends_them(server: FakeSpeechServer) -> None:
    audio, heard, _ = spoken_and_heard(server)
    (request,) = transcriptions(server)
    assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    body = request.body
    assert body["model"] == "gpt-4o-mini-transcribe" and body["language"] == "en"
    assert body["response_format"] == "json"
    assert body["file"] == {"filename": "part.mp3", "content_type": "audio/mpeg", "data": audio}
    assert request.status == 200 and not compare(TEXT, heard, language="en").suspect


def test_the_model_is_configurable_and_no_language_is_not_sent(server: FakeSpeechServer) -> None:
    speech, transcriber, _ = clients(server, model="whisper-1")

    async def both() -> str:
        audio = (await speech.synthesize(TEXT, SPEC)).audio
        return await transcriber.transcribe(audio, language=None)

    assert run(speech, both()) == server.transcripts.transcript(TEXT)
    (request,) = transcriptions(server)
    assert request.body["model"] == "whisper-1" and "language" not in request.body


def test_a_language_tag_is_sent_as_its_iso_639_1_code(server: FakeSpeechServer) -> None:
    speech, transcriber, _ = clients(server)

    async def both() -> str:
        audio = (await speech.synthesize(TEXT, SPEC)).audio
        return await transcriber.transcribe(audio, language="en-GB")

    assert run(speech, both()) == server.transcripts.transcript(TEXT)
    assert transcriptions(server)[0].body["language"] == "en"
    assert [iso639_1(x) for x in ("zh_Hans", "EN", "", None)] == ["zh", "en", None, None]


def test_the_transcript_is_the_truth_with_noise_and_reproducible(server: FakeSpeechServer) -> None:
    audio, heard, _ = spoken_and_heard(server)
    assert server.transcripts.spoken(audio) == TEXT
    assert heard != TEXT  # noised: the test server is not a perfect recogniser...
    assert heard == server.transcripts.transcript(TEXT)  # ...but the same one every time


def test_a_dropped_sentence_is_told_by_the_transcript(server: FakeSpeechServer) -> None:
    server.inject(Fault.drop_sentence())
    audio, heard, _ = spoken_and_heard(server)
    spoken = server.transcripts.spoken(audio)
    assert spoken is not None and len(sentences(spoken)) == len(sentences(TEXT)) - 1
    lost = next(s.strip() for s in sentences(TEXT) if s.strip() not in spoken)
    result = compare(TEXT, heard, language="en")
    assert result.suspect and result.longest_gap >= len(lost.split()) - 1
    assert server.requests[0].fault == "drop_sentence"


def test_two_texts_of_one_length_answer_different_audio(server: FakeSpeechServer) -> None:
    speech, _, _ = clients(server)

    async def both() -> list[bytes]:
        return [(await speech.synthesize(t, SPEC)).audio for t in ("Cats sat still.", "Dogs ran about.")]

    first, second = run(speech, both())
    assert first != second
    assert server.transcripts.spoken(first) == "Cats sat still."
    assert server.transcripts.spoken(second) == "Dogs ran about."


def test_audio_the_server_never_made_says_nothing(server: FakeSpeechServer) -> None:
    speech, transcriber, _ = clients(server)
    assert run(speech, transcriber.transcribe(b"\xff\xf3" + bytes(500), language="en")) == ""


@pytest.mark.parametrize("fault", [Fault.status(503), Fault.status(500), Fault.rate_limit(retry_after=3), Fault.drop()])
def test_5xx_429_and_dropped_connections_are_retried(server: FakeSpeechServer, fault: Fault) -> None:
    audio, _, _ = spoken_and_heard(server)
    server.inject_transcription(fault, fault)
    speech, transcriber, sleep = clients(server)
    heard = run(speech, transcriber.transcribe(audio, language="en"))
    assert heard == server.transcripts.transcript(TEXT)
    assert [r.fault for r in transcriptions(server)][1:] == [fault.kind, fault.kind, None]
    assert len(sleep.calls) == 2  # waited, with the injected clock, not for real
    if fault.kind == "rate_limit":
        stats = transcriber.governor.stats()
        assert stats.rate_limited == 2 and speech.governor.stats().rate_limited == 0  # its own governor


def test_a_200_with_a_json_error_is_an_error(server: FakeSpeechServer) -> None:
    audio, _, _ = spoken_and_heard(server)
    server.inject_transcription(*[Fault.json_200("upstream provider error")] * 3)
    speech, transcriber, _ = clients(server, max_retries=2)
    with pytest.raises(RetryableError) as caught:
        run(speech, transcriber.transcribe(audio, language="en"))
    assert "transcription request failed after 3 attempts" in str(caught.value)
    assert "upstream provider error" in str(caught.value) and caught.value.attempts == 3


def test_a_wrong_key_stops_at_once_without_the_key_in_the_message(server: FakeSpeechServer) -> None:
    server.inject_transcription(Fault.unauthorized())
    speech, transcriber, _ = clients(server)
    with pytest.raises(AuthError) as caught:
        run(speech, transcriber.transcribe(b"audio", language="en"))
    assert KEY not in str(caught.value) and len(transcriptions(server)) == 1


def test_the_server_refuses_a_request_without_a_file_as_openai_does(server: FakeSpeechServer) -> None:
    answer = httpx.post(
        server.url + "/audio/transcriptions", data={"model": "gpt-4o-mini-transcribe"},
        files={"other": ("x.txt", b"x", "text/plain")}, headers={"Authorization": f"Bearer {KEY}"},
    )  # fmt: skip
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "file"


@pytest.fixture(params=["folder", "bucket"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> PartStore:
    if request.param == "folder":
        return FileStore(tmp_path / "cache")
    pytest.importorskip("fsspec")
    return ObjectStore(f"memory://transcripts-{tmp_path.name}/cache")


def test_a_transcript_is_kept_by_part_and_a_second_ask_sends_nothing(
    server: FakeSpeechServer, store: PartStore
) -> None:
    audio, _, _ = spoken_and_heard(server)
    key = part_key("openai:fake", SPEC, TEXT)
    speech, transcriber, _ = clients(server, store=store)
    first = run(speech, transcriber.transcribe(audio, language="en", part_key=key))
    assert len(transcriptions(server)) == 2 and transcriber.requests == 1

    speech, again, _ = clients(server, store=store)  # a new run, the same store
    assert run(speech, again.transcribe(audio, language="en", part_key=key)) == first
    assert len(transcriptions(server)) == 2 and again.requests == 0
    entry = store.get(transcript_key(key, audio, "gpt-4o-mini-transcribe", "en"), CACHE_FORMAT)
    assert entry is not None and json.loads(entry)["text"] == first
    # Another model or language is another transcript.
    speech, other, _ = clients(server, store=store, model="whisper-1")
    run(speech, other.transcribe(audio, language="en", part_key=key))
    assert len(transcriptions(server)) == 3


def test_a_part_made_again_is_heard_again(server: FakeSpeechServer, tmp_path: Path) -> None:
    # The first answer left a sentence out; the part is made again under the same key: the transcript of the
    # bad answer must not stand for the new one.
    server.inject(Fault.drop_sentence())
    bad, heard_bad, _ = spoken_and_heard(server)
    good, _, _ = spoken_and_heard(server)
    store = FileStore(tmp_path)
    key = part_key("openai:fake", SPEC, TEXT)
    speech, transcriber, _ = clients(server, store=store)

    async def both() -> tuple[str, str]:
        first = await transcriber.transcribe(bad, language="en", part_key=key)
        return first, await transcriber.transcribe(good, language="en", part_key=key)

    first, second = run(speech, both())
    assert first == heard_bad and compare(TEXT, first, language="en").suspect
    assert second == server.transcripts.transcript(TEXT) and not compare(TEXT, second, language="en").suspect
    assert transcriber.requests == 2


def test_a_damaged_cached_transcript_is_heard_again(server: FakeSpeechServer, tmp_path: Path) -> None:
    audio, _, _ = spoken_and_heard(server)
    store = FileStore(tmp_path)
    key = part_key("openai:fake", SPEC, TEXT)
    store.put(transcript_key(key, audio, "gpt-4o-mini-transcribe", "en"), b"{not json", CACHE_FORMAT)
    speech, transcriber, _ = clients(server, store=store)
    assert run(speech, transcriber.transcribe(audio, language="en", part_key=key)) == server.transcripts.transcript(
        TEXT
    )
    assert transcriber.requests == 1


def test_cost_is_by_the_minute_at_the_listed_or_configured_price() -> None:
    assert transcription_cost(BackendOptions(), 60) == pytest.approx(0.18)  # gpt-4o-mini-transcribe
    assert transcription_cost(BackendOptions(transcribe_model="whisper-1"), 10) == pytest.approx(0.06)
    assert transcription_cost(BackendOptions(transcribe_price_per_minute=0.01), 30) == pytest.approx(0.3)
    assert transcription_cost(BackendOptions(transcribe_model="someone-elses"), 1) == pytest.approx(0.006)
    # The plan's estimate for a book: Alice's ~144,000 characters are about 160 minutes, 48 cents at $0.003.
    minutes = expected_minutes(144_000)
    assert minutes == pytest.approx(160) and transcription_cost(BackendOptions(), minutes) == pytest.approx(0.48)
    assert expected_minutes(3_000, cjk=True) == pytest.approx(10) and expected_minutes(900, speed=1.5) == pytest.approx(
        2 / 3
    )


def test_the_transcription_governor_has_its_own_limit_and_name() -> None:
    options = BackendOptions(rpm=500, transcribe_rpm=50)
    governor = transcription_governor(options, 8)
    assert governor.stats().limit_rpm == 50 and governor.stats().limit_source == "config"
    env = {"OPENAI_API_KEY": "sk-secret-value-1234"}
    where = governor_key(options, env)
    assert "gpt-4o-mini-transcribe" in where and "api.openai.com" in where and "sk-secret" not in where
    assert where != governor_key(BackendOptions(transcribe_model="whisper-1"), env)


def test_config_keys(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[api]\ntranscribe_model = "whisper-1"\ntranscribe_rpm = 50\ntranscribe_price_per_minute = 0.004\n'
    )
    backend = load_settings(config, env={}).backend
    assert (backend.transcribe_model, backend.transcribe_rpm, backend.transcribe_price_per_minute) == (
        "whisper-1", 50, 0.004,
    )  # fmt: skip
    assert load_settings(env={"AUDIOBOOK_TRANSCRIBE_RPM": "20"}).backend.transcribe_rpm == 20
    assert load_settings(env={}).backend.transcribe_model == "gpt-4o-mini-transcribe"
    for bad in ({"transcribe_rpm": 0}, {"transcribe_model": " "}, {"transcribe_price_per_minute": -1}):
        with pytest.raises(UsageError):
            load_settings(env={}, overrides=bad)
