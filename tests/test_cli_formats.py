"""Real-book formats through the command line, as a user runs them, with every result read back from disk.

Issue 3's "done when" at the CLI level: the EPUB dry run (chapters, titles, sizes, what is skipped), a conversion
whose tags, playlist, subtitles and M4B chapters are read back with mutagen and ffmpeg, chapter titles spoken or
not, a GB18030 Chinese novel and an HTML article checked against what the fake speech server was actually sent,
and hostile files that must end in one line and exit 2. Every input is built here, small, except the corpus EPUB.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from mutagen.id3 import ID3
from mutagen.mp4 import MP4

from pipeline.cli import main
from pipeline.covers import to_jpeg
from tests.audiocheck import decode
from tests.conftest import corpus_file
from tests.fakeserver import FakeSpeechServer
from tests.helpers import ALICE_TOC, claim_huge_size, read_report, run_cli, tiny_png

KEY = "sk-formats-test-key-0123456789"
MS_PER_CHAR = 2.0  # short audio: a 100-character segment is 0.2 s, so assembly and the M4B stay fast


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSpeechServer]:
    with FakeSpeechServer(api_key=KEY, ms_per_char=MS_PER_CHAR) as srv:
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", srv.url)
        yield srv


def cli(*args: str) -> int:
    return main(["--quiet", *args])


# --------------------------------------------------------------------------------------------- building an EPUB

XHTML = "application/xhtml+xml"
CONTAINER = (
    '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
    '<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles>'
    "</container>"
)


COVER = tiny_png()


def page(body: str, title: str = "Page") -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<html xmlns="http://www.w3.org/1999/xhtml" '
        f'xmlns:epub="http://www.idpf.org/2007/ops" lang="en"><head><title>{title}</title></head>'
        f"<body>{body}</body></html>"
    )


def para(*sentences: str) -> str:
    return "<p>" + " ".join(sentences) + "</p>"


def write_epub(path: Path, files: dict[str, str | bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        zf.writestr("META-INF/container.xml", CONTAINER)
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def package(
    title: str, author: str, manifest: list[tuple[str, str, str, str]], spine: list[str], doctype: str = ""
) -> str:
    items = "".join(
        f'<item id="{i}" href="{h}" media-type="{m}"' + (f' properties="{p}"' if p else "") + "/>"
        for i, h, m, p in manifest
    )
    refs = "".join(f'<itemref idref="{i}"/>' for i in spine)
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\n{doctype}'
        '<package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">'
        '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:identifier id="id">urn:test:formats</dc:identifier>'
        f"<dc:title>{title}</dc:title><dc:creator>{author}</dc:creator><dc:language>en</dc:language></metadata>"
        f"<manifest>{items}</manifest><spine>{refs}</spine></package>"
    )


# The book: a cover page, the nav (contents) in the spine, three chapters of which the third starts in the
# middle of the second file (a #fragment TOC entry), and a licence at the end.
BOOK_TITLE = "Doors and Gardens"
AUTHOR = "Ann Author"
CHAPTERS: list[tuple[str, list[str]]] = [
    (
        "The First Door",
        [
            "Anna opened the first door. It creaked loudly! Was anyone there?",
            "Nobody answered her, so she walked in.",
        ],
    ),
    ("The Second Door", ["The second door was painted blue. Behind it lay a long corridor."]),
    ("The Garden", ["At the end of the corridor was a garden. Roses grew along the wall.", "Anna sat down."]),
]
LICENCE = "This book may be copied under the terms of the Example Licence. See the full licence text."


def book_epub(path: Path, *, titles: list[str] | None = None, book_title: str = BOOK_TITLE) -> Path:
    titles = titles or [t for t, _ in CHAPTERS]
    bodies = [paras for _, paras in CHAPTERS]
    c1 = f"<h1>{titles[0]}</h1>" + "".join(para(p) for p in bodies[0])
    c2 = (
        f"<h1>{titles[1]}</h1>"
        + "".join(para(p) for p in bodies[1])
        + f'<h1 id="garden">{titles[2]}</h1>'
        + "".join(para(p) for p in bodies[2])
    )
    toc = (
        f'<li><a href="c1.xhtml">{titles[0]}</a></li><li><a href="c2.xhtml">{titles[1]}</a></li>'
        f'<li><a href="c2.xhtml#garden">{titles[2]}</a></li><li><a href="licence.xhtml">Licence</a></li>'
    )
    files: dict[str, str | bytes] = {
        "OEBPS/cover.xhtml": page('<img src="cover.png" alt="cover.png"/>', "Cover"),
        "OEBPS/nav.xhtml": page(f'<nav epub:type="toc"><h1>Contents</h1><ol>{toc}</ol></nav>', "Contents"),
        "OEBPS/c1.xhtml": page(c1),
        "OEBPS/c2.xhtml": page(c2),
        "OEBPS/licence.xhtml": page(f"<h1>Licence</h1>{para(LICENCE)}", "Licence"),
        "OEBPS/cover.png": COVER,
    }
    manifest = [
        ("cover", "cover.xhtml", XHTML, ""),
        ("nav", "nav.xhtml", XHTML, "nav"),
        ("c1", "c1.xhtml", XHTML, ""),
        ("c2", "c2.xhtml", XHTML, ""),
        ("licence", "licence.xhtml", XHTML, ""),
        ("cover-image", "cover.png", "image/png", "cover-image"),
    ]
    files["OEBPS/content.opf"] = package(book_title, AUTHOR, manifest, ["cover", "nav", "c1", "c2", "licence"])
    return write_epub(path, files)


def chapter_characters(title: str, paragraphs: list[str]) -> int:
    """What the plan should count for a chapter: its spoken title plus its text, the paragraphs packed into one
    request with a line break between them (each chapter here is short enough)."""
    return len(title) + len("\n".join(paragraphs))


# --------------------------------------------------------------------------------------------- reading results


def cues(path: Path) -> list[tuple[float, float, str]]:
    """(start s, end s, text) of every cue in an SRT or WebVTT file."""
    stamp = r"(\d+):(\d\d):(\d\d)[,.](\d{3})"
    found = []
    for block in re.split(r"\n\s*\n", path.read_text(encoding="utf-8").strip()):
        lines = block.splitlines()
        for n, line in enumerate(lines):
            m = re.fullmatch(rf"{stamp} --> {stamp}", line.strip())
            if m:
                g = [int(x) for x in m.groups()]
                start = g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 1000
                end = g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 1000
                found.append((start, end, " ".join(lines[n + 1 :]).strip()))
    return found


def playlist_entries(path: Path) -> list[str]:
    return [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.startswith("#")]


def decoded_seconds(path: Path) -> float:
    """The real length of an audio file: its decoded samples (ffmpeg honours the encoder delay and padding)."""
    return len(decode(path.read_bytes())) / 1000


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


# --------------------------------------------------------------------------------------------- dry run


def test_epub_dry_run_lists_chapters_titles_sizes_and_what_it_skips(
    server: FakeSpeechServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = book_epub(tmp_path / "book.epub")
    out = tmp_path / "out"
    assert cli("convert", str(book), "-o", str(out), "--dry-run") == 0
    text = capsys.readouterr().out
    assert cli("convert", str(book), "-o", str(out), "--dry-run", "--json") == 0
    plan = json.loads(capsys.readouterr().out)

    assert server.requests == [] and not out.exists()  # a dry run sends nothing and writes nothing
    assert plan["book"]["title"] == BOOK_TITLE and plan["book"]["author"] == AUTHOR
    assert [c["title"] for c in plan["chapters"]] == [t for t, _ in CHAPTERS]
    assert [c["characters"] for c in plan["chapters"]] == [chapter_characters(t, p) for t, p in CHAPTERS]
    assert [c["segments"] for c in plan["chapters"]] == [2, 2, 2]  # the title, then the paragraphs packed in one
    assert sum(c["segments"] for c in plan["chapters"]) == plan["segments"] == plan["requests_needed"]
    skipped = " ".join(plan["skipped"]).lower()
    assert "contents" in skipped and "licence" in skipped
    assert LICENCE not in json.dumps(plan)

    # The human plan shows the same chapters with their sizes, and names what it skips.
    for c in plan["chapters"]:
        row = next(line for line in text.splitlines() if c["title"] in line)
        assert re.search(rf"\b{c['segments']}\s+{c['characters']:,}\b", row), row
    skipped_lines = text.split("Skipped", 1)[1]
    assert "Contents" in skipped_lines and "Licence" in skipped_lines
    assert f"{len(CHAPTERS)} chapters" in text


def test_corpus_epub_dry_run_has_its_twelve_toc_chapters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    book = corpus_file("alice-pg11.epub")
    assert cli("plan", str(book), "-o", str(tmp_path / "out"), "--json") == 0
    plan = json.loads(capsys.readouterr().out)
    assert [c["title"] for c in plan["chapters"]] == ALICE_TOC
    assert all(c["characters"] > 5000 and c["segments"] > 10 for c in plan["chapters"])
    assert plan["book"]["author"] == "Lewis Carroll"
    kinds = " ".join(plan["skipped"]).lower()
    assert "table of contents" in kinds and "licen" in kinds
    assert cli("convert", str(book), "-o", str(tmp_path / "out"), "--dry-run") == 0
    text = capsys.readouterr().out
    assert "12 chapters" in text and "Down the Rabbit-Hole" in text and "Skipped" in text
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------- a full conversion


def test_conversion_tags_playlist_subtitles_and_m4b_read_back(server: FakeSpeechServer, tmp_path: Path) -> None:
    book = book_epub(tmp_path / "book.epub")
    out = tmp_path / "out"
    assert cli("convert", str(book), "-o", str(out), "--m4b", "--subtitles", "srt") == 0

    report = read_report(out)
    assert report["status"] == "done"
    chapters = report["chapters"]
    titles = [t for t, _ in CHAPTERS]
    assert [c["title"] for c in chapters] == titles
    mp3s = [out / c["file"] for c in chapters]
    assert [p.name[:3] for p in mp3s] == ["01 ", "02 ", "03 "]

    # ID3 tags on every chapter file, cover art from the EPUB included.
    for n, (path, title) in enumerate(zip(mp3s, titles, strict=True), start=1):
        tags = ID3(path)
        assert tags["TIT2"].text == [title]
        assert tags["TALB"].text == [BOOK_TITLE]
        assert tags["TPE1"].text == [AUTHOR]
        assert tags["TRCK"].text == [f"{n}/{len(titles)}"]
        assert tags["TCON"].text == ["Audiobook"]
        (cover,) = tags.getall("APIC")
        assert cover.data == to_jpeg(COVER) and cover.mime == "image/jpeg"  # players read JPEG best

    # The playlist lists the chapter files in reading order, as names relative to itself, beside them.
    (m3u,) = out.glob("MP3/*.m3u")
    assert playlist_entries(m3u) == [p.name for p in mp3s]

    # Cues of one or two sentences, the title first, timed inside the chapter's real audio, in order.
    served = server.served_inputs()
    all_cues: list[str] = []
    for path, (title, paragraphs), c in zip(mp3s, CHAPTERS, chapters, strict=True):
        chapter_cues = cues(path.with_suffix(".srt"))
        assert len(chapter_cues) >= c["segments"]
        assert chapter_cues[0][2] == title
        assert " ".join(t for _, _, t in chapter_cues[1:]) == " ".join(paragraphs)
        starts = [s for s, _, _ in chapter_cues]
        assert starts == sorted(starts) and all(s < e for s, e, _ in chapter_cues)
        assert chapter_cues[-1][1] <= decoded_seconds(path) + 0.001
        all_cues += [t for _, _, t in chapter_cues]
    # What was paid for is exactly what the subtitles show.
    assert " ".join(sorted(" ".join(all_cues).split())) == " ".join(sorted(" ".join(served).split()))

    # The M4B: one chapter mark per chapter file, each starting where the earlier files' real audio ends.
    # The marks are written in milliseconds from decoded sample counts, so they agree to about 1 ms; 30 ms is
    # half the ~60 ms of encoder delay and padding each MP3 carries, which a builder that measured the files
    # by their container length (as mutagen's MP3 length does) would add per chapter and so fail here.
    assert report["m4b"]
    m4b = MP4(out / report["m4b"])
    durations = [decoded_seconds(p) for p in mp3s]
    assert [ch.title for ch in m4b.chapters] == titles
    expected_starts = [sum(durations[:k]) for k in range(len(durations))]
    for got, want in zip([ch.start for ch in m4b.chapters], expected_starts, strict=True):
        assert got == pytest.approx(want, abs=0.03)
    assert m4b.info is not None and m4b.tags is not None
    assert m4b.info.length == pytest.approx(sum(durations), abs=0.15)  # AAC priming adds at most ~2 frames
    assert bytes(m4b.tags["covr"][0]) == to_jpeg(COVER)
    assert m4b.tags["\xa9alb"] == [BOOK_TITLE] and m4b.tags["\xa9ART"] == [AUTHOR]

    # Nothing else in the folder: no temporary files, no stray outputs. --m4b is --format both: the M4B and
    # the library files in the book folder, the chapter files in MP3/, which ".ignore" keeps from library scans.
    expected = {p.name for p in mp3s} | {p.with_suffix(".srt").name for p in mp3s} | {m3u.name, ".ignore"}
    assert {p.name for p in (out / "MP3").iterdir()} == expected
    library_files = {"cover.jpg", "metadata.json", "reader.txt", "metadata.opf"}
    assert {p.name for p in out.iterdir()} == {report["m4b"], "report.json", "MP3"} | library_files


def test_chapter_titles_are_spoken_by_default_and_not_with_no_titles(
    server: FakeSpeechServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = book_epub(tmp_path / "book.epub")
    titles = [t for t, _ in CHAPTERS]
    body = ["\n".join(paragraphs) for _, paragraphs in CHAPTERS]  # each chapter's text packed into one request

    assert cli("convert", str(book), "-o", str(tmp_path / "with"), "--subtitles", "vtt") == 0
    assert sorted(server.served_inputs()) == sorted(titles + body)
    with_titles = read_report(tmp_path / "with")["chapters"]
    for c, title in zip(with_titles, titles, strict=True):
        assert cues((tmp_path / "with" / c["file"]).with_suffix(".vtt"))[0][2] == title

    # A separate cache, so every segment the second run needs is requested and visible to the server.
    server.clear()
    assert (
        cli(
            "convert",
            str(book),
            "-o",
            str(tmp_path / "without"),
            "--subtitles",
            "vtt",
            "--no-titles",
            "--cache-dir",
            str(tmp_path / "cache2"),
        )
        == 0
    )
    assert sorted(server.served_inputs()) == sorted(body)
    without = read_report(tmp_path / "without")["chapters"]
    assert [c["segments"] for c in without] == [c["segments"] - 1 for c in with_titles]
    for c, (_, paragraphs) in zip(without, CHAPTERS, strict=True):
        first = cues((tmp_path / "without" / c["file"]).with_suffix(".vtt"))[0][2]
        assert paragraphs[0].startswith(first)  # the chapter opens with its text, not its title
    capsys.readouterr()
    assert cli("plan", str(book), "--no-titles", "--json") == 0
    plan = json.loads(capsys.readouterr().out)
    assert [c["characters"] for c in plan["chapters"]] == [len("\n".join(p)) for _, p in CHAPTERS]


# --------------------------------------------------------------------------------------------- Chinese, HTML

# Hard-wrapped at a fixed width (lines break mid-sentence, one even before a full-width colon), with a stray
# space before a comma, full-width indents, a full-width space in chapter lines, a footnote marker, and chapter
# lines of two kinds (第N章, 第N回). Most lines end mid-sentence, so each block is one paragraph (a block whose
# lines mostly end a sentence is read as one paragraph per line, a separate heuristic not exercised here).
NOVEL = """第一章　山中的灯

　　他走进山里，看见一盏很旧的灯挂在树上。风吹
得它摇来摇去 ，像一只小鸟。他说：“你好！”然
后他走了。她问：“你是谁？”没有人回答⑴。

　　天黑了。灯还亮着吗？

第二章 夜里的风

　　风很大。雨也很大！我们回家吧？她笑着说
：“好的。”于是两个人一起走下山去。

第十二回　山下的小镇

　　小镇上的人都睡了。只有一家小店还开着门。
"""
NOVEL_CHAPTERS = {
    "第一章": "他走进山里，看见一盏很旧的灯挂在树上。风吹得它摇来摇去，像一只小鸟。他说：“你好！”然后他走了。"
    "她问：“你是谁？”没有人回答。天黑了。灯还亮着吗？",
    "第二章": "风很大。雨也很大！我们回家吧？她笑着说：“好的。”于是两个人一起走下山去。",
    "第十二回": "小镇上的人都睡了。只有一家小店还开着门。",
}
CJK_OR_PUNCT = r"[\u3000-\u303f\u3400-\u9fff\uff00-\uffef“”‘’]"
SENTENCE_END = re.compile(r"[。！？][”’」』）)]*$")


def test_gb18030_chinese_novel_end_to_end(server: FakeSpeechServer, tmp_path: Path) -> None:
    book = tmp_path / "novel.txt"
    book.write_bytes(NOVEL.encode("gb18030"))
    out = tmp_path / "out"
    # The smallest allowed segment, so that packing cannot hide where the sentences were cut.
    assert cli("convert", str(book), "-o", str(out), "--max-chars", "20", "--subtitles", "vtt") == 0

    report = read_report(out)
    assert report["plan"]["book"]["language"] == "zh"
    titles = [c["title"] for c in report["chapters"]]
    assert [t.split()[0] for t in titles] == list(NOVEL_CHAPTERS)
    assert titles[0] == "第一章 山中的灯" and titles[2].endswith("山下的小镇")

    served = server.served_inputs()
    assert all("⑴" not in s for s in served)  # footnote markers are not read aloud
    for c, expected in zip(report["chapters"], NOVEL_CHAPTERS.values(), strict=True):
        texts = [t for _, _, t in cues((out / c["file"]).with_suffix(".vtt"))]
        assert texts[0] == c["title"]
        body = texts[1:]
        assert "".join(body) == expected  # nothing lost, nothing added, in order
        assert all(any(cue in seg for seg in served) for cue in body)  # each cue shows part of one request
    for seg in (s for s in served if s not in titles):  # the spoken titles are the book's own, spaces included
        assert len(seg) <= 20
        assert not re.search(rf"{CJK_OR_PUNCT}[ \t]+{CJK_OR_PUNCT}", seg), f"space inside Chinese: {seg!r}"
        assert SENTENCE_END.search(seg), f"not cut at a sentence end: {seg!r}"
        assert seg[0] not in "”’」』）)", f"closing quote split from its sentence: {seg!r}"
    # Quoted speech keeps its closing quote on the sentence it closes.
    assert any(s.endswith("“你好！”") for s in served) or any("“你好！”然" in s for s in served)
    assert any(s.endswith("“好的。”") for s in served) or any("“好的。”于" in s for s in served)


ARTICLE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>How Lanterns Work | Example News</title>
<script>var tracking = "SCRIPT-TEXT-NEVER-SPOKEN";</script><style>p {{ color: grey }}</style></head>
<body>
<nav><ul><li><a href="/">Home</a></li><li><a href="/about">NAV-LINK-NEVER-SPOKEN</a></li></ul></nav>
<header><div class="menu">Subscribe now MENU-NEVER-SPOKEN</div></header>
<article>
<h1>How Lanterns Work</h1>
{sections}
</article>
<aside class="sidebar">Related posts SIDEBAR-NEVER-SPOKEN</aside>
<footer>FOOTER-NEVER-SPOKEN Copyright 2024</footer>
<script>document.write("SECOND-SCRIPT-NEVER-SPOKEN")</script>
<noscript>NOSCRIPT-NEVER-SPOKEN</noscript>
</body></html>
"""
SECTIONS = {
    "Oil and Wicks": "The oldest lanterns burned oil or tallow, drawn up a wick to a small and steady flame.",
    "Glass and Horn": "A shield of glass or thin horn kept the wind away so the light survived a storm.",
    "Batteries": "Modern lanterns use batteries and diodes, which are safer and last far longer than flames.",
}


def test_html_article_sends_only_the_article(server: FakeSpeechServer, tmp_path: Path) -> None:
    sections = "".join(f"<h2>{h}</h2><p>{p} {p}</p>" for h, p in SECTIONS.items())
    page_path = tmp_path / "article.html"
    page_path.write_text(ARTICLE.format(sections=sections), encoding="utf-8")
    out = tmp_path / "out"
    assert cli("convert", str(page_path), "-o", str(out)) == 0

    report = read_report(out)
    assert report["plan"]["book"]["title"] == "How Lanterns Work"
    assert [c["title"] for c in report["chapters"]] == list(SECTIONS)  # several headings: one chapter each
    served = server.served_inputs()
    sent = "\n".join(served)
    assert "NEVER-SPOKEN" not in sent and "Subscribe" not in sent and "tracking" not in sent
    assert "color" not in sent and "Home" not in sent
    for heading, sentence in SECTIONS.items():
        assert heading in served  # spoken as the chapter title
        assert sentence in sent
    assert len(list(out.glob("*.mp3"))) == len(SECTIONS)


# --------------------------------------------------------------------------------------------- hostile EPUBs


def corrupt_zip(path: Path) -> str:
    good = book_epub(path.with_name("good.epub")).read_bytes()
    path.write_bytes(good[: len(good) // 2])
    return "not an EPUB"


def drm(path: Path) -> str:
    book_epub(path)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(
            "META-INF/encryption.xml",
            '<?xml version="1.0"?><encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container" '
            'xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData>'
            '<enc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>'
            '<enc:CipherData><enc:CipherReference URI="OEBPS/c1.xhtml"/></enc:CipherData></enc:EncryptedData>'
            "</encryption>",
        )
    return "DRM"


SECRET = "TOP-SECRET-XXE-CONTENT-7731"


def xxe(path: Path) -> str:
    secret = path.with_name("secret.txt")
    secret.write_text(SECRET)
    doctype = f'<!DOCTYPE package [<!ENTITY xxe SYSTEM "file://{secret}">]>\n'
    manifest = [("c1", "c1.xhtml", XHTML, "")]
    write_epub(
        path,
        {
            "OEBPS/content.opf": package("&xxe;", AUTHOR, manifest, ["c1"], doctype=doctype),
            "OEBPS/c1.xhtml": page(f"<h1>One</h1>{para('Some text.')}"),
        },
    )
    return "entit"


def zip_bomb(path: Path) -> str:
    """A member whose central directory claims almost 4 GB: refused before anything is inflated."""
    book_epub(path)
    claim_huge_size(path, "OEBPS/c1.xhtml")
    return "zip bomb"


def deflate_bomb(path: Path) -> str:
    """20 MB of zeros that deflate to ~20 KB, declared honestly: refused by its compression ratio."""
    book_epub(path)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("OEBPS/padding.xhtml", bytes(20 * 1024 * 1024))
    return "zip bomb"


def climbing_member(path: Path) -> str:
    book_epub(path)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(zipfile.ZipInfo("../../evil.xhtml"), page("<p>evil</p>"))
    return "outside the book"


HOSTILE = {
    "corrupt zip": corrupt_zip,
    "DRM": drm,
    "XXE": xxe,
    "zip bomb (declared size)": zip_bomb,
    "zip bomb (ratio)": deflate_bomb,
    "member name climbing out": climbing_member,
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_epub_is_one_line_exit_2(kind: str, tmp_path: Path) -> None:
    book = tmp_path / "hostile.epub"
    word = HOSTILE[kind](book)
    before = files_under(tmp_path)
    out = tmp_path / "out"
    result = run_cli("convert", str(book), "-o", str(out), "--backend", "espeak", timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("audiobook: error: "), result.stderr
    assert "hostile.epub" in lines[0] and word.lower() in lines[0].lower(), lines[0]
    assert result.stdout == ""
    assert SECRET not in result.stderr
    assert files_under(tmp_path) == before  # no output folder, no extracted member anywhere
    assert not (tmp_path.parent / "evil.xhtml").exists()


def test_manifest_href_climbing_out_never_reads_outside_the_book(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "outside.xhtml"
    outside.write_text(page(f"<h1>Outside</h1>{para('OUTSIDE-THE-BOOK text that must never be read.')}"))
    manifest = [("c1", "c1.xhtml", XHTML, ""), ("x", "../../outside.xhtml", XHTML, "")]
    book = tmp_path / "inner" / "href.epub"
    book.parent.mkdir()
    write_epub(
        book,
        {
            "OEBPS/content.opf": package("Href", AUTHOR, manifest, ["c1", "x"]),
            "OEBPS/c1.xhtml": page(f"<h1>One</h1>{para('Inside text.')}"),
        },
    )
    code = cli("plan", str(book), "--json")
    captured = capsys.readouterr()
    assert "OUTSIDE-THE-BOOK" not in captured.out + captured.err
    if code == 0:
        assert [c["title"] for c in json.loads(captured.out)["chapters"]] == ["One"]
    else:
        assert code == 2 and len(captured.err.strip().splitlines()) == 1


def test_hostile_chapter_titles_make_safe_names_inside_the_output_folder(
    server: FakeSpeechServer, tmp_path: Path
) -> None:
    titles = ["../../etc/passwd", "CON", "..\\..\\windows\\win.ini"]
    book = book_epub(tmp_path / "book.epub", titles=titles, book_title="../../Evil Book")
    out = tmp_path / "out"
    before = files_under(tmp_path)
    assert cli("convert", str(book), "-o", str(out), "--m4b", "--subtitles", "srt") == 0

    created = files_under(tmp_path) - before
    assert created and all(p == out or out in p.parents for p in created)  # nothing written outside `out`
    assert all(p.parent in (out, out / "MP3") for p in created if p != out)  # and no subfolders but ours
    created -= {out / "MP3", out / "MP3" / ".ignore"}
    reserved = {"CON", "PRN", "AUX", "NUL", *(f"COM{n}" for n in range(1, 10)), *(f"LPT{n}" for n in range(1, 10))}
    for p in created - {out}:
        assert "/" not in p.name and "\\" not in p.name and ".." not in p.name and not p.name.startswith(".")
        assert p.name.split(".")[0].strip().upper() not in reserved, p.name
    report = read_report(out)
    assert [c["title"] for c in report["chapters"]] == titles  # the titles themselves are kept as data
    for c, title in zip(report["chapters"], titles, strict=True):
        path = out / c["file"]
        assert path.resolve().parent == (out / "MP3").resolve()
        assert ID3(path)["TIT2"].text == [title]
    (m3u,) = out.glob("MP3/*.m3u")
    assert all((m3u.parent / entry).resolve().parent == m3u.parent.resolve() for entry in playlist_entries(m3u))
    assert (out / report["m4b"]).resolve().parent == out.resolve()
    assert not Path("/etc/passwd.mp3").exists()
