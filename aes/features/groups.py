"""The eight groups of handcrafted writing features: their columns and how each is computed from one essay.


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

The essay is split by :func:`aes.features.text.split_essay`; word look-ups are :mod:`aes.features.lexicons`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from types import MappingProxyType

import numpy as np

from aes.features.lexicons import is_spelled_correctly, pos_tags, syllables, zipf_frequency
from aes.features.text import Essay

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

_FIRST_LETTER = re.compile(r"[^\W\d_]")


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, or 0.0 when the denominator is 0 (empty or very short essays)."""
    return float(numerator) / denominator if denominator else 0.0


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
