"""The local OpenAI-compatible speech server, driven by the official openai SDK over HTTP on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
from starlette.testclient import TestClient

from pipeline.cli import main
from pipeline.errors import FatalAPIError, UsageError
from pipeline.models import SpeechResult, VoiceSpec
from pipeline.server import MAX_BODY_BYTES, MAX_INPUT_CHARS, SpeechServer, check_access, create_app, make_server, serve
from pipeline.tts.espeak import EspeakSynth
from tests.audiocheck import decode, is_mp3
from tests.helpers import child_env

KEY = "sk-local-test-key-1234"
SENTENCE = "The lighthouse keeper climbed the stairs at dusk. "


class RecordingSynth:
    """A fake engine: answers a fixed payload and remembers what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, VoiceSpec]] = []
        self.closed = False

    def identity(self) -> str:
        return "fake"

    async def synthesize(self, text: str, spec: VoiceSpec) -> SpeechResult:
        self.calls.append((text, spec))
        if spec.voice == "missing":
            raise FatalAPIError("unknown voice 'missing' for the fake engine")
        return SpeechResult(b"ID3 fake audio for " + spec.voice.encode())

    async def aclose(self) -> None:
        self.closed = True


@pytest.fixture(scope="module")
def espeak_server() -> Iterator[SpeechServer]:
    server = make_server("127.0.0.1", 0, KEY, EspeakSynth()).start()
    yield server
    server.shutdown()


@pytest.fixture
def client(espeak_server: SpeechServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=espeak_server.url, api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture
def fake() -> Iterator[tuple[SpeechServer, RecordingSynth]]:
    synth = RecordingSynth()
    server = make_server("127.0.0.1", 0, None, synth).start()
    yield server, synth
    server.shutdown()


def raw(server: SpeechServer, method: str, path: str, body: bytes | None = None, **headers: str) -> tuple:
    """One plain HTTP request: (status, headers, parsed JSON or bytes)."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        kind = response.getheader("Content-Type", "")
        return response.status, response, json.loads(data) if kind == "application/json" else data
    finally:
        conn.close()


def seconds(data: bytes) -> float:
    return len(decode(data)) / 1000


def test_sdk_receives_real_mp3(client: openai.OpenAI) -> None:
    response = client.audio.speech.with_raw_response.create(model="gpt-4o-mini-tts", voice="alloy", input=SENTENCE)
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/mpeg"
    data = response.parse().read()  # HttpxBinaryResponseContent, as .create() returns it
    assert data == response.content
    assert is_mp3(data)
    audio = decode(data)
    assert (audio.frame_rate, audio.channels) == (24_000, 1)
    assert len(audio) > 1500
    assert audio.dBFS > -35


def test_sdk_chinese_and_wav(client: openai.OpenAI) -> None:
    answer = client.audio.speech.create(
        model="tts-1", voice="nova", input="今天天气很好，我们一起去公园散步吧。", response_format="wav"
    )
    data = answer.content
    assert data[:4] == b"RIFF"
    audio = decode(data, "wav")
    assert audio.frame_rate == 24_000
    assert len(audio) > 1500
    assert audio.dBFS > -35


def test_speed_reaches_the_engine(client: openai.OpenAI) -> None:
    normal = client.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCE * 2).content
    fast = client.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCE * 2, speed=2.0).content
    assert seconds(fast) < 0.65 * seconds(normal)


def test_models_are_listed(client: openai.OpenAI) -> None:
    ids = [model.id for model in client.models.list()]
    assert {"gpt-4o-mini-tts", "tts-1", "espeak-ng"} <= set(ids)


def test_wrong_or_missing_key_is_401(espeak_server: SpeechServer) -> None:
    wrong = openai.OpenAI(base_url=espeak_server.url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.audio.speech.create(model="tts-1", voice="alloy", input="hi")
    assert caught.value.code == "invalid_api_key"
    assert "sk-wrong" not in caught.value.message

    body = json.dumps({"model": "tts-1", "voice": "alloy", "input": "hi"}).encode()
    status, _, answer = raw(espeak_server, "POST", "/v1/audio/speech", body)
    assert status == 401
    assert "didn't provide an API key" in answer["error"]["message"]
    assert answer["error"]["type"] == "invalid_request_error"
    status, _, _ = raw(espeak_server, "POST", "/v1/audio/speech", body, Authorization=f"Basic {KEY}")
    assert status == 401


def test_bad_speed_is_400_with_openai_error_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.speech.create(model="tts-1", voice="alloy", input="hi", speed=5)
    error = caught.value
    assert error.param == "speed"
    assert error.code == "decimal_above_max_value"
    assert "5 is greater than the maximum of 4.0" in error.message
    assert error.body == {
        "message": "Invalid 'speed': 5 is greater than the maximum of 4.0.",
        "type": "invalid_request_error",
        "param": "speed",
        "code": "decimal_above_max_value",
    }
    with pytest.raises(openai.BadRequestError, match="less than the minimum of 0.25"):
        client.audio.speech.create(model="tts-1", voice="alloy", input="hi", speed=0.1)
    # The connection survives an error: the same client keeps working.
    assert is_mp3(client.audio.speech.create(model="tts-1", voice="alloy", input="Still here.").content)


@pytest.mark.parametrize(
    ("request_fields", "param", "fragment"),
    [
        ({"input": "x" * (MAX_INPUT_CHARS + 1)}, "input", "maximum length 4096"),
        ({"input": ""}, "input", "empty string"),
        ({"response_format": "opus"}, "response_format", "mp3 or wav"),
        ({"voice": "no-such-voice"}, "voice", "audiobook voices"),
        ({"voice": None}, "voice", "Missing required parameter: 'voice'"),
        ({"model": None}, "model", "Missing required parameter: 'model'"),
        ({"input": 42}, "input", "expected a string"),
        ({"speed": "fast"}, "speed", "expected a number"),
    ],
)
def test_invalid_requests_are_400(
    client: openai.OpenAI, request_fields: dict[str, object], param: str, fragment: str
) -> None:
    fields: dict[str, object] = {
        "model": "tts-1",
        "voice": "alloy",
        "input": "Hello there.",
        **request_fields,
    }
    with pytest.raises(openai.BadRequestError) as caught:
        client.post("/audio/speech", body=fields, cast_to=bytes)
    assert caught.value.param == param
    assert fragment in caught.value.message


def test_input_of_exactly_the_limit_is_accepted(fake: tuple[SpeechServer, RecordingSynth]) -> None:
    server, synth = fake
    body = json.dumps({"model": "m", "voice": "v", "input": "é" * MAX_INPUT_CHARS}).encode()
    status, _, _ = raw(server, "POST", "/v1/audio/speech", body)
    assert status == 200
    assert len(synth.calls[0][0]) == MAX_INPUT_CHARS


def test_bad_json_is_400(fake: tuple[SpeechServer, RecordingSynth]) -> None:
    server, synth = fake
    for body in (b"{not json", b"[1, 2]", b"\xff\xfe"):
        status, _, answer = raw(server, "POST", "/v1/audio/speech", body, **{"Content-Type": "application/json"})
        assert status == 400
        assert set(answer["error"]) == {"message", "type", "param", "code"}
    assert synth.calls == []


def test_request_fields_become_the_voice_spec(fake: tuple[SpeechServer, RecordingSynth]) -> None:
    server, synth = fake
    sdk = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)
    answer = sdk.audio.speech.create(
        model="gpt-4o-mini-tts",
        voice="coral",
        input="Hi.",
        instructions="Calm.",
        speed=1.5,
        stream_format="audio",
    )
    assert answer.content == b"ID3 fake audio for coral"
    sdk.audio.speech.create(model="tts-1", voice="echo", input="Hi.")
    assert synth.calls == [
        ("Hi.", VoiceSpec("gpt-4o-mini-tts", "coral", "Calm.", 1.5, None)),
        ("Hi.", VoiceSpec("tts-1", "echo", None, None, None)),
    ]


def test_a_fatal_engine_error_is_a_400_naming_the_voice(fake: tuple[SpeechServer, RecordingSynth]) -> None:
    server, _ = fake
    sdk = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.audio.speech.create(model="tts-1", voice="missing", input="Hi.")
    assert caught.value.param == "voice"


def test_unknown_path_is_404_and_wrong_method_405(fake: tuple[SpeechServer, RecordingSynth]) -> None:
    server, _ = fake
    status, _, answer = raw(server, "GET", "/v1/nowhere")
    assert status == 404
    assert answer == {
        "error": {
            "message": "Invalid URL (GET /v1/nowhere)",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    status, response, answer = raw(server, "GET", "/v1/audio/speech")
    assert status == 405
    assert response.getheader("Allow") == "POST"
    assert answer["error"]["type"] == "invalid_request_error"
    sdk = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        sdk.post("/audio/transcriptions", body={}, cast_to=bytes)


def test_concurrent_sdk_requests_each_get_their_own_audio(client: openai.OpenAI) -> None:
    texts = [SENTENCE * n for n in (1, 3, 5, 2, 4, 6, 1, 3)]

    def ask(text: str) -> float:
        return seconds(client.audio.speech.create(model="tts-1", voice="alloy", input=text).content)

    alone = {n: ask(SENTENCE * n) for n in range(1, 7)}
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(ask, texts))
    for text, duration in zip(texts, together, strict=True):
        n = text.count(SENTENCE)
        assert duration == pytest.approx(alone[n], abs=0.06), f"{n} sentences"
    assert all(a < b for a, b in zip(list(alone.values()), list(alone.values())[1:], strict=False))


def test_log_lines_never_show_the_key_or_the_text(
    espeak_server: SpeechServer, client: openai.OpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    secret_text = "Zanzibar pelican mnemonic."
    client.audio.speech.create(model="tts-1", voice="alloy", input=secret_text)
    with pytest.raises(openai.BadRequestError):
        client.audio.speech.create(model="tts-1", voice="alloy", input=secret_text, speed=9)
    log = capsys.readouterr().err
    assert f"POST /v1/audio/speech 200 {len(secret_text)} chars" in log
    assert f"POST /v1/audio/speech 400 {len(secret_text)} chars" in log
    assert KEY not in log
    assert "Zanzibar" not in log


def test_defaults_bind_to_loopback_and_ctrl_c_stops_serve_cleanly() -> None:
    synth = RecordingSynth()
    seen: list[str] = []

    def press_ctrl_c(url: str) -> None:
        seen.append(url)
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # bound and listening before "ready"
        raise KeyboardInterrupt

    serve(port=0, synth=synth, ready=press_ctrl_c)  # returns instead of raising
    assert seen[0].startswith("http://127.0.0.1:") and seen[0].endswith("/v1")
    assert synth.closed
    port = int(seen[0].rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5)

    server = make_server(port=0, synth=RecordingSynth())
    try:
        assert server.host == "127.0.0.1"
    finally:
        server.shutdown()  # never started: must not hang


def test_shutdown_is_idempotent_and_stops_serving() -> None:
    server = make_server("127.0.0.1", 0, None, RecordingSynth()).start()
    host, port = server.host, server.port
    server.shutdown()
    server.shutdown()
    with pytest.raises(OSError):
        socket.create_connection((host, port), timeout=5)
    assert not any(t.name == f"speech-server:{port}" and t.is_alive() for t in threading.enumerate())


def test_a_taken_port_is_a_usage_error() -> None:
    with (
        make_server("127.0.0.1", 0, None, RecordingSynth()) as first,
        pytest.raises(UsageError, match=f"cannot listen on 127.0.0.1:{first.port}"),
    ):
        make_server("127.0.0.1", first.port, None, RecordingSynth())


# ------------------------------------------------------------------------------------------------ access rules

LONG_KEY = "sk-serve-0123456789abcdefXYZ"  # what an operator would put in the environment or a key file
NOT_HERE = "192.0.2.1"  # TEST-NET-1, on no machine: should a refusal be missing, binding fails at once


@pytest.mark.parametrize(
    ("host", "key", "allow_no_key", "refusal"),
    [
        ("127.0.0.1", None, False, None),
        ("127.8.9.10", None, False, None),
        ("::1", None, False, None),
        ("localhost", None, False, None),
        ("0.0.0.0", None, False, "without a key"),
        ("::", None, False, "without a key"),
        ("192.168.1.20", None, False, "without a key"),
        ("myhost.example", None, False, "without a key"),
        ("0.0.0.0", None, True, None),
        ("0.0.0.0", LONG_KEY, False, None),
        ("127.0.0.1", "short-key-12345", False, "shorter than 16 characters"),  # 15: too short even on loopback
        ("0.0.0.0", "short-key-12345", True, "shorter than 16 characters"),
        ("127.0.0.1", "a key with spaces in it", False, "printable ASCII without spaces"),
    ],
)
def test_access_rules(host: str, key: str | None, allow_no_key: bool, refusal: str | None) -> None:
    if refusal is None:
        check_access(host, key, allow_no_key=allow_no_key)
        return
    with pytest.raises(UsageError, match=refusal) as caught:
        check_access(host, key, allow_no_key=allow_no_key)
    assert "\n" not in str(caught.value)
    assert key is None or key not in str(caught.value)
    if key is None:
        assert "--allow-no-key" in str(caught.value) and "AUDIOBOOK_SERVER_KEY" in str(caught.value)


def test_serve_refuses_before_binding_and_the_flag_allows_a_public_address(capsys: pytest.CaptureFixture[str]) -> None:
    def never(url: str) -> None:
        raise AssertionError(f"bound at {url}")

    with pytest.raises(UsageError, match="refusing to serve on 0.0.0.0 without a key"):
        serve("0.0.0.0", 0, None, RecordingSynth(), ready=never)
    with pytest.raises(UsageError, match="shorter than 16"):
        serve("127.0.0.1", 0, "local-key", RecordingSynth(), ready=never)

    seen: list[int] = []

    def reachable_then_ctrl_c(url: str) -> None:
        seen.append(int(url.rsplit(":", 1)[1].split("/")[0]))
        raise KeyboardInterrupt

    serve("0.0.0.0", 0, None, RecordingSynth(), allow_no_key=True, ready=reachable_then_ctrl_c)
    assert seen and "warning: serving on 0.0.0.0 without an API key" in capsys.readouterr().err


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out + err


def test_a_key_on_the_command_line_is_refused_without_showing_it(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--api-key", LONG_KEY], [f"--api-key={LONG_KEY}"]):
        code, output = run_main(["serve", "--host", NOT_HERE, "--port", "0", *argv], capsys)
        assert code == 2
        assert output.count("\n") == 1 and "Traceback" not in output
        assert "--api-key is not accepted" in output and "AUDIOBOOK_SERVER_KEY" in output and "--api-key-file" in output
        assert LONG_KEY not in output


@pytest.mark.parametrize(
    ("setup", "fragment"),
    [
        ("env:tooshort-key", "from $AUDIOBOOK_SERVER_KEY is shorter than 16 characters"),
        ("file:tooshort-key\nsecond line is ignored " + LONG_KEY, "is shorter than 16 characters"),
        ("file:", "has no key on its first line"),
        ("missing-file", "cannot read the key file"),
        ("env:" + LONG_KEY[:-1] + " " + "x", "printable ASCII without spaces"),
        ("public", "refusing to serve on 192.0.2.1 without a key"),
    ],
    ids=["short-env", "short-file", "empty-file", "missing-file", "space", "public-without-key"],
)
def test_bad_keys_and_a_public_address_without_one_are_one_line_usage_errors(
    setup: str, fragment: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["serve", "--host", NOT_HERE, "--port", "0"]
    secret = ""
    if setup.startswith("env:"):
        secret = setup[4:]
        monkeypatch.setenv("AUDIOBOOK_SERVER_KEY", secret)
    elif setup.startswith("file:"):
        secret = setup[5:].split("\n")[0]
        (tmp_path / "key").write_text(setup[5:] + "\n")
        argv += ["--api-key-file", str(tmp_path / "key")]
    elif setup == "missing-file":
        argv += ["--api-key-file", str(tmp_path / "nowhere")]
    code, output = run_main(argv, capsys)
    assert code == 2
    assert output.count("\n") == 1 and "Traceback" not in output
    assert fragment in output
    if secret:
        assert secret not in output


@pytest.mark.parametrize(
    ("source", "stop"), [("file", signal.SIGINT), ("env", signal.SIGTERM)], ids=["file-ctrl-c", "env-sigterm"]
)
def test_the_cli_serves_with_a_key_from_a_file_or_the_environment_and_never_shows_it(
    source: str, stop: signal.Signals, tmp_path: Path
) -> None:
    key_file = tmp_path / "server.key"
    key_file.write_text(f"  {LONG_KEY}  \n")
    args = ["--api-key-file", str(key_file)] if source == "file" else []
    env = child_env({"AUDIOBOOK_SERVER_KEY": LONG_KEY} if source == "env" else None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "the server never said it was ready"
        first_line = proc.stdout.readline()
        url = first_line.rsplit(" ", 1)[1].strip()
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        assert LONG_KEY.encode() not in Path(f"/proc/{proc.pid}/cmdline").read_bytes()  # what ps shows

        def models(authorization: str | None) -> tuple[int, bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request("GET", "/v1/models", headers={"Authorization": authorization} if authorization else {})
                response = conn.getresponse()
                return response.status, response.read()
            finally:
                conn.close()

        assert models(f"Bearer {LONG_KEY}")[0] == 200
        status, body = models(f"Bearer {LONG_KEY[:-1]}")
        assert status == 401 and LONG_KEY[:-1].encode() not in body
        assert models(None)[0] == 401
    finally:
        proc.send_signal(stop)  # either one stops it cleanly: exit 0, not killed by the signal
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert LONG_KEY not in first_line + out + err
    assert "GET /v1/models 200" in err and "GET /v1/models 401" in err


def test_serve_without_the_web_extra_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delitem(sys.modules, "pipeline.server")
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if it were not installed: importing it fails
    code, output = run_main(["serve", "--port", "0"], capsys)
    assert code == 2
    assert output == "audiobook: error: the speech server is not installed: pip install 'audiobook-pipeline[web]'\n"


# ------------------------------------------------------------------------------------------------ in-process


def test_the_app_answers_in_process_with_the_same_rules() -> None:
    """``create_app`` is the whole HTTP surface: Starlette's TestClient drives it without a socket."""
    synth = RecordingSynth()
    with TestClient(create_app(synth, KEY), base_url="http://testserver") as app:
        bearer = {"Authorization": f"Bearer {KEY}"}
        assert app.get("/v1/models").status_code == 401
        assert (
            app.get("/v1/models", headers={"Authorization": "Bearer sk-wrong-key-000000"}).json()["error"]["code"]
            == "invalid_api_key"
        )
        models = app.get("/v1/models/", headers=bearer)  # a trailing slash is the same path
        assert models.status_code == 200 and models.json()["data"][0]["object"] == "model"
        spoken = app.post("/v1/audio/speech", json={"model": "m", "voice": "v", "input": "Hi."}, headers=bearer)
        assert (spoken.status_code, spoken.headers["content-type"], spoken.content) == (
            200,
            "audio/mpeg",
            b"ID3 fake audio for v",
        )
        wav = app.post(
            "/v1/audio/speech",
            json={"model": "m", "voice": "v", "input": "Hi.", "response_format": "wav"},
            headers=bearer,
        )
        assert wav.headers["content-type"] == "audio/wav"
        wrong = app.put("/v1/audio/speech", headers=bearer)
        assert (wrong.status_code, wrong.headers["allow"]) == (405, "POST")
        assert wrong.json()["error"]["message"] == "Method PUT is not allowed for /v1/audio/speech; use POST."
        listed = app.delete("/v1/models", headers=bearer)
        assert (listed.status_code, listed.headers["allow"]) == (405, "GET")
        malformed = app.post("/v1/audio/speech", content=b'{"model": ', headers=bearer)
        assert malformed.status_code == 400
        assert malformed.json() == {
            "error": {
                "message": "We could not parse the JSON body of your request. The API expects a JSON payload "
                "(Content-Type: application/json).",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        }
        too_large = app.post("/v1/audio/speech", content=b"x" * (MAX_BODY_BYTES + 1), headers=bearer)
        assert too_large.status_code == 413 and too_large.json()["error"]["type"] == "invalid_request_error"
    assert [text for text, _ in synth.calls] == ["Hi.", "Hi."]
    assert synth.closed  # the app's shutdown closed the engine


def test_a_bug_in_the_engine_is_a_500_in_the_api_shape_and_the_server_goes_on(
    fake: tuple[SpeechServer, RecordingSynth], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    server, synth = fake

    async def broken(text: str, spec: VoiceSpec) -> SpeechResult:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(synth, "synthesize", broken)
    body = json.dumps({"model": "m", "voice": "v", "input": "Secret words."}).encode()
    status, _, answer = raw(server, "POST", "/v1/audio/speech", body)
    assert status == 500
    assert answer["error"] == {
        "message": "The server had an error while processing your request.",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    monkeypatch.undo()
    assert raw(server, "GET", "/v1/models")[0] == 200
    err = capsys.readouterr().err
    assert "ZeroDivisionError" in err and "Secret words" not in err
