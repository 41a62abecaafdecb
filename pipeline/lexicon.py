r"""Pronunciation rules: replacements applied to the text sent to the voice (never to titles in tags or file
names), so a name is said right or a symbol is said at all.

The rules file is UTF-8 text, one rule a line, applied from top to bottom, each to the text the rules above it
left::

    # A comment: a line whose first character (after spaces) is "#". Blank lines are ignored.
    重庆 => 崇庆                      literal: every "重庆" becomes "崇庆" (case matters)
    Dr. => Doctor
    (本章完) =>                       nothing on the right: the text is removed
    re:\bNo\.\s*(\d+) => Number \1    regular expression (Python syntax) after "re:"; \1 or \g<name> on the right
    re:(?i)\bnasa\b => NASA           inline flags work as in Python
    "C => D" => C to D                quotes keep "=>", a leading "#" or "re:", or end spaces inside a side:
    "  " => " "                       \" is a quote inside quotes and \\ a backslash; other backslashes stay
    re:"(?<==>)x" => y                a quoted regular expression (needed when it contains "=>")

Unquoted sides lose the spaces around them; the first "=>" outside quotes separates them. Longer phrases should
come before shorter ones they contain ("New York" before "York"): a later rule sees what an earlier one wrote.

Regular expressions are compiled once, when the file is read, and checked there, so a bad rule is a one-line
``UsageError`` naming the file and line before anything is sent: invalid syntax or group references, a pattern
that can match empty text (it would insert its replacement between every two characters), and a repetition
of variable length inside an unbounded one (``(a+)+``, ``(\w+\s?)+``, ``(a{1,5})*``), the classic
catastrophic-backtracking shape. That last
check is a guard, not a proof: it reads the pattern's parse tree, accepts a repetition whose body holds a
literal or a character class (``[a-z]+(?:-[a-z]+)*``), possessive repeats (``a++``) and atomic groups
(``(?>...)``), and misses overlapping alternatives and delimiters the inner repeat can match itself
(``(a|aa)*``, ``(\w+[\w-])+``). So the expressions run on the ``regex`` engine (checked by ``re``'s rules
first: the syntax is Python's), whose matching can be stopped: a rule that spends more than
``RULE_TIME_LIMIT_S`` on one segment (at most ``max_chars`` long) ends the run with one line naming its line.
"""

from __future__ import annotations

import importlib
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import regex

from pipeline.errors import UsageError

REGEX_PREFIX = "re:"
SEPARATOR = "=>"
# How long one rule may take on one segment. A sane rule takes microseconds on a few thousand characters; one
# that backtracks without end would hang the plan. ``regex`` (not ``re``, whose matching cannot be stopped)
# checks this while it matches. RE2 would never backtrack, but it has no lookarounds or backreferences.
RULE_TIME_LIMIT_S = 1.0


class RuleTooSlow(Exception):
    """A regular expression rule ran past ``RULE_TIME_LIMIT_S`` on one text."""


@dataclass(frozen=True)
class Rule:
    """One line of the rules file."""

    line: int  # 1-based line number in the file
    find: str  # the literal text, or the pattern of a regular expression
    replace: str  # the replacement (a template with \1 or \g<name> for a regular expression)
    pattern: Any = None  # a compiled ``regex`` pattern, for a regular expression

    @property
    def regex(self) -> bool:
        return self.pattern is not None

    def describe(self) -> str:
        """The rule as a person wrote it, for the plan: ``line 3: re:\\bDr\\. => Doctor``."""
        find = REGEX_PREFIX + self.find if self.regex else self.find
        return f"line {self.line}: {find} {SEPARATOR} {self.replace}".rstrip()

    def apply(self, text: str) -> tuple[str, int]:
        if self.pattern is not None:
            try:
                result: tuple[str, int] = self.pattern.subn(self.replace, text, timeout=RULE_TIME_LIMIT_S)
            except TimeoutError:
                raise RuleTooSlow(self.describe()) from None
            return result
        count = text.count(self.find)
        return (text.replace(self.find, self.replace), count) if count else (text, 0)


@dataclass(frozen=True)
class Lexicon:
    """Rules in file order. ``apply`` is pure: the same text always gives the same result."""

    rules: tuple[Rule, ...] = ()
    source: str = ""  # the file it came from, for messages

    def __bool__(self) -> bool:
        return bool(self.rules)

    def apply(self, text: str) -> tuple[str, tuple[int, ...]]:
        """``text`` with every rule applied in order, and how many replacements each rule made."""
        counts = []
        for rule in self.rules:
            try:
                text, n = rule.apply(text)
            except RuleTooSlow:
                raise _fail(
                    self.source,
                    rule.line,
                    f"the regular expression ran for over {RULE_TIME_LIMIT_S:g} s on one segment of "
                    f"{len(text):,} characters and was stopped (it backtracks without end, e.g. (a|a)*); "
                    "rewrite it",
                    (REGEX_PREFIX if rule.regex else "") + rule.find,
                ) from None
            counts.append(n)
        return text, tuple(counts)


def load_lexicon(path: Path) -> Lexicon:
    """Read and check a rules file. UsageError (one line, naming the file) when it cannot be read or a rule
    is wrong."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such pronunciation rules file; check the path") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the pronunciation rules ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: pronunciation rules must be UTF-8 (bad byte at offset {exc.start})") from None
    return parse_lexicon(text, source=str(path))


def parse_lexicon(text: str, *, source: str = "<rules>") -> Lexicon:
    """The rules in ``text`` (see the module docstring for the format)."""
    rules = []
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        rules.append(_parse_line(stripped, number, source))
    return Lexicon(tuple(rules), source)


def _fail(source: str, number: int, what: str, line: str) -> UsageError:
    shown = line if len(line) <= 80 else line[:77] + "..."
    return UsageError(f"{source}:{number}: {what}: {shown}")


def _parse_line(line: str, number: int, source: str) -> Rule:
    regex = line.startswith(REGEX_PREFIX)
    rest = line[len(REGEX_PREFIX) :].lstrip() if regex else line
    if rest.startswith('"'):
        find, after = _quoted(rest, number, source, line)
        after = after.lstrip()
        if not after.startswith(SEPARATOR):
            raise _fail(source, number, f'expected "{SEPARATOR}" after the quoted text', line)
        right = after[len(SEPARATOR) :]
    else:
        find, separator, right = rest.partition(SEPARATOR)
        if not separator:
            raise _fail(source, number, f'expected "text {SEPARATOR} replacement"', line)
        find = find.strip()
    right = right.strip()
    if right.startswith('"'):
        replace, after = _quoted(right, number, source, line)
        if after.strip():
            raise _fail(source, number, "nothing may follow the quoted replacement", line)
    else:
        replace = right
    if not find:
        raise _fail(source, number, "nothing to replace on the left", line)
    if not regex:
        # The book's text is NFC (see pipeline.textfacts): a rule typed in decomposed form must still match it.
        return Rule(number, unicodedata.normalize("NFC", find), unicodedata.normalize("NFC", replace))
    return Rule(number, find, replace, _compile(find, replace, number, source, line))


def _quoted(text: str, number: int, source: str, line: str) -> tuple[str, str]:
    """The string a quote opens at ``text[0]`` (\\" and \\\\ unescaped, other backslashes kept for regular
    expressions) and what follows its closing quote."""
    out: list[str] = []
    i = 1
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in '"\\':
            out.append(text[i + 1])
            i += 2
            continue
        if c == '"':
            return "".join(out), text[i + 1 :]
        out.append(c)
        i += 1
    raise _fail(source, number, "a quote is not closed", line)


def _compile(find: str, replace: str, number: int, source: str, line: str) -> Any:
    """The pattern compiled for ``regex``, after ``re`` has checked it: Python's syntax, and no other."""
    try:
        checked = re.compile(find)
    except re.error as exc:
        raise _fail(source, number, f"not a valid regular expression ({exc.msg} at position {exc.pos})", line) from None
    try:
        pattern = regex.compile(find)
    except regex.error as exc:  # re took it: a corner where the two engines differ
        raise _fail(source, number, f"not a regular expression this program can run ({exc})", line) from None
    try:
        checked.sub(replace, "")  # parses the template: bad group references and escapes fail here, not later
        pattern.sub(replace, "")
    except (re.error, regex.error, IndexError) as exc:
        raise _fail(source, number, f"the replacement is not valid for this expression ({exc})", line) from None
    shape = _tree(find)
    if shape is not None:
        if shape.getwidth()[0] == 0:
            raise _fail(
                source,
                number,
                "the expression can match empty text, so it would insert its replacement between characters; "
                "make it match at least one character",
                line,
            )
        if _nested_repeat(list(shape)):
            raise _fail(
                source,
                number,
                "a repetition inside an unbounded repetition can take exponential time; "
                "write the inner one possessive (a++) or atomic ((?>a+))",
                line,
            )
    return pattern


# The parser behind ``re`` (CPython 3.11+): private, so every use of it degrades to "no check" if it changes.
try:
    _PARSER: Any = importlib.import_module("re._parser")
    _CONST: Any = importlib.import_module("re._constants")
except ImportError:  # pragma: no cover - another Python implementation
    _PARSER = _CONST = None


def _tree(pattern: str) -> Any:
    if _PARSER is None:
        return None
    try:
        return _PARSER.parse(pattern)
    except Exception:  # compiled fine above: only the guard is skipped
        return None


def _nested_repeat(items: Any, inside: bool = False) -> bool:
    r"""Whether a repeat of variable length (``a+``, ``a{1,5}``) sits inside a long one (``+``, ``*``, more than
    ten times) with nothing fixed between them: the ways to split a run grow exponentially. A literal or a
    character class in the outer body (``(?:-[a-z]+)*``, ``(\w+\s)+``) delimits the inner repeats and makes it
    safe; so do possessive repeats and atomic groups, which never give back what they matched."""
    c = _CONST
    try:
        for op, av in items:
            if op in (c.MAX_REPEAT, c.MIN_REPEAT):
                low, high, body = av
                if inside and low != high:
                    return True
                long = high == c.MAXREPEAT or high > 10
                if _nested_repeat(body, (inside or long) and not _delimited(body)):
                    return True
            elif any(_nested_repeat(body, inside and keeps) for body, keeps in _children(op, av)):
                return True
    except (AttributeError, TypeError, ValueError, IndexError):
        return False
    return False


def _delimited(body: Any) -> bool:
    """Whether a repeat's body holds a literal or a character class of its own besides any repeats."""
    c = _CONST
    items = list(body)
    while len(items) == 1 and items[0][0] == c.SUBPATTERN:
        items = list(items[0][1][-1])
    return any(op in (c.LITERAL, c.IN) for op, _ in items)


def _children(op: Any, av: Any) -> list[tuple[Any, bool]]:
    """The sub-patterns of one parse-tree node, each with whether an enclosing repeat still counts there."""
    c = _CONST
    if op == c.POSSESSIVE_REPEAT:
        return [(av[2], False)]
    if op == c.ATOMIC_GROUP:
        return [(av, False)]
    if op == c.SUBPATTERN:
        return [(av[-1], True)]
    if op == c.BRANCH:
        return [(alt, True) for alt in av[1]]
    if op in (c.ASSERT, c.ASSERT_NOT):
        return [(av[1], True)]
    if op == c.GROUPREF_EXISTS:
        return [(branch, True) for branch in av[1:] if branch is not None]
    return []
