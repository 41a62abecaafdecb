"""HTML reader: main text without page furniture, heading-split chapters, titles, encodings."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.readers.html import read_html

ARTICLE = """<!DOCTYPE html>
<html lang="en-GB"><head><meta charset="utf-8">
<title>How Rivers Shape Valleys | The Daily Example</title>
<meta name="author" content="Jane Doe">
<script>var tracking = "TRACKING-SCRIPT";</script>
<style>body { color: red } .STYLE-RULE {}</style>
</head><body>
<div id="cookie-banner" class="cookie-consent">We use cookies. COOKIE-BANNER accept?</div>
<header class="site-header"><nav><ul><li><a href="/">Home NAV-LINK</a></li><li><a href="/world">World</a></li>
<li><a href="/sport">Sport</a></li></ul></nav></header>
<main><article>
<h1>How Rivers Shape Valleys</h1>
<p class="byline">By Jane Doe, BYLINE</p>
<p>Rivers are patient sculptors. Over thousands of years they carve valleys through solid rock, carrying
away sand and pebbles grain by grain.</p>
<h2>Erosion</h2>
<p>Erosion happens when moving water picks up particles and drags them along the bed of the river,
scraping the rock beneath it.</p>
<p>The faster the water, the larger the stones it can move, which is why floods reshape a valley more in a day
than a calm year does.</p>
<h2>Deposition</h2>
<p>When the river slows down, on the inside of a bend or where it meets the sea, it drops what it carries and
builds banks and deltas.</p>
<h3>Deltas</h3>
<p>These deposits are fertile, which is why so many towns were built on the flood plains of great rivers.</p>
<h2>Meanders</h2>
<p>Over time a river on flat ground swings from side to side in loops called meanders, eroding the outside of
each bend and depositing on the inside.</p>
</article>
<section id="comments" class="comments"><h3>Comments</h3>
<div class="comment"><p>Great article, COMMENT-ONE first!</p></div>
<div class="comment"><p>Buy cheap watches at example.biz COMMENT-TWO</p></div></section>
</main>
<aside class="sidebar"><h3>Most read</h3>
<ul><li><a href="/a">Ten things about cats SIDEBAR</a></li></ul></aside>
<footer class="site-footer"><p>Copyright 2024 The Daily Example. FOOTER-TEXT</p></footer>
</body></html>
"""


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def test_article_with_sections_becomes_chapters_without_furniture(tmp_path: Path) -> None:
    book = read_html(write(tmp_path, "rivers.html", ARTICLE))
    assert book.title == "How Rivers Shape Valleys"
    assert book.author == "Jane Doe"
    assert book.language == "en"
    assert [c.title for c in book.chapters] == [
        "How Rivers Shape Valleys",
        "Erosion",
        "Deposition",
        "Meanders",
    ]
    assert book.chapters[0].paragraphs == (
        "Rivers are patient sculptors. Over thousands of years they carve valleys through solid rock, "
        "carrying away sand and pebbles grain by grain.",
    )
    assert len(book.chapters[1].paragraphs) == 2
    # A lower-level heading stays inside its chapter as text.
    assert book.chapters[2].paragraphs[1] == "Deltas"
    text = "\n".join(c.text for c in book.chapters)
    for noise in ("TRACKING", "STYLE-RULE", "COOKIE", "NAV-LINK", "BYLINE", "COMMENT", "SIDEBAR", "FOOTER"):
        assert noise not in text


def test_single_section_article_is_one_chapter_titled_by_the_page(tmp_path: Path) -> None:
    page = """<html><head><title>Why Cats Purr</title></head><body>
<div class="menu"><a href="/">Home</a> <a href="/pets">Pets</a></div>
<div class="content"><p>Cats purr when they are content, but also when they are hurt or frightened,
which puzzled scientists for a long time.</p>
<p>One theory holds that the vibration helps bones and tissue heal, a useful trick for an animal that rests
for most of the day.</p></div></body></html>"""
    book = read_html(write(tmp_path, "cats.html", page))
    assert book.title == "Why Cats Purr"
    assert [c.title for c in book.chapters] == ["Why Cats Purr"]
    assert book.chapters[0].paragraphs[0].startswith("Cats purr when they are content")
    assert len(book.chapters[0].paragraphs) == 2
    assert "Home" not in book.chapters[0].text
    assert book.author is None and book.language is None


def test_og_title_wins_over_a_decorated_page_title(tmp_path: Path) -> None:
    page = ARTICLE.replace(
        '<meta name="author"', '<meta property="og:title" content="Rivers, Explained"><meta name="a"'
    )
    book = read_html(write(tmp_path, "og.html", page))
    assert book.title == "Rivers, Explained"
    # No author named in a <meta>: the byline's ("By Jane Doe, ..."), as trafilatura reads it.
    assert book.author is not None and book.author.startswith("Jane Doe")


def test_gbk_chinese_page(tmp_path: Path) -> None:
    page = """<!DOCTYPE html>
<html lang="zh-CN"><head><meta http-equiv="Content-Type" content="text/html; charset=gbk">
<title>春天的故事</title></head><body>
<div class="nav"><a href="/">首页</a></div>
<article><h1>春天的故事</h1>
<p>春天来了，
小草从地下探出头来，
树枝上长出了嫩绿的叶子。</p>
<p>孩子们在田野里奔跑，放风筝，唱着欢快的歌，整个村庄都充满了笑声。</p>
</article></body></html>"""
    book = read_html(write(tmp_path, "spring.html", page.encode("gbk")))
    assert book.title == "春天的故事"
    assert book.language == "zh"
    assert [c.title for c in book.chapters] == ["春天的故事"]
    assert book.chapters[0].paragraphs == (
        "春天来了，小草从地下探出头来，树枝上长出了嫩绿的叶子。",
        "孩子们在田野里奔跑，放风筝，唱着欢快的歌，整个村庄都充满了笑声。",
    )


def test_utf8_bom_without_a_declared_charset(tmp_path: Path) -> None:
    page = "<html><head><title>Café</title></head><body><p>Crème brûlée for everyone.</p></body></html>"
    book = read_html(write(tmp_path, "bom.html", b"\xef\xbb\xbf" + page.encode("utf-8")))
    assert book.title == "Café"
    assert book.chapters[0].paragraphs == ("Crème brûlée for everyone.",)


def test_xhtml_with_an_xml_declaration(tmp_path: Path) -> None:
    page = (
        '<?xml version="1.0" encoding="iso-8859-1"?>\n<html xmlns="http://www.w3.org/1999/xhtml">'
        "<head><title>Na\u00efve</title></head><body><p>A na\u00efve page.</p></body></html>"
    )
    book = read_html(write(tmp_path, "latin.xhtml", page.encode("iso-8859-1")))
    assert book.title == "Naïve"
    assert book.chapters[0].paragraphs == ("A naïve page.",)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"   \n",
        b"<html><head><title>Nothing</title></head><body></body></html>",
        b"<html><body><nav><a href='/'>Home</a></nav><script>var x = 1;</script></body></html>",
    ],
)
def test_empty_pages_are_refused(tmp_path: Path, content: bytes) -> None:
    with pytest.raises(InputError) as info:
        read_html(write(tmp_path, "empty.html", content))
    assert "empty.html" in str(info.value)


def test_entity_declarations_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    page = f'<!DOCTYPE html [<!ENTITY x SYSTEM "file://{secret}">]><html><body><p>&x;</p></body></html>'
    with pytest.raises(InputError) as info:
        read_html(write(tmp_path, "xxe.html", page))
    assert "entities" in str(info.value) and "TOP-SECRET" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot be read"):
        read_html(tmp_path / "absent.html")


LANTERNS = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Lanterns | Example Site</title></head><body>
<header><nav><a href="/">Home</a></nav></header>
<main><article>
<h1>How Lanterns Work</h1>
<p>A lantern is a small fire kept safe from the wind, with glass or paper to let its light through.</p>
<h2>The Flame</h2>
<p>Oil climbs the wick by capillary action and burns at its tip, where it meets the air.</p>
<p>A taller wick gives a brighter flame but smokes and blackens the glass.</p>
<h2>The Glass</h2>
<p>The glass shields the flame from draughts while letting the heat escape through the top.</p>
<h2>The Handle</h2>
<p>A wire handle stays cool enough to hold because it sits away from the chimney.</p>
</article></main></body></html>
"""


def test_an_opening_h1_is_the_title_when_the_page_title_is_something_else(tmp_path: Path) -> None:
    book = read_html(write(tmp_path, "lanterns.html", LANTERNS))
    assert book.title == "How Lanterns Work"
    assert [c.title for c in book.chapters] == ["How Lanterns Work", "The Flame", "The Glass", "The Handle"]
    assert book.chapters[0].paragraphs == (
        "A lantern is a small fire kept safe from the wind, with glass or paper to let its light through.",
    )
    assert all("How Lanterns Work" not in c.text for c in book.chapters)


@pytest.mark.parametrize(
    ("page_title", "site", "expected"),
    [
        ("Lanterns | Example Site", "", "Lanterns"),
        ("Lanterns - Example Site", "Example Site", "Lanterns"),
        ("Lanterns – example.com", "", "Lanterns"),
        # Without evidence that the part after a dash is the site, it is part of the title.
        ("Chapter One - The Lantern", "", "Chapter One - The Lantern"),
        ("Spider-Man", "", "Spider-Man"),
        ("Cats | A Field Guide to the Birds of Town", "", "Cats | A Field Guide to the Birds of Town"),
    ],
)
def test_a_site_suffix_is_dropped_from_a_fallback_page_title(
    tmp_path: Path, page_title: str, site: str, expected: str
) -> None:
    meta = f'<meta property="og:site_name" content="{site}">' if site else ""
    page = (
        f"<html><head><title>{page_title}</title>{meta}</head><body>"
        "<p>A lantern is a small fire kept safe from the wind, with glass or paper to let its light through.</p>"
        "</body></html>"
    )
    book = read_html(write(tmp_path, "page.html", page))
    assert book.title == expected
    assert [c.title for c in book.chapters] == [expected]


# -- hostile structure: the whole text, or one clear error -----------------------------------------

# Three paragraphs long enough that readability keeps them as the article.
FIRST = "The keeper climbed the stairs at dusk, counting each step, trimming the wick, and lighting the lamp."
MIDDLE = "Ships passed in the night, their crews grateful for the beam that swept across the rocks below."
LAST = "At dawn he put out the flame, wrote the weather in his log, and slept until the afternoon bell."


def page_around(middle: str) -> str:
    """An article whose second paragraph sits inside ``middle`` (where "{}" is)."""
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>The Lighthouse</title></head><body><article>"
        f"<p>{FIRST}</p>" + middle.replace("{}", f"<p>{MIDDLE}</p>") + f"<p>{LAST}</p></article></body></html>"
    )


def read_whole(path: Path) -> None:
    book = read_html(path)
    assert [p for c in book.chapters for p in c.paragraphs] == [FIRST, MIDDLE, LAST]


def refused(path: Path, *words: str) -> str:
    with pytest.raises(InputError) as info:
        read_html(path)
    message = str(info.value)
    assert "\n" not in message and path.name in message, message
    for word in words:
        assert word.lower() in message.lower(), message
    return message


# html, body and article hold the divs, and the paragraph sits in the innermost: 252 divs make 256 levels.
@pytest.mark.parametrize("divs", [0, 1, 50, 252])
def test_nesting_up_to_the_limit_is_read_whole(tmp_path: Path, divs: int) -> None:
    read_whole(write(tmp_path, "nested.html", page_around("<div>" * divs + "{}" + "</div>" * divs)))


@pytest.mark.parametrize("divs", [253, 300, 100_000])
def test_nesting_beyond_the_limit_is_refused_not_cut_short(tmp_path: Path, divs: int) -> None:
    # libxml2 stops at 256 open elements; lxml's recovering HTML parser used to return what it had so far,
    # silently dropping the deep paragraph and everything after it (or all of it: "holds no readable text").
    path = write(tmp_path, "deep.html", page_around("<div>" * divs + "{}" + "</div>" * divs))
    refused(path, "nested more than 256 levels", "the limit is 256")


def test_a_text_over_ten_megabytes_is_refused_not_cut_short(tmp_path: Path) -> None:
    huge = " ".join(f"word{n % 1000}" for n in range(1_500_000))  # ~11 MB in one text node
    refused(write(tmp_path, "long.html", page_around(f"<pre>{huge}</pre>{{}}")), "10 MB")


def test_an_attribute_over_ten_megabytes_is_refused_not_cut_short(tmp_path: Path) -> None:
    huge = "x" * 11_000_000
    refused(write(tmp_path, "attr.html", page_around(f'<div title="{huge}">{{}}</div>')), "10 MB")


@pytest.mark.parametrize("end", ["</html>", "</body></html>", "</body>", "</BODY >\n</HTML>"])
def test_content_after_a_closing_html_tag_is_read(tmp_path: Path, end: str) -> None:
    # Browsers put it in the body; libxml2 dropped everything after </html> without a word.
    read_whole(write(tmp_path, "after.html", page_around(end + "{}")))


def test_a_stray_nul_byte_is_ignored_as_browsers_do(tmp_path: Path) -> None:
    page = page_around("{}").replace("keeper", "kee\x00per").replace("<meta charset='utf-8'>", "")
    read_whole(write(tmp_path, "nul.html", page.encode("utf-8")))


def test_a_broken_byte_halfway_through_a_utf8_page_costs_one_character(tmp_path: Path) -> None:
    data = page_around("{}").replace("<meta charset='utf-8'>", "").replace("grateful", "grate“ful").encode()
    data = data.replace("“".encode(), b"\x93")  # a cp1252 quote in a UTF-8 page
    book = read_html(write(tmp_path, "mixed.html", data))
    text = [p for c in book.chapters for p in c.paragraphs]
    assert text[0] == FIRST and text[2] == LAST
    assert text[1].startswith("Ships passed") and text[1].endswith("rocks below.")


@pytest.mark.parametrize(
    ("opening", "what"),
    [
        ("<script>var beam = 1;", "<script>"),
        ("<style>p { color: grey }", "<style>"),
        ("<!-- note to self", "comment"),
        ("<title>Logbook", "<title>"),
        ("<textarea>notes", "<textarea>"),
        ("<iframe>", "<iframe>"),
        ('<img alt="a lamp>', "attribute"),
        # The quote left open pairs with one that opens a later value: the text between becomes an attribute.
        ('<img alt="a lamp>{}<img alt="the lamp">', "attribute"),
        # The script left open ends at a later script's end tag: the text between becomes script.
        ("<script>var beam = 1;{}<script>var log = '<script>';</script>", "<script>"),
        # The comment left open ends at a later comment's end: the text between becomes comment.
        ("<!-- never closed {}<!-- an editor's <b>note</b> -->", "comment"),
    ],
)
def test_an_unclosed_construct_that_swallows_the_rest_is_refused(tmp_path: Path, opening: str, what: str) -> None:
    markup = opening if "{}" in opening else opening + "\n{}"
    message = refused(write(tmp_path, "open.html", page_around(markup)), what, "line 1", "never")
    assert "hide the" in message


@pytest.mark.parametrize(
    "opening",
    ['<nav class="menu"><a href="/">Home</a>', '<sup><a href="#n1">1</a>', '<span class="pagenum">12', "<svg>"],
)
def test_an_unclosed_element_that_is_never_read_cannot_hide_what_follows(tmp_path: Path, opening: str) -> None:
    name = opening[1:].split()[0].split(">")[0]
    refused(write(tmp_path, "hidden.html", page_around(opening + "{}")), f"<{name}>", "never closed")


@pytest.mark.parametrize(
    "markup",
    [
        "{}<script>if (a<b) { x = '</p>'; }</script><!-- a <b>comment</b> --><nav><p>Menu</p></nav>",
        '<span class="pagenum" id="p7"/>{}<script src="x.js"/>',  # XHTML's <tag/>: libxml2 closes it at once
        "<?php echo 1 \n{}",  # a processing instruction ends at the next ">", as in browsers
        """<div data-html="<b>bold</b>" title='a > b'>{}</div>""",  # markup in a value, quotes closed
        "{}<script>document.write('<script src=ad.js></scr' + 'ipt>');</script>",  # a tag inside a string
    ],
)
def test_closed_or_harmless_constructs_are_read_whole(tmp_path: Path, markup: str) -> None:
    read_whole(write(tmp_path, "closed.html", page_around(markup)))


def test_an_unclosed_marker_inside_a_paragraph_ends_with_it(tmp_path: Path) -> None:
    page = page_around("{}").replace("rocks below.</p>", "rocks below.<sup><a href='#n1'>1</a></p>")
    read_whole(write(tmp_path, "sup.html", page))


@pytest.mark.parametrize("tail", ["<!-- saved by", "<script>var", '<a href="/next', "<?php", "<div class=x"])
def test_a_file_ending_inside_an_unclosed_construct_is_refused(tmp_path: Path, tail: str) -> None:
    # Whatever follows the opening may be the document's own text: we cannot tell, so we do not guess.
    refused(write(tmp_path, "cut.html", page_around("{}") + tail), "never closed")


@pytest.mark.parametrize("tail", ["<!--  \n", "<script>", "</div"])
def test_a_file_ending_right_after_an_opening_loses_nothing(tmp_path: Path, tail: str) -> None:
    read_whole(write(tmp_path, "cut.html", page_around("{}") + tail))


# readability finds the article; what it then cleans away inside the article is still the article's text.
@pytest.mark.parametrize(
    "body",
    [
        # Text straight in the article, beside a div of paragraphs (readability picked the div).
        f"<article> {FIRST} <div><p>{MIDDLE}</p><p>{LAST}</p></div></article>",
        # Text straight in the body, no article element.
        f"{FIRST} <div><p>{MIDDLE}</p><p>{LAST}</p></div>",
        # Paragraphs behind inline wrappers, then more after them.
        f"<article><em><font><div><p>{FIRST}</p><p>{MIDDLE}</p></div></font></em><p>{LAST}</p></article>",
        # A short paragraph in a div of its own (readability dropped divs under 25 characters).
        f"<article><p>{FIRST}</p><div><p>He nodded.</p></div><p>{MIDDLE}</p><p>{LAST}</p></article>",
    ],
)
def test_readability_does_not_drop_text_inside_the_article(tmp_path: Path, body: str) -> None:
    page = f"<!DOCTYPE html><html><head><title>The Lighthouse</title></head><body>{body}</body></html>"
    text = [p for c in read_html(write(tmp_path, "loose.html", page)).chapters for p in c.paragraphs]
    assert [p for p in text if p != "He nodded."] == [FIRST, MIDDLE, LAST]
    assert ("He nodded." in text) == ("He nodded." in body)


def test_text_outside_the_article_stays_out_and_is_reported(tmp_path: Path) -> None:
    page = (
        "<html><head><title>The Lighthouse</title></head><body>"
        "<div><p>Subscribe to our weekly letter about coasts and the sea, it is free, and it is short.</p></div>"
        f"<article><p>{FIRST}</p><p>{MIDDLE}</p><p>{LAST}</p></article>"
        "<div><p>Other stories: the harbour master, a history of fog horns, ten lighthouses to visit.</p></div>"
        "</body></html>"
    )
    book = read_html(write(tmp_path, "furnished.html", page))
    assert [p for c in book.chapters for p in c.paragraphs] == [FIRST, MIDDLE, LAST]
    # Left out, but not unseen: the plan says how much of the page's text is not read, and how it starts.
    assert book.skipped == (
        "2 paragraphs outside the article (169 characters), from “Subscribe to our weekly letter about…”",
    )


def test_an_unclosed_element_that_took_in_bare_text_is_refused(tmp_path: Path) -> None:
    # No paragraph inside it, but more text than a note or page marker holds: it is the page's, not the svg's.
    page = page_around("{}").replace("</article>", "<svg> And then the fog lifted over the bay.</article>")
    refused(write(tmp_path, "svg.html", page), "<svg>", "never closed")
