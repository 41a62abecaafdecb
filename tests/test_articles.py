"""Articles from web pages (readers/html.py with readers/article.py): pages we write ourselves in the shapes of
a news site, a magazine, a blog with comments and a Chinese portal. The main text and nothing else is read;
title, author, site and date are the page's own; a page whose article is not found is refused, never read as
two sentences and called done."""

from __future__ import annotations

from itertools import zip_longest
from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.readers import read_book
from pipeline.readers.html import read_html
from pipeline.textfacts import normalize_paragraph

STORY = [
    "The council voted on Tuesday night to close the old swimming baths on Mill Street after ninety years.",
    "Engineers found that the roof over the main pool had corroded beyond repair, and that the boilers failed.",
    "Campaigners who have used the baths since childhood said they would ask the county to list the building.",
    "A new leisure centre on the edge of town is due to open in two years, with a pool half as long again.",
    "Until then swimmers will be offered places at the school pool in Eastfield on weekday evenings.",
]
NAV = "".join(f'<li><a href="/{w.lower()}">{w}</a></li>' for w in ["Home", "News", "Sport", "Weather", "Opinion"])
RELATED = "".join(
    f'<li><a href="/r{n}">Related story number {n} about something else in the town entirely</a></li>'
    for n in range(12)
)


def news_page() -> str:
    return f"""<!DOCTYPE html><html lang="en-GB"><head><meta charset="utf-8">
<title>Mill Street baths to close after 90 years - The Eastfield Courier</title>
<meta property="og:title" content="Mill Street baths to close after 90 years">
<meta property="og:site_name" content="The Eastfield Courier">
<meta name="author" content="Tom Reyes"><meta name="description" content="The council votes to shut the baths.">
<meta property="article:published_time" content="2024-03-12T21:30:00+00:00">
</head><body>
<header><nav><ul>{NAV}</ul></nav></header>
<div class="share-bar"><a href="#">Share on Facebook</a> <a href="#">Share on X</a></div>
<main><article><h1>Mill Street baths to close after 90 years</h1>
<div class="byline">By Tom Reyes, local democracy reporter</div>
{"".join(f"<p>{s}</p>" for s in STORY)}
<figure><img src="baths.jpg" alt="The baths"><figcaption>The baths in 1934.</figcaption></figure>
</article>
<aside class="related"><h2>More from the Courier</h2><ul>{RELATED}</ul></aside></main>
<footer><p>Copyright 2024 The Eastfield Courier. All rights reserved.</p><ul>{NAV}</ul></footer>
</body></html>"""


def blog_with_comments() -> str:
    comments = "".join(
        f'<li class="comment"><div class="comment-author">Reader {n}</div><div class="comment-content"><p>'
        f"I swam there every Saturday as a boy and I think it is a real shame, comment number {n}.</p></div></li>"
        for n in range(30)
    )
    return f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>Goodbye to the baths | Lane Swimmer</title>
<meta property="og:site_name" content="Lane Swimmer"></head><body>
<div id="site-header"><a href="/">Lane Swimmer</a><ul class="menu">{NAV}</ul></div>
<div id="content"><div class="post"><h1 class="entry-title">Goodbye to the baths</h1>
<div class="entry-meta">Posted on March 13, 2024 by Ana</div>
<div class="entry-content">{"".join(f"<p>{s}</p>" for s in STORY)}</div></div>
<div id="comments" class="comments-area"><h2>30 thoughts on "Goodbye to the baths"</h2><ol>{comments}</ol>
<form id="commentform"><textarea></textarea><button>Post comment</button></form></div></div>
<div id="sidebar"><h3>Archives</h3><ul>{RELATED}</ul></div></body></html>"""


CHINESE = [
    "新华社北京5月1日电 记者从国家林业和草原局获悉，今年以来全国新增造林面积超过一千万亩，各地春季植树活动有序开展。",
    "据介绍，北方地区重点推进防沙治沙工程，南方地区则以森林质量提升为主，多地探索出了林下经济与生态保护相结合的新路子。",
    "专家表示，下一步将继续加强森林防火和病虫害防治，巩固国土绿化成果，让绿色成为高质量发展的鲜明底色。",
]


def chinese_portal() -> str:
    links = "".join(f'<li><a href="/n{n}">春季植树活动在全国各地展开第{n}篇</a></li>' for n in range(15))
    return f"""<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8">
<title>全国新增造林面积超千万亩-新华网</title><meta name="author" content="新华网"></head><body>
<div class="nav"><a href="/">首页</a><a href="/politics">时政</a><a href="/world">国际</a></div>
<div class="header"><h1>全国新增造林面积超千万亩</h1><div class="info">2024-05-01 10:20:31 来源：新华网</div></div>
<div id="detail">{"".join(f"<p>{p}</p>" for p in CHINESE)}
<div class="pageVideo"><span>图集</span> <span>+1</span></div>
<div id="articleEdit"><span class="tiyi1"><a href="#">【纠错】</a></span>
<span class="editor">责任编辑：李明</span></div>
</div>
<div class="related"><h3>相关新闻</h3><ul>{links}</ul></div>
<div class="foot">版权所有 新华网 京ICP证010042号</div></body></html>"""


def text_of(book) -> list[str]:  # type: ignore[no-untyped-def]
    return [p for c in book.chapters for p in c.paragraphs]


def write(tmp_path: Path, name: str, page: str) -> Path:
    path = tmp_path / name
    path.write_text(page, encoding="utf-8")
    return path


def test_a_news_page_is_its_story_and_its_metadata(tmp_path: Path) -> None:
    book = read_book(write(tmp_path, "news.html", news_page()))
    # then the picture's caption: this page is read by readability's path, which keeps captions (make bench
    # measured leaving them out there too: two pages fewer at F1 >= 0.95, as the choice of path shifted)
    assert text_of(book)[: len(STORY)] == STORY
    assert not any("Related story" in p or "Copyright" in p or "Share on" in p for p in text_of(book))
    assert book.title == "Mill Street baths to close after 90 years"
    assert book.author == "Tom Reyes"
    assert book.info.site == "The Eastfield Courier"
    assert book.info.date == "2024-03-12"
    assert book.info.description == "The council votes to shut the baths."
    assert len(book.chapters) == 1


def test_a_blog_post_is_read_without_its_comments(tmp_path: Path) -> None:
    book = read_book(write(tmp_path, "blog.html", blog_with_comments()))
    assert text_of(book)[-len(STORY) :] == STORY
    assert not any("comment number" in p or "Archives" in p for p in text_of(book))
    assert book.title == "Goodbye to the baths"
    assert book.info.site == "Lane Swimmer"
    # What was left out is counted for the plan, not lost unseen.
    assert book.skipped and "outside the article" in book.skipped[0]


def test_a_chinese_portal_page_ends_with_its_article_not_its_footer(tmp_path: Path) -> None:
    book = read_book(write(tmp_path, "xinhua.html", chinese_portal()))
    assert text_of(book) == [normalize_paragraph(p) for p in CHINESE]
    assert book.title == "全国新增造林面积超千万亩"
    assert book.language == "zh"
    assert book.info.date == "2024-05-01"


def test_a_sentence_about_an_editor_inside_the_article_is_kept(tmp_path: Path) -> None:
    page = chinese_portal().replace("<p>专家表示", "<p>责任编辑：李明</p><p>专家表示", 1)
    book = read_book(write(tmp_path, "inside.html", page))
    assert "责任编辑：李明" in text_of(book)  # only the article's edges are trimmed


def test_a_page_whose_article_is_not_found_is_refused_in_one_line(tmp_path: Path) -> None:
    # The article's text sits in blocks the page marks as comments: an extractor keeps the two-line teaser.
    body = "".join(f'<div class="comment-body"><p>{s} {s} {s}</p></div>' for s in STORY * 6)
    page = f"""<html><head><title>The baths</title></head><body>
<article><h1>The baths</h1><p>The baths close. Read on below.</p></article>{body}</body></html>"""
    with pytest.raises(InputError) as info:
        read_html(write(tmp_path, "lost.html", page))
    message = str(info.value)
    assert "\n" not in message and "lost.html" in message
    assert "not the article" in message and "words of the page's" in message


def test_a_short_article_on_a_page_of_links_is_read(tmp_path: Path) -> None:
    # Little text, lots of links around it: links are no prose, so the article is not "too little".
    many = "".join(f'<li><a href="/x{n}">A headline of another story, number {n}, with several words</a></li>'
                   for n in range(200))  # fmt: skip
    page = f"""<html><head><title>Baths close</title></head><body><ul>{many}</ul>
<article><h1>Baths close</h1><p>{STORY[0]}</p><p>{STORY[1]}</p></article><ul>{many}</ul></body></html>"""
    assert text_of(read_html(write(tmp_path, "short.html", page))) == STORY[:2]


def test_a_gbk_page_without_a_charset_and_a_title_cut_mid_character_is_read(tmp_path: Path) -> None:
    # Portals cut long link titles to a byte count, leaving half a character: the page is still GBK.
    links = "".join(f'<li><a href="/n{n}">春季植树活动在全国各地展开，多地探索林下经济…</a></li>' for n in range(5))
    page = chinese_portal().replace('<meta charset="utf-8">', "").replace("<ul>", "<ul>" + links, 1)
    data = page.encode("gbk").replace("…".encode("gbk"), "造".encode("gbk")[:1] + b"...", 1)
    path = tmp_path / "gbk.html"
    path.write_bytes(data)
    book = read_book(path)
    assert text_of(book) == [normalize_paragraph(p) for p in CHINESE]
    assert book.title == "全国新增造林面积超千万亩"


def test_an_article_that_is_a_small_share_of_the_page_is_read_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A short post under a long thread of comments: read, and the plan says how little of the page it is.
    comments = "".join(
        f'<div class="comment"><p>Comment {n}: {STORY[n % 5]} {STORY[(n + 1) % 5]}</p></div>' for n in range(12)
    )
    page = f"""<html><head><title>The baths</title></head><body>
<article><h1>The baths</h1><p>{STORY[0]}</p><p>{STORY[1]}</p></article>
<section id="comments">{comments}</section></body></html>"""
    with caplog.at_level("WARNING", logger="audiobook"):
        book = read_html(write(tmp_path, "thread.html", page))
    assert text_of(book) == STORY[:2]
    assert any("of the page's prose" in note and "check it" in note for note in book.skipped)
    assert "thread.html: the article found is" in caplog.text


REVIEWS = [
    "The show was wonderful from start to finish and the drummers were the best part of the whole evening.",
    "We booked the tickets online in a minute and the seats in the third row were close enough to see faces.",
    "A gorgeous play with an unusual way of telling its story; the cast invited children up onto the stage.",
]


def test_quotations_of_several_paragraphs_are_read(tmp_path: Path) -> None:
    # Reviews quoted as <blockquote><p>…</p></blockquote>: trafilatura keeps each as <quote><p>, and every
    # paragraph inside is read (they were silently lost: a page of reviews read as its introduction alone).
    quotes = "".join(
        f"<blockquote><p>“{r}”</p></blockquote><p><strong>– Reader {n}</strong></p>" for n, r in enumerate(REVIEWS)
    )
    page = f"""<html><head><title>Reviews from our visitors</title></head><body><nav><ul>{NAV}</ul></nav>
<article><h1>Reviews from our visitors</h1><p>{STORY[0]}</p><p>{STORY[1]}</p>{quotes}<p>{STORY[2]}</p></article>
</body></html>"""
    read = text_of(read_book(write(tmp_path, "reviews.html", page)))
    for review in REVIEWS:
        assert f"“{review}”" in read
    assert read[0] == STORY[0] and read[-1] == STORY[2]


def test_page_furniture_inside_an_article_is_left_out(tmp_path: Path) -> None:
    # Lines news sites put between and after an article's paragraphs: ad slots, gallery controls, photo credits,
    # "updated" stamps, a dateline that is only a date, newsletter prompts, wire credits, "follow her on Twitter".
    furniture = [
        "Advertisement",
        "Photo: Jane Doe, AP",
        "Image 1 of 8",
        "Updated",
        "March 12, 2024",
        "Get the latest headlines delivered to your inbox every morning. Sign up for our newsletter.",
        "Have a tip? Tom Reyes may be reached at tom@example.org. Follow him on Twitter @tomreyes.",
        "Reporting by Tom Reyes; Editing by Ann Lee",
        "narrow-browser-and-phone",
        "https://example.org/wp-content/uploads/2024/03/baths.jpg 1200 676",
        "DON'T MISS Council to vote on the library [VIDEO] | Floods close the old bridge again [PICTURES]",
        "GET THE COURIER ON THE GO BY CLICKING HERE",
        "Let our news meet your inbox. The stories that matter, delivered weekday mornings.",
    ]
    kept = [
        # Sentences that mention the same things are the article's own.
        "Sign up for a swimming lesson at the school pool by calling the council before the end of the month.",
        "The photo: a faded print of the opening day in 1934, found in the attic of the former caretaker's home.",
    ]
    pairs = zip_longest(STORY + kept, furniture, fillvalue="")
    body = [f"<p>{line}</p>" for pair in pairs for line in pair if line]
    page = f"""<html><head><title>Mill Street baths to close</title></head><body><nav><ul>{NAV}</ul></nav>
<article><h1>Mill Street baths to close</h1>{"".join(body)}</article></body></html>"""
    book = read_book(write(tmp_path, "furniture.html", page))
    assert text_of(book) == STORY + kept
    assert "outside the article" in book.skipped[0]


def test_furniture_is_a_whole_short_line_never_a_sentence() -> None:
    # "Close." is a line of dialogue, "Close" a gallery button; "sign up" in a sentence is the article's own.
    from pipeline.readers.article import drop_furniture
    from pipeline.readers.htmltext import Block

    blocks = [Block(STORY[0]), Block("Close."), Block("Sign up, he said, and sign up now.")]
    assert drop_furniture(blocks) == (blocks, [])


def notice_page() -> str:
    # An old portal's notice: the terms as running text in one table cell (lines broken by <br>), then a long
    # table of courses.
    terms = "<br/>".join(f"{n}、{line}" for n, line in enumerate(CHINESE * 2, start=1))
    rows = "".join(
        f"<tr><td>0{n}艺术学原理</td><td>教师{n}</td><td>1、英语或俄语或日语 2、艺术概论 3、中国艺术史基础知识</td>"
        f"<td>新增点正在审批</td></tr>"
        for n in range(1, 40)
    )
    return f"""<html><head><meta charset="utf-8"><title>招生简章</title></head><body>
<table><tr><td><a href="/">主页</a>&gt;<a href="/edu">艺术教育</a></td></tr></table>
<table><tr><td><p><strong>中国艺术研究院招生简章</strong></p></td></tr>
<tr><td><p></p><table><tr><td>{terms}<p/></td></tr></table>
<table border="1"><tr><td>学科、专业名称</td><td>指导教师</td><td>考试科目</td><td>备注</td></tr>{rows}</table>
</td></tr></table></body></html>"""


def test_a_notice_whose_prose_stands_beside_its_long_table_is_read_whole(tmp_path: Path) -> None:
    # readability picks the table; the terms beside it are the notice too (they were lost unseen: the table
    # alone holds more words than the page's other prose, so no check fired).
    book = read_book(write(tmp_path, "notice.html", notice_page()))
    read = " ".join(text_of(book))
    for line in CHINESE:
        assert normalize_paragraph(line) in read
    assert "教师39" in read
    assert not any("check it" in note for note in book.skipped)


def test_a_long_passage_left_out_beside_the_article_is_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # trafilatura alone reads the table and leaves the terms out: the plan and the log say that a passage of
    # the page's prose longer than any of the article's paragraphs was left out.
    with caplog.at_level("WARNING", logger="audiobook"):
        book = read_html(write(tmp_path, "notice.html", notice_page()), method="trafilatura")
    note = next(note for note in book.skipped if "passage" in note)
    assert "was left out" in note and "check it" in note and CHINESE[0][:10] in note
    assert "notice.html: a passage of the page's prose" in caplog.text


def test_a_byline_at_the_articles_start_is_left_out(tmp_path: Path) -> None:
    # The byline names the page's author (or opens with "By"); the same name further on is the article's text.
    later = "Tom Reyes, who swam there as a boy, adds:"
    for byline in ("Tom Reyes, Local Democracy Reporter", "By The Courier's Staff"):
        page = f"""<html><head><title>Baths to close</title><meta name="author" content="Tom Reyes"></head>
<body><nav><ul>{NAV}</ul></nav><article><h1>Baths to close</h1><p>{byline}</p>
{"".join(f"<p>{s}</p>" for s in STORY[:4])}<p>{later}</p><p>{STORY[4]}</p></article></body></html>"""
        book = read_book(write(tmp_path, "byline.html", page))
        assert text_of(book) == [*STORY[:4], later, STORY[4]]


def test_a_list_of_other_stories_inside_the_article_is_left_out(tmp_path: Path) -> None:
    # "Related articles" and the titles under it (short, no full stop), and teasers run into one long block
    # each tagged [VIDEO]: other stories, not this one. The paragraph after the list is the article again.
    titles = ["Floods close the old bridge again", "Library hours cut from April", "Ten walks around Eastfield"]
    teasers = " | ".join(f"{t}: what the council said and what happens next [VIDEO]" for t in titles * 2)
    page = f"""<html><head><title>Baths to close</title></head><body><nav><ul>{NAV}</ul></nav>
<article><h1>Baths to close</h1>{"".join(f"<p>{s}</p>" for s in STORY[:3])}<p>{teasers}</p>
<p>Related articles</p>{"".join(f"<p>{t}</p>" for t in titles)}<p>{STORY[3]}</p><p>{STORY[4]}</p></article>
</body></html>"""
    assert text_of(read_book(write(tmp_path, "related.html", page))) == STORY


def test_a_chinese_portals_lines_inside_the_article_are_left_out(tmp_path: Path) -> None:
    # A dateline with its source, breadcrumbs and share buttons between the title and the text, other stories
    # listed with their dates after it: the portal's, wherever they stand.
    before = ["首页 > 要闻 > 正文", "2005-04-27 14:32更新来源：千龙新闻网发表评论", "分享到："]
    after = [f"·春季植树活动在全国各地展开第{n}篇 (2005-04-19 18:03PM)" for n in range(3)] + ["打印本文"]
    page = f"""<html lang="zh-CN"><head><meta charset="utf-8"><title>全国新增造林面积超千万亩</title></head><body>
<div class="nav"><a href="/">首页</a><a href="/politics">时政</a></div>
<div id="detail"><h1>全国新增造林面积超千万亩</h1>
{"".join(f"<p>{p}</p>" for p in before + CHINESE + after)}
</div></body></html>"""
    book = read_book(write(tmp_path, "portal.html", page))
    assert [normalize_paragraph(p) for p in CHINESE] == text_of(book)


def test_captions_credits_and_read_more_lines_are_left_out(tmp_path: Path) -> None:
    # A picture's caption and credit (a <figcaption>, or an element the page names so) and a "READ MORE:" link
    # line are not the article; a long element whose class says "caption" may hold it, and is read.
    page = f"""<html><head><title>Baths to close</title></head><body><nav><ul>{NAV}</ul></nav>
<article class="has-caption-styles"><h1>Baths to close</h1><p>{STORY[0]}</p>
<figure><img src="a.jpg" alt="The pool"><figcaption>The pool in 1934, before the roof was raised.</figcaption></figure>
<p>{STORY[1]}</p><div class="image"><img src="b.jpg"><span class="image-caption">Swimmers at the baths</span>
<span class="photo_credit">Photo by Ann Lee</span></div><p>{STORY[2]}</p>
<p>READ MORE: Council votes to close the library</p>{"".join(f"<p>{s}</p>" for s in STORY[3:])}</article>
</body></html>"""
    assert text_of(read_book(write(tmp_path, "captions.html", page))) == STORY
