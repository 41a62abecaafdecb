"""The hidden-text guard (readers/htmlscan.py) on scripts as real pages write them.

A script's content is raw text: it ends at the first ``</script`` (HTML's tokenizer, which libxml2 2.14 follows,
including the "escaped" states a ``<!--`` opens inside a script). A ``<script`` inside a JavaScript string,
comment, template or regular expression is not a start tag, so it says nothing about the script being left
open. Only a ``<script`` in the code itself, or markup that the missing end tag took in, is the sign of a script
that was never closed."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import html as lxml_html

from pipeline.errors import InputError
from pipeline.readers.html import read_html
from pipeline.readers.htmlscan import scan
from tests.test_html import FIRST, LAST, MIDDLE, page_around, read_whole, refused, write

# Scripts copied in shape (not in text) from what news, magazine and blog pages carry.
ORDINARY_SCRIPTS = [
    # An ad loader building its tag in a string: the "<script" follows markup, not a quote.
    """<script>var ad = '<div class="ad-slot"><script async src="https://ads.example/x.js"><\\/script></div>';
document.getElementById('slot').innerHTML = ad;</script>""",
    # The same in double quotes, with a tag before it.
    """<script>
  document.write("<p class=\\"promo\\"></p><script type=\\"text/javascript\\" src=\\"/w.js\\"><\\/scr" + "ipt>");
</script>""",
    # A template literal over several lines.
    """<script>
  const embed = `
    <figure class="video">
      <script type="module" src="${base}/player.js"><\\/script>
    </figure>`;
</script>""",
    # The old way of hiding a script from ancient browsers: inside "<!--" a "<script" and its "</script>" are
    # the script's own text (HTML's double-escaped state), and the script ends at the second </script>.
    """<script type="text/javascript"><!--
document.write('<div><script src="http://counter.example/c.js"></script></div>');
//--></script>""",
    # A regular expression and a comment that mention the tag.
    """<script>
  // strip any <script> a user pastes
  var clean = text.replace(/<script[^>]*>[\\s\\S]*?<\\/script>/gi, '');
  /* a <script> in a block comment */ var n = 1;
</script>""",
    # JSON-LD whose article body quotes a tag.
    """<script type="application/ld+json">{"@type": "NewsArticle",
"articleBody": "Editors warned that <b>a <script> tag</b> pasted into the form ran in readers' browsers."}</script>""",
    # A style whose comment mentions a <style> tag.
    """<style>/* overrides the <style> block the widget injects */ .w { content: "<style>"; }</style>""",
]


@pytest.mark.parametrize("script", ORDINARY_SCRIPTS)
def test_ordinary_scripts_are_read_whole(tmp_path: Path, script: str) -> None:
    read_whole(write(tmp_path, "news.html", page_around("{}" + script)))
    read_whole(write(tmp_path, "news.html", page_around(script + "{}")))


def test_a_page_of_several_such_scripts_loses_no_paragraph(tmp_path: Path) -> None:
    page = page_around("".join(ORDINARY_SCRIPTS[:3]) + "{}" + "".join(ORDINARY_SCRIPTS[3:]))
    read_whole(write(tmp_path, "blog.html", page))


def test_the_scan_ends_a_script_where_libxml2_does() -> None:
    # After the double-escaped "<script>...</script>" the script goes on to the second </script>: what follows
    # is the page's. libxml2 agrees (the script's text holds the inner end tag).
    page = "<html><body>" + ORDINARY_SCRIPTS[3] + "<p>After</p></body></html>"
    assert scan(page, "page") == set()
    root = lxml_html.document_fromstring(page)
    (script,) = root.iter("script")
    assert "</script>" in (script.text or "")
    assert [p.text for p in root.iter("p")] == ["After"]


@pytest.mark.parametrize(
    "markup",
    [
        # Left open: the next script's end tag closes it, and the paragraph between is hidden.
        "<script>var beam = 1;{}<script>var log = 1;</script>",
        # The same with an apostrophe in the hidden prose, on another line than the next script.
        "<script>var beam = 1;\n<p>The keeper's lamp</p>{}\n<script>var log = '<b>';</script>",
        # And with a string that mentions a tag after it: the real start tag comes first.
        "<script>track();{}<script src='/a.js'>var s = '<script>';</script>",
        # Markup with a link, end tags and a URL: none of it may pass for a comment or a regular expression.
        '<script>go();<p>See <a href="https://x.org/a">this</a> and https://y.org.</p>{}<script src="/a.js"></script>',
        # A style left open, closed by a later style.
        "<style>p { color: grey }{}<style>p { margin: 0 }</style>",
    ],
)
def test_a_script_left_open_before_another_is_still_refused(tmp_path: Path, markup: str) -> None:
    message = refused(write(tmp_path, "open.html", page_around(markup)), "never closed", "line 1")
    assert "hide the text" in message


def test_a_script_that_runs_to_the_end_of_the_file_is_still_refused(tmp_path: Path) -> None:
    page = page_around("{}").replace("<article>", "<script>var a = '<script>';<article>")
    with pytest.raises(InputError, match="never closed"):
        read_html(write(tmp_path, "eof.html", page))


def test_a_paragraph_inside_an_unterminated_string_does_not_hide_a_real_start_tag(tmp_path: Path) -> None:
    # An apostrophe in hidden prose must not make the later start tag look like part of a string.
    page = page_around("<script>go();\n<p>It's late, she said.</p>{}<script>x();</script>")
    refused(write(tmp_path, "quote.html", page), "never closed")
    assert FIRST and MIDDLE and LAST  # the page is the shared article


# Comments and styles real pages leave "open" on purpose or harmlessly: what they take in holds no text.
ORDINARY_OPENINGS = [
    # An Internet Explorer conditional comment whose content holds a comment: browsers hide it all.
    """<!--[if lte IE 9]><div class="ie-flag"><p>BROWSER UPDATE: please upgrade your browser to read on.</p>
</div> <!-- data-module-name="ieWarning" -->
<!--[endif]---->""",
    # An ad's code commented out whole, with a comment inside it.
    """<!-- <script async src="https://ads.example/ads.js"></script>
<!-- Mobile leaderboard
<ins class="adsbygoogle" style="display:inline-block;width:320px" data-ad-slot="7"></ins> -->""",
    # A comment that ends with "--" and a line break, then a script hidden in the old way.
    """<!--page: no selecting, no pasting--
<script language="JavaScript">
<!--
function key() { if (event.shiftKey) { window.close(); } }
//-->
</script>""",
    # A style left open whose text runs into a script and another style: no words are lost.
    """<style>
.share { display: inline-block; }
    <script type="text/javascript">
        $(document).ready(function () { var a = $("#zoom tr:eq(7)"); if (a.text() == "") { a.hide(); } });
    </script>
    <style>
        .box { width: 100%; }
</style>""",
]


@pytest.mark.parametrize("opening", ORDINARY_OPENINGS)
def test_openings_that_take_in_no_text_are_read(tmp_path: Path, opening: str) -> None:
    read_whole(write(tmp_path, "portal.html", page_around(opening + "{}")))
