"""ELLIPSE (Crossley et al., 2023): English-learner essays, 44 prompts, seven scores of 1.0-5.0 in half bands.

The default dataset. Published as a train CSV and a password-protected test zip; this project's
protocol is a locked test of whole prompts (or topics) plus prompt-grouped k-fold CV over the rest,
on essays of 200-1,000 words (the corpus' own length criterion).
"""

from __future__ import annotations

import io
import zipfile

import pandas as pd

from aes.core.errors import AESError
from aes.core.io import sha256_bytes
from aes.core.scale import Scale
from aes.core.schema import Int, Key
from aes.data.dataset import Dataset, Release
from aes.data.protocols import LOCKED_TEST
from aes.data.readers import read_csv_as_written

RELEASES = (
    Release("train", "ELLIPSE_Final_github_train.csv", "782344e99668a3ff508d7410c0eb6e36da70f3b28f81c96e367f1ca04924b06c", 3911),
    Release(
        "test",
        "ELLIPSE_Final_github_test.zip",
        "9ecddfcda83f6a99c8a24dda47fb1c30673fedeaf578a0fadac6645fd151a2f8",
        2571,
        member="ELLIPSE_Final_github_test.csv",
        member_sha256="7e990c6392a9df9554d15bdd22f0b568d19095cd6676ad39cb1eaa69c977ed7a",
    ),
)

# The holistic Overall and six analytic traits, each its own column of the same name.
SCORES = ("Overall", "Cohesion", "Syntax", "Vocabulary", "Phraseology", "Grammar", "Conventions")


def read_release(data: bytes, release: Release, settings: dict, where: str) -> tuple[pd.DataFrame, str, dict]:
    """One verified ELLIPSE file's rows: the train CSV as is, the test zip's CSV decrypted with
    ``data.ellipse.zip_password`` and checked against its own pinned sha256."""
    if release.member is None:
        return read_csv_as_written(io.BytesIO(data), where), release.filename, {}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            member = archive.read(release.member, pwd=settings["zip_password"].encode())
    except RuntimeError as err:  # zipfile's "Bad password for file"
        raise AESError(f"{where}: cannot decrypt {release.member} ({err}); check params key data.ellipse.zip_password") from None
    except (zipfile.BadZipFile, KeyError) as err:
        raise AESError(f"{where}: not a readable ELLIPSE zip ({err}); expected member {release.member}") from None
    actual = sha256_bytes(member)
    if actual != release.member_sha256:
        raise AESError(f"{where}!{release.member}: checksum mismatch: expected sha256 {release.member_sha256}, got {actual}")
    frame = read_csv_as_written(io.BytesIO(member), f"{where}!{release.member}")
    return frame, release.member, {"member": release.member, "member_sha256": actual}


ELLIPSE = Dataset(
    name="ellipse",
    title="ELLIPSE",
    releases=RELEASES,
    upstream="https://raw.githubusercontent.com/scrosseye/ELLIPSE-Corpus/main",
    local_dir_env="ELLIPSE_DIR",
    default_local_dir="../shared/ellipse",
    sources=("local", "upstream", "csv"),
    all_releases_required=False,  # this machine has only the test release; the releases present are unioned
    read_release=read_release,
    id_column="text_id_kaggle",
    text_column="full_text",
    prompt_column="prompt",
    grade_column="grade",
    scores={name: name for name in SCORES},
    scales=Scale(1.0, 5.0, 0.5),  # every prompt, every score: 1.0, 1.5, ..., 5.0
    protocol=LOCKED_TEST,
    data_settings={
        "local_dir": Key(str),  # release files for data.source: local; $ELLIPSE_DIR overrides
        "csv_path": Key(str),  # your own ELLIPSE-shaped CSV for data.source: csv
        "zip_password": Key(str),  # the published password of the test release zip
    },
    # Essays outside [min_words, max_words] are dropped and counted (the corpus' own criterion); the
    # locked test's settings (test_fraction ... topic_similarity) follow in prepare.ellipse.
    prepare_settings={"min_words": Int(ge=0), "max_words": Int(ge=1)},
    # The key order of the one prepare section before datasets had sections of their own:
    # splits.json records these settings (its own and its protocol's), so the same params give a
    # byte-identical splits.json.
    settings_order=("targets", "min_words", "max_words", "invalid_rows", "test_fraction", "test_candidates",
                    "n_folds", "seed", "groups", "topic_model", "topic_similarity"),
)
