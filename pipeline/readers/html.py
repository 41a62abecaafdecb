"""Saved web article -> ``Book``: the title and the main text, without navigation, scripts, banners, comments
and footers, and the page's author, site, date and description (``Book.info``).

Two extractors read the page and one reading is kept (``_prefer_readability``, measured by ``make bench``,
section articles): trafilatura (``readers/article.py``), and readability-lxml, which finds the main content
after obvious page furniture is removed, so its scoring is not fooled by a long comment thread or cookie notice,
and all of that part of the page is read. Lines portals put at an article's edges (editors, corrections,
copyright) are trimmed. The rest of the page's text is left out, and ``Book.skipped`` says how much, so a page
whose article was misjudged never loses text unseen; a page whose article holds almost none of its prose is
refused. Headings inside the article split it into chapters when there are several of one level."""

from __future__ import annotations

import copy
import logging
import re
from collections import Counter
from pathlib import Path

from lxml import etree
from readability import Document
from readability.readability import Unparseable

from pipeline.errors import InputError
from pipeline.models import Book, BookInfo, Chapter
from pipeline.readers.article import CAPTION_MAX_CHARS, drop_byline, drop_furniture, extract_article, trim_edges
from pipeline.readers.htmltext import (
    Block,
    extract_blocks,
    is_marker,
    parse_html,
    refuse_hidden_text,
    wrap_loose_text,
)
from pipeline.textfacts import decode_bytes, normalize_paragraph, primary_language

log = logging.getLogger("audiobook")

MAX_HTML_BYTES = 50 * 1024 * 1024

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_XML_ENCODING = re.compile(rb"""^\s*<\?xml[^>]+encoding\s*=\s*["']([A-Za-z0-9_.:-]+)""", re.IGNORECASE)

# Page furniture: tags that never hold the article; class/id words that mark banners, comments and the like.
_FURNITURE_TAGS = (
    "nav",
    "header",
    "footer",
    "aside",
    "form",
    "noscript",
    "script",
    "style",
    "iframe",
    "button",
)
_FURNITURE_ROLES = frozenset({"navigation", "banner", "contentinfo", "complementary", "search", "dialog"})
_FURNITURE_WORDS = frozenset(
    {
        "ad",
        "ads",
        "advert",
        "advertisement",
        "banner",
        "breadcrumb",
        "breadcrumbs",
        "byline",
        "comment",
        "comments",
        "consent",
        "cookie",
        "cookies",
        "disqus",
        "footer",
        "masthead",
        "menu",
        "modal",
        "nav",
        "navbar",
        "navigation",
        "newsletter",
        "pagination",
        "popup",
        "promo",
        "related",
        "share",
        "sharing",
        "sidebar",
        "social",
        "subscribe",
        "toolbar",
    }
)
_WORD_SPLIT = re.compile(r"[\s_-]+")


def _declared_charset(data: bytes) -> str | None:
    """The encoding a page names for itself in its XML declaration or a <meta> charset, if any."""
    head = data[:4096]
    declared = _XML_ENCODING.search(head) or _META_CHARSET.search(head)
    return declared.group(1).decode("ascii", "ignore") if declared else None


def _class_words(el: etree._Element) -> set[str]:
    """The words of an element's class and id ("article-body sidebar_left" -> article, body, sidebar, left)."""
    return set(_WORD_SPLIT.split(f"{el.get('class') or ''} {el.get('id') or ''}".lower()))


def _is_furniture(el: etree._Element) -> bool:
    tag = el.tag if isinstance(el.tag, str) else ""
    if tag in ("html", "body", "main", "article"):
        return False
    if tag in _FURNITURE_TAGS or (el.get("role") or "").lower() in _FURNITURE_ROLES:
        return True
    words = _class_words(el)
    if not words & _FURNITURE_WORDS:
        return False
    # A wrapper named "page-with-sidebar" may hold the article itself: keep anything that contains it.
    return not any(True for _ in el.iter("article", "main"))


def _strip_furniture(root: etree._Element, where: str) -> None:
    doomed = [el for el in root.iter() if isinstance(el.tag, str) and _is_furniture(el)]
    for el in doomed:
        parent = el.getparent()
        if parent is not None:
            refuse_hidden_text(el, where)
            el.drop_tree()


def _meta(root: etree._Element, *, name: str | None = None, prop: str | None = None) -> str | None:
    for el in root.iter("meta"):
        if (name and (el.get("name") or "").lower() == name) or (prop and (el.get("property") or "") == prop):
            value = normalize_paragraph(el.get("content") or "")
            if value:
                return value
    return None


def _first_text(root: etree._Element, tag: str) -> str | None:
    for el in root.iter(tag):
        text = normalize_paragraph(el.text_content()) if hasattr(el, "text_content") else ""
        if text:
            return text
    return None


def _key(text: str) -> str:
    return "".join(c for c in text.casefold() if c.isalnum())


_SITE_SEPARATOR = re.compile(r"\s+(\||-|–|—|::|·|•)\s+")
_DOMAIN = re.compile(r"(?:[a-z0-9-]+\.)+[a-z]{2,6}")
_SITE_MAX_WORDS = 5


def _without_site_suffix(page: str, site: str | None) -> str:
    """A page title without its site: "Lanterns | Example Site" -> "Lanterns". Only when the last part is
    clearly the site: the page names its site so, or the part is a domain, or it is short and set off by "|"
    (a dash may be the title's own: "Chapter One - The Lantern")."""
    parts = _SITE_SEPARATOR.split(page)
    if len(parts) < 3:
        return page
    head, separator, suffix = "".join(parts[:-2]), parts[-2], parts[-1]
    if not any(c.isalnum() for c in head):
        return page
    named = bool(site and _key(site) and _key(site) == _key(suffix))
    short_pipe = separator == "|" and len(suffix.split()) <= _SITE_MAX_WORDS
    return head if named or short_pipe or _DOMAIN.fullmatch(suffix) else page


def _opening_h1(blocks: list[Block]) -> str | None:
    """The article's own heading: an h1 that opens the text and is its only one."""
    if blocks and blocks[0].heading == 1 and sum(b.heading == 1 for b in blocks) == 1:
        return blocks[0].text
    return None


def _title(root: etree._Element, blocks: list[Block], fallback: str) -> str:
    """og:title is the article's own name; <title> often carries " | Site"; the first h1 is the article's
    heading. Prefer og:title, then the h1 when <title> contains it, then a single h1 opening the article,
    then <title> without its site suffix, then the h1."""
    og = _meta(root, prop="og:title")
    if og:
        return og
    page = _first_text(root, "title")
    h1 = _first_text(root, "h1")
    if page and h1 and _key(h1) and _key(h1) in _key(page):
        return h1
    opening = _opening_h1(blocks)
    if opening:
        return opening
    if page:
        return _without_site_suffix(page, _meta(root, prop="og:site_name") or _meta(root, name="application-name"))
    return h1 or fallback


def _language(root: etree._Element) -> str | None:
    lang = root.get("lang") or root.get("{http://www.w3.org/XML/1998/namespace}lang")
    if not lang:
        lang = _meta(root, name="language") or next(
            (
                el.get("content")
                for el in root.iter("meta")
                if (el.get("http-equiv") or "").lower() == "content-language"
            ),
            None,
        )
    return primary_language(lang)


_NODE = "data-audiobook-node"  # numbers our elements, so readability's pick can be found in our tree


def _region(picked: list[etree._Element]) -> etree._Element:
    """The smallest element that holds everything readability picked, widened to the outermost <article> or
    <main> it sits in: the page's own word for where its text is."""
    region = picked[0]
    for el in picked[1:]:
        while region is not el and not any(a is region for a in el.iterancestors()):
            parent = region.getparent()
            if parent is None:
                break
            region = parent
    semantic = [a for a in (region, *region.iterancestors()) if a.tag in ("article", "main")]
    if semantic:
        return semantic[-1]
    return _cell(region, picked) if region.tag == "tr" else region


def _cell(row: etree._Element, picked: list[etree._Element]) -> etree._Element:
    """Of a table row readability picked, the cell that holds most of what it kept: a row of a page laid out in
    a table is columns side by side, the article in one and a sidebar in the next."""
    weight: Counter[int] = Counter()
    cells = [c for c in row if c.tag in ("td", "th")]
    for el in picked:
        own = len("".join([el.text or "", *(c.tail or "" for c in el)]).strip())
        for n, cell in enumerate(cells):
            if el is cell or any(a is cell for a in el.iterancestors()):
                weight[n] += own
    if not weight:
        return row
    n, most = weight.most_common(1)[0]
    return cells[n] if most * 2 > weight.total() else row


def _prose_blocks(el: etree._Element, where: str) -> list[Block]:
    """The blocks of ``el`` outside links, menus, forms and the page's frame (see ``page_prose``)."""
    el = copy.deepcopy(el)
    for inner in list(el.iter(*_NOT_PROSE)):
        if inner.getparent() is not None:
            inner.drop_tree()
    return list(extract_blocks(el, where).blocks)


def _longer_passage_left_out(page: etree._Element, blocks: list[Block], where: str) -> Block | None:
    """The longest passage of the page's prose left out of the article, when it is longer than every paragraph
    of the article twice over, and than four prose lines: the sign of an article found in part."""
    # A passage is left out when most of its words are not the article's (extractors set quotes and spaces
    # apart differently, so the same paragraph is not always the same string).
    kept = _words(blocks)
    longest = max((_tokens(b.text) for b in blocks), default=0)
    left = [b for b in _prose_blocks(page, where) if (_words([b]) & kept).total() * 2 < _tokens(b.text)]
    passage = max(left, key=lambda b: _tokens(b.text), default=None)
    if passage is None or _tokens(passage.text) <= max(2 * longest, 4 * _PROSE_WORDS):
        return None
    return passage


def _widened(region: etree._Element, where: str) -> etree._Element:
    """The region readability picked, widened to the element around it (up to three levels) while that adds a
    passage of prose longer than any of the region's paragraphs: readability can pick a long table or list and
    leave the article's running text beside it (a notice whose terms follow its prose in a table). A comment
    thread is many short paragraphs, so it never widens the region."""
    for _ in range(3):
        parent = region.getparent()
        if parent is None or parent.tag in ("body", "html"):
            break
        inside = Counter(b.text for b in _prose_blocks(region, where))
        longest = max((_tokens(t) for t in inside), default=0)
        added = [b for b in _prose_blocks(parent, where) if not inside[b.text]]
        longer = max((_tokens(b.text) for b in added), default=0)
        if longer <= longest or longer < 4 * _PROSE_WORDS:
            break
        region = parent
    return region


_CJK_COMMAS = str.maketrans({"，": ",", "、": ",", "﹐": ",", "､": ","})


def _for_readability(root: etree._Element) -> etree._Element:
    """A copy of the page for readability to judge. readability scores a paragraph by its ASCII commas; Chinese
    and Japanese write "，" and "、", so their paragraphs scored as if comma-less and a short reply with ASCII commas
    outscored the post above it. Only the copy is changed: what is read comes from our own tree."""
    page = copy.deepcopy(root)
    for el in page.iter():
        if isinstance(el.text, str):
            el.text = el.text.translate(_CJK_COMMAS)
        if isinstance(el.tail, str):
            el.tail = el.tail.translate(_CJK_COMMAS)
    return page


def _main_blocks(root: etree._Element, where: str) -> tuple[list[Block], list[Block]]:
    """The article's blocks, and the page's other blocks, left out. readability finds where the article is; we
    read all of that part of the page, because what readability then cleans away inside it (short paragraphs,
    text beside paragraphs, lists) is the article's text too. Without a pick from readability: the whole
    cleaned page."""
    cleaned = copy.deepcopy(root)
    _strip_furniture(cleaned, where)
    wrap_loose_text(cleaned)
    nodes: dict[str, etree._Element] = {}
    for n, el in enumerate(cleaned.iter()):
        if isinstance(el.tag, str):
            el.set(_NODE, str(n))
            nodes[str(n)] = el
    fallback = list(extract_blocks(cleaned, where).blocks)
    try:
        summary = Document(_for_readability(cleaned)).summary(html_partial=True)
        # readability's wrappers can take a page at the depth limit past it: then the whole page it is.
        chosen = parse_html(summary, where) if summary.strip() else None
    except (Unparseable, ValueError, etree.LxmlError, InputError):
        return fallback, []
    if chosen is None:
        return fallback, []
    # Only the elements readability kept with their text: wrappers it made have no number.
    picked = [
        nodes[el.get(_NODE, "")]
        for el in chosen.iter()
        if el.get(_NODE) in nodes and any(c.isalnum() for c in "".join(el.itertext()))
    ]
    blocks = list(extract_blocks(_widened(_region(picked), where), where).blocks) if picked else []
    if not blocks:
        return fallback, []
    kept = Counter(blocks)
    left_out = []
    for block in fallback:
        if kept[block]:
            kept[block] -= 1
        else:
            left_out.append(block)
    return blocks, left_out


def _left_out(blocks: list[Block]) -> str | None:
    """What the plan says about the page's text outside the article: how much, and how it starts."""
    if not blocks:
        return None
    chars = sum(len(b.text) for b in blocks)
    first = blocks[0].text if len(blocks[0].text) <= 40 else blocks[0].text[:40].rsplit(" ", 1)[0] + "…"
    count = f"{len(blocks)} paragraph{'s' if len(blocks) > 1 else ''}"
    return f"{count} outside the article ({chars} characters), from “{first}”"


def _split(blocks: list[Block], title: str) -> list[tuple[str, list[Block]]]:
    """Chapters at the highest heading level (h1-h3) that occurs at least twice; else one chapter."""
    # The article's own heading is spoken as the title: drop it where it opens the text.
    while blocks and blocks[0].heading and _key(blocks[0].text) and _key(blocks[0].text) in _key(title):
        blocks = blocks[1:]
    levels = [b.heading for b in blocks if 1 <= b.heading <= 3]
    level = next((lv for lv in (1, 2, 3) if levels.count(lv) >= 2), None)
    if level is None:
        return [(title, blocks)] if blocks else []
    chapters: list[tuple[str, list[Block]]] = [(title, [])]
    for block in blocks:
        if block.heading == level:
            chapters.append((block.text, []))
        else:
            chapters[-1][1].append(block)
    return [(t, b) for t, b in chapters if b]


def _without_stray_nuls(data: bytes) -> bytes:
    """HTML ignores NUL characters in text. A few (up to 1 % of the bytes) in an 8-bit or UTF-8 page are damage,
    not a sign of binary data: drop them. More (UTF-16 without a byte-order mark, where ASCII markup alone makes
    a third of the bytes NUL, or binary) are left for decode_bytes to judge."""
    nuls = data.count(0)
    if not nuls or nuls * 100 > len(data) or data.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")):
        return data
    return data.replace(b"\x00", b"")


def _load(path: Path) -> etree._Element:
    where = path.name
    try:
        size = path.stat().st_size
        if size > MAX_HTML_BYTES:
            raise InputError(f"{where}: {size // 2**20} MB is too large for a web page; refusing it")
        data = _without_stray_nuls(path.read_bytes())
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return parse_html(decode_bytes(data, where, _declared_charset(data)), where)


def _left_out_of(article: list[Block], page: list[Block]) -> list[Block]:
    kept = Counter(b.text for b in article)
    left_out = []
    for block in page:
        if kept[block.text]:
            kept[block.text] -= 1
        else:
            left_out.append(block)
    return left_out


def read_html(path: Path, url: str | None = None, *, method: str = "auto") -> Book:
    """Read a saved web page: its title, author, site, date, language and main text. ``url`` is where it came
    from, when it was fetched. ``method``: "auto" (trafilatura, or readability where it reads more), or
    "trafilatura" or "readability" alone (the benchmark compares them). Raises InputError when the page cannot
    be read, holds no text, or its article was not found."""
    return _read(path, url, method)


# trafilatura reads most pages better than readability (make bench, section articles) but on some, Chinese
# portals above all, it keeps a fraction of the article: then readability's reading, when it holds twice as much.
_TRAFILATURA_SHARE = 0.5
# A page whose article holds under this share of the page's prose is refused: the article was not found.
TOO_LITTLE = 0.05
_CHECK_SHARE = 0.2  # under this share, the plan and the log say the article may be only part of it
_PROSE_WORDS = 20  # a block of the page counts as prose from this many words (CJK: twice as many characters)
_PROSE_MIN = 200  # pages with less prose than this are too short to judge


def _tokens(text: str) -> int:
    return len(_WORDS.findall(text))


_WORDS = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]|[^\W_]+")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]")
# Never prose: links (menus, lists of other stories), the page's frame, forms, and what is never spoken.
_NOT_PROSE = (
    *("a", "nav", "header", "footer", "aside", "button", "select", "option", "label", "form", "textarea"),
    *("script", "style", "noscript", "template", "svg", "iframe", "object", "title", "head"),
)


def _unfurnished(root: etree._Element, where: str) -> etree._Element:
    page = copy.deepcopy(root)
    _strip_furniture(page, where)
    return page


def page_prose(root: etree._Element, where: str) -> int:
    """Words (CJK: characters) of the page's prose as a visitor sees it: its paragraphs of some length, without
    links, menus, forms, headers and footers. What an article is measured against."""
    page = copy.deepcopy(root)
    for el in list(page.iter(*_NOT_PROSE)):
        if el.getparent() is not None:
            el.drop_tree()
    total = 0
    for block in extract_blocks(page, where).blocks:
        n = _tokens(block.text)
        cjk = len(_CJK.findall(block.text))
        if n >= (_PROSE_WORDS * 2 if cjk * 2 > n else _PROSE_WORDS):
            total += n
    return total


def _prepared(root: etree._Element, where: str) -> etree._Element:
    """A copy of the page for trafilatura with what we never speak already gone (note references, page
    numbers: refused when left open around text, as everywhere) and loose text in paragraphs of its own."""
    page = copy.deepcopy(root)
    for el in [el for el in page.iter() if isinstance(el.tag, str) and is_marker(el)]:
        if el.getparent() is not None:
            refuse_hidden_text(el, where)
            el.drop_tree()
    _drop_captions(page, where)
    wrap_loose_text(page)
    return page


def _drop_captions(root: etree._Element, where: str) -> None:
    """A picture's caption and credit are not the article's text (read aloud, they break its sentences): the
    <figcaption>, and short elements a page names for them."""
    for el in [el for el in root.iter() if isinstance(el.tag, str) and _is_caption(el)]:
        if el.getparent() is not None:
            refuse_hidden_text(el, where)
            el.drop_tree()


_CAPTION_WORDS = frozenset({"caption", "figcaption", "credit", "credits"})


def _is_caption(el: etree._Element) -> bool:
    if el.tag == "figcaption":
        return True
    words = _class_words(el)
    # "newsCaption", "captionText", "wp-caption-text": a caption by any compound name.
    if not words & _CAPTION_WORDS and not any("caption" in w for w in words):
        return False
    return len("".join(el.itertext())) <= CAPTION_MAX_CHARS


def _words(blocks: list[Block]) -> Counter[str]:
    return Counter(w.lower() for b in blocks for w in _WORDS.findall(b.text))


def _is_cjk(words: Counter[str]) -> bool:
    return sum(n for w, n in words.items() if _CJK.fullmatch(w)) * 2 > words.total()


def _prefer_readability(trafilatura: list[Block], readability: list[Block]) -> bool:
    """Whether readability's reading of a page is the one to read: trafilatura found nothing, or under half of
    readability's words, or a few words where readability found none (page furniture), or the page flattened into
    one paragraph (its last resort on small pages) where readability kept several, or the same words as
    readability in other paragraphs (readability keeps the page's own). On a Chinese or Japanese page, readability
    unless it found nothing or under half of trafilatura's words: trafilatura's measures of text are made for
    words between spaces, and it misses most of such pages' articles (make bench, section articles)."""
    ours, theirs = _words(trafilatura), _words(readability)
    if not readability:  # readability found nothing, or took the whole page for furniture
        return ours.total() < _PROSE_WORDS
    if not trafilatura:
        return True
    if _is_cjk(ours + theirs):
        return theirs.total() >= _TRAFILATURA_SHARE * ours.total()
    if ours.total() < _TRAFILATURA_SHARE * theirs.total():
        return True
    if len(trafilatura) == 1 and len(readability) > 1:
        return True
    common = (ours & theirs).total()
    return common >= 0.95 * ours.total() and common >= 0.95 * theirs.total() and len(readability) > len(trafilatura)


_LINKED = "\u01c0"  # a letter no page writes, standing for a letter of a link's text


def _link_shares(root: etree._Element, where: str) -> dict[str, float]:
    """For each block of the page (by its words, see ``_key``): the share of its letters that are a link's text.
    Found by reading the page twice, once with every letter inside a link replaced by one mark."""
    marked = copy.deepcopy(root)
    for a in marked.iter("a"):
        for node in a.iter():
            if isinstance(node.tag, str) and node.text:
                node.text = "".join(_LINKED if c.isalnum() else c for c in node.text)
            if node is not a and node.tail:
                node.tail = "".join(_LINKED if c.isalnum() else c for c in node.tail)
    plain = extract_blocks(root, where).blocks
    linked = extract_blocks(marked, where).blocks
    if len(plain) != len(linked):
        return {}
    shares: dict[str, float] = {}
    for block, mask in zip(plain, linked, strict=True):
        letters = sum(c.isalnum() for c in mask.text)
        share = mask.text.count(_LINKED) / letters if letters else 0.0
        # The same words as a link in one place and as prose in another (a title in a list of stories): prose.
        key = _key(block.text)
        shares[key] = min(share, shares.get(key, share))
    return shares


# A block this much of whose letters are links' text is a list of links (a menu, other stories' titles, "Get
# short URL"), not the article's prose: left out of either reading. Unless that would leave out most of the
# reading: then the page is mostly links and the reading is kept as it is (the share check judges it).
_LINK_LIST_SHARE = 0.8


def _is_link_list(block: Block, shares: dict[str, float]) -> bool:
    return shares.get(_key(block.text), 0.0) >= _LINK_LIST_SHARE


def _without_link_lists(blocks: list[Block], shares: dict[str, float]) -> tuple[list[Block], list[Block]]:
    """The article without its blocks that are lists of links, and those blocks."""
    kept = [b for b in blocks if not _is_link_list(b, shares)]
    dropped = [b for b in blocks if _is_link_list(b, shares)]
    if sum(_tokens(b.text) for b in dropped) > sum(_tokens(b.text) for b in kept):
        return blocks, []
    return kept, dropped


def _shingles(text: str) -> set[tuple[str, ...]]:
    """The runs of three words (CJK: characters) of ``text``: two readings hold the same paragraph when they share
    most of its runs, however each spaced and split it."""
    words = [w.lower() for w in _WORDS.findall(text)]
    return {tuple(words[i : i + 3]) for i in range(max(1, len(words) - 2))} if words else set()


_HOLE_WORDS = 8  # a paragraph trafilatura dropped between two it kept is read back from this many words
_SENTENCE_ENDS = (".", "!", "?", "。", "！", "？", '"', "”", "'", "’", ")")


def _holes_filled(page: etree._Element, blocks: list[Block]) -> list[Block]:
    """trafilatura's reading with the paragraphs it dropped from the middle of a run it kept put back: a <p> of
    prose whose nearest neighbours with text, before and after, are paragraphs it kept (trafilatura drops some
    paragraphs that hold a link; a caption or an ad slot is never a <p> between two of the article's)."""
    held = set().union(*(_shingles(b.text) for b in blocks)) if blocks else set()

    def kept(el: etree._Element) -> bool:
        runs = _shingles(" ".join(el.itertext()))
        return bool(runs) and len(runs & held) * 2 >= len(runs)

    def neighbour(el: etree._Element, before: bool) -> etree._Element | None:
        node = el.getprevious() if before else el.getnext()
        while node is not None and not (isinstance(node.tag, str) and "".join(node.itertext()).strip()):
            node = node.getprevious() if before else node.getnext()
        return node

    out = list(blocks)
    for p in page.iter("p"):
        text = normalize_paragraph(" ".join(p.itertext()))
        if _tokens(text) < _HOLE_WORDS or not text.endswith(_SENTENCE_ENDS) or kept(p):
            continue
        sides = (neighbour(p, before=True), neighbour(p, before=False))
        if not all(side is not None and side.tag == "p" and kept(side) for side in sides):
            continue
        runs = _shingles(" ".join(sides[0].itertext()))  # type: ignore[union-attr]
        at = max(range(len(out)), key=lambda k: len(_shingles(out[k].text) & runs))
        out.insert(at + 1, Block(text))
    return out


# Posts from social networks an article embeds as its quotations: the networks' own markup for them.
_EMBEDDED_POST = re.compile(r"twitter-tweet|instagram-media|tiktok-embed|bluesky-embed|mastodon-embed|reddit-embed")
_URL_TEXT = re.compile(r"(?:https?://|pic\.twitter\.com/|www\.)\S*")


def _unwrap_embedded_posts(root: etree._Element) -> None:
    """An embedded post (a tweet the article quotes) becomes a plain quotation: both extractors drop it with the
    wrapper a page gives it ("social-media-embed", "article-tweet"), and the post is the article's text, quoted.
    Its links that are only a web address ("pic.twitter.com/…") are not spoken."""
    for post in [el for el in root.iter("blockquote") if _EMBEDDED_POST.search(el.get("class") or "")]:
        for link in [a for a in post.iter("a") if _URL_TEXT.fullmatch("".join(a.itertext()).strip())]:
            link.drop_tree()  # keeps the text after it
        post.attrib.clear()
        # Up through the wrappers that hold nothing but the post, to the first that holds more.
        outer = post
        while (parent := outer.getparent()) is not None and parent.tag not in ("body", "html", "article", "main"):
            if "".join(parent.itertext()).strip() != "".join(outer.itertext()).strip():
                break
            outer = parent
        if outer is not post:
            outer.addnext(post)  # moves the post out, with its tail
            post.tail, outer.tail = outer.tail, None
            outer.getparent().remove(outer)


_CARD_MAX_CHARS = 1000


def _drop_hover_cards(root: etree._Element, where: str) -> None:
    """A card a page shows when the pointer rests on a name inside a sentence (a picture, the person's name again,
    their latest stories as links) is not the sentence: an inline element inside a paragraph that holds a
    picture and two links or more. Read, it runs into the sentence ("Gov. Kristi NoemKristi Lynn NoemSouth
    Dakota governor doubles down…")."""

    def holds_card(el: etree._Element) -> bool:
        return el.find(".//img") is not None and len(el.findall(".//a")) >= 2

    for p in root.iter("p"):
        # The innermost such element only: the span around the name and its card (the name stays), or a span
        # around the whole sentence, holds a card but is not one.
        cards = [
            el
            for el in p.iter("span")
            if holds_card(el) and not any(holds_card(c) for c in el.iter("span") if c is not el)
        ]
        for card in cards:
            # A span left open around the rest of the page is not a card: it stays, as the guard wants.
            if card.getparent() is None or len("".join(card.itertext())) > _CARD_MAX_CHARS:
                continue
            try:
                refuse_hidden_text(card, where)
            except InputError:
                continue
            card.drop_tree()


_STANDFIRST_WORDS = frozenset({"standfirst", "dek"})  # not "deck": Bootstrap's "card-deck" is a row of cards
_STANDFIRST_MAX_CHARS = 400


def _take_standfirst(root: etree._Element, where: str) -> str | None:
    """The standfirst under the headline (the page marks it as its description, itemprop="description", or names
    it "standfirst", "dek"), taken out of the page: it is the book's description in the tags and the feed, and
    the article's first paragraph says it again. Its text, or None."""
    found = None
    for el in [el for el in root.iter() if isinstance(el.tag, str) and el.tag not in ("meta", "link")]:
        words = _class_words(el)
        if (el.get("itemprop") or "").lower() != "description" and not words & _STANDFIRST_WORDS:
            continue
        text = normalize_paragraph(" ".join(el.itertext()))
        if el.getparent() is None or not text or len(text) > _STANDFIRST_MAX_CHARS:
            continue
        try:
            refuse_hidden_text(el, where)
        except InputError:
            continue
        found = found or text
        el.drop_tree()
    return found


def _read(path: Path, url: str | None, method: str) -> Book:
    where = path.name
    root = _load(path)
    _unwrap_embedded_posts(root)
    _drop_hover_cards(root, where)
    # The standfirst is taken out only where the page has prose without it (a video's page may have no other).
    without = copy.deepcopy(root)
    standfirst = _take_standfirst(without, where)
    if standfirst and page_prose(without, where) >= _PROSE_WORDS:
        root = without
    article = extract_article(_prepared(root, where), url) if method in ("auto", "trafilatura") else None
    blocks = list(article.blocks) if article is not None else []
    page = _unfurnished(root, where)  # the page without its frame: read here, never changed
    page_blocks = list(extract_blocks(page, where).blocks) if article is not None else []
    left_out = _left_out_of(blocks, page_blocks)
    shares = _link_shares(page, where)
    blocks, links = _without_link_lists(blocks, shares)
    if method in ("auto", "readability"):
        other, other_left_out = _main_blocks(root, where)
        other, other_links = _without_link_lists(other, shares)
        # Judged by its prose: a reading kept whole because it is mostly links does not outweigh by its lists.
        readable = [b for b in other if not _is_link_list(b, shares)]
        if _prefer_readability(blocks, readable):
            # The page's metadata as trafilatura read it is kept.
            blocks, left_out, links = other, other_left_out, other_links
        elif method == "auto":
            blocks = _holes_filled(page, blocks)
    blocks, edges = trim_edges(blocks)
    edges += links
    blocks, furniture = drop_furniture(blocks)
    blocks, byline = drop_byline(blocks, _meta(root, name="author") or (article.author if article else None))
    edges += furniture + byline
    title = _title(root, blocks, path.stem)
    chapters = [
        Chapter(n, chapter_title, tuple(b.text for b in chapter_blocks))
        for n, (chapter_title, chapter_blocks) in enumerate(_split(blocks, title), start=1)
    ]
    if not chapters:
        raise InputError(f"{where}: the page holds no readable text; check that it is the saved article")
    got, prose = sum(_tokens(b.text) for b in blocks), page_prose(root, where)
    share = got / prose if prose >= _PROSE_MIN else 1.0
    unit = "characters" if len(_CJK.findall(" ".join(b.text for b in blocks))) * 2 > got else "words"
    if share < TOO_LITTLE:
        raise InputError(
            f"{where}: the article found holds {got} {unit} of the page's {prose}, so it is not the article; "
            "save the article's own page (or its printable version) and give that"
        )
    notes = [_left_out(left_out + edges)]
    if share < _CHECK_SHARE:  # a short post under long comments, or an article found in part: say so
        notes.append(f"the article found is {share:.0%} of the page's prose ({got} of {prose} {unit}): check it")
        log.warning("%s: %s", where, notes[-1])
    elif passage := _longer_passage_left_out(page, blocks, where):
        # A long table or list can outweigh the page's prose while the article's running text is left out.
        notes.append(
            f"a passage of the page's prose twice as long as any of the article's paragraphs was left out "
            f"({_tokens(passage.text)} {unit}, from “{passage.text[:40]}…”): check it"
        )
        log.warning("%s: %s", where, notes[-1])
    site = _meta(root, prop="og:site_name") or (article.site if article else None)
    return Book(
        title=title,
        chapters=tuple(chapters),
        author=_meta(root, name="author") or (article.author if article else None),
        language=_language(root),
        source=path,
        skipped=tuple(filter(None, notes)),
        info=BookInfo(
            description=_meta(root, name="description") or standfirst or (article.description if article else None),
            date=article.date if article else None,
            site=site,
            url=url or (article.url if article else None) or _meta(root, prop="og:url"),
        ),
    )
