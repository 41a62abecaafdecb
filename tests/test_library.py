"""What a player library (Audiobookshelf, phone players) finds in a book folder, read back from the files alone
with readers of their own (mutagen for tags, the pip ffmpeg's metadata dump for M4B chapters, which is the
demuxer Audiobookshelf's ffprobe uses, Pillow for covers): one book per folder, its tags, metadata.json,
cover and chapters, for an EPUB with an SVG cover (Standard Ebooks' case), a Chinese text book and a
300-chapter web novel; the library layout, its atomic replacement and the Audiobookshelf scan request."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from mutagen.id3 import ID3
from mutagen.mp4 import MP4
from PIL import Image

from pipeline import library
from pipeline.cli import main
from pipeline.media import ffmpeg_exe
from pipeline.models import Book
from pipeline.names import chapter_filename, chapter_path
from pipeline.readers import read_book
from tests.fakeserver import FakeSpeechServer
from tests.helpers import read_report, tiny_png
from tests.webnovel import webnovel

AUDIO = (".mp3", ".m4b", ".m4a", ".aac", ".ogg", ".opus", ".flac", ".wav")
NARRATOR = "alloy (gpt-4o-mini-tts)"  # the default voice and model


def cli(*args: str) -> int:
    return main(["--quiet", *args])


def scanned_audio(folder: Path) -> list[Path]:
    """The audio files Audiobookshelf takes as this book: every one under the folder, except in dot-folders
    and folders holding ".ignore" (server/utils/fileUtils.js), and a subfolder not named like a disc is
    another book (scandir.js), so it must hold none."""
    found = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.suffix.lower() not in AUDIO or any(p.startswith(".") for p in rel.parts):
            continue
        if any((folder / Path(*rel.parts[:i]) / ".ignore").exists() for i in range(1, len(rel.parts))):
            continue
        found.append(path)
    return found


def m4b_chapters(path: Path) -> list[str]:
    """Chapter titles as ffmpeg's MOV demuxer reads them (QuickTime chapter track and Nero chpl alike)."""
    out = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"], capture_output=True, check=True
    ).stdout.decode("utf-8")
    titles, in_chapter = [], False
    for line in out.splitlines():
        if line.startswith("["):
            in_chapter = line == "[CHAPTER]"
        elif in_chapter and line.startswith("title="):
            titles.append(line[6:].replace("\\", ""))
    return titles


def freeform(m4b: MP4, name: str) -> str:
    assert m4b.tags is not None
    return bytes(m4b.tags[f"----:com.apple.iTunes:{name}"][0]).decode("utf-8")


def is_jpeg(path: Path) -> bool:
    with Image.open(path) as img:
        return img.format == "JPEG" and img.size[0] >= 300


# --------------------------------------------------------------------------------- an EPUB with an SVG cover

CONTAINER = (
    '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
    '<rootfiles><rootfile full-path="epub/content.opf" media-type="application/oebps-package+xml"/></rootfiles>'
    "</container>"
)
TITLE = "The Lantern Keeper"
AUTHOR = "Ruth Example"
SUBJECTS = ["Fantasy fiction", "Lighthouses -- Fiction"]
CHAPTERS = [("The Storm", "The wind rose at dusk. Mara lit the lamp."), ("The Ship", "A ship came. It was late.")]


def page(body: str) -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<html xmlns="http://www.w3.org/1999/xhtml" lang="en">'
        f"<head><title>x</title></head><body>{body}</body></html>"
    )


def lantern_epub(path: Path) -> Path:
    """Shaped like a Standard Ebooks EPUB: its cover an SVG (properties="cover-image") that draws a picture it
    references beside it; dc:description with markup, subjects, a publisher, a date, an ISBN, and a series by
    EPUB 3's belongs-to-collection with a group-position."""
    png = tiny_png()
    svg = (
        '<?xml version="1.0" encoding="utf-8"?><svg xmlns="http://www.w3.org/2000/svg" '
        'xmlns:xlink="http://www.w3.org/1999/xlink" version="1.1" viewBox="0 0 1400 2100">'
        '<rect width="1400" height="2100" fill="#123456"/><image width="1400" height="1400" '
        'xlink:href="cover.png"/><text x="100" y="1800" font-size="120" fill="white">Lantern</text></svg>'
    )
    spine = "".join(f'<itemref idref="c{i}"/>' for i in range(len(CHAPTERS)))
    items = "".join(
        f'<item id="c{i}" href="text/c{i}.xhtml" media-type="application/xhtml+xml"/>' for i in range(len(CHAPTERS))
    )
    subjects = "".join(f"<dc:subject>{s}</dc:subject>" for s in SUBJECTS)
    opf = (
        '<?xml version="1.0" encoding="utf-8"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0" '
        'unique-identifier="uid"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/">'
        '<dc:identifier id="uid">url:https://example.org/ebooks/lantern</dc:identifier>'
        "<dc:identifier>urn:isbn:978-3-16-148410-0</dc:identifier>"
        f"<dc:title>{TITLE}</dc:title><dc:creator id='a'>{AUTHOR}</dc:creator><dc:language>en-GB</dc:language>"
        "<dc:description>&lt;p&gt;A keeper &lt;i&gt;and&lt;/i&gt; her lamp.&lt;/p&gt;&lt;p&gt;Second "
        "part.&lt;/p&gt;</dc:description>"
        f"{subjects}<dc:publisher>Example Press</dc:publisher><dc:date>1911-03-02</dc:date>"
        '<meta property="belongs-to-collection" id="col">Coast Lights</meta>'
        '<meta refines="#col" property="collection-type">series</meta>'
        '<meta refines="#col" property="group-position">2</meta></metadata>'
        '<manifest><item id="cover.svg" href="images/cover.svg" media-type="image/svg+xml" '
        'properties="cover-image"/><item id="cover.png" href="images/cover.png" media-type="image/png"/>'
        f"{items}</manifest><spine>{spine}</spine></package>"
    )
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        zf.writestr("META-INF/container.xml", CONTAINER)
        zf.writestr("epub/content.opf", opf)
        zf.writestr("epub/images/cover.svg", svg)
        zf.writestr("epub/images/cover.png", png)
        for i, (title, text) in enumerate(CHAPTERS):
            zf.writestr(f"epub/text/c{i}.xhtml", page(f"<h2>{title}</h2><p>{text}</p>"))
    return path


def test_an_epub_with_an_svg_cover_is_one_book_with_its_metadata_everywhere(
    server: FakeSpeechServer, tmp_path: Path
) -> None:
    out = tmp_path / "lib" / "lantern"
    assert cli("convert", str(lantern_epub(tmp_path / "lantern.epub")), "-o", str(out), "--format", "m4b") == 0
    report = read_report(out)
    (m4b_path,) = scanned_audio(out)  # one book, once: the M4B alone; its chapter MP3s are hidden
    assert m4b_path.name == report["m4b"] == f"{TITLE}.m4b"
    assert all(c["file"].startswith(".chapters/") for c in report["chapters"])
    assert [p.name for p in out.iterdir() if p.is_dir()] == [".chapters"]

    m4b = MP4(m4b_path)
    assert m4b.tags is not None
    assert m4b.tags["\xa9nam"] == [TITLE] and m4b.tags["\xa9alb"] == [TITLE]
    assert m4b.tags["\xa9ART"] == [AUTHOR] and m4b.tags["aART"] == [AUTHOR]
    assert m4b.tags["\xa9wrt"] == [NARRATOR]  # composer: Audiobookshelf's narrator
    assert m4b.tags["\xa9gen"] == ["Fantasy fiction;Lighthouses;Fiction"]  # subjects, split where it splits
    assert m4b.tags["\xa9cmt"] == ["A keeper and her lamp.\n\nSecond part."]
    assert m4b.tags["\xa9day"] == ["1911-03-02"]
    assert freeform(m4b, "series") == "Coast Lights" and freeform(m4b, "series-part") == "2"
    assert freeform(m4b, "language") == "en" and freeform(m4b, "isbn") == "9783161484100"
    assert freeform(m4b, "publisher") == "Example Press"
    assert m4b_chapters(m4b_path) == [t for t, _ in CHAPTERS]
    cover = bytes(m4b.tags["covr"][0])
    assert cover.startswith(b"\xff\xd8\xff")

    meta = json.loads((out / "metadata.json").read_text(encoding="utf-8"))
    assert meta["title"] == TITLE and meta["authors"] == [AUTHOR] and meta["narrators"] == [NARRATOR]
    assert meta["series"] == ["Coast Lights #2"] and meta["language"] == "en"
    assert meta["genres"] == ["Fantasy fiction", "Lighthouses", "Fiction"]
    assert meta["description"] == "A keeper and her lamp.\n\nSecond part."
    assert (meta["publisher"], meta["publishedYear"], meta["isbn"]) == ("Example Press", "1911", "9783161484100")
    assert (out / "desc.txt").read_text(encoding="utf-8") == "A keeper and her lamp.\n\nSecond part.\n"
    assert (out / "reader.txt").read_text(encoding="utf-8") == NARRATOR + "\n"
    opf = (out / "metadata.opf").read_text(encoding="utf-8")
    assert 'name="calibre:series" content="Coast Lights"' in opf and f">{AUTHOR}</dc:creator>" in opf
    # The SVG rendered: the cover is a JPEG of the SVG's own colours, not a made one.
    assert is_jpeg(out / "cover.jpg") and (out / "cover.jpg").read_bytes() == cover
    with Image.open(out / "cover.jpg") as img:
        r, g, b = img.convert("RGB").getpixel((img.width // 2, img.height - 20))  # type: ignore[misc]
        assert abs(r - 0x12) < 12 and abs(g - 0x34) < 12 and abs(b - 0x56) < 12
    assert set(report["book_files"]) == {"cover.jpg", "metadata.json", "desc.txt", "reader.txt", "metadata.opf"}


def test_flags_override_the_books_metadata_in_mp3_tags(server: FakeSpeechServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["--series", "Other Lights", "--series-index", "3", "--narrator", "Jo Reader", "--author", "R. E."]
    assert cli("convert", str(lantern_epub(tmp_path / "l.epub")), "-o", str(out), *args) == 0
    mp3s = scanned_audio(out)
    assert [p.name for p in mp3s] == ["01 The Storm.mp3", "02 The Ship.mp3"]
    tags = ID3(mp3s[0])
    assert tags["TALB"].text == [TITLE] and tags["TPE1"].text == ["R. E."] and tags["TCOM"].text == ["Jo Reader"]
    assert tags["TLAN"].text == ["eng"] and tags["TCON"].text == ["Fantasy fiction;Lighthouses;Fiction"]
    assert tags.getall("TXXX:series")[0].text == ["Other Lights"]
    assert tags.getall("TXXX:series-part")[0].text == ["3"]
    assert tags.getall("COMM")[0].text == ["A keeper and her lamp.\n\nSecond part."]
    assert tags.getall("APIC")[0].mime == "image/jpeg"
    meta = json.loads((out / "metadata.json").read_text(encoding="utf-8"))
    assert meta["series"] == ["Other Lights #3"] and meta["narrators"] == ["Jo Reader"]


# --------------------------------------------------------------------------------- a Chinese text book

ZH_BOOK = """春江花月夜
作者：张若虚

第一章 春江

春江潮水连海平，海上明月共潮生。

第二章 花林

江流宛转绕芳甸，月照花林皆似霰。
"""


def test_a_chinese_text_book_takes_its_title_line_and_gets_a_made_cover(
    server: FakeSpeechServer, tmp_path: Path
) -> None:
    source = tmp_path / "chun jiang.txt"  # a romanised file name: the title comes from the first line
    source.write_text(ZH_BOOK, encoding="utf-8")
    out = tmp_path / "lib" / "zh"
    assert cli("convert", str(source), "-o", str(out), "--m4b") == 0
    report = read_report(out)
    (m4b_path,) = scanned_audio(out)  # --m4b: the M4B; the chapter MP3s in MP3/, which a scan skips
    assert m4b_path.name == "春江花月夜.m4b"
    assert sorted(p.name for p in (out / "MP3").iterdir()) == [
        ".ignore",
        "01 第一章 春江.mp3",
        "02 第二章 花林.mp3",
        "春江花月夜.m3u",
    ]
    m4b = MP4(m4b_path)
    assert m4b.tags is not None
    assert m4b.tags["\xa9alb"] == ["春江花月夜"] and m4b.tags["\xa9ART"] == ["张若虚"]
    assert m4b.tags["\xa9wrt"] == [NARRATOR] and freeform(m4b, "language") == "zh"
    assert m4b.tags["\xa9gen"] == ["Audiobook"]  # no subjects: the configured genre
    assert m4b_chapters(m4b_path) == ["第一章 春江", "第二章 花林"]  # the title and author lines are no chapter
    meta = json.loads((out / "metadata.json").read_text(encoding="utf-8"))
    assert (meta["title"], meta["authors"], meta["language"], meta["series"]) == ("春江花月夜", ["张若虚"], "zh", [])
    assert is_jpeg(out / "cover.jpg")
    with Image.open(out / "cover.jpg") as img:  # made: title and author in white on a plain colour
        assert img.size == (1000, 1500)
        colours = img.convert("RGB").getcolors(1_000_000) or []
        assert max(colours)[0] > 0.8 * img.width * img.height  # mostly the background
        assert any(sum(c) > 700 for _, c in colours)  # and white text on it
    assert bytes(ID3(out / report["chapters"][0]["file"]).getall("APIC")[0].data) == (out / "cover.jpg").read_bytes()


@pytest.mark.parametrize(
    ("text", "title", "author", "first_chapter"),
    [
        ("The Lantern\nby Ruth Example\n\nChapter 1\n\nIt was late.\n", "The Lantern", "Ruth Example", "Chapter 1"),
        ("The Lantern\n\nChapter 1\n\nIt was late.\n", "The Lantern", None, "Chapter 1"),
        # The first line of a story is not a title: no author line, no heading after it.
        ("It was late\n\nThe wind rose. Mara lit the lamp.\n", "Story", None, "Story"),
        ("It was late\nand the wind rose.\n\nChapter 1\n\nMore.\n", "Story", None, "Opening"),
    ],
)
def test_a_text_books_own_title_and_author_lines(
    tmp_path: Path, text: str, title: str, author: str | None, first_chapter: str
) -> None:
    path = tmp_path / "story.txt"
    path.write_text(text, encoding="utf-8")
    book = read_book(path)
    assert (book.title, book.author, book.chapters[0].title) == (title, author, first_chapter)


# --------------------------------------------------------------------------------- a 300-chapter web novel


def test_a_300_chapter_web_novel_keeps_every_chapter_in_its_m4b(server: FakeSpeechServer, tmp_path: Path) -> None:
    novel = webnovel(300, 300 * 25, volumes=3, seed=7)
    source = tmp_path / "novel.txt"
    source.write_text(novel.text, encoding="utf-8")
    out = tmp_path / "lib" / "novel"
    assert cli("convert", str(source), "-o", str(out), "--format", "m4b", "--no-titles", "--verify", "off") == 0
    (m4b_path,) = scanned_audio(out)
    assert m4b_path.name == "潮汐之城.m4b"
    # Past 255 chapters the Nero list (chpl, one byte of count) is not written: every reader of chapters gets
    # the QuickTime track, all of them.
    assert m4b_chapters(m4b_path) == ["简介", *novel.titles]  # the synopsis is read first, as the reader has it
    assert MP4(m4b_path).chapters is None  # mutagen reads only chpl: there is none
    m4b = MP4(m4b_path)
    assert m4b.tags is not None and m4b.tags["\xa9ART"] == ["试写者"] and freeform(m4b, "language") == "zh"
    meta = json.loads((out / "metadata.json").read_text(encoding="utf-8"))
    assert meta["title"] == "潮汐之城" and meta["series"] == []  # the volumes in the grouping tag are no series
    assert meta["description"] == "一座被潮水围住的城，和一个想离开它的少年。"  # its 简介
    files = [c["file"] for c in read_report(out)["chapters"]]
    assert len(set(files)) == 301 and files == sorted(files) and files[0].startswith(".chapters/001 ")
    assert is_jpeg(out / "cover.jpg")


def test_chapter_names_stay_unique_and_sorted_past_999() -> None:
    names = [chapter_filename(i, 1200, "同名") for i in range(1, 1201)]
    assert len(set(names)) == 1200 and names == sorted(names)
    assert names[0] == "0001 同名.mp3" and names[-1] == "1200 同名.mp3"
    book = Book("T", ())
    assert chapter_path(book, 7, 12, "A", "both") == "MP3/07 A.mp3"
    assert chapter_path(book, 7, 12, "A", "m4b") == ".chapters/07 A.mp3"


# --------------------------------------------------------------------------------- the library layout


class FakeAbs:
    """Audiobookshelf's two endpoints the scan request uses, on 127.0.0.1, counting what it is asked."""

    def __init__(self, token: str, folder: Path, status: int = 200) -> None:
        self.token, self.folder, self.status = token, folder, status
        self.requests: list[tuple[str, str, str | None]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, code: int, body: Any = None) -> None:
                data = json.dumps(body).encode() if body is not None else b"OK"
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                fake.requests.append(("GET", self.path, self.headers.get("Authorization")))
                if self.headers.get("Authorization") != f"Bearer {fake.token}":
                    return self._answer(401)
                libs = [{"id": "lib-other", "mediaType": "book", "folders": [{"fullPath": "/elsewhere"}]}]
                libs.append({"id": "lib-1", "mediaType": "book", "folders": [{"fullPath": str(fake.folder)}]})
                self._answer(200, {"libraries": libs})

            def do_POST(self) -> None:  # noqa: N802
                fake.requests.append(("POST", self.path, self.headers.get("Authorization")))
                self._answer(fake.status)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> FakeAbs:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def abs_token(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    token = "abs-test-token-1234"
    monkeypatch.setenv(library.TOKEN_ENV, token)
    yield token


def test_library_places_the_book_by_author_series_title_and_asks_for_a_scan(
    server: FakeSpeechServer, tmp_path: Path, abs_token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    lib = tmp_path / "library"
    epub = lantern_epub(tmp_path / "lantern.epub")
    with FakeAbs(abs_token, lib) as fake:
        assert main(["convert", str(epub), "--library", str(lib), "--format", "m4b", "--abs-url", fake.url]) == 0
    book = lib / AUTHOR / "Coast Lights" / TITLE
    assert capsys.readouterr().out.strip().endswith(f"in the library: {book}")
    assert fake.requests == [
        ("GET", "/api/libraries", f"Bearer {abs_token}"),
        ("POST", "/api/libraries/lib-1/scan", f"Bearer {abs_token}"),
    ]
    assert sorted(p.name for p in book.iterdir()) == sorted(
        [f"{TITLE}.m4b", "cover.jpg", "desc.txt", "metadata.json", "metadata.opf", "reader.txt", "report.json"]
    )
    # What a scan of the library sees: the author's folder, the series, the book; the work folder is hidden.
    visible = [
        p.relative_to(lib) for p in lib.rglob("*") if not any(s.startswith(".") for s in p.relative_to(lib).parts)
    ]
    assert {str(p) for p in visible if p.suffix in AUDIO} == {f"{AUTHOR}/Coast Lights/{TITLE}/{TITLE}.m4b"}
    assert (lib / ".audiobook-work" / "lantern" / "report.json").is_file()

    # A rerun with other metadata replaces the book in one step: no leftover temporary folder, the new tags.
    first = (book / f"{TITLE}.m4b").stat().st_ino
    assert cli("convert", str(epub), "--library", str(lib), "--format", "m4b", "--narrator", "Jo Reader") == 0
    assert json.loads((book / "metadata.json").read_text(encoding="utf-8"))["narrators"] == ["Jo Reader"]
    assert (book / f"{TITLE}.m4b").stat().st_ino != first
    assert sorted(p.name for p in book.parent.iterdir()) == [TITLE]


def test_a_failed_scan_request_is_a_warning_not_a_lost_book(
    server: FakeSpeechServer, tmp_path: Path, abs_token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    lib = tmp_path / "library"
    source = tmp_path / "zh.txt"
    source.write_text(ZH_BOOK, encoding="utf-8")
    with FakeAbs(abs_token, lib, status=500) as fake:
        assert cli("convert", str(source), "--library", str(lib), "--abs-url", fake.url, "--subtitles", "vtt") == 0
    assert [r[1] for r in fake.requests] == ["/api/libraries", "/api/libraries/lib-1/scan"]
    err = capsys.readouterr().err
    assert "WARNING Audiobookshelf: scan of library lib-1 answered HTTP 500" in err and abs_token not in err
    book = lib / "张若虚" / "春江花月夜"
    assert [p.name for p in scanned_audio(book)] == ["01 第一章 春江.mp3", "02 第二章 花林.mp3"]
    assert sorted(p.name for p in book.glob("*.vtt")) == ["01 第一章 春江.vtt", "02 第二章 花林.vtt"]


def test_scan_request_without_a_token_or_server_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(library.TOKEN_ENV, raising=False)
    assert "AUDIOBOOKSHELF_TOKEN" in (library.request_scan("http://127.0.0.1:9", tmp_path) or "")
    problem = library.request_scan("http://127.0.0.1:9", tmp_path, env={library.TOKEN_ENV: "t"})
    assert problem is not None and problem.startswith("cannot reach http://127.0.0.1:9")


def test_titles_and_authors_cannot_place_a_book_outside_the_library(tmp_path: Path) -> None:
    from pipeline.models import BookInfo

    lib = tmp_path / "lib"
    for title, author, series in [("../../etc", "..", "../x"), (".hidden", "/abs/path", None), ("", "", "CON")]:
        book = Book(title, (), author, info=BookInfo(series=series))
        folder = library.book_folder(lib, book)
        assert lib in folder.parents and folder.resolve().is_relative_to(lib.resolve())
        assert all(p not in ("", ".", "..") and not p.startswith(".") for p in folder.relative_to(lib).parts)


def test_an_unfinished_book_is_never_placed(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "report.json").write_text(json.dumps({"status": "failed", "chapters": []}))
    (work / "metadata.json").write_text(json.dumps({"title": "T", "authors": ["A"]}))
    with pytest.raises(library.UsageError, match="not finished"):
        library.place(work, tmp_path / "lib")
    assert not (tmp_path / "lib" / "A").exists()


def test_a_cover_given_as_a_file_is_used_and_a_bad_one_is_one_line(
    server: FakeSpeechServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "mine.webp"
    Image.new("RGB", (600, 900), "#00ff00").save(image, "WEBP")
    source = tmp_path / "zh.txt"
    source.write_text(ZH_BOOK, encoding="utf-8")
    out = tmp_path / "out"
    assert cli("convert", str(source), "-o", str(out), "--cover", str(image)) == 0
    with Image.open(out / "cover.jpg") as img:
        assert img.format == "JPEG" and img.size == (600, 900)
        g = img.convert("RGB").getpixel((300, 450))
        assert isinstance(g, tuple) and g[1] > 240 and g[0] < 15
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    assert cli("convert", str(source), "-o", str(out), "--cover", str(bad)) == 2
    err = capsys.readouterr().err.strip()
    known = "not a picture in a format it knows (JPEG, PNG, WebP, GIF, SVG)"
    assert err == f"audiobook: error: cover {bad} cannot be used: {known}"


def test_webp_and_svg_covers_become_jpeg() -> None:
    from pipeline.covers import to_jpeg

    buf = io.BytesIO()
    Image.new("RGBA", (50, 80), (255, 0, 0, 128)).save(buf, "WEBP")
    assert to_jpeg(buf.getvalue()).startswith(b"\xff\xd8\xff")
    inner = base64.b64encode(tiny_png()).decode()
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="20" height="30">'
        f'<image href="data:image/png;base64,{inner}" width="20" height="30"/></svg>'
    )
    assert to_jpeg(svg.encode(), "image/svg+xml").startswith(b"\xff\xd8\xff")


def test_a_batch_places_its_finished_books_in_the_library_once(server: FakeSpeechServer, tmp_path: Path) -> None:
    (tmp_path / "books").mkdir()
    (tmp_path / "books" / "zh.txt").write_text(ZH_BOOK, encoding="utf-8")
    lantern_epub(tmp_path / "books" / "lantern.epub")
    jobs = tmp_path / "jobs.toml"
    jobs.write_text('output = "work"\nlibrary = "lib"\n\n[[book]]\npath = "books/*"\nformat = "m4b"\n', "utf-8")
    assert cli("batch", str(jobs)) == 0
    lib = tmp_path / "lib"
    zh, lantern = lib / "张若虚" / "春江花月夜", lib / AUTHOR / "Coast Lights" / TITLE
    assert [p.name for p in scanned_audio(zh)] == ["春江花月夜.m4b"]
    assert [p.name for p in scanned_audio(lantern)] == [f"{TITLE}.m4b"]
    assert not (lib / ".audiobook-work").exists()  # a batch makes its books in its output folder
    # Unchanged on the next run: the library's copy is left as it is; one removed by hand is placed again.
    placed = (zh / "春江花月夜.m4b").stat().st_ino
    shutil.rmtree(lantern)
    assert cli("batch", str(jobs)) == 0
    assert (zh / "春江花月夜.m4b").stat().st_ino == placed
    assert [p.name for p in scanned_audio(lantern)] == [f"{TITLE}.m4b"]


def test_calibre_series_and_an_isbn_identifier_are_read_from_an_epub_2_opf() -> None:
    from lxml import etree

    from pipeline.readers.epub.package import read_info

    metadata = etree.fromstring(
        b'<metadata xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:opf="http://www.idpf.org/2007/opf">'
        b'<dc:identifier opf:scheme="ISBN">0-306-40615-2</dc:identifier>'
        b'<dc:identifier opf:scheme="AMAZON">B00TEST123</dc:identifier>'
        b"<dc:description>Plain words, no markup.</dc:description>"
        b'<meta name="calibre:series" content="Coast Lights"/><meta name="calibre:series_index" content="3.0"/>'
        b"</metadata>"
    )
    info = read_info(metadata)
    assert (info.series, info.series_index, info.isbn, info.asin) == ("Coast Lights", "3", "0306406152", "B00TEST123")
    assert info.description == "Plain words, no markup." and info.subjects == ()
