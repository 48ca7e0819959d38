"""A search query's words, as both databases' indexes see them, and the trigram likeness that
decides which words a misspelling stands for."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

# Hangul jamo and syllables, kana, CJK ideographs: scripts written without spaces between words
# (or, for Korean, with particles glued to them), indexed as overlapping pairs of characters so
# any two-character fragment finds its word. PostgreSQL's index uses the same class
# (migration 0008, event_search_bigrams).
CJK_CLASS = (
    r"[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf"
    r"\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]"
)
_RUNS = re.compile(rf"{CJK_CLASS}+|(?:(?!{CJK_CLASS})[^\W_])+")
_CJK = re.compile(CJK_CLASS)
# Words a buyer types that no title is found by ("jazz in the park").
STOPWORDS = frozenset(
    {"a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "in", "is", "it", "of"}
    | {"on", "or", "the", "this", "that", "to", "with"}
)
MAX_TERMS = 12
# A word this long or longer is found with two adjacent letters swapped ("symphnoy"), at
# SWAPPED_LIKENESS (a swap changes up to four trigrams: in a short word, every one of them).
SHORTEST_SWAPPED = 5
SWAPPED_LIKENESS = 0.5


@dataclass(frozen=True)
class Term:
    """A word of the query, lower-cased: letters and digits, or a run of CJK characters."""

    text: str
    cjk: bool

    def bigrams(self) -> list[str]:
        """The overlapping character pairs a CJK run is indexed as (a lone character: itself)."""
        if len(self.text) == 1:
            return [self.text]
        return [self.text[i : i + 2] for i in range(len(self.text) - 1)]


def query_terms(text: str) -> list[Term]:
    """The words searched for: stop words dropped unless nothing else is left, each once."""
    words = [
        Term(run, bool(_CJK.match(run)))
        for run in _RUNS.findall(unicodedata.normalize("NFKC", text).lower())
    ]
    kept = [term for term in words if term.cjk or term.text not in STOPWORDS] or words
    return list(dict.fromkeys(kept))[:MAX_TERMS]


@lru_cache(maxsize=65536)
def plain(word: str) -> str:
    """The word lower-cased without its accents (Beyoncé: beyonce), for comparing."""
    lowered = word.lower()
    if lowered.isascii():
        return lowered
    decomposed = unicodedata.normalize("NFKD", lowered)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


@lru_cache(maxsize=65536)
def trigrams(word: str) -> frozenset[str]:
    """pg_trgm's trigrams of a word: two spaces before it, one after."""
    padded = f"  {plain(word)} "
    return frozenset(padded[i : i + 3] for i in range(len(padded) - 2))


def likeness(a: str, b: str) -> float:
    """Shared trigrams over all trigrams of the two words (pg_trgm's similarity), or
    SWAPPED_LIKENESS if higher and the words differ by a swap of two adjacent letters."""
    first, second = trigrams(a), trigrams(b)
    shared = len(first & second) / len(first | second)
    if shared < SWAPPED_LIKENESS and plain(b) in swaps(a):
        return SWAPPED_LIKENESS
    return shared


@lru_cache(maxsize=65536)
def swaps(word: str) -> frozenset[str]:
    """The words two adjacent letters of the word swapped make (none under SHORTEST_SWAPPED)."""
    letters = plain(word)
    if len(letters) < SHORTEST_SWAPPED:
        return frozenset()
    return frozenset(
        letters[:i] + letters[i + 1] + letters[i] + letters[i + 2 :]
        for i in range(len(letters) - 1)
        if letters[i] != letters[i + 1]
    )


def swapped_words(terms: list[Term]) -> list[str]:
    """Every swap of the terms' words, for looking up the titles a swap is undone in."""
    return sorted({swapped for term in terms if not term.cjk for swapped in swaps(term.text)})


def title_likeness(terms: list[Term], title: str) -> float:
    """How alike the title's words are to the terms: for each term its likest word, averaged."""
    words = _RUNS.findall(title)
    if not terms or not words:
        return 0.0
    return sum(max(likeness(t.text, w) for w in words) for t in terms) / len(terms)


def begins_a_word(term: Term, title: str) -> bool:
    """The term begins one of the title's words (or, for CJK, is inside one)."""
    if term.cjk:
        return term.text in title.lower()
    wanted = plain(term.text)
    return any(
        word.startswith(wanted) or wanted.startswith(word)
        for word in map(plain, _RUNS.findall(title))
    )
