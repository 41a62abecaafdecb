"""Pronunciation rules: the file format, applying rules in order with counts, and one-line errors naming the file
and line for every way a rule can be wrong."""

from __future__ import annotations

import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
import regex
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import UsageError
from pipeline.lexicon import RULE_TIME_LIMIT_S, Lexicon, load_lexicon, parse_lexicon
from tests.helpers import REPO, run_cli

RULES = r"""# Names the voice gets wrong
重庆 => 崇庆
  Dr. => Doctor

(本章完) =>
re:\bNo\.\s*(\d+) => Number \1
re:(?i)\bnasa\b => N A S A
"C => D" => C to D
" x " => " ex "
"#1" => number one
"re:a" => literal re
re:"(?<==>)q" => queue
"say \"hi\"" => "say \\hello"
"""


def test_the_format() -> None:
    lexicon = parse_lexicon(RULES, source="names.txt")
    assert [(r.line, r.find, r.replace, r.regex) for r in lexicon.rules] == [
        (2, "重庆", "崇庆", False),
        (3, "Dr.", "Doctor", False),
        (5, "(本章完)", "", False),
        (6, r"\bNo\.\s*(\d+)", r"Number \1", True),
        (7, r"(?i)\bnasa\b", "N A S A", True),
        (8, "C => D", "C to D", False),
        (9, " x ", " ex ", False),
        (10, "#1", "number one", False),
        (11, "re:a", "literal re", False),
        (12, "(?<==>)q", "queue", True),
        (13, 'say "hi"', "say \\hello", False),
    ]
    assert lexicon.source == "names.txt" and lexicon
    assert not parse_lexicon("# only a comment\n\n")


def test_rules_apply_in_order_and_count_their_replacements() -> None:
    lexicon = parse_lexicon(RULES)
    text, counts = lexicon.apply("Dr. Li took No. 5 from 重庆 to 重庆 with Nasa. C => D! a x b=>q (本章完)")
    assert text == "Doctor Li took Number 5 from 崇庆 to 崇庆 with N A S A. C to D! a ex b=>queue "
    assert counts == (2, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0)
    assert lexicon.apply("nothing to change") == ("nothing to change", (0,) * 11)


def test_a_later_rule_sees_what_an_earlier_one_wrote() -> None:
    lexicon = parse_lexicon("New York => Noo Yawk\nYork => Yawk\nYawk => Yoke\n")
    assert lexicon.apply("New York and York") == ("Noo Yoke and Yoke", (1, 1, 2))


def test_literals_match_the_composed_text_the_readers_give() -> None:
    lexicon = parse_lexicon("Cafe\u0301 => Kaffee\n")  # typed decomposed, as some editors save it
    assert lexicon.apply("Café au lait") == ("Kaffee au lait", (1,))


def test_describe_shows_the_rule_as_written() -> None:
    rules = parse_lexicon(RULES).rules
    assert rules[0].describe() == "line 2: 重庆 => 崇庆"
    assert rules[2].describe() == "line 5: (本章完) =>"
    assert rules[3].describe() == r"line 6: re:\bNo\.\s*(\d+) => Number \1"


def test_regular_expressions_are_compiled_once(monkeypatch: pytest.MonkeyPatch) -> None:
    lexicon = parse_lexicon("re:a+b => x\n")
    assert isinstance(lexicon.rules[0].pattern, regex.Pattern)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("compiled again")

    monkeypatch.setattr(re, "compile", refuse)
    monkeypatch.setattr(regex, "compile", refuse)
    assert lexicon.apply("aab ab") == ("x x", (2,))


def test_load_a_file_with_a_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "rules.txt"
    path.write_bytes("\ufeff# comment\r\n重庆 => 崇庆\r\n".encode())
    lexicon = load_lexicon(path)
    assert [(r.line, r.find, r.replace) for r in lexicon.rules] == [(2, "重庆", "崇庆")]
    assert lexicon.source == str(path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("re:(abc => x", "not a valid regular expression (missing ), unterminated subpattern at position 0)"),
        ("re:[a- => x", "not a valid regular expression"),
        (r"re:(a) => \2", "the replacement is not valid for this expression (invalid group reference 2"),
        (r"re:a => \q", "the replacement is not valid"),
        ("re:a* => x", "can match empty text"),
        (r"re:\b => x", "can match empty text"),
        ("re:(a+)+ => x", "exponential time"),
        (r"re:(\w+\s?)+$ => x", "exponential time"),
        ("re:(a{1,5})+x => y", "exponential time"),
        ("just some words", 'expected "text => replacement"'),
        (" => nothing on the left", "nothing to replace"),
        ('"" => x', "nothing to replace"),
        ('"open => x', "a quote is not closed"),
        ('"a" b => x', 'expected "=>" after the quoted text'),
        ('a => "b" c', "nothing may follow the quoted replacement"),
        ('a => "b', "a quote is not closed"),
    ],
)
def test_a_bad_rule_is_one_line_naming_the_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "rules.txt"
    path.write_text(f"# first\n\nok => fine\n{line}\n", encoding="utf-8")
    with pytest.raises(UsageError) as info:
        load_lexicon(path)
    text = str(info.value)
    assert text.startswith(f"{path}:4: ") and message in text and "\n" not in text
    assert text.endswith(line.strip()[:77])


@pytest.mark.parametrize(
    "pattern",
    [r"(?:\d+,)+\d+", r"(\w+\s)+", r"[a-z]+(?:-[a-z]+)*", r"(?:\d++,)+", r"(?>a+)+", r"(a|b)+", r"(\d+){3}"],
)
def test_safe_repetitions_are_accepted(pattern: str) -> None:
    assert parse_lexicon(f"re:{pattern} => x").rules[0].regex


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such pronunciation rules file"):
        load_lexicon(tmp_path / "missing.txt")
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("café => cafe\n".encode("latin-1"))
    with pytest.raises(UsageError, match="must be UTF-8"):
        load_lexicon(latin)
    with pytest.raises(UsageError, match="cannot read"):
        load_lexicon(tmp_path)


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


SIDES = st.text(alphabet=st.characters(blacklist_categories=["Cs", "Cc", "Zl", "Zp"]), max_size=12)


@given(find=SIDES.filter(bool), replace=SIDES, text=st.text(max_size=60))
def test_any_literal_can_be_written_quoted_and_acts_as_str_replace(find: str, replace: str, text: str) -> None:
    lexicon = parse_lexicon(f"{quote(find)} => {quote(replace)}\n")
    # Both sides are taken in NFC, as the readers give the book (a CJK compatibility ideograph becomes its
    # unified one): the rule is str.replace on those forms.
    find, replace = unicodedata.normalize("NFC", find), unicodedata.normalize("NFC", replace)
    assert [(r.find, r.replace, r.regex) for r in lexicon.rules] == [(find, replace, False)]
    assert lexicon.apply(text) == (text.replace(find, replace), (text.count(find),))


@given(text=st.text(max_size=80))
def test_an_empty_lexicon_changes_nothing(text: str) -> None:
    assert Lexicon().apply(text) == (text, ())


# Overlapping alternatives under a star: the parse-tree guard lets them through (it cannot tell (a|a) from (a|b)),
# and Python's re backtracks through 2**n ways to split a run of a's. These must end, not hang the plan. The
# rules run in a child process with a time limit: re's matching loop holds the GIL and never returns to Python,
# so not even pytest-timeout's thread method could end this test if the rules ever ran on re again.
APPLY_IN_CHILD = """
import sys
from pipeline.errors import UsageError
from pipeline.lexicon import parse_lexicon
try:
    print(parse_lexicon(sys.argv[1], source="rules.txt").apply("a" * 5000))
except UsageError as exc:
    print(exc)
"""


def apply_in_child(rules: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", APPLY_IN_CHILD, rules], capture_output=True, text=True, timeout=30, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.timeout(60)
def test_a_rule_that_backtracks_without_end_is_ended_naming_its_line() -> None:
    message = apply_in_child("ok => fine\n# the next one never ends on re\nre:(a|a)*[bc] => x\n")
    assert message.startswith("rules.txt:3: the regular expression ran for over ") and "\n" not in message
    assert f"{RULE_TIME_LIMIT_S:g} s" in message and message.endswith("re:(a|a)*[bc]")


@pytest.mark.timeout(60)
def test_the_issue_s_rule_on_five_thousand_a_s_finishes() -> None:
    # regex sees that no "c" is there to match; the rule changes nothing, and what follows it still applies.
    assert apply_in_child("re:(a|a)*c => x\nre:a{5000} => five thousand\n") == "('five thousand', (0, 1))"


@pytest.mark.timeout(120)
def test_plan_stops_with_one_line_on_a_rule_that_backtracks(tmp_path: Path) -> None:
    book, rules = tmp_path / "book.txt", tmp_path / "rules.txt"
    book.write_text("Title\n\n" + "a" * 5000 + "\n", encoding="utf-8")
    rules.write_text("re:(a|a)*\\d => x\n", encoding="utf-8")
    done = run_cli(
        "plan", str(book), "--lexicon", str(rules), "--config", str(REPO / "configs" / "local.toml"), timeout=90
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{rules}:1: the regular expression ran for over" in lines[0], done.stderr
    assert lines[0].endswith("rewrite it: re:(a|a)*\\d") and "Traceback" not in done.stderr
