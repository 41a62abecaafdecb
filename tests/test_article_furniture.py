"""Page furniture inside and after an article (readers/html.py with readers/article.py): pages we write ourselves
in the shapes of a local news site and a Chinese portal. A Chinese portal's sign-off and the other stories listed
after it, lists of links, captions by any compound class name, a picture's credit (© or bracketed), a closing
disclaimer are not read; the article's own sentences that mention the same things are, in order. And a paragraph
trafilatura dropped from the middle of the article is read back in its place."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from lxml import etree

from pipeline.models import Book
from pipeline.readers import read_book
from pipeline.textfacts import normalize_paragraph

STORY = [
    "The harbour board agreed on Monday evening to rebuild the north breakwater at Kelby, which was breached in "
    "three places by the storms of last winter and has been closed to walkers since January.",
    "Engineers told the board that the old stone wall, built in 1871, had shifted on its foundations, and that "
    "patching it again would only buy a few years before the sea opened the same gaps once more.",
    "The new breakwater will be faced with granite blocks brought by barge from the quarry at Penrose, and its "
    "walkway will be raised by a metre so that it can stay open on all but the roughest days.",
    "Fishermen who moor inside the harbour said they were relieved, because two boats were lost in February when "
    "waves came over the broken wall, and insurers had warned that cover would not be renewed.",
    "Work is due to begin in April and to last eighteen months, during which the slipway will be moved to the "
    "south quay and the harbour office will open an hour earlier to help crews plan their tides.",
    "The board will hold a public meeting at the lifeboat station next Thursday, where residents can see the "
    "drawings, ask the engineers questions and put their names down for a monthly letter on the works.",
]
NAV = "".join(f'<li><a href="/{w.lower()}">{w}</a></li>' for w in ["Home", "News", "Sport", "Weather", "Opinion"])


def news_page(body: str) -> str:
    return f"""<!DOCTYPE html><html lang="en-GB"><head><meta charset="utf-8">
<title>Kelby breakwater to be rebuilt - The Harbour Gazette</title>
<meta property="og:site_name" content="The Harbour Gazette"></head><body>
<header><nav><ul>{NAV}</ul></nav></header>
<main><article><h1>Kelby breakwater to be rebuilt</h1>
{body}
</article></main>
<footer><p>The Harbour Gazette, 4 Quay Street, Kelby.</p><ul>{NAV}</ul></footer>
</body></html>"""


def paragraphs(lines: list[str]) -> str:
    return "".join(f"<p>{line}</p>" for line in lines)


def text_of(book: Book) -> list[str]:
    return [p for c in book.chapters for p in c.paragraphs]


def read_page(tmp_path: Path, name: str, page: str) -> list[str]:
    path = tmp_path / name
    path.write_text(page, encoding="utf-8")
    return text_of(read_book(path))


# A Chinese portal's article: paragraphs of 60 to 90 characters, one of them mentioning 相关报道 in a sentence.
CHINESE = [
    "本报讯 记者从市水务局获悉，城东老码头的防波堤修复工程将于下月正式开工，"
    "工程计划用一年半时间完成，总投资约一点二亿元，所需石料将由船只从南山采石场运来。",
    "去年冬天的几场风暴把防波堤冲开了三道缺口，两艘渔船在二月份被越堤的大浪打翻，"
    "所幸船上人员都被及时救起，此后堤上的步道一直封闭，附近居民出行受到不小的影响。",
    "本报此前的相关报道中曾提到，渔民们多次联名要求尽快修堤，水务局表示，"
    "新堤将比旧堤加高一米，步道在大多数天气下都可以照常开放，方便居民散步和垂钓。",
    "施工期间，渔船停靠点将临时移到南岸码头，港务办公室每天提前一小时开门，"
    "帮助船员安排出海时间，水务局还将在下周四于救生站召开居民说明会，听取各方意见。",
]
# Other stories listed inside the article after "相关报道：" (one title a heading, "返回页首 | 关闭窗口" among them);
# after it, the sign-off's buttons with a line that is no sentence among them, and a run of titles after "今日推荐：".
RELATED_TITLES = ["南岸码头扩建工程通过验收", "今年汛期降雨偏多三成", "渔民合作社举办开渔节"]
SIGN_OFF = ["发送给朋友", "扫码下载客户端 随时随地看新闻", "发表评论", "打印本文"]
TODAY = "今日推荐：老城区十条小巷完成改造 市民公园新增三处停车场 夏季游泳场所开放时间公布"


def chinese_portal() -> str:
    related = (
        f"<p>相关报道：</p><p>{RELATED_TITLES[0]}</p><p>返回页首 | 关闭窗口</p>"
        f"<h3>{RELATED_TITLES[1]}</h3><p>{RELATED_TITLES[2]}</p>"
    )
    article = paragraphs(CHINESE[:2]) + related + paragraphs(CHINESE[2:]) + paragraphs(SIGN_OFF) + f"<p>{TODAY}</p>"
    return f"""<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8">
<title>城东防波堤修复工程下月开工-海港日报</title></head><body>
<div class="nav"><a href="/">首页</a><a href="/city">本地</a><a href="/sea">海洋</a></div>
<div class="header"><h1>城东防波堤修复工程下月开工</h1><div class="info">2024-05-01 10:20 来源：海港日报</div></div>
<div id="detail">{article}</div>
<div class="foot">版权所有 海港日报</div></body></html>"""


def test_a_chinese_portals_sign_off_and_other_stories_after_it_are_left_out(tmp_path: Path) -> None:
    read = read_page(tmp_path, "portal.html", chinese_portal())
    furniture = [*SIGN_OFF, "相关报道：", *RELATED_TITLES, TODAY, "返回页首 | 关闭窗口"]
    assert not [line for line in read if any(normalize_paragraph(f) in line for f in furniture)]
    # The sentence that mentions 相关报道 is the article's own, and the article is read whole, in order.
    assert read == [normalize_paragraph(p) for p in CHINESE]


OTHER_STORIES = [
    "Lifeboat crew called out twice in one night off Penrose Point",
    "Quay Street bakery wins the county prize for its saffron buns",
    "School sailing club launches its first boat built by pupils",
]
WITH_LINK = (
    'The full report, which <a href="/reports/breakwater">the board has published on its website</a>, runs to '
    "two hundred pages and includes the engineers' drawings of the new wall and the old one side by side."
)


def test_blocks_that_are_mostly_links_are_left_out_and_a_sentence_with_a_link_is_read(tmp_path: Path) -> None:
    # Inside the article: a list of other stories' titles as links (no "Related" heading before it), and a
    # "Get short URL" link on a line of its own. A paragraph of prose with one link in it is the article's.
    titles = "".join(f'<li><a href="/news/{n}">{t}</a></li>' for n, t in enumerate(OTHER_STORIES))
    body = (
        paragraphs(STORY[:3])
        + f"<p>{WITH_LINK}</p>"
        + f"<ul>{titles}</ul>"
        + paragraphs(STORY[3:])
        + '<p><a href="https://example.org/s/k7">Get short URL</a></p>'
    )
    read = read_page(tmp_path, "links.html", news_page(body))
    assert not [line for line in read if any(t in line for t in [*OTHER_STORIES, "Get short URL"])]
    with_link = normalize_paragraph(WITH_LINK.replace('<a href="/reports/breakwater">', "").replace("</a>", ""))
    assert read == [*STORY[:3], with_link, *STORY[3:]]
    # A page whose article is mostly links (a list of walks, each a link to its page): read as it is, links too.
    walks = [
        f"Walk {n}: from the {start} along the cliff path to the old lime kilns and back by the beach"
        for n, start in enumerate(["harbour", "lifeboat station", "church", "market", "lighthouse", "mill"], 1)
    ]
    body = f"<p>{STORY[0]}</p>" + "".join(f'<p><a href="/walks/{n}">{w}</a></p>' for n, w in enumerate(walks))
    assert read_page(tmp_path, "walks.html", news_page(body)) == [STORY[0], *walks]


def test_captions_by_a_compound_class_name_are_left_out(tmp_path: Path) -> None:
    captions = [
        "The north breakwater after the February storm, seen from the lifeboat station",
        "Granite blocks waiting on the quay at Penrose for the barge",
    ]
    body = (
        paragraphs(STORY[:2])
        + f'<div class="photo"><img src="a.jpg" alt=""><p class="newsCaption">{captions[0]}</p></div>'
        + paragraphs(STORY[2:4])
        + f'<div class="photo"><img src="b.jpg" alt=""><div class="captionText">{captions[1]}</div></div>'
        + paragraphs(STORY[4:])
    )
    read = read_page(tmp_path, "captions.html", news_page(body))
    assert not [line for line in read if any(c in line for c in captions)]
    assert read == STORY


def test_a_pictures_copyright_line_and_a_closing_disclaimer_are_left_out(tmp_path: Path) -> None:
    credit = "The breakwater in 1871, drawing © Kelby Museum, 1990"
    disclaimer = (
        "Disclaimer: The views expressed in letters and comments on this page are those of their writers and "
        "not of The Harbour Gazette, which cannot check every claim made by its readers about the works."
    )
    # The article's own: a sentence that mentions a disclaimer, one that quotes a copyright.
    mentions = [
        "The engineers' report carries a disclaimer on its first page, saying that its costs are estimates and "
        "may rise if the foundations prove to be in a worse state than the divers found in March.",
        "The museum, which holds the rights to the old drawings (© Kelby Museum), has lent them to the board so "
        "that residents can compare the two walls at the meeting.",
    ]
    lines = [*STORY[:2], credit, STORY[2], mentions[0], STORY[3], mentions[1], *STORY[4:]]
    read = read_page(tmp_path, "credits.html", news_page(paragraphs([*lines, disclaimer])))
    assert credit not in read and disclaimer not in read
    assert read == [line for line in lines if line != credit]


def test_a_caption_ending_with_its_credit_in_brackets_is_left_out(tmp_path: Path) -> None:
    credited = [
        "Fishing boats shelter inside the harbour at Kelby during the February storm, which opened three gaps "
        "in the old wall. (Gazette Photo/Jane Roe, File)",
        "The lifeboat station at Penrose Point, where the board will hold its meeting (Image: GETTY)",
        "Waves break over the north breakwater on a winter morning (Photo by Ann Lee/Getty Images)",
    ]
    # Paragraphs of the article that end with a parenthesis of their own, not a picture's credit.
    brackets = [
        "The harbour master said the quay would stay open to fishing boats throughout the works (though not, "
        "she added, to the pleasure cruisers that call in the summer)",
        "(The board's minutes, with the engineers' answers to the fishermen's questions, will be published on "
        "its website next week.)",
    ]
    lines = [STORY[0], credited[0], STORY[1], brackets[0], STORY[2], credited[1], STORY[3], credited[2]]
    lines += [*STORY[4:], brackets[1]]
    read = read_page(tmp_path, "credited.html", news_page(paragraphs(lines)))
    assert not [line for line in read if line in credited]
    assert read == [line for line in lines if line not in credited]


LINKED = (
    "The harbour master, Ann Kerr, said in an email to the Harbour Gazette that the quay would stay open to "
    "fishing boats throughout the works, although visitors would be asked to park at the top of the town."
)
LINK_TEXT = "said in an email to the Harbour Gazette"
LINK = f'<a href="https://example.org/x" target="_blank">{LINK_TEXT}</a>'
PHOTO = "A diver checks the foundations of the old wall in March, before the board's vote on the works."


def test_a_paragraph_trafilatura_dropped_from_the_middle_of_the_article_is_read_back_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On some sites' pages trafilatura leaves out a paragraph of prose holding a link, right after an empty ad
    # slot, while keeping the paragraphs on either side: that paragraph is put back where it stood (the empty slot
    # is skipped in finding its neighbours). A picture's caption written as a <p> of its own, beside no paragraph
    # of the article, is not. The pages we write do not make trafilatura drop the paragraph, so its reading here
    # leaves out both, as it does on those sites' pages.
    from pipeline.readers import article
    from pipeline.readers import html as html_reader

    extract = article.extract_article

    def dropping(root: etree._Element, url: str | None = None) -> article.Article | None:
        found = extract(root, url)
        assert found is not None
        kept = tuple(b for b in found.blocks if "Harbour Gazette" not in b.text and "diver" not in b.text)
        return dataclasses.replace(found, blocks=kept)

    monkeypatch.setattr(html_reader, "extract_article", dropping)  # as the HTML reader calls it
    body = (
        paragraphs(STORY[:3])
        + '<div class="ad ad-container"></div>'
        + f"<p>{LINKED.replace(LINK_TEXT, LINK)}</p>"
        + paragraphs(STORY[3:5])
        + f'<div class="photo"><img src="diver.jpg" alt=""><p>{PHOTO}</p></div>'
        + paragraphs(STORY[5:])
    )
    read = read_page(tmp_path, "hole.html", news_page(body))
    assert read == [*STORY[:3], LINKED, *STORY[3:]]


def test_short_closing_quotations_after_furniture_at_the_end_are_read(tmp_path: Path) -> None:
    # A short quotation that ends the article is a sentence, its full stop inside the closing marks: the cut of a
    # sign-off's trailer (furniture, then lines that are no sentences) must not take it.
    quotes = [
        "Mr Kerr said: “My father fished from this harbour, and so did his.”",
        "“The sea does not wait for anyone.”",
    ]
    read = read_page(tmp_path, "quotes.html", news_page(paragraphs([*STORY, "Image 1 of 8", *quotes])))
    assert read == [*STORY, *quotes]


def test_sentences_that_look_like_credits_are_read(tmp_path: Path) -> None:
    # A whole sentence in brackets about photos, and a short sentence with a copyright sign, are the article's.
    sentences = [
        "(The photos will be shown at the meeting, with the engineers' drawings of the new wall.)",
        "Mr Kerr’s poem, “Breakwater” © 1998, hangs in the pub.",
    ]
    lines = [*STORY[:3], sentences[0], *STORY[3:], sentences[1]]
    assert read_page(tmp_path, "sentences.html", news_page(paragraphs(lines))) == lines
