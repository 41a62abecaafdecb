"""Parts in an S3-compatible bucket, against moto's S3 server on 127.0.0.1: the store workers on several
machines share. Credentials and the endpoint reach the program through the environment only, as in production."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline import app
from pipeline.cli import main
from pipeline.config import load_settings
from pipeline.errors import UsageError
from pipeline.models import VoiceSpec
from pipeline.store import FileStore, ObjectStore, Stores, part_key
from tests.fakeserver import FakeSpeechServer
from tests.helpers import child_env, read_report, write_book

SPEC = VoiceSpec("gpt-4o-mini-tts", "alloy")
ACCESS_KEY = "AKIAFAKEFORTESTS0001"
SECRET = "fake-secret-never-to-be-printed"


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's standalone S3 server in a process of its own, on a free loopback port: one per module (it starts
    in about a second), off this process's GIL, like the real server it stands for."""
    if importlib.util.find_spec("s3fs") is None:
        pytest.skip("s3fs not installed: pip install 'audiobook-pipeline[distributed]'")
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("flask") is None:
        pytest.skip("moto[server] not installed (the dev extra has it): pip install 'moto[server]'")
    log = tmp_path_factory.mktemp("moto") / "server.log"  # a file, not a pipe: a full pipe would stall it
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"], stdout=sink, stderr=sink
        )
    try:
        deadline = time.monotonic() + 30
        while (found := re.search(r"Running on (http://127\.0\.0\.1:\d+)", log.read_text(errors="replace"))) is None:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"moto server did not start: {log.read_text(errors='replace')[-500:]}")
            time.sleep(0.05)  # waiting for a child process to start, not standing in for a timeout
        yield found.group(1)
    finally:
        server.terminate()
        server.wait(timeout=10)


@dataclass
class Bucket:
    name: str
    client: Any  # a boto3 client of its own: what is in the bucket, seen apart from the code under test

    def url(self, prefix: str) -> str:
        return f"s3://{self.name}/{prefix}"

    def keys(self, prefix: str = "") -> list[str]:
        listed = self.client.list_objects_v2(Bucket=self.name, Prefix=prefix)
        return sorted(o["Key"] for o in listed.get("Contents", []))


@pytest.fixture
def bucket(endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Bucket:
    """A new bucket, and the environment pointing the program at it with fake credentials (and nothing of the
    user's AWS settings: no profile, no config files)."""
    import boto3

    for name in [n for n in __import__("os").environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    client = boto3.client("s3", region_name="us-east-1")
    name = f"parts-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return Bucket(name, client)


def test_a_url_opens_an_object_store_with_file_stores_layout(bucket: Bucket, tmp_path: Path) -> None:
    stores = Stores()
    store = stores.at(bucket.url("cache/"))
    assert isinstance(store, ObjectStore) and store.location == bucket.url("cache")
    assert isinstance(stores.at(tmp_path / "folder"), FileStore)
    key = part_key("openai:api.openai.com/v1", SPEC, "Hello.")

    assert not store.has(key, "mp3") and store.get(key, "mp3") is None  # a missing part is a miss
    store.put(key, b"ID3 audio bytes", "mp3")
    assert store.has(key, "mp3") and store.get(key, "mp3") == b"ID3 audio bytes"
    assert not store.has(key, "wav")  # the format is part of where a part lives
    # Where FileStore would put it, under the prefix; and nothing else (no temporary object).
    relative = FileStore(tmp_path).path(key, "mp3").relative_to(tmp_path).as_posix()
    assert bucket.keys() == [f"cache/{relative}"]

    store.evict(key, "mp3")
    assert not store.has(key, "mp3") and store.get(key, "mp3") is None and bucket.keys() == []
    store.evict(key, "mp3")  # evicting what is not there is not an error


def test_a_cache_folder_copied_into_a_bucket_still_hits(bucket: Bucket, tmp_path: Path) -> None:
    folder = FileStore(tmp_path / "cache")
    keys = [part_key("openai:api.openai.com/v1", SPEC, text) for text in ("One.", "Two.", "Three.")]
    for i, key in enumerate(keys):
        folder.put(key, f"ID3 part {i}".encode())
    for path in folder.root.rglob("*.mp3"):  # what `aws s3 sync cache s3://bucket/synced` does
        bucket.client.put_object(
            Bucket=bucket.name, Key=f"synced/{path.relative_to(folder.root).as_posix()}", Body=path.read_bytes()
        )
    store = Stores().at(bucket.url("synced"))
    assert [store.get(key, "mp3") for key in keys] == [f"ID3 part {i}".encode() for i in range(3)]


def test_an_empty_object_is_not_a_part(bucket: Bucket) -> None:
    store = Stores().at(bucket.url("cache"))
    key = part_key("x", SPEC, "text")
    bucket.client.put_object(Bucket=bucket.name, Key=f"cache/parts/{key[:2]}/{key}.mp3", Body=b"")
    assert not store.has(key, "mp3") and store.get(key, "mp3") is None


def test_check_writable_leaves_nothing_and_a_missing_bucket_is_one_line_without_credentials(bucket: Bucket) -> None:
    Stores().at(bucket.url("cache")).check_writable()
    assert bucket.keys() == []  # the probe object is gone

    missing = f"s3://no-such-{bucket.name}/cache"
    with pytest.raises(UsageError) as caught:
        Stores().at(missing).check_writable()
    message = str(caught.value)
    assert len(message.splitlines()) == 1
    assert missing in message and "does not exist" in message
    assert SECRET not in message and ACCESS_KEY not in message


def test_credentials_in_the_url_are_refused_without_repeating_them() -> None:
    with pytest.raises(UsageError) as caught:
        Stores().at(f"s3://{ACCESS_KEY}:{SECRET}@bucket/cache")
    assert SECRET not in str(caught.value) and ACCESS_KEY not in str(caught.value)
    assert "AWS_SECRET_ACCESS_KEY" in str(caught.value)


@pytest.mark.parametrize("missing", ["fsspec", "s3fs"])
def test_without_the_extra_an_s3_location_names_what_to_install(monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    if missing == "s3fs":
        registry = pytest.importorskip("fsspec.registry")  # the module (fsspec.registry is its mapping)
        # fsspec keeps a backend once imported: forget it, so it has to import s3fs again, and cannot.
        monkeypatch.delitem(registry._registry, "s3", raising=False)
    monkeypatch.setitem(sys.modules, missing, None)
    with pytest.raises(UsageError) as caught:
        Stores().at("s3://bucket/cache")
    assert str(caught.value) == (
        "cache location s3://bucket/cache needs object storage support: pip install 'audiobook-pipeline[distributed]'"
    )


def test_folders_never_import_fsspec() -> None:
    code = (
        "import sys, pipeline.app, pipeline.cli\n"
        "from pipeline.store import Stores\n"
        "Stores().at('cache').has('00' * 32, 'mp3')\n"
        "assert not {'fsspec', 's3fs', 'botocore'} & set(sys.modules), sorted(sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_two_workers_writing_one_key_leave_one_whole_object_and_readers_never_see_part_of_one(bucket: Bucket) -> None:
    url = bucket.url("cache")
    a, b = ObjectStore(url), ObjectStore(url)  # two workers: two clients, as on two machines
    reader = ObjectStore(url)
    key = part_key("x", SPEC, "the same sentence, asked for by two workers at once")
    size = 512 * 2**10
    first, second = b"A" * size, b"B" * size
    data = {first, second}
    seen: list[bytes | None] = []
    writing = threading.Event()
    writing.set()

    def read() -> None:
        while writing.is_set():
            seen.append(reader.get(key, "mp3"))

    def write(store: ObjectStore, blob: bytes) -> None:
        for _ in range(3):
            store.put(key, blob, "mp3")

    threads = [threading.Thread(target=write, args=(a, first)), threading.Thread(target=write, args=(b, second))]
    watcher = threading.Thread(target=read)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writing.clear()
    watcher.join()

    assert reader.get(key, "mp3") in data
    assert bucket.keys() == [f"cache/parts/{key[:2]}/{key}.mp3"]
    found = [blob for blob in seen if blob is not None]
    assert found and set(found) <= data  # whole objects only: never a mix, never a prefix of one
    assert None not in seen[seen.index(found[0]) :]  # once there, it stays there


def test_a_book_converts_with_its_parts_in_a_bucket_and_a_second_run_sends_nothing(
    server: FakeSpeechServer, bucket: Bucket, tmp_path: Path, isolated_env: Path
) -> None:
    book = write_book(tmp_path / "book.txt", chapters=2, paragraphs=2, sentences=2)
    url = bucket.url("team/cache")

    def convert(out: Path) -> int:
        return main(["--quiet", "convert", str(book), "-o", str(out), "--cache-dir", url, "--timeout", "2"])

    assert convert(tmp_path / "out") == 0
    assert read_report(tmp_path / "out")["status"] == "done"
    paid = len(server.requests)
    settings = load_settings(overrides={"cache_dir": url})
    plan = app.plan(app.read(book, settings.book), settings, tmp_path / "elsewhere")
    keys = {key for chapter in plan.chapters for key in chapter.keys}
    assert plan.store == url and all(all(chapter.cached) for chapter in plan.chapters)
    assert bucket.keys() == sorted(f"team/cache/parts/{key[:2]}/{key}.mp3" for key in keys)
    assert paid == len(keys)
    assert not (isolated_env / "audiobook-pipeline" / "parts").exists()  # nothing went to the local cache

    # Another machine, another output folder: every part comes from the bucket, no request is sent.
    server.clear()
    assert convert(tmp_path / "again") == 0
    assert server.requests == []
    report = read_report(tmp_path / "again")
    assert report["status"] == "done" and report["requests"] == 0 and report["cache_hits"] == len(keys)
    assert sorted(p.name for p in (tmp_path / "again").glob("*.mp3")) == sorted(
        p.name for p in (tmp_path / "out").glob("*.mp3")
    )


def test_a_missing_bucket_stops_the_cli_before_any_request(
    server: FakeSpeechServer, bucket: Bucket, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = write_book(tmp_path / "book.txt", chapters=1)
    missing = f"s3://no-such-{bucket.name}/cache"
    assert main(["convert", str(book), "-o", str(tmp_path / "out"), "--cache-dir", missing]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and missing in err and SECRET not in err
    assert server.requests == []
