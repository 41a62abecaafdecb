"""Articles from pages laid out in tables (readers/html.py): pages we write ourselves in the shapes of an old
Chinese forum thread and a 2005-era news site. readability judges where the article is; what it picks there
is the article's text and nothing beside it (the replies under a post, the sidebar beside a story)."""

from __future__ import annotations

from pathlib import Path

from pipeline.models import Book
from pipeline.readers import read_book
from pipeline.textfacts import normalize_paragraph

# A forum post: long paragraphs of Chinese, whose commas are "，" and "、", never ",".
POST = [
    "上周末我和几位老同学一起去了城西的老茶馆，那里的木桌椅还是二十年前的样子，"
    "墙上挂着泛黄的老照片，让人一下子想起了小时候跟着爷爷来喝茶的日子。",
    "茶馆的老板姓周，今年已经七十多岁了，他说这家店是他父亲传下来的，"
    "最热闹的时候每天要烧掉三大锅开水，说书的、下棋的、卖瓜子的挤满了整个院子。",
    "如今来喝茶的大多是附近的老人，年轻人很少进门，周老板说他不打算改装修，"
    "也不想卖咖啡，只要还有人愿意坐下来聊天，他就会一直开下去。",
    "我们点了一壶菊花茶、一碟花生和几块桂花糕，一坐就是一个下午，"
    "聊起了当年在学校门口排队买烧饼、放学后在河边捉蝌蚪的事情，大家都笑得停不下来。",
    "临走的时候，周老板送给我们每人一包自己炒的茶叶，还叮嘱我们下次一定要带孩子来看看，"
    "我想这样的地方，值得我们多来几次，也值得写下来让更多人知道。",
]
# Its replies: short, and two of them with ASCII commas, the only commas readability counted.
REPLIES = [
    "写得真好，看得我也想去了。",
    "Nice post, thanks for sharing, will visit next time.",
    "楼主说的是城西哪条街？求具体地址。",
    "Agreed, old places like this, once gone, never come back.",
    "顶一个，支持楼主。",
]


def forum_page() -> str:
    # The post is text straight in its <td>, its paragraphs set apart by <br>; each reply is a table of its own.
    post = "<br>\n".join(POST)
    replies = "".join(
        f'<table class="reply" width="100%"><tr><td class="author" width="120">网友{n}</td>'
        f'<td class="content">{reply}</td></tr>'
        f'<tr><td></td><td class="time">2006-05-0{n} 21:1{n}</td></tr></table>'
        for n, reply in enumerate(REPLIES, start=1)
    )
    return f"""<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8">
<title>城西的老茶馆 - 生活杂谈 - 城西论坛</title></head><body>
<table width="100%"><tr><td><a href="/">城西论坛</a> &gt; <a href="/life">生活杂谈</a></td>
<td align="right"><a href="/login">登录</a> | <a href="/reg">注册</a></td></tr></table>
<table width="100%" class="topic"><tr><td colspan="2" class="title"><b>城西的老茶馆</b></td></tr>
<tr><td class="author" width="120">茶客老王<br>帖子：312</td><td class="content">{post}</td></tr>
<tr><td></td><td class="time">发表于 2006-05-01 20:30</td></tr></table>
{replies}
<table width="100%"><tr><td><a href="/life">← 返回生活杂谈</a> <a href="#top">↑ 回到顶部</a></td></tr></table>
</body></html>"""


STORY = [
    "The ferry from Port Allan to the island of Carrick made its last crossing on Sunday, after sixty-one years "
    "of service in every kind of weather.",
    "Captain Ruth Morrow, who has worked on the route since she was nineteen, said the final trip was quieter "
    "than she expected, with only a few regulars aboard.",
    "The new bridge, opened by the regional council last month, has cut the journey to the mainland from forty "
    "minutes to under ten for most drivers.",
    "Islanders are divided over the change: shopkeepers welcome the extra visitors, while older residents say "
    "the island has lost something it will not get back.",
    "The ferry itself, the Carrick Lass, has been sold to a museum in the north, where it will be restored and "
    "opened to visitors next summer.",
]
# The sidebar beside the story: photos of other stories, each with its caption centred under it.
SIDEBAR = [
    "Harbour lights at dusk",
    "The old pier in winter",
    "Fishing boats at rest",
    "School sports day results",
    "Lifeboat crew honoured",
    "New bakery on Quay Street",
    "Storm damage in photos",
    "Carrick church restored",
    "Island choir on tour",
    "Lambing season begins",
    "Letters to the editor",
    "Tide tables for March",
]


def table_layout_page() -> str:
    # One row, two columns: the story as text in a <font> of the left cell (paragraphs set apart by <br><br>),
    # the sidebar's captioned photos in the right one.
    story = "<br><br>\n".join(STORY)
    sidebar = "\n".join(
        f'<p align="center"><img src="photo{n}.jpg" width="120"><br>{caption}</p>' for n, caption in enumerate(SIDEBAR)
    )
    return f"""<html><head><title>Last ferry leaves Port Allan</title></head>
<body bgcolor="#ffffff"><table width="760" border="0" cellpadding="0" cellspacing="0">
<tr><td colspan="2"><img src="masthead.gif" alt="The Carrick Gazette"></td></tr>
<tr><td colspan="2"><a href="/">Home</a> | <a href="/news">News</a> | <a href="/sport">Sport</a></td></tr>
</table>
<table width="760" border="0" cellpadding="4" cellspacing="0">
<tr><td width="560" valign="top"><font face="Verdana" size="2"><b>Last ferry leaves Port Allan</b><br><br>
{story}</font></td>
<td width="200" valign="top" align="center">{sidebar}</td></tr>
</table>
<table width="760"><tr><td align="center"><font size="1">Copyright 2005 The Carrick Gazette</font></td></tr></table>
</body></html>"""


def text_of(book: Book) -> list[str]:
    return [p for c in book.chapters for p in c.paragraphs]


def write(tmp_path: Path, name: str, page: str) -> Path:
    path = tmp_path / name
    path.write_text(page, encoding="utf-8")
    return path


def test_a_chinese_forum_post_in_a_table_is_read_whole_without_its_replies(tmp_path: Path) -> None:
    # readability counted only ASCII commas: the post's "，" scored nothing and a short reply with ", " outscored
    # it, so the reader read the thread's furniture and the post's first line and said "check it".
    book = read_book(write(tmp_path, "forum.html", forum_page()))
    read = " ".join(text_of(book))
    for paragraph in POST:
        assert normalize_paragraph(paragraph) in read, f"post paragraph not read: {paragraph[:20]}…"
    for reply in REPLIES:
        assert normalize_paragraph(reply) not in read, f"reply read as the article: {reply}"
    assert "返回" not in read and "2006-05-03" not in read
    assert not any("check it" in note for note in book.skipped), book.skipped


def test_a_table_row_is_narrowed_to_the_article_cell_not_the_sidebar_beside_it(tmp_path: Path) -> None:
    # readability picks the row; its cells are columns side by side: the story in one, the sidebar in the next.
    book = read_book(write(tmp_path, "ferry.html", table_layout_page()))
    paragraphs = text_of(book)
    read = " ".join(paragraphs)
    for sentence in STORY:
        assert sentence in read, f"story sentence not read: {sentence[:40]}…"
    sidebar = [line for line in SIDEBAR if any(line in p for p in paragraphs)]
    assert not sidebar, f"sidebar lines read as the article: {sidebar}"
    assert "Copyright" not in read
    assert not any("check it" in note for note in book.skipped), book.skipped
