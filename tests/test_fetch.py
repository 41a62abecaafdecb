"""URLs as books (pipeline/fetch.py, `audiobook convert URL`): a local HTTP server serves pages and files we
write ourselves; every refusal is one line and a non-zero exit, and the server counts what was asked of it."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from mutagen.id3 import ID3

from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.fetch import MAX_BYTES, fetch, folder_name, is_url
from tests.test_epub import simple_epub

SENTENCES = [
    "The harbour at Skerry Point was built in 1871 to shelter the herring fleet from the autumn gales.",
    "For a century the light on its breakwater was kept by one family, who trimmed the wick every dusk.",
    "When the fleet left for deeper water, the town turned to boat building and later to summer visitors.",
    "Today the old net lofts hold a museum, a bakery and a workshop where wooden dinghies are still made.",
]
ARTICLE = f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>The Harbour That Outlived Its Fleet | Coastal Weekly</title>
<meta property="og:site_name" content="Coastal Weekly"><meta name="author" content="Mara Quill">
<meta property="article:published_time" content="2024-05-01T08:00:00Z">
<script>var ad = '<div><script src="/ad.js"><\\/script></div>';</script></head>
<body><header><nav><a href="/">Home</a> <a href="/news">News</a></nav></header>
<main><article><h1>The Harbour That Outlived Its Fleet</h1>
{"".join(f"<p>{s}</p>" for s in SENTENCES)}
</article></main><footer><p>Copyright Coastal Weekly. All rights reserved.</p></footer></body></html>"""


@dataclass
class Site:
    """What the server answers per path: (status, headers, body or a body maker), and what it was asked."""

    routes: dict[str, tuple[int, dict[str, str], bytes | Callable[[], Iterator[bytes]]]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)  # bytes written per path
    user_agents: list[str] = field(default_factory=list)
    base: str = ""


@pytest.fixture
def site() -> Iterator[Site]:
    state = Site()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            state.requests.append(self.path)
            state.user_agents.append(self.headers.get("User-Agent", ""))
            status, headers, body = state.routes.get(self.path, (404, {"Content-Type": "text/plain"}, b"not here"))
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            if isinstance(body, bytes):
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                state.sent[self.path] = len(body)
                return
            self.end_headers()  # no length: the body runs until the connection closes
            state.sent[self.path] = 0
            try:
                for chunk in body():
                    self.wfile.write(chunk)
                    state.sent[self.path] += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading, as it should
            self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def html(body: str) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "text/html; charset=utf-8"}, body.encode()


def refused(capsys: pytest.CaptureFixture[str], argv: list[str], *words: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("audiobook: error: "), err
    for word in words:
        assert word.lower() in err.lower(), err
    return err


def test_a_url_to_an_article_plans_from_the_page_and_keeps_a_copy(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site.routes["/2024/harbour.html"] = html(ARTICLE)
    url = site.base + "/2024/harbour.html"
    out = tmp_path / "out"
    assert main(["plan", url, "-o", str(out), "--json", "--allow-private-urls"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["book"]["title"] == "The Harbour That Outlived Its Fleet"
    assert site.requests == ["/2024/harbour.html"]
    assert site.user_agents[0].startswith("audiobook-pipeline/")
    assert (out / "source.html").read_bytes() == ARTICLE.encode()
    # The second run reads the copy: no request, the same plan.
    assert main(["plan", url, "-o", str(out), "--json", "--allow-private-urls"]) == 0
    assert json.loads(capsys.readouterr().out) == plan
    assert site.requests == ["/2024/harbour.html"]


def test_a_url_to_an_article_converts_with_its_metadata(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline import app
    from pipeline.config import load_settings

    site.routes["/harbour"] = html(ARTICLE)
    monkeypatch.setenv("AUDIOBOOK_ALLOW_PRIVATE_URLS", "1")
    book = app.read(site.base + "/harbour", load_settings(None).book, download_to=tmp_path / "out")
    assert book.title == "The Harbour That Outlived Its Fleet"
    assert book.author == "Mara Quill"
    assert book.info.site == "Coastal Weekly"
    assert book.info.url == site.base + "/harbour"
    assert book.info.date is not None and book.info.date.startswith("2024-05-01")
    assert [p for c in book.chapters for p in c.paragraphs] == SENTENCES
    out = tmp_path / "audio"
    assert main(["--quiet", "convert", site.base + "/harbour", "-o", str(out), "--backend", "espeak"]) == 0
    # An article of one chapter: one MP3 named after its title (no "01 "), its site the album.
    assert [p.name for p in out.glob("*.mp3")] == ["The Harbour That Outlived Its Fleet.mp3"]
    tags = ID3(out / "The Harbour That Outlived Its Fleet.mp3")
    assert str(tags["TALB"]) == "Coastal Weekly" and str(tags["TPE1"]) == "Mara Quill"
    assert str(tags["TIT2"]) == "The Harbour That Outlived Its Fleet"
    assert (out / "source.html").is_file()
    assert site.requests == ["/harbour", "/harbour"]  # each output folder fetches its own copy, once
    # Converting again reads the copy: no request, nothing rewritten.
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.suffix in (".mp3", ".html", ".json")}
    del before["report.json"]  # the report is written by every run
    assert main(["--quiet", "convert", site.base + "/harbour", "-o", str(out), "--backend", "espeak"]) == 0
    assert site.requests == ["/harbour", "/harbour"]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name in before} == before


def test_a_url_to_an_epub_converts(site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    epub = simple_epub(tmp_path / "b.epub", {"One": f"<p>{SENTENCES[0]}</p>", "Two": f"<p>{SENTENCES[1]}</p>"})
    # Served as the generic binary type many servers use: the content says it is an EPUB.
    site.routes["/books/tide.epub"] = (200, {"Content-Type": "application/octet-stream"}, epub.read_bytes())
    monkeypatch.setenv("AUDIOBOOK_ALLOW_PRIVATE_URLS", "1")
    out = tmp_path / "tide"
    assert main(["--quiet", "convert", site.base + "/books/tide.epub", "-o", str(out), "--backend", "espeak"]) == 0
    assert (out / "source.epub").read_bytes() == epub.read_bytes()
    assert len(list(out.glob("*.mp3"))) == 2


def tiny_pdf(lines: list[str]) -> bytes:
    """A one-page PDF of ``lines`` in Helvetica, written by hand: catalog, pages, page, font, content, xref."""
    text = " ".join(f"({line}) Tj 0 -16 Td" for line in lines)
    stream = f"BT /F1 12 Tf 72 720 Td {text} ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_a_url_to_a_pdf_converts(site: Site, tmp_path: Path) -> None:
    from pipeline import app
    from pipeline.config import load_settings

    site.routes["/paper.pdf"] = (200, {"Content-Type": "application/pdf"}, tiny_pdf(SENTENCES[:2]))
    book = app.read(site.base + "/paper.pdf", load_settings(None).book, download_to=tmp_path, allow_private=True)
    words = " ".join(p for c in book.chapters for p in c.paragraphs).split()
    assert words == " ".join(SENTENCES[:2]).split()
    assert (tmp_path / "source.pdf").is_file()


def test_a_redirect_is_followed_and_a_loop_is_one_line(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site.routes["/old"] = (301, {"Location": "/new"}, b"")
    site.routes["/new"] = html(ARTICLE)
    assert main(["plan", site.base + "/old", "-o", str(tmp_path / "a"), "--allow-private-urls"]) == 0
    capsys.readouterr()
    site.routes["/a"] = (302, {"Location": "/b"}, b"")
    site.routes["/b"] = (302, {"Location": site.base + "/a"}, b"")
    refused(capsys, ["plan", site.base + "/a", "-o", str(tmp_path / "b"), "--allow-private-urls"], "loop")
    assert site.requests[-2:] == ["/a", "/b"]
    assert not (tmp_path / "b" / "source.html").exists()


def test_too_many_redirects_are_refused(site: Site, tmp_path: Path) -> None:
    for n in range(10):
        site.routes[f"/r{n}"] = (302, {"Location": f"/r{n + 1}"}, b"")
    with pytest.raises(InputError, match="more than 5"):
        fetch(site.base + "/r0", tmp_path, allow_private=True)
    assert len(site.requests) == 6


def test_a_404_is_one_line(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refused(capsys, ["plan", site.base + "/gone", "-o", str(tmp_path / "o"), "--allow-private-urls"], "404")


def test_a_huge_body_is_never_read_whole(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chunk = b"<p>" + b"x" * 65_533

    def endless() -> Iterator[bytes]:  # 2 GB if read to the end, made as it is sent
        for _ in range(2 * 2**30 // len(chunk)):
            yield chunk

    site.routes["/huge"] = (200, {"Content-Type": "text/html"}, endless)
    refused(capsys, ["plan", site.base + "/huge", "-o", str(tmp_path / "o"), "--allow-private-urls"], "over the")
    assert site.sent["/huge"] < MAX_BYTES + 16 * 2**20  # what the socket buffers held, not 2 GB
    # A declared length over the cap is refused before the body is read.
    site.routes["/declared"] = (200, {"Content-Type": "text/html", "Content-Length": str(3 * 2**30)}, endless)
    with pytest.raises(InputError, match="3072 MB"):
        fetch(site.base + "/declared", tmp_path, allow_private=True)


@pytest.mark.parametrize(
    ("url", "words"),
    [("file:///etc/passwd", ["only http"]), ("ftp://example.org/book.epub", ["only http"])],
)
def test_other_schemes_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str, words: list[str]
) -> None:
    refused(capsys, ["plan", url, "-o", str(tmp_path / "o"), "--allow-private-urls"], *words)


def test_this_machine_is_refused_without_the_flag(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site.routes["/harbour"] = html(ARTICLE)
    refused(capsys, ["plan", site.base + "/harbour", "-o", str(tmp_path / "o")], "127.0.0.1", "--allow-private-urls")
    assert site.requests == []


@pytest.mark.parametrize("address", ["10.1.2.3", "192.168.0.9", "169.254.169.254", "::1", "fd00::1", "0.0.0.0"])
def test_local_network_addresses_are_refused_as_resolved(tmp_path: Path, address: str) -> None:
    # The name looks public; what it resolves to decides.
    with pytest.raises(InputError, match="local network"):
        fetch("https://news.example/a", tmp_path, resolve=lambda host, port: [address])


def test_a_redirect_to_this_machine_is_refused(tmp_path: Path) -> None:
    import httpx

    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return httpx.Response(302, headers={"Location": "http://127.0.0.1:8080/admin"})

    with pytest.raises(InputError, match="127.0.0.1"):
        fetch(
            "https://news.example/a",
            tmp_path,
            transport=httpx.MockTransport(answer),
            resolve=lambda host, port: ["93.184.216.34"] if host == "news.example" else ["127.0.0.1"],
        )
    assert asked == ["https://news.example/a"]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [("image/png", b"\x89PNG\r\n\x1a\n" + bytes(64)), ("video/mp4", bytes(64)), ("application/json", b"{}")],
)
def test_a_type_that_is_no_book_is_one_line(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str], content_type: str, body: bytes
) -> None:
    site.routes["/thing"] = (200, {"Content-Type": content_type}, body)
    refused(capsys, ["plan", site.base + "/thing", "-o", str(tmp_path / "o"), "--allow-private-urls"], content_type)
    assert not (tmp_path / "o" / "source.html").exists()


def test_plain_text_is_read_as_text(site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline import app
    from pipeline.config import load_settings

    site.routes["/notes.txt"] = (200, {"Content-Type": "text/plain; charset=utf-8"}, "\n\n".join(SENTENCES).encode())
    book = app.read(site.base + "/notes.txt", load_settings(None).book, download_to=tmp_path, allow_private=True)
    assert [p for c in book.chapters for p in c.paragraphs] == SENTENCES
    assert (tmp_path / "source.txt").is_file()


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://example.org/2024/05/essay-on-rivers.html", "essay-on-rivers"),
        ("https://example.org/", "example.org"),
        ("https://example.org/news/story/index.html", "story"),
        ("https://example.org/a/..%2F..%2Fetc", "etc"),
        ("https://news.example.cn/2024/新闻", "新闻"),
    ],
)
def test_a_default_folder_name_is_safe(url: str, name: str) -> None:
    assert is_url(url)
    got = folder_name(url)
    assert "/" not in got and not got.startswith(".")
    assert got.endswith(name)


def second_article() -> str:
    return ARTICLE.replace("The Harbour That Outlived Its Fleet", "Nets and Lofts").replace("1871", "1880")


def test_a_list_of_urls_is_a_batch_job(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site.routes["/news/harbour"] = html(ARTICLE)
    site.routes["/news/lofts.html"] = html(second_article())
    urls = tmp_path / "urls.txt"
    urls.write_text(
        f"# tonight's reading\n\n{site.base}/news/harbour\n  {site.base}/news/lofts.html  \n# the end\n",
        encoding="utf-8",
    )
    out = tmp_path / "audio"
    argv = ["--quiet", "batch", str(urls), "-o", str(out), "--config", "configs/local.toml", "--allow-private-urls"]
    assert main(argv) == 0, capsys.readouterr().err
    assert sorted(p.name for p in (out / "harbour").glob("*.mp3")) == ["The Harbour That Outlived Its Fleet.mp3"]
    assert sorted(p.name for p in (out / "lofts").glob("*.mp3")) == ["Nets and Lofts.mp3"]
    assert sorted(site.requests) == ["/news/harbour", "/news/lofts.html"]
    summary = json.loads((out / "batch-summary.json").read_text(encoding="utf-8"))
    assert [b["source"] for b in summary["books"]] == [f"{site.base}/news/harbour", f"{site.base}/news/lofts.html"]
    # The next night: the copies are read, no page is fetched again, nothing is sent.
    assert main(argv) == 0
    assert len(site.requests) == 2
    assert {b["status"] for b in json.loads((out / "batch-summary.json").read_text())["books"]} == {"unchanged"}


def test_a_list_with_a_line_that_is_no_url_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    urls = tmp_path / "urls.txt"
    urls.write_text("https://example.org/a\nexample.org/b\n", encoding="utf-8")
    refused(capsys, ["batch", str(urls), "--dry-run"], "urls.txt:2", "not an http(s) URL")


def test_a_job_file_can_list_urls(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site.routes["/harbour"] = html(ARTICLE)
    job = tmp_path / "jobs.toml"
    job.write_text(f'output = "audio"\n\n[[book]]\npath = "{site.base}/harbour"\nvoice = "en-us"\n', encoding="utf-8")
    assert main(["batch", str(job), "--dry-run", "--allow-private-urls"]) == 0
    printed = capsys.readouterr().out
    assert "The Harbour That Outlived Its Fleet" in printed
    assert (tmp_path / "audio" / "harbour" / "source.html").is_file()
    # Without the flag a URL to this machine fails that book, in one line, and the batch says so.
    (tmp_path / "audio" / "harbour" / ".source.json").unlink()
    assert main(["batch", str(job), "--dry-run"]) == 1
    assert "--allow-private-urls" in capsys.readouterr().err


def test_a_url_read_without_a_folder_is_kept_in_the_cache(site: Site, isolated_env: Path) -> None:
    # What a front end without an output folder yet (the web page) gets: the copy in the user's cache.
    from pipeline import app
    from pipeline.config import load_settings

    site.routes["/harbour"] = html(ARTICLE)
    for _ in range(2):
        book = app.read(site.base + "/harbour", load_settings(None).book, allow_private=True)
        assert book.title == "The Harbour That Outlived Its Fleet"
    assert site.requests == ["/harbour"]
    (copy,) = (isolated_env / "audiobook-pipeline" / "downloads").glob("*/source.html")
    assert copy.read_bytes() == ARTICLE.encode()
