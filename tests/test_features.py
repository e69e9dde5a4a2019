"""Handcrafted writing features (aes.features) on small hand-made texts with known properties."""

import socket

import numpy as np
import pytest

from aes.core.errors import AESError
from aes.data.asap import ASAP
from aes.data.ellipse import ELLIPSE
from aes.data.params import validate
from aes.core.registry import GBM_FEATURE_SWITCHES, WRITING_FEATURE_GROUPS
from aes.features import FEATURE_GROUPS, writing_features
from aes.features import lexicons as lexicons_module
from aes.features.groups import moving_average_ttr
from aes.features.lexicons import pos_tags
from aes.features.text import split_clitics, split_essay
from tests.committed import committed_params

CORRECT = "My friends and I believe that school is important because we learn many things there."
MISSPELLED = "My freinds and I beleive that school is important becuase we learn many things there."
PLAIN = "The big dog ran to the park and the man saw the dog run to the park with a ball."
RARE = "The ubiquitous canine meandered toward the verdant arboretum, whereupon an erudite curator perceived it."


def column(texts, group, name):
    """Values of one feature column for each text, (n,) float32."""
    features, names = writing_features(texts, [group])
    return features[:, names.index(name)]


def test_columns_follow_feature_groups_order_whatever_the_request_order():
    features, names = writing_features([CORRECT, PLAIN, ""], ["punctuation", "length", "spelling"])
    assert names == [*FEATURE_GROUPS["length"], *FEATURE_GROUPS["spelling"], *FEATURE_GROUPS["punctuation"]]
    assert features.shape == (3, len(names)) and features.dtype == np.float32

    all_features, all_names = writing_features([CORRECT], FEATURE_GROUPS)
    assert all_names == [name for group in FEATURE_GROUPS.values() for name in group]
    assert len(set(all_names)) == len(all_names) == all_features.shape[1]
    assert WRITING_FEATURE_GROUPS == tuple(FEATURE_GROUPS)  # what the params schema accepts is what is computed
    assert GBM_FEATURE_SWITCHES == ("embeddings", *FEATURE_GROUPS)


@pytest.mark.parametrize("text", ["", "   \n\n  ", "...", "42 %"])
def test_texts_without_words_give_zeros(text):
    features, names = writing_features([text], FEATURE_GROUPS)
    assert np.isfinite(features).all()
    n_characters = features[0, names.index("n_characters")]
    assert n_characters == len(text.replace(" ", "").replace("\n", ""))
    assert not np.delete(features[0], names.index("n_characters")).any()


@pytest.mark.parametrize("text", ["Hi", "Hi.", "no full stop at all", "Wow!!!"])
def test_very_short_texts_give_finite_values(text):
    features, names = writing_features([text], FEATURE_GROUPS)
    assert np.isfinite(features).all()
    assert features[0, names.index("n_words")] == len(text.split())
    assert features[0, names.index("n_sentences")] == 1


def test_deterministic():
    texts = [CORRECT, MISSPELLED, RARE, PLAIN]
    first, _ = writing_features(texts, FEATURE_GROUPS)
    second, _ = writing_features(texts, FEATURE_GROUPS)
    assert np.array_equal(first, second)


def test_length_counts_words_sentences_and_paragraphs():
    text = "One two three. Four five!\n\nSix seven eight nine\nTen?"
    n_words, n_sentences, n_paragraphs, n_characters = writing_features([text], ["length"])[0][0]
    # a line break ends the sentence "Six seven eight nine" although it has no full stop
    assert (n_words, n_sentences, n_paragraphs) == (10, 4, 3)
    assert n_characters == len(text.replace(" ", "").replace("\n", ""))
    assert column([PLAIN, PLAIN + " " + PLAIN], "length", "n_words").tolist() == [20, 40]


def test_lexical_diversity():
    repetitive = "the dog " * 40
    varied = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    ttr = column([repetitive, varied], "lexical", "type_token_ratio")
    assert ttr[0] == pytest.approx(2 / 80) and ttr[1] == pytest.approx(1.0)
    # moving-average TTR: every 50-word window of "a b a b ..." holds 2 types
    assert moving_average_ttr(["a", "b"] * 60) == pytest.approx(2 / 50)
    assert moving_average_ttr(["a", "b", "c"]) == pytest.approx(1.0)  # shorter than a window: plain TTR
    assert moving_average_ttr([]) == 0.0
    assert column(["cat dog", "elephant giraffe"], "lexical", "mean_word_length").tolist() == [3.0, 7.5]


def test_rare_words_lower_the_mean_zipf_and_fill_the_rare_bands():
    features, names = writing_features([PLAIN, RARE], ["sophistication"])
    mean_zipf = features[:, names.index("mean_zipf")]
    assert mean_zipf[1] < mean_zipf[0] - 1
    below_4 = features[:, names.index("share_zipf_below_3")] + features[:, names.index("share_zipf_3_to_4")]
    assert below_4[1] > 0.3 and below_4[0] == 0.0
    band_names = [name for name in names if name.startswith("share_zipf")]
    assert features[:, [names.index(name) for name in band_names]].sum(axis=1) == pytest.approx([1.0, 1.0])


def test_misspellings_raise_the_spelling_error_rate_but_names_do_not():
    rates = column([CORRECT, MISSPELLED], "spelling", "spelling_error_rate")
    assert rates[0] == 0.0
    # freinds, beleive, becuase out of the 14 checked words (the capitalised "I" inside the sentence is skipped)
    assert rates[1] == pytest.approx(3 / 14)
    # a capitalised unknown word inside a sentence is taken for a name; at the start it is checked
    assert column(["Yesterday Xqzvbrt came home.", "Xqzvbrt came home."], "spelling", "spelling_error_rate").tolist() == [
        0.0, pytest.approx(1 / 3)]


def test_readability_ranks_simple_text_as_easier():
    simple = "The cat sat. The dog ran. We had fun."
    hard = ("Contemporary educational institutions increasingly emphasize interdisciplinary collaboration, "
            "consequently transforming traditional pedagogical methodologies substantially.")
    features, names = writing_features([simple, hard], ["readability"])
    ease, grade, coleman_liau = features.T
    assert names == ["flesch_reading_ease", "flesch_kincaid_grade", "coleman_liau_index"]
    assert ease[0] > 90 and ease[1] < 0
    assert grade[0] < 2 and grade[1] > 15 and coleman_liau[0] < coleman_liau[1]


def test_complexity_of_sentences_and_paragraphs():
    long_sentence = " ".join(["word"] * 40) + "."
    text = f"Short one, here. Another short one.\n{long_sentence}"
    mean_len, sd_len, mean_paragraph, share_long, commas = writing_features([text], ["complexity"])[0][0]
    assert mean_len == pytest.approx((3 + 3 + 40) / 3)
    assert sd_len == pytest.approx(np.std([3, 3, 40]))
    assert mean_paragraph == pytest.approx(1.5)  # 2 sentences, then 1
    assert share_long == pytest.approx(1 / 3) and commas == pytest.approx(1 / 3)


def test_punctuation_counts_per_100_words():
    # 12 words ("don't" and "it's" are one word each), two of them the pronoun written "i"
    text = 'Well, i don\'t know; maybe: "yes"! (Really?) i think it\'s fine, ok.'
    features, names = writing_features([text], ["punctuation"])
    values = dict(zip(names, features[0].tolist()))
    counts = {name.removesuffix("_per_100_words"): round(value * 12 / 100, 4) for name, value in values.items()
              if name.endswith("_per_100_words")}
    assert counts == {"commas": 2, "semicolons": 1, "colons": 1, "exclamations": 1, "questions": 1, "apostrophes": 2,
                      "double_quotes": 2, "parentheses": 2}
    # sentences: 'Well, ...!', '(Really?)', 'i think ...' (a closing bracket after "?" still ends a sentence)
    assert values["share_sentences_capitalised"] == pytest.approx(2 / 3)
    assert values["lowercase_i_rate"] == pytest.approx(2 / 12)
    assert column(["I went home. i slept. i'm tired."], "punctuation", "lowercase_i_rate") == pytest.approx(2 / 7)


def test_share_of_sentences_starting_with_a_capital():
    shares = column(["We went. then we ate. \"Good,\" we said.", "all lower case here. and here."], "punctuation",
                    "share_sentences_capitalised")
    assert shares[0] == pytest.approx(2 / 3) and shares[1] == 0.0


def test_split_essay_treats_typographic_quotes_as_plain():
    essay = split_essay("I don\u2019t know.\n\nIt\u2019s \u201cfine\u201d.")
    assert essay.words == ("I", "don't", "know", "It's", "fine")
    assert essay.paragraphs == (1, 1)


def test_features_never_touch_the_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    # reload the dictionaries, so a library that fetches data on first use would be caught here
    for cached in (lexicons_module._spell_checker, lexicons_module._cmu_syllable_counts, lexicons_module._hyphenator,
                   lexicons_module.zipf_frequency, lexicons_module.is_spelled_correctly, lexicons_module.syllables,
                   lexicons_module._pos_parser):
        cached.cache_clear()
    features, _ = writing_features([MISSPELLED, RARE], FEATURE_GROUPS)
    assert np.isfinite(features).all()


# Three sentences whose Penn Treebank tags are known (and textblob's tagger gets right), 28 tokens:
# The/DT big/JJ dog/NN ran/VBD to/TO the/DT park/NN because/IN it/PRP was/VBD happy/JJ and/CC we/PRP laughed/VBD
# My/PRP$ dog/NN who/WP can/MD swim/VB often/RB plays/VBZ in/IN the/DT lake/NN
# What/WP a/DT lovely/JJ day/NN   (no verb)
TAGGED = ("The big dog ran to the park because it was happy, and we laughed. My dog, who can swim, often plays in the lake. "
          "What a lovely day!")


def test_pos_tags_of_a_known_sentence_with_contractions_split():
    assert [tag for _, tag in pos_tags(split_essay(TAGGED).sentence_words[1])] == [
        "PRP$", "NN", "WP", "MD", "VB", "RB", "VBZ", "IN", "DT", "NN"]
    assert pos_tags(["I", "don't", "think", "that", "they're", "here"]) == [
        ("I", "PRP"), ("do", "VBP"), ("n't", "RB"), ("think", "VBP"), ("that", "IN"), ("they", "PRP"), ("'re", "VBP"),
        ("here", "RB")]
    assert split_clitics(["can't", "it's", "I'm", "we'll", "o'clock", "dont"]) == [
        "ca", "n't", "it", "'s", "I", "'m", "we", "'ll", "o'clock", "dont"]
    assert pos_tags([]) == []


def test_syntax_shares_and_clause_counts_of_a_known_text():
    features, names = writing_features([TAGGED], ["syntax"])
    values = dict(zip(names, features[0].tolist()))
    counts = {name.removeprefix("share_"): round(value * 28, 4) for name, value in values.items()
              if name.startswith("share_") and name != "share_sentences_without_verb"}
    # "because" is a subordinator, not a preposition; "who" and "What" are pronouns; the 28th token is "because"
    assert counts == {"nouns": 5, "verbs": 5, "modals": 1, "adjectives": 3, "adverbs": 1, "pronouns": 5, "determiners": 4,
                      "prepositions": 2, "conjunctions": 1}
    assert values["finite_verbs_per_sentence"] == pytest.approx(5 / 3)  # ran, was, laughed | can, plays
    assert values["subordinators_per_sentence"] == pytest.approx(3 / 3)  # because | who | What
    assert values["share_sentences_without_verb"] == pytest.approx(1 / 3)  # What a lovely day
    # 25 tag bigrams inside sentences, 21 distinct (DT-NN, PRP-VBD, DT-JJ and JJ-NN come back); fewer than 50: plain ratio
    assert values["pos_bigram_mattr_50"] == pytest.approx(21 / 25)


def test_syntax_tells_subordination_and_fragments_apart():
    features, names = writing_features(["I stayed home because I was sick, although it was sunny.",
                                        "I stayed home. I was sick. It was sunny.",
                                        "Home. Sick. Sunny day."], ["syntax"])
    subordinators = features[:, names.index("subordinators_per_sentence")]
    verbless = features[:, names.index("share_sentences_without_verb")]
    assert subordinators.tolist() == [2.0, 0.0, 0.0]
    assert verbless.tolist() == [0.0, 0.0, 1.0]


def test_a_dataset_repair_runs_once_before_splitting_and_changes_only_what_it_repairs():
    lost = "\ufffd"  # U+FFFD: a character lost before ASAP's release
    raw = [f"@NUM1 friends came. @CAPS1 didn{lost}t come to @LOCATION1.", CORRECT]
    assert ELLIPSE.text_repair is None  # ELLIPSE's texts are read as they are
    repaired, names = writing_features(raw, FEATURE_GROUPS, ASAP.text_repair)
    as_is, _ = writing_features(raw, FEATURE_GROUPS)
    assert np.array_equal(repaired, writing_features([ASAP.text_repair(t) for t in raw], FEATURE_GROUPS)[0])
    np.testing.assert_array_equal(repaired[1], as_is[1])  # a text without artefacts: same features
    # as is, "NUM", "CAPS", "didn", "t" and "LOCATION" are words (9), some misspelt; repaired: "1" is no word,
    # "Smith" (twice) and "didn't" are (7), none misspelt
    assert as_is[0, names.index("n_words")] == 9 and repaired[0, names.index("n_words")] == 7
    assert as_is[0, names.index("spelling_error_rate")] > 0 and repaired[0, names.index("spelling_error_rate")] == 0.0
    # sentence and paragraph structure and punctuation are untouched by the repair
    for name in ("n_sentences", "n_paragraphs"):
        assert repaired[0, names.index(name)] == as_is[0, names.index(name)]


def test_unknown_group_in_writing_features_is_a_bug():
    with pytest.raises(ValueError, match="embeddings"):
        writing_features([CORRECT], ["embeddings"])


def _gbm_params(features):
    """The committed params with ``gbm.features`` set to ``features``."""
    params = committed_params()
    params["gbm"]["features"] = features
    return params


def test_feature_switches_accepted_in_given_order():
    assert validate(_gbm_params(["spelling", "embeddings"]))["gbm"]["features"] == ["spelling", "embeddings"]
    assert validate(_gbm_params(list(GBM_FEATURE_SWITCHES)))["gbm"]["features"] == list(GBM_FEATURE_SWITCHES)


@pytest.mark.parametrize(("names", "pattern"), [
    (["embeddings", "spelng"], r"key 'gbm\.features' has unknown item 'spelng' \(did you mean 'spelling'\?\); known: embeddings, length"),
    (["zzz"], r"key 'gbm\.features' has unknown item 'zzz'; known: embeddings, length"),
    ([], r"key 'gbm\.features' must have at least 1 item"),
    (["length", "spelling", "length"], r"key 'gbm\.features' repeats 'length'"),
    ("length", r"key 'gbm\.features' must be list, got 'length'"),
])
def test_bad_feature_switches_raise_naming_key_and_name(names, pattern):
    with pytest.raises(AESError, match=pattern):
        validate(_gbm_params(names))


def test_feature_switch_errors_name_the_params_file():
    with pytest.raises(AESError, match=r"^sweep\.yaml: key 'gbm\.features' has unknown item 'colour'"):
        validate(_gbm_params(["colour"]), source="sweep.yaml")
