"""The words of a hit that match the query, marked: HTML-escaped text with <mark> around them,
the same for both databases (their own highlighters differ, and neither marks misspellings)."""

from __future__ import annotations

import re
from html import escape

from core.search.terms import Term, likeness, plain

ALIKE = 0.4  # the likeness at which a word counts as the misspelled term
_WORD = re.compile(r"[^\W_]+")
SNIPPET_CHARS = 160


def _spans(text: str, terms: list[Term], fuzzy: bool) -> list[tuple[int, int]]:
    spans = []
    wanted_words = [(term, plain(term.text)) for term in terms]
    for found in _WORD.finditer(text):
        word = plain(found.group())
        for term, wanted in wanted_words:
            if term.cjk:  # a fragment anywhere in the word (decomposing Hangul would move it)
                at = found.group().lower().find(term.text)
                if at >= 0:
                    spans.append((found.start() + at, found.start() + at + len(term.text)))
                    break
                continue
            if (
                word.startswith(wanted)
                or (len(word) >= 4 and wanted.startswith(word))
                or (fuzzy and likeness(wanted, word) >= ALIKE)
            ):
                spans.append(found.span())
                break
    return spans


def mark(text: str, terms: list[Term], fuzzy: bool = False) -> str:
    """The text, escaped, with each matching word (or CJK fragment) in <mark>."""
    return _marked(text, _spans(text, terms, fuzzy))


def snippet(text: str, terms: list[Term], fuzzy: bool = False) -> str:
    """Up to SNIPPET_CHARS of the text around its first match (its beginning without one)."""
    spans = _spans(text, terms, fuzzy)
    start = 0
    if spans and spans[0][1] > SNIPPET_CHARS:
        start = max(0, spans[0][0] - SNIPPET_CHARS // 3)
        start = text.find(" ", start) + 1 or start  # from a word's beginning
    end = min(len(text), start + SNIPPET_CHARS)
    if end < len(text):
        end = text.rfind(" ", start, end) if " " in text[start:end] else end
    shown = [(max(s, start), min(e, end)) for s, e in spans if s < end and e > start]
    body = _marked(text[start:end], [(s - start, e - start) for s, e in shown])
    return ("…" if start > 0 else "") + body + ("…" if end < len(text) else "")


def _marked(text: str, spans: list[tuple[int, int]]) -> str:
    parts, at = [], 0
    for start, end in spans:
        parts.append(escape(text[at:start]))
        parts.append(f"<mark>{escape(text[start:end])}</mark>")
        at = end
    parts.append(escape(text[at:]))
    return "".join(parts)
