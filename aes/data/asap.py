"""ASAP-AES (Hewlett Foundation, 2012): 12,975 essays of 8 prompts, one holistic score on each prompt's own scale.

The cross-prompt benchmark of the essay-scoring literature: leave one prompt out (train on seven
prompts, score the eighth), no locked test. The files are ``data/PAES-data/<k>/test.tsv`` of
robert1ridley/cross-prompt-trait-scoring at a pinned commit (Ridley et al., AAAI 2021): file k holds
every essay of prompt k. See ``../shared/asap/DATA.md``.
"""

from __future__ import annotations

import re

import pandas as pd

from aes.core.scale import Scale
from aes.core.schema import Key
from aes.data.dataset import Dataset, Published, Release
from aes.data.protocols import LEAVE_ONE_PROMPT_OUT
from aes.data.readers import read_tsv

COMMIT = "981ec606f039c5b3ee163b5b474e4329d9ebbd17"
ROWS_AND_SHA256 = {  # prompt: (essays, sha256 of PAES-data/<prompt>/test.tsv), from DATA.md
    "1": (1783, "8c95f55f8267f47fd3dee8ee2c1a85e7c4eddc0db26436f9dd625a27c940fee4"),
    "2": (1800, "15013a7860e4f753cbfab33688774d6d878aaf8101dc052c6fb1478b4e0be228"),
    "3": (1726, "f2175a51940ec7700946c7b96d4a2e0d235689b82c38d59117faefb64cfdd794"),
    "4": (1769, "6ccebbe8db12b1947b0b727079893ba77efc3b18e71f0265654c1b3ceeb321d0"),
    "5": (1805, "9a8b630b910357b976816c0e415e6f87544947181b595868c0895b6074ec6b53"),
    "6": (1800, "3ef082631f913e931c893a7593058833e2716e1991d3f9afd3ee7f7fefa5ff1a"),
    "7": (1569, "955f8778568b47d214bd3f7b7d85621f11aa16af23c078e0d49b6e114ef2cdac"),
    "8": (723, "ec87eaee0727d0a3189ca37f6392d113559de87655c771d909b98d10d1badd74"),
}
RELEASES = tuple(Release(f"prompt {p}", f"PAES-data/{p}/test.tsv", sha, rows) for p, (rows, sha) in ROWS_AND_SHA256.items())

# The integer range of each prompt's domain1_score as the cross-prompt papers normalise with it
# (observed: prompt 7 spans 2-24 and prompt 8 10-60, inside these).
SCALES = {
    "1": Scale(2, 12, 1),
    "2": Scale(1, 6, 1),
    "3": Scale(0, 3, 1),
    "4": Scale(0, 3, 1),
    "5": Scale(0, 4, 1),
    "6": Scale(0, 4, 1),
    "7": Scale(0, 30, 1),
    "8": Scale(0, 60, 1),
}

# Published holistic QWK under the same protocol (leave one prompt out, mean of the 8 per-prompt
# QWKs), as tabulated in Li & Pan (2025), KAES, Table 2 (DATA.md). The handcrafted-feature systems
# min-max scale every feature within each prompt over all its essays, the target prompt's included
# (get_normalized_features in utils/read_data.py of robert1ridley/cross-prompt-trait-scoring, which
# PMAES and later systems inherit): transductive, as this project's normalise.features=prompt_minmax.
MINMAX = "features min-max per prompt"
PUBLISHED = (
    Published("Hi-att (Dong & Zhang 2016)", 0.453, "word embeddings, no features"),
    Published("fine-tuned BERT (as reported by Li & Pan 2025)", 0.578, "fine-tuned encoder alone"),
    Published("PAES (Ridley et al. 2020)", 0.657, "POS-tag sequence + handcrafted features", MINMAX),
    Published("CTS (Ridley et al. 2021)", 0.670, "POS-tag sequence + handcrafted features, trait attention", MINMAX),
    Published("PMAES (Chen & Li 2023)", 0.671, "same family; also sees the target prompt's essays, unscored", MINMAX),
    Published("PLAES (Chen & Li 2024)", 0.673, "same family, meta-learning", MINMAX),
    Published("KAES (Li & Pan 2025)", 0.695, "POS encoder + handcrafted features + cluster descriptions", MINMAX),
)

COLUMNS = ["essay_id", "essay_set", "essay", "domain1_score"]  # of 28; the rest is rater detail, unused
# DATA.md says latin-1, but the pinned files are strict UTF-8: all eight decode as UTF-8, with
# ~15,000 U+FFFD replacement characters (apostrophes lost before the files were published), curly
# quotes (U+2019 ...) and 'ü' as multi-byte sequences; Ridley et al.'s own code opens them with
# Python's default (UTF-8) and only the Kaggle original (training_set_rel3.tsv) as latin-1. Read as
# latin-1, every U+FFFD would become the three characters 'ï¿½'.
ENCODING = "utf-8"

# Anonymisation (DATA.md): entity kinds that stood for a number, a date or an amount
ANONYMISED_NUMBERS = frozenset({"NUM", "PERCENT", "MONEY", "TIME", "DATE"})
ANONYMISED_NAME = "Smith"  # a name in every dictionary the writing features use: not a misspelling, tagged NNP

_ANONYMISED = re.compile(r"(?<![^\W\d_])@([A-Z]+)\d+")  # @CAPS1, @PERSON12, @NUM3; not in an e-mail address
_LOST_CHARACTER = re.compile("\ufffd")  # U+FFFD: a character lost before release
_LOST_APOSTROPHE = re.compile(r"(?<=[^\W\d_])\ufffd(?=[^\W\d_])")  # between letters: don't, I'm


def repair_text(text: str) -> str:
    """``text`` with two artefacts of the ASAP essays undone; texts without them come back unchanged.

    - The replacement character U+FFFD (a character lost before release, in 27 % of the essays)
      between two letters becomes an apostrophe (don\ufffdt -> don't), elsewhere a double quote:
      the tokenizer would split "don\ufffdt" into two words, one misspelt.
    - Anonymised entities: the tokenizer would read "@CAPS1" as the word "CAPS" (and
      "@ORGANIZATION1" as a 12-letter word, "@NUM1" as the misspelling "NUM"), which skews word
      length, rare-word shares, spelling, syllables and tags. Number-like kinds
      (``ANONYMISED_NUMBERS``) become "1", which is not a word, like any number; the rest (@CAPS,
      @PERSON, @LOCATION, @ORGANIZATION, @MONTH, ...) become the name ``ANONYMISED_NAME``. Distinct
      entities share one stand-in, as they shared "CAPS" before.
    """
    text = _LOST_CHARACTER.sub('"', _LOST_APOSTROPHE.sub("'", text))
    return _ANONYMISED.sub(lambda match: "1" if match.group(1) in ANONYMISED_NUMBERS else ANONYMISED_NAME, text)


def read_release(data: bytes, release: Release, settings: dict, where: str) -> tuple[pd.DataFrame, str, dict]:
    """One verified PAES-data file's rows: tab-separated, ``ENCODING``, a header row with ``COLUMNS``.

    ``source_file`` is the path inside the folder (``PAES-data/3/test.tsv``): the eight files share a name.
    """
    return read_tsv(data, where, ENCODING, COLUMNS, "essay_id"), release.filename, {}


ASAP = Dataset(
    name="asap",
    title="ASAP",
    releases=RELEASES,
    upstream=f"https://raw.githubusercontent.com/robert1ridley/cross-prompt-trait-scoring/{COMMIT}/data",
    local_dir_env="ASAP_DIR",
    default_local_dir="../shared/asap",
    sources=("local", "upstream"),
    all_releases_required=True,  # leave-one-prompt-out over fewer than the 8 prompts is not the benchmark
    read_release=read_release,
    id_column="essay_id",
    text_column="essay",
    prompt_column="essay_set",
    grade_column=None,  # ASAP records no grade (students of grades 7-10): prepared essays get grade -1
    scores={"Overall": "domain1_score"},  # the holistic score; rater and trait columns are not targets
    scales=SCALES,
    protocol=LEAVE_ONE_PROMPT_OUT,
    data_settings={"local_dir": Key(str)},  # the folder holding PAES-data/; $ASAP_DIR overrides
    prepare_settings={},  # every essay length is kept (and leave one prompt out has no settings)
    text_repair=repair_text,
    published=PUBLISHED,
)
