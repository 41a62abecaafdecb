"""`audiobook feed` and `batch --feed-base-url`: a podcast feed of what the runs made, on real outputs of the
offline voice, parsed back with feedparser, and served by a real static web server on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import feedparser
import httpx
import mutagen
import pytest

from pipeline import app
from pipeline.cli import main
from pipeline.config import load_settings
from pipeline.covers import to_jpeg
from pipeline.feed import Channel, check_base_url, url_of, write_feed
from pipeline.models import BookInfo
from pipeline.report import REPORT_NAME
from tests.helpers import REPO, tiny_png

BASE = "https://example.org/audio books/".replace(" ", "%20")
LOCAL = str(REPO / "configs" / "local.toml")


def article(folder: Path, name: str, title: str, *sentences: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"# {title}\n\n" + " ".join(sentences) + "\n", encoding="utf-8")
    return path


def batch(books: Path, out: Path, *extra: str) -> int:
    return main(["--quiet", "batch", str(books), "-o", str(out), "--config", LOCAL, *extra])


def feed(out: Path, *extra: str, base: str = BASE) -> int:
    return main(["--quiet", "feed", str(out), "--base-url", base, *extra])


def parse(out: Path, base: str | None = None) -> feedparser.FeedParserDict:
    """The feed as a podcast app reads it, with what RSS 2.0 and Apple require of a channel checked."""
    xml = (out / "feed.xml").read_bytes()
    parsed = feedparser.parse(xml)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == "rss20"
    assert parsed.namespaces["itunes"] == "http://www.itunes.com/dtds/podcast-1.0.dtd"
    assert parsed.feed.title and parsed.feed.subtitle and parsed.feed.link == (base or BASE)
    assert b"<itunes:explicit>no</itunes:explicit>" in xml  # feedparser reads only "yes" and "clean"
    assert [t.term for t in parsed.feed.tags] == ["Arts", "Books"]  # itunes:category
    for e in parsed.entries:
        assert e.title and e.id and e.published_parsed and len(e.enclosures) == 1
    return parsed


def file_of(out: Path, url: str, base: str = BASE) -> Path:
    """The file a static server at ``base`` serves for ``url``."""
    assert url.startswith(base)
    return out.joinpath(*[unquote(p) for p in url[len(base) :].split("/")])


def convert_book(out: Path, source: Path, *, m4b: bool = False, **changes: object) -> None:
    """A book converted with the offline voice through the library API, with its title or cover changed first
    (what a reader would give for a book whose source carries them)."""
    settings = load_settings(Path(LOCAL), overrides={"m4b": m4b} if m4b else {})
    book = dataclasses.replace(app.read(source, settings.book), **changes)  # type: ignore[arg-type]
    result = app.convert([app.plan(book, settings, out)], settings.run)
    assert result.reports[0].status == "done"


# ------------------------------------------------------------------------------------------ the nightly run


def test_batch_then_feed_validates_and_a_new_article_adds_one_episode_keeping_every_guid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    books, out = tmp_path / "in", tmp_path / "out"
    article(books, "harbour.md", "The Harbour Light", "A light shines by the sea. It never sleeps.")
    article(books, "orchard.md", "The Orchard", "Apples fall in the autumn. The children gather them.")
    assert batch(books, out, "--feed-base-url", BASE) == 0

    first = parse(out)
    assert first.feed.title == "Audiobooks"
    assert first.feed.link == BASE
    assert first.feed.language == "en"
    assert first.namespaces["itunes"] == "http://www.itunes.com/dtds/podcast-1.0.dtd"
    assert {e.title for e in first.entries} == {"The Harbour Light", "The Orchard"}
    for e in first.entries:
        (enclosure,) = e.enclosures
        audio = file_of(out, enclosure.href)
        assert audio.suffix == ".mp3" and audio.parent.parent == out  # the article's one MP3, in its folder
        assert int(enclosure.length) == audio.stat().st_size
        assert enclosure.type == "audio/mpeg"
        assert int(e.itunes_duration) == round(mutagen.File(audio).info.length)
        assert e.id.startswith("urn:uuid:") and e.guidislink is False
        assert e.published_parsed is not None
    guids = {e.title: (e.id, e.published) for e in first.entries}
    assert len({g for g, _ in guids.values()}) == 2

    # The next night: one new article; the two others are settled without a request.
    article(books, "bridge.md", "The Bridge", "The old bridge creaks. Nobody crosses at night.")
    assert batch(books, out, "--feed-base-url", BASE) == 0
    second = parse(out)
    assert len(second.entries) == 3
    after = {e.title: (e.id, e.published) for e in second.entries}
    assert {t: after[t] for t in guids} == guids  # no GUID and no date changed
    assert second.entries[0].title == "The Bridge"  # newest first
    assert "feed.xml: 3 episodes (1 new)" in capsys.readouterr().out

    # A third run with nothing new rewrites nothing: the same bytes, and the command says so.
    before = (out / "feed.xml").read_bytes()
    assert feed(out) == 0
    assert (out / "feed.xml").read_bytes() == before
    result = write_feed(out, Channel(BASE))
    assert not result.written and result.added == 0
    # Nothing local leaks: the sources' and the output's paths are nowhere in the feed.
    text = before.decode()
    assert str(tmp_path) not in text and "harbour.md" not in text


def test_the_feed_s_urls_are_served_by_a_static_web_server(tmp_path: Path) -> None:
    """Every enclosure and picture URL fetched from a real static server of the output folder: found, and as long
    as the feed says. Names with spaces, "&", "#", "%" and CJK are percent-encoded part by part."""
    out = tmp_path / "out"
    source = article(tmp_path / "in", "b.md", "x", "One sentence is read. Another one follows.")
    convert_book(
        out / "三体 #1 & 50%",
        source,
        title='三体 <Ⅱ> & "黑暗森林" #1 50%',
        cover=tiny_png(),
        cover_mime="image/png",
        m4b=True,
    )
    convert_book(out / "plain", source, title="Plain")
    with static_server(out) as base:
        assert feed(out, "--title", "Nightly <Reads> & more", base=base) == 0
        parsed = parse(out, base)
        assert parsed.feed.title == "Nightly <Reads> & more"
        urls = [(e.enclosures[0].href, int(e.enclosures[0].length)) for e in parsed.entries]
        urls += [(e.image.href, None) for e in parsed.entries if "image" in e]
        urls.append((parsed.feed.image.href, None))
        with httpx.Client() as client:
            for url, length in urls:
                answer = client.get(url)
                assert answer.status_code == 200, url
                assert length is None or len(answer.content) == length
    titles = {e.title: e for e in parsed.entries}
    cjk = titles['三体 <Ⅱ> & "黑暗森林" #1 50%']
    assert cjk.enclosures[0].type == "audio/x-m4a"  # the M4B: the type Apple lists and strict apps accept
    m4b = file_of(out, cjk.enclosures[0].href, base)
    assert m4b.suffix == ".m4b" and int(cjk.itunes_duration) == round(mutagen.File(m4b).info.length)
    path = urlsplit(cjk.enclosures[0].href).path
    assert "%E4%B8%89%E4%BD%93%20%231%20%26%2050%25/" in path  # the folder "三体 #1 & 50%"
    # The cover is the book's picture, as the library output writes it beside the audio (always a JPEG).
    assert file_of(out, cjk.image.href, base).read_bytes() == to_jpeg(tiny_png())
    assert file_of(out, titles["Plain"].image.href, base).name == "cover.jpg"  # a book without one gets one made
    # The channel's art: the newest episode's (the feed's first), by default. Which book is newer depends on the
    # second each finished in (ties go by path), so the test asks the feed rather than assuming one.
    assert parsed.feed.image.href == parsed.entries[0].image.href


@functools.cache
def _quiet_handler(directory: str) -> type[SimpleHTTPRequestHandler]:
    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=directory, **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    return Handler


class static_server:  # noqa: N801 (a context manager used like a function)
    """Python's own static file server over ``root`` on 127.0.0.1, as a user would serve the folder."""

    def __init__(self, root: Path):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _quiet_handler(str(root)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


# ---------------------------------------------------------------------------------- what an episode is


def test_a_book_of_chapters_without_m4b_is_an_episode_a_chapter_in_reading_order(tmp_path: Path) -> None:
    out = tmp_path / "out"
    source = tmp_path / "book.md"
    source.write_text("# One\n\nFirst part. It is short.\n\n# Two\n\nSecond part. Also short.\n\n# Three\n\nEnd.\n")
    convert_book(out / "book", source, title="A Book")
    assert feed(out) == 0
    entries = parse(out).entries
    assert [e.title for e in entries] == ["A Book — Three", "A Book — Two", "A Book — One"]  # newest first
    dates = [e.published_parsed for e in entries]
    assert dates == sorted(dates, reverse=True) and len(set(dates)) == 3  # reading order, a second apart
    assert entries[2].summary.startswith("Chapter 1 of 3 of A Book.")
    assert [file_of(out, e.enclosures[0].href).name for e in entries] == ["03 Three.mp3", "02 Two.mp3", "01 One.mp3"]
    assert len({e.id for e in entries}) == 3


def test_unfinished_missing_and_escaping_books_are_skipped_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    books, out = tmp_path / "in", tmp_path / "out"
    for name in ("good", "running", "doubted", "gone", "escape", "linked"):
        article(books, f"{name}.md", name.title(), "A sentence to read. And one more.")
    assert batch(books, out) == 0
    edit_report(out / "running", status="running")  # as a run being killed leaves it
    edit_report(out / "doubted", status="unverified")  # parts verification left suspect
    next((out / "gone").glob("*.mp3")).unlink()
    edit_report(out / "escape", chapters=[{"file": "../good/01 Good.mp3", "title": "x"}])
    secret = tmp_path / "private.mp3"
    secret.write_bytes((out / "good" / "01 Good.mp3").read_bytes())
    (out / "linked" / "01 Linked.mp3").unlink()
    (out / "linked" / "01 Linked.mp3").symlink_to(secret)  # a link out of the served folder
    capsys.readouterr()
    assert main(["feed", str(out), "--base-url", BASE]) == 0
    assert [e.title for e in parse(out).entries] == ["Good"]
    said = capsys.readouterr()
    assert "1 episode (1 new), 5 folders skipped" in said.out
    assert "skipped running: not finished (report status 'running')" in said.err
    assert "skipped doubted: not finished (report status 'unverified')" in said.err
    assert "skipped gone: its chapter file '01 Gone.mp3' is missing" in said.err
    assert "skipped escape: its chapter file '../good/01 Good.mp3' is missing" in said.err
    assert "skipped linked: its chapter file '01 Linked.mp3' is missing" in said.err


def edit_report(folder: Path, **changes: object) -> None:
    data = json.loads((folder / REPORT_NAME).read_text(encoding="utf-8"))
    data.update(changes)
    (folder / REPORT_NAME).write_text(json.dumps(data), encoding="utf-8")


def test_an_episode_keeps_its_guid_and_date_when_its_source_moves_or_its_file_is_renamed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    source = article(tmp_path / "in", "a.md", "Alpha", "One sentence here. And another one.")
    convert_book(out / "a", source)
    assert feed(out) == 0
    (before,) = parse(out).entries
    # The source moved (the identity the GUID is made from changed) but the audio is where it was.
    data = json.loads((out / "a" / REPORT_NAME).read_text(encoding="utf-8"))
    data["plan"]["book"]["source"] = "/elsewhere/a.md"
    data["finished"] = "2030-01-01T00:00:00+00:00"
    (out / "a" / REPORT_NAME).write_text(json.dumps(data), encoding="utf-8")
    assert feed(out) == 0
    (moved,) = parse(out).entries
    assert (moved.id, moved.published) == (before.id, before.published)
    # Then the file is renamed (a re-encode under a new title): the identity is the same, so is the GUID.
    (out / "a" / "01 Alpha.mp3").rename(out / "a" / "Alpha.mp3")
    data["chapters"][0]["file"] = "Alpha.mp3"
    (out / "a" / REPORT_NAME).write_text(json.dumps(data), encoding="utf-8")
    assert feed(out) == 0
    (renamed,) = parse(out).entries
    assert renamed.enclosures[0].href.endswith("/a/Alpha.mp3")
    assert (renamed.id, renamed.published) == (before.id, before.published)


def test_an_article_s_url_site_and_description_make_its_episode(tmp_path: Path) -> None:
    """What the article reader puts in Book.info reaches the episode through the report; the GUID comes from the
    URL, so the same article converted into another folder (from another downloaded copy) is the same episode."""
    info = BookInfo(description="Why <lanterns> & harbours matter.", url="https://news.example/a?id=7&p=1",
                    site="Example News")  # fmt: skip
    first = article(tmp_path / "in", "a.md", "x", "Lanterns are old. Harbours are older.")
    other = article(tmp_path / "copy", "saved.md", "x", "Lanterns are old. Harbours are older.")
    convert_book(tmp_path / "one" / "a", first, title="Lanterns", info=info)
    convert_book(tmp_path / "two" / "elsewhere", other, title="Lanterns", info=info)
    for root in ("one", "two"):
        assert feed(tmp_path / root) == 0
    (a,), (b,) = parse(tmp_path / "one").entries, parse(tmp_path / "two").entries
    # A description is HTML to an app: the text's "<" and "&" are escaped in it, so they are shown, not parsed.
    assert a.summary == "Why &lt;lanterns&gt; &amp; harbours matter."
    assert a.link == "https://news.example/a?id=7&p=1"
    assert a.author == "Example News"  # no author: the site
    assert a.id == b.id


def test_a_library_folder_s_cover_and_metadata_are_used(tmp_path: Path) -> None:
    """A library layout (Author/Title/ folders, cover.png and metadata.json beside the audio) as the library
    output writes it: the episode's art is the folder's own cover, its description the metadata's."""
    folder = tmp_path / "lib" / "Ann Author" / "A Title"
    convert_book(folder, article(tmp_path / "in", "a.md", "x", "A sentence. Another one."), title="A Title")
    (folder / "cover.png").write_bytes(tiny_png())
    (folder / "metadata.json").write_text(json.dumps({"description": "From the metadata.", "authors": ["Ann"]}))
    assert feed(tmp_path / "lib") == 0
    (e,) = parse(tmp_path / "lib").entries
    assert e.image.href == BASE + "Ann%20Author/A%20Title/cover.jpg"  # the library output's own, first
    assert e.summary == "From the metadata."
    assert e.author == "Ann"
    assert not (tmp_path / "lib" / "feed-covers").exists()  # nothing taken out of the tags: the folder has one


def test_a_book_made_again_leaves_the_feed_meanwhile_and_comes_back_as_it_was(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for name in ("a", "b"):
        convert_book(out / name, article(tmp_path / "in", f"{name}.md", "x", "Words. More words."), title=name)
    assert feed(out) == 0
    before = {e.title: (e.id, e.published) for e in parse(out).entries}
    edit_report(out / "a", status="running")  # a run is making it again
    shutil.rmtree(out / "b")  # deleted for good
    assert feed(out) == 0
    assert parse(out).entries == []
    edit_report(out / "a", status="done", finished="2031-05-05T05:05:05+00:00")
    convert_book(out / "b", tmp_path / "in" / "b.md", title="b")
    result = write_feed(out, Channel(BASE))
    after = {e.title: (e.id, e.published) for e in parse(out).entries}
    assert after["a"] == before["a"] and not next(e for e in result.episodes if e.title == "a").new
    assert after["b"][0] == before["b"][0]  # the same book: the same GUID, however long it was gone
    assert next(e for e in result.episodes if e.title == "b").new  # but back as a new episode
    assert b"audiobook:held" not in (out / "feed.xml").read_bytes()  # nothing held any more


# ------------------------------------------------------------------------------------------------ the channel


def test_channel_settings_are_kept_from_the_previous_feed_until_changed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    convert_book(out / "a", article(tmp_path / "in", "a.md", "Alpha", "Words to read. More words."))
    art = tmp_path / "art.png"
    art.write_bytes(tiny_png())
    assert feed(out, "--title", "My Reads", "--author", "Me", "--description", "Nightly.", "--image", str(art)) == 0
    assert feed(out) == 0  # the nightly run gives no flags
    parsed = parse(out)
    assert (parsed.feed.title, parsed.feed.author, parsed.feed.subtitle) == ("My Reads", "Me", "Nightly.")
    assert file_of(out, parsed.feed.image.href).read_bytes() == tiny_png()  # copied under the folder
    assert feed(out, "--title", "Renamed") == 0
    assert parse(out).feed.title == "Renamed"
    # Served somewhere else now: every URL follows, the art too, and no GUID changes.
    assert feed(out, base="http://192.0.2.7:8080/reads/") == 0
    moved = parse(out, "http://192.0.2.7:8080/reads/")
    assert moved.feed.image.href.startswith("http://192.0.2.7:8080/reads/feed-covers/")
    assert [e.id for e in moved.entries] == [e.id for e in parsed.entries]


def test_an_empty_output_folder_gives_a_valid_feed_without_episodes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "out").mkdir()
    assert main(["feed", str(tmp_path / "out"), "--base-url", BASE]) == 0
    said = capsys.readouterr()
    assert "feed.xml: 0 episodes (0 new)" in said.out
    assert "holds no book folder (no report.json): the feed has no episodes" in said.err
    parsed = parse(tmp_path / "out")
    assert parsed.entries == [] and parsed.feed.title == "Audiobooks"


@pytest.mark.parametrize(
    ("base", "why"),
    [
        ("ftp://example.org/books/", "must start with http:// or https://"),
        ("file:///srv/books/", "must start with http:// or https://"),
        ("/srv/books", "must start with http:// or https://"),
        ("https://user:secret@example.org/", "user name or password"),
        ("https://example.org/books?token=1", "no query or fragment"),
        ("https:///books", "names no host"),
        ("https://example.org/my books/", "space"),
    ],
)
def test_a_base_url_that_is_not_http_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], base: str, why: str
) -> None:
    (tmp_path / "out").mkdir()
    assert feed(tmp_path / "out", base=base) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and why in err and "Traceback" not in err
    assert "secret" not in err  # a password is never said back
    assert not (tmp_path / "out" / "feed.xml").exists()


def test_batch_refuses_a_bad_feed_url_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    books, out = tmp_path / "in", tmp_path / "out"
    article(books, "a.md", "Alpha", "Words to read.")
    assert batch(books, out, "--feed-base-url", "ftp://example.org/") == 2
    assert "must start with http:// or https://" in capsys.readouterr().err
    assert not out.exists()
    jobs = tmp_path / "jobs.toml"
    jobs.write_text('output = "out"\nfeed_base_url = "file:///srv/"\n[[book]]\npath = "in/*.md"\n')
    assert main(["--quiet", "batch", str(jobs)]) == 2
    assert f"{jobs}:2: the feed's base URL" in capsys.readouterr().err
    assert not out.exists()


def test_a_missing_folder_or_a_bad_image_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert feed(tmp_path / "nowhere") == 2
    assert "nowhere: not a folder" in capsys.readouterr().err
    (tmp_path / "out").mkdir()
    (tmp_path / "art.gif").write_bytes(b"GIF89a")
    assert feed(tmp_path / "out", "--image", str(tmp_path / "art.gif")) == 2
    assert "not a JPEG or PNG" in capsys.readouterr().err
    assert feed(tmp_path / "out", "--image", "https://example.org/art.webp") == 2
    assert "the URL of a .jpg or .png file" in capsys.readouterr().err
    assert not (tmp_path / "out" / "feed.xml").exists()


def test_check_base_url_and_url_of() -> None:
    assert check_base_url("https://example.org/books") == "https://example.org/books/"
    assert check_base_url(" http://127.0.0.1:8080/ ") == "http://127.0.0.1:8080/"
    base = "https://example.org/b/"
    assert url_of(base, "a b/01 It's #1?.mp3") == "https://example.org/b/a%20b/01%20It%27s%20%231%3F.mp3"
    assert url_of(base, "书/第一章.mp3") == "https://example.org/b/%E4%B9%A6/%E7%AC%AC%E4%B8%80%E7%AB%A0.mp3"


def test_titles_with_characters_xml_cannot_carry_still_make_a_valid_feed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    source = article(tmp_path / "in", "a.md", "x", "A sentence. Another.")
    convert_book(out / "a", source, title="Bell\x07 & <Tag>\ufffe")
    assert feed(out) == 0
    assert [e.title for e in parse(out).entries] == ["Bell & <Tag>"]


def test_a_job_file_s_feed_base_url_writes_the_feed_after_the_batch_but_not_in_a_dry_run(tmp_path: Path) -> None:
    article(tmp_path / "in", "a.md", "Alpha", "Words to read. More words.")
    jobs = tmp_path / "jobs.toml"
    jobs.write_text(f'settings = "{LOCAL}"\noutput = "out"\nfeed_base_url = "{BASE}"\n[[book]]\npath = "in/*.md"\n')
    assert main(["--quiet", "batch", str(jobs), "--dry-run"]) == 0
    assert not (tmp_path / "out" / "feed.xml").exists()
    assert main(["--quiet", "batch", str(jobs)]) == 0
    (e,) = parse(tmp_path / "out").entries
    assert e.title == "Alpha" and file_of(tmp_path / "out", e.enclosures[0].href).is_file()
