"""A web page's article by trafilatura: its main text as blocks (paragraphs and headings), without navigation,
comments, share bars and footers, and what the page says about itself (title, author, site, date,
description).

trafilatura is given the tree our own parser made (``htmltext.parse_html``: entities refused, libxml2's limits
kept, the hidden-text guard run), so it never parses the page itself. It does not run our checks on what it
drops, so the HTML reader compares what it kept with the page's visible text (``html.read_html``)."""

from __future__ import annotations

import copy
import logging
import re
from dataclasses import dataclass

from lxml import etree

from pipeline.readers.htmltext import Block
from pipeline.textfacts import normalize_paragraph


@dataclass(frozen=True)
class Article:
    blocks: tuple[Block, ...]
    title: str | None = None
    author: str | None = None
    site: str | None = None
    date: str | None = None
    description: str | None = None
    url: str | None = None


# trafilatura's output elements that make a block of their own; "head" is a heading (rend="h2").
_BLOCKS = frozenset({"p", "head", "quote", "item", "code", "row", "cell", "list", "table"})


def _text(el: etree._Element) -> str:
    # <lb/> is a line break inside a paragraph: a space when spoken.
    parts: list[str] = []
    for node in el.iter():
        if node is not el and node.tag == "lb":
            parts.append(" ")
        elif node.text and (node is el or node.tag not in _BLOCKS):
            parts.append(node.text)
        if node is not el and node.tail:
            parts.append(node.tail)
    return normalize_paragraph("".join(parts))


def _blocks(body: etree._Element) -> list[Block]:
    found: list[Block] = []
    for el in body:
        tag = el.tag if isinstance(el.tag, str) else ""
        if tag == "list":
            found += [b for item in el.iter("item") if (b := _block(item, 0))]
        elif tag == "table":
            for row in el.iter("row"):
                cells = [_text(c) for c in row.iter("cell")]
                text = normalize_paragraph(" ".join(c for c in cells if c))
                if any(ch.isalnum() for ch in text):
                    found.append(Block(text))
        elif tag in _BLOCKS or tag in ("div", "section"):
            if tag in ("div", "section") or (tag == "quote" and _holds_blocks(el)):
                # A quotation of several paragraphs (<quote><p>…</p></quote>): each is a block of its own.
                if tag == "quote" and (lead := normalize_paragraph(el.text or "")):
                    found.append(Block(lead))
                found += _blocks(el)
            elif block := _block(el, _heading_level(el) if tag == "head" else 0):
                found.append(block)
    return found


def _holds_blocks(el: etree._Element) -> bool:
    return any(isinstance(c.tag, str) and c.tag in _BLOCKS for c in el)


def _block(el: etree._Element, heading: int) -> Block | None:
    text = _text(el)
    return Block(text, heading) if any(c.isalnum() for c in text) else None


def _heading_level(el: etree._Element) -> int:
    rend = (el.get("rend") or "").lower()
    return int(rend[1]) if len(rend) == 2 and rend[0] == "h" and rend[1] in "123456" else 2


# Lines a page puts around its article, not of it: editors, sources, corrections, share bars, copyright
# (Chinese portals end nearly every article with "【纠错】 责任编辑：…"). Only short blocks at the article's edges
# are judged, so a sentence that mentions an editor is never touched.
_EDGE_LINE = re.compile(
    r"责任编辑|【?纠错】?|^图集|^\+?\d+$|^\s*[（(\[【]?\s*(?:编辑|责编|校对|审核|来源|作者|记者|出处|原标题)\s*[:：]"
    r"|版权所有|版权声明|转载请注明|分享到|扫一扫|打印本页|关闭窗口|【字号|^字号|^\s*\d{4}[-年/.]\d{1,2}[-月/.]\d{1,2}"
    r"|^(?:share|share this|advertisement|related|related articles|read more|follow us|sign up|subscribe)\b"
    r"|all rights reserved|^copyright\b|^©|^\(?(?:editing|reporting|edited|writing) by\b",
    re.IGNORECASE,
)
_EDGE_MAX_CHARS = 80


# A disclaimer closing the article is the site's, however long ("Disclaimer: The views … are their own").
_DISCLAIMER = re.compile(r"\s*(?:disclaimer|免责声明|免責聲明)\s*[:：]", re.IGNORECASE)


def _is_edge_furniture(block: Block) -> bool:
    if _DISCLAIMER.match(block.text):
        return True
    return len(block.text) <= _EDGE_MAX_CHARS and _EDGE_LINE.search(block.text) is not None


# Whole short blocks that are a page's furniture wherever they stand in the article: ad slots, gallery controls,
# photo credits, "updated" stamps, comment counters, newsletter and subscription prompts, "follow her on
# Twitter", wire-service credits, a dateline that is only a date, a class name leaked as text. Each must be the
# WHOLE block (and short), so a sentence that merely mentions a newsletter or a photo is never touched.
_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
_FURNITURE = re.compile(
    r"(?:advert|advertisement|ad|sponsored|caption|close|updated|comments?|\d+\s+comments?|share|iklan"
    r"|image\s*\d+\s*of\s*/?\s*\d+|\d+\s*/\s*\d+|this slideshow requires javascript\.?|sorry!?"
    r"|you may also like\W*|related(?: articles| stories| posts| content| news)?\W*|read more\W*|don'?t miss\b.*"
    r"|more (?:from|on) [^.!?]{1,40}|recommended(?: for you| stories| articles)?\W*|tell us what you think\W*"
    r"|thanks? (?:you )?for signing up!?|there was an error processing your subscription\.?"
    r"|(?:photo|photograph|picture|image|credit|source|illustration|video)s?\s*(?:credit)?\s*:.{1,60}"
    r"|[^©]{0,78}©[^©]{0,78}(?<![.!?。！？])"  # a picture's credit, a copyright line (not a sentence)
    r"|(?:updated|published|first published|posted|last updated)(?: on| at)?\s*:?\s*[\w ,.:]{0,40}\d[\w ,.:]{0,30}"
    r"|(?:\w+\s+)?" + _MONTH + r"\s+\d{1,2},?\s+\d{4}(?:[ ,]+\d{1,2}:\d{2}\s*(?:[ap]\.?m\.?)?)?"
    r"|\d{1,2}\s+" + _MONTH + r"\s+\d{4}"
    r"|[a-z0-9]+(?:-[a-z0-9]+){2,}"
    r"|関連記事|相关阅读|相关文章|相关新闻|延伸阅读|热点推荐|推荐阅读"
    # Chinese portals: a dateline with its source ("2005-04-27 14:32更新来源：千龙新闻网发表评论"), the source or
    # time of publication alone, share and print buttons, a comment counter, breadcrumbs ("首页 > 要闻 > 正文"),
    # and other stories listed with their dates ("·标题 (2005-04-19 18:03PM)").
    r"|\d{4}[-年/.]\d{1,2}[-月/.]\d{1,2}日?[\s\d:：]*(?:更新)?\s*来源\s*[:：].{0,40}"
    r"|(?:发布时间|发表时间|文章来源|来源)\s*[:：].{0,60}|分享到.{0,20}|打印本文|打印本页|返回页首.{0,20}|关闭窗口"
    r"|发送给朋友|推荐给朋友|发表评论|我要评论|查看评论|网友评论\s*\d*\s*条|共\s*\d*\s*条评论.{0,10}|[^>＞»]{1,20}(?:\s*[>＞»]\s*[^>＞»]{1,20}){2,}"
    r"|[·•].{1,80}[(（]\d{4}-\d{1,2}-\d{1,2}[^)）]{0,20}[)）]"
    r")",
    re.IGNORECASE,
)
# Short blocks that ask the listener for something or credit the desk: dropped wherever they stand.
_PROMPT = re.compile(
    r"\bclick(?:ing)? here\b|\bmeet your inbox\b|^don'?t miss\b|^(?:read more|see more|also read|read also)\s*:"
    r"|^(?:(?:sign up|subscribe)\b.{0,60}\b(?:newsletters?|inbox|today)\b|get the latest\b"
    r"|have a tip\b|follow (?:him|her|them|us|me)\b"
    r"|(?:additional )?reporting by\b|editing by\b|writing by\b|our standards\b|filed under\b)"
    r"|\b(?:delivered (?:to|right to|in) your inbox|newsletters?\b.{0,40}(?:sign up|subscribe)|(?:sign up|subscribe)"
    r"\b.{0,40}newsletters?|follow (?:him|her|them|us) on (?:twitter|facebook|instagram))",
    re.IGNORECASE,
)
_PROMPT_MAX_CHARS = 200
_TAG = re.compile(r"\[[A-Z ]{3,20}\]")
_CREDITED = re.compile(
    r"[(\[](?-i:[A-Z][\w.&]*\s+)?(?:photo|image|picture|pic|photograph|video|credit|illustration)s?\b[^()\[\]]{0,80}"
    r"(?<![.!?])[)\]]$",
    re.IGNORECASE,
)
CAPTION_MAX_CHARS = 400  # a caption is a line or two; a longer element or block so named may hold the article
_URL = re.compile(r"https?://\S+|www\.\S+")


def is_furniture_block(block: Block) -> bool:
    """A block of the page's furniture wherever it stands in an article (see ``_FURNITURE``, ``_PROMPT``)."""
    text = block.text.strip()
    if len(text) <= _EDGE_MAX_CHARS and _FURNITURE.fullmatch(text):
        return True
    if len(text) <= _PROMPT_MAX_CHARS and _PROMPT.search(text):
        return True
    # Other stories' titles run into one block after a "related" label ("今日推荐 标题(图) 标题"): no sentence
    # in it, however long.
    if (label := _RELATED_LABEL.match(text)) and not _SENTENCE_END.search(text[label.end() :]):
        return True
    # A picture's caption that ends with its credit: "… in Hialeah, Fla. (AP Photo/Alan Diaz, File)".
    if len(text) <= CAPTION_MAX_CHARS and _CREDITED.search(text):
        return True
    # A list of other stories run into one block, each tagged "[VIDEO]", "[PICTURES]": however long.
    if len(_TAG.findall(text)) >= 2 and len(text) <= 4 * _PROMPT_MAX_CHARS:
        return True
    # A block that is mostly web addresses (an image's URL and sizes leaked as text): not spoken.
    urls = sum(len(m) for m in _URL.findall(text))
    return urls * 2 > len(text)


def drop_furniture(blocks: list[Block]) -> tuple[list[Block], list[Block]]:
    """The article without furniture blocks anywhere in it (``is_furniture_block``), and those blocks."""
    kept: list[Block] = []
    dropped: list[Block] = []
    teasers = False  # after "Related articles" / "You may also like": the titles of other stories
    for block in blocks:
        if is_furniture_block(block):
            dropped.append(block)
            # Furniture between the titles of other stories ("返回页首 | 关闭窗口") does not end their list.
            teasers = teasers or _RELATED.fullmatch(block.text.strip()) is not None
        elif teasers and _is_teaser(block):
            dropped.append(block)
        else:
            teasers = False
            kept.append(block)
    return kept, dropped


# Chinese and Japanese labels of a list of other stories ("related reports", "recommended today").
_CJK_RELATED = "関連記事|相关阅读|相关文章|相关新闻|相关报道|相关链接|延伸阅读|推荐阅读|今日推荐|今日焦点|热点推荐"
# Headings of a list of other stories; the short lines after one, that end without a sentence's full stop, are
# their titles.
_RELATED = re.compile(
    r"(?:you may also like|you might also like|related(?: articles| stories| posts| content| news)?|read more"
    r"|more stories|recommended(?: for you| stories| articles)?|" + _CJK_RELATED + r")\W*",
    re.IGNORECASE,
)
_TEASER_MAX_CHARS = 100
_RELATED_LABEL = re.compile(r"(?:" + _CJK_RELATED + r")\s*[:：]?")
_SENTENCE_END = re.compile(r"。|\.(?:\s|$)")  # titles ask and exclaim, but they do not end with a full stop


def _is_teaser(block: Block) -> bool:
    """A short line that does not end a sentence: a title. A quotation's closing marks do not hide its full stop
    (“The sea does not wait for anyone.”), but a title's "(图)" is no sentence's end."""
    text = block.text.strip()
    bare = text.rstrip("\"'”’」』")
    return len(text) <= _TEASER_MAX_CHARS and not bare.endswith((".", "。", "!", "！", "?", "？", ":", "：", ".)"))


_BYLINE = re.compile(r"(?:by|written by|words by|posted by)\s+\S.{0,60}", re.IGNORECASE)
_BYLINE_MAX_CHARS = 80
_BYLINE_SEARCH = 3  # a byline stands among the article's first blocks


def drop_byline(blocks: list[Block], author: str | None) -> tuple[list[Block], list[Block]]:
    """The article without its byline: a short line among its first blocks that opens with "By" or names the
    page's author ("Jane Doe, AP National Security Writer"), and those lines."""
    names = [n.strip().lower() for n in re.split(r"[;,]| and ", author or "") if len(n.strip()) >= 5]

    def is_byline(block: Block) -> bool:
        text = block.text.strip()
        if block.heading or len(text) > _BYLINE_MAX_CHARS:
            return False
        return bool(_BYLINE.fullmatch(text)) or any(text.lower().startswith(name) for name in names)

    dropped = [b for b in blocks[:_BYLINE_SEARCH] if is_byline(b)]
    return [b for b in blocks if not any(b is d for d in dropped)], dropped


def _is_furniture_anywhere(block: Block) -> bool:
    return _is_edge_furniture(block) or is_furniture_block(block)


def trim_edges(blocks: list[Block]) -> tuple[list[Block], list[Block]]:
    """The article without the furniture lines at its start and end, and those lines."""
    start, end = 0, len(blocks)
    while start < end and not blocks[start].heading and _is_edge_furniture(blocks[start]):
        start += 1
    while end > start and _is_edge_furniture(blocks[end - 1]):
        end -= 1
    # The article's sign-off (share, print, close buttons, its source or copyright) can be followed by short
    # lines that are not sentences: other stories' titles, ads. In the stretch of such lines and furniture that
    # ends the article, everything from its first furniture line on is cut; never most of the text (a table of
    # short cells after a number is not a sign-off's trailer).
    cut = n = end
    while n > start and (_is_teaser(blocks[n - 1]) or _is_furniture_anywhere(blocks[n - 1])):
        n -= 1
        if _is_furniture_anywhere(blocks[n]):
            cut = n
    if sum(len(b.text) for b in blocks[cut:end]) * 2 < sum(len(b.text) for b in blocks[start:cut]):
        end = cut
    return blocks[start:end], blocks[:start] + blocks[end:]


def extract_article(root: etree._Element, url: str | None = None) -> Article | None:
    """The article trafilatura finds in ``root`` (left untouched), or None when it finds none."""
    import trafilatura

    # trafilatura logs every page it judges too short or discards at WARNING: our reader says what happened.
    logging.getLogger("trafilatura").setLevel(logging.ERROR)
    document = trafilatura.bare_extraction(
        copy.deepcopy(root),
        url=url,
        include_comments=False,
        include_tables=True,
        include_images=False,
        with_metadata=True,
        favor_recall=True,
    )
    if document is None or isinstance(document, dict) or document.body is None:
        return None
    blocks = _blocks(document.body)
    if not blocks:
        return None

    def clean(value: object) -> str | None:
        return normalize_paragraph(value) or None if isinstance(value, str) else None

    return Article(
        blocks=tuple(blocks),
        title=clean(document.title),
        author=clean(document.author),
        site=clean(document.sitename),
        date=clean(document.date),
        description=clean(document.description),
        url=clean(document.url),
    )
