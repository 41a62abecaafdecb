"""What a news page puts inside and around an article's sentences (readers/html.py): pages we write ourselves in
the shape of a local news site. A post from a social network the article embeds is read as a quotation, in its
place, without its bare web addresses; a hover card inside a sentence (a picture, the name again, links to
stories) is not read into it; the standfirst under the headline is the book's description, not its first
paragraph; and a paywalled page's lists of popular stories are not read in place of its one paragraph."""

from __future__ import annotations

from pathlib import Path

from pipeline.models import Book
from pipeline.readers import read_book

STORY = [
    "The county council voted on Tuesday night to build a tram line from the railway station at Ashford Vale to "
    "the new hospital on the hill, a route of six kilometres that buses now take forty minutes to cover.",
    "Councillors were told that the line would carry about nine thousand passengers a day once it opened, and "
    "that the trams would run every eight minutes from six in the morning until midnight.",
    "The cost, put at two hundred million pounds, will be met in part by a grant from the transport fund, with "
    "the rest borrowed against the fares and the rents of the shops to be built around the stops.",
    "Shopkeepers on Mill Road, where the tracks will run down the middle of the street, said they feared two "
    "years of digging would keep customers away, and asked the council to help them with their rates.",
    "The council's leader said the works would be done in stretches of four hundred metres at a time, so that "
    "no shop would have its pavement closed for more than ten weeks, and that a fund would be set up.",
    "The first trams are due to run in the autumn of next year, after a month of trials at night, and the old "
    "bus route up the hill will be kept until the new line has proved it can carry the crowds.",
]
NAV = "".join(f'<li><a href="/{w.lower()}">{w}</a></li>' for w in ["Home", "News", "Sport", "Weather"])


def news_page(body: str, head: str = "", after: str = "") -> str:
    return f"""<!DOCTYPE html><html lang="en-GB"><head><meta charset="utf-8">
<title>Tram line to the hospital approved - The Vale Courier</title>{head}
<meta property="og:site_name" content="The Vale Courier"></head><body>
<header><nav><ul>{NAV}</ul></nav></header>
<main><article><h1>Tram line to the hospital approved</h1>
{body}
</article>{after}</main>
<footer><p>The Vale Courier, 12 Market Street, Ashford Vale.</p><ul>{NAV}</ul></footer>
</body></html>"""


def paragraphs(lines: list[str]) -> str:
    return "".join(f"<p>{line}</p>" for line in lines)


def text_of(book: Book) -> list[str]:
    return [p for c in book.chapters for p in c.paragraphs]


def read_file(tmp_path: Path, name: str, page: str) -> Book:
    path = tmp_path / name
    path.write_text(page, encoding="utf-8")
    return read_book(path)


def read_page(tmp_path: Path, name: str, page: str) -> list[str]:
    return text_of(read_file(tmp_path, name, page))


# Two posts the article quotes, each in the markup its network gives a page to embed it, inside the wrappers two
# sites put around it. Their links whose text is only a web address are not read; a hashtag's link is.
POSTS = [
    "We are delighted the council has backed the tram line to the hospital. Work starts in the spring! #ValeTrams",
    "Two years of digging outside my shop is two years without customers. Who pays our rent while they lay track?",
]
ATTRIBUTIONS = ["— Jane Roe (@janeroe) November 18, 2019", "— Mill Road Traders (@millroadshops) November 19, 2019"]
BARE_ADDRESSES = ["https://t.co/xyz", "pic.twitter.com/AbC123", "https://t.co/q7Rr"]


def test_an_embedded_post_is_read_in_place_as_a_quotation_without_its_bare_web_addresses(tmp_path: Path) -> None:
    first = (
        '<div class="social-media-embed"><blockquote class="twitter-tweet"><p lang="en" dir="ltr">'
        + POSTS[0].replace("#ValeTrams", '<a href="https://twitter.com/hashtag/ValeTrams">#ValeTrams</a>')
        + ' <a href="https://t.co/xyz">https://t.co/xyz</a>'
        + ' <a href="https://twitter.com/janeroe/status/1/photo/1">pic.twitter.com/AbC123</a></p>'
        + '&mdash; Jane Roe (@janeroe) <a href="https://twitter.com/janeroe/status/1">November 18, 2019</a>'
        + '</blockquote><script async src="https://platform.twitter.com/widgets.js"></script></div>'
    )
    second = (
        '<div class="sdc-article-widget sdc-article-tweet"><div class="sdc-article-tweet__inner">'
        f'<blockquote class="twitter-tweet" data-lang="en"><p lang="en" dir="ltr">{POSTS[1]}'
        ' <a href="https://t.co/q7Rr">https://t.co/q7Rr</a></p>'
        "&mdash; Mill Road Traders (@millroadshops) "
        '<a href="https://twitter.com/millroadshops/status/2">November 19, 2019</a></blockquote></div></div>'
    )
    body = paragraphs(STORY[:3]) + first + paragraphs(STORY[3:4]) + second + paragraphs(STORY[4:])
    read = read_page(tmp_path, "posts.html", news_page(body))
    # Each post's text, then its attribution line, between the paragraphs it stood between.
    assert read == [*STORY[:3], POSTS[0], ATTRIBUTIONS[0], STORY[3], POSTS[1], ATTRIBUTIONS[1], *STORY[4:]]
    assert not [line for line in read if any(address in line for address in BARE_ADDRESSES)]


# A hover card: the name in the sentence is a link, and beside it the card a page shows when the pointer rests on
# it (a picture, the name again, the person's latest stories as links), written inside the sentence.
CARD = (
    '<span class="rollover-people-block"><span><img src="/img/jane-roe.jpg" alt="">'
    '<a class="name" href="/people/jane-roe">Jane Q. Roe</a><a href="/story/1">Roe doubles down on tram plan</a>'
    '<a href="/story/2">Council leader answers her critics</a></span></span>'
)
CARD_TEXT = "Jane Q. RoeRoe doubles down on tram planCouncil leader answers her critics"
SENTENCE = (
    "County council leader {} said on Monday that the first stretch of track would be laid outside the hospital "
    "gates, so that patients and staff would see the work begin before anyone else in the town."
)
NAME = '<a href="/people/jane-roe">Jane Roe</a>'


def test_a_hover_card_inside_a_sentence_is_not_read_into_it(tmp_path: Path) -> None:
    body = paragraphs([*STORY[:2], SENTENCE.format(NAME + CARD), *STORY[2:]])
    read = read_page(tmp_path, "card.html", news_page(body))
    # The name outside the card stays in the sentence; the card's name and story titles do not run into it.
    assert read == [*STORY[:2], SENTENCE.format("Jane Roe"), *STORY[2:]]
    assert not [line for line in read if "Roe doubles down" in line or "Jane Q. Roe" in line]
    # The real shape: the name and its card inside one span ("rollover-people"), and a span around the whole
    # sentence. Only the card goes: the name stays, and so does the sentence.
    nested = (
        f'<span style="font-weight: 400;">{SENTENCE.format(f"<span class=rollover-people>{NAME}{CARD}</span>")}</span>'
    )
    read = read_page(tmp_path, "nested-card.html", news_page(paragraphs([*STORY[:2], nested, *STORY[2:]])))
    assert read == [*STORY[:2], SENTENCE.format("Jane Roe"), *STORY[2:]]
    # The card's span left open (its end tag missing) takes in the rest of the sentence: it is no card then, and
    # the sentence is read as before, the card's text in it, neither refused nor cut.
    unclosed = CARD.removesuffix("</span>")
    body = paragraphs([*STORY[:2], SENTENCE.format(NAME + unclosed), *STORY[2:]])
    read = read_page(tmp_path, "open-card.html", news_page(body))
    assert read == [*STORY[:2], SENTENCE.format("Jane Roe" + CARD_TEXT), *STORY[2:]]


STANDFIRST = (
    "Trams every eight minutes from the station to the hospital gates, with the first passengers due next autumn"
)
META = "The county council approves a tram line from Ashford Vale station to the hospital."


def test_the_standfirst_is_the_books_description_not_its_first_paragraph(tmp_path: Path) -> None:
    marks = {
        "sub-head.html": f'<h2 class="sub-head" itemprop="description">{STANDFIRST}</h2>',
        "standfirst.html": f'<p class="standfirst">{STANDFIRST}</p>',
        "dek.html": f'<div class="article-dek">{STANDFIRST}</div>',
    }
    for name, mark in marks.items():
        book = read_file(tmp_path, name, news_page(mark + paragraphs(STORY)))
        assert text_of(book) == STORY, name
        assert book.info.description == STANDFIRST, name
    # The page's own description, when it has one, is the book's: the standfirst is still not read.
    head = f'<meta name="description" content="{META}">'
    book = read_file(tmp_path, "meta.html", news_page(marks["standfirst.html"] + paragraphs(STORY), head=head))
    assert text_of(book) == STORY
    assert book.info.description == META


def test_a_pages_only_prose_marked_as_its_description_is_read(tmp_path: Path) -> None:
    # A video's page: its one paragraph is marked as the description. Taken out, the book would read the menu.
    page = news_page(f'<div itemprop="description"><p>{PAYWALLED}</p></div>')
    assert text_of(read_file(tmp_path, "video.html", page)) == [PAYWALLED]


def test_a_row_of_cards_is_no_standfirst(tmp_path: Path) -> None:
    # Bootstrap's "card-deck" is a row of cards, not a "deck" under the headline.
    deck = '<div class="card-deck"><p>The route, the stops and the timetable in three cards.</p></div>'
    book = read_file(tmp_path, "deck.html", news_page(paragraphs(STORY[:2]) + deck + paragraphs(STORY[2:])))
    assert "The route, the stops and the timetable in three cards." in text_of(book)


# A paywalled page: the headline, the standfirst, one paragraph, the paywall's offer, then the site's lists of
# its most popular videos and articles, each title a link. readability's reading takes in the lists and keeps
# them (they are most of it); judged by its prose, it holds little more than trafilatura's, which is read (four
# titles in a list outweighed the paragraph before readings were judged without their lists).
PAYWALLED = (
    "The county council voted on Tuesday night to build a tram line from the railway station at Ashford Vale to "
    "the new hospital on the hill, ending years of argument over a route that buses now take forty minutes to "
    "cover, and the first trams are due to run in the autumn of next year."
)
VIDEOS = [
    "Watch: the first tram arrives at the depot on a lorry",
    "Watch: shopkeepers on Mill Road speak about the works",
    "Watch: how the track will be laid down the middle of the street",
]
POPULAR = [
    "Hospital car park charges to rise for the third year in a row",
    "Mill Road bakery closes after ninety years of trading",
    "Ashford Vale station to get a new footbridge and lifts by the summer",
    "Five things to do in Ashford Vale this weekend, whatever the weather",
]
PAYWALL = ["To Read the Full Story", "Subscribe", "Sign In"]


def links(titles: list[str], where: str) -> str:
    return "<ul>" + "".join(f'<li><a href="/{where}/{n}">{t}</a></li>' for n, t in enumerate(titles)) + "</ul>"


def test_a_paywalled_pages_paragraph_is_read_not_its_lists_of_popular_stories(tmp_path: Path) -> None:
    body = (
        f'<p class="standfirst">{STANDFIRST}</p><p>{PAYWALLED}</p>'
        f'<div class="paywall"><h3>{PAYWALL[0]}</h3>'
        f'<p><a href="/subscribe">{PAYWALL[1]}</a> <a href="/login">{PAYWALL[2]}</a></p></div>'
    )
    popular = (
        f'<section class="most-popular"><h2>Most Popular Videos</h2>{links(VIDEOS, "video")}'
        f"<h2>Most Popular Articles</h2>{links(POPULAR, 'news')}</section>"
    )
    book = read_file(tmp_path, "paywalled.html", news_page(body, after=popular))
    read = text_of(book)
    assert not [line for line in read if any(t in line for t in [*VIDEOS, *POPULAR, *PAYWALL])]
    assert read == [PAYWALLED]
    assert [c.title for c in book.chapters] == ["Tram line to the hospital approved"]
    assert book.info.description == STANDFIRST
