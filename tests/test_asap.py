"""ASAP as the second dataset: its reader, per-prompt score scales, leave-one-prompt-out splits and
the ``data.dataset`` param. Tiny TSVs written by the tests; never the real essays, never the network."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aes.core.errors import AESError
from aes.core.io import sha256_file
from aes.data.asap import ASAP, SCALES
from aes.data.clean import validate_and_clean
from aes.data.dataset import Release
from aes.data.fetch import fetch
from aes.data.params import load_params
from aes.data.protocols import has_locked_test
from aes.data.readers import decode_text, read_tsv
from aes.data.registry import data_settings, prepare_settings
from aes.data.splits import cv_essays, inner_split
from tests.committed import committed_text, with_param

HEADER = "essay_id\tessay_set\tessay\trater1_domain1\tdomain1_score\n"
SETTINGS = {"targets": ["Overall"], "invalid_rows": "error", "seed": 3}


def _tsv_text(prompt: int, scores: list, first_id: int) -> str:
    """A PAES-data-shaped file: essays quoted like ASAP's (a quote inside doubled), anonymised tokens, an accent."""
    rows = [f'{first_id + i}\t{prompt}\t"Dear @CAPS1, my café ""@NUM1"" essay {i} of @PERSON2."\t{s}\t{s}\n' for i, s in enumerate(scores)]
    return HEADER + "".join(rows)


def _asap_folder(root: Path, scores_by_prompt: dict[int, list], encoding: str = "utf-8"):
    """Write PAES-data/<k>/test.tsv for each prompt; return (folder, ASAP with these files pinned)."""
    releases = []
    for k, (prompt, scores) in enumerate(scores_by_prompt.items()):
        path = root / "PAES-data" / str(prompt) / "test.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_tsv_text(prompt, scores, 100 * (k + 1)).encode(encoding))
        releases.append(Release(f"prompt {prompt}", f"PAES-data/{prompt}/test.tsv", sha256_file(path), len(scores)))
    return root, dataclasses.replace(ASAP, releases=tuple(releases))


def _fetch(root: Path, scores_by_prompt: dict[int, list], encoding: str = "utf-8") -> tuple[pd.DataFrame, dict, object]:
    folder, dataset = _asap_folder(root, scores_by_prompt, encoding)
    corpus, provenance = fetch(dataset, {"source": "local", "local_dir": str(folder)})
    return corpus, provenance, dataset


EIGHT = {p: [SCALES[str(p)].low + i % 3 for i in range(3 + p)] for p in range(1, 9)}  # 4-11 essays per prompt, on grid


# ------------------------------------------------------------------ reader


def test_reader_keeps_anonymised_tokens_accents_and_quotes(tmp_path):
    corpus, provenance, _ = _fetch(tmp_path, {1: [2, 12], 3: [0, 3]})
    assert corpus.loc[0, "essay"] == 'Dear @CAPS1, my café "@NUM1" essay 0 of @PERSON2.'
    assert corpus["essay_id"].tolist() == ["100", "101", "200", "201"]  # ids stay text
    assert corpus["source_file"].tolist() == ["PAES-data/1/test.tsv"] * 2 + ["PAES-data/3/test.tsv"] * 2
    assert corpus["source_row"].tolist() == [1, 2, 1, 2]
    assert provenance["dataset"] == "asap" and [f["rows"] for f in provenance["files"]] == [2, 2]


def test_a_file_in_another_encoding_is_named(tmp_path):
    """ASAP's pinned files are UTF-8 (aes/data/asap.py): a latin-1 byte is refused, naming file and offset."""
    folder, dataset = _asap_folder(tmp_path, {1: [2, 3]}, encoding="latin-1")
    with pytest.raises(AESError, match=r"PAES-data/1/test.tsv: not utf-8 text \(byte\(s\) e9 at offset \d+\); expected a file encoded in utf-8"):
        fetch(dataset, {"source": "local", "local_dir": str(folder)})


def test_latin1_reader_reads_accents_and_refuses_utf8_bytes():
    """A file declared latin-1 (the Kaggle original's encoding) reads 'é' from byte e9; UTF-8 bytes
    c3 a9 would silently read as 'Ã©', so they are an error naming the file."""
    text = _tsv_text(1, [2], 7)
    frame = read_tsv(text.encode("latin-1"), "own.tsv", "latin-1", ["essay_id", "essay"], "essay_id")
    assert frame.loc[0, "essay"] == 'Dear @CAPS1, my café "@NUM1" essay 0 of @PERSON2.'
    with pytest.raises(AESError, match=r"own.tsv: looks UTF-8-encoded \(multi-byte UTF-8 sequence at offset \d+: c3 a9\), but the file is declared latin-1"):
        read_tsv(text.encode("utf-8"), "own.tsv", "latin-1", ["essay_id", "essay"], "essay_id")
    assert decode_text(b"plain ascii", "latin-1", "x") == "plain ascii"


def test_a_missing_column_is_named(tmp_path):
    data = _tsv_text(2, [3], 1).replace("domain1_score", "domain_score").encode()
    with pytest.raises(AESError, match=r"PAES-data/2/test.tsv: missing column\(s\) \['domain1_score'\]; expected a header row with at least"):
        ASAP.read_release(data, ASAP.releases[1], {}, "PAES-data/2/test.tsv")


def test_every_file_is_required_and_the_checksum_checked(tmp_path):
    folder, dataset = _asap_folder(tmp_path, {1: [2], 2: [1]})
    (folder / "PAES-data" / "2" / "test.tsv").unlink()
    with pytest.raises(AESError, match=r"missing \['PAES-data/2/test.tsv'\]; ASAP needs every one of"):
        fetch(dataset, {"source": "local", "local_dir": str(folder)})
    (folder / "PAES-data" / "2").mkdir(exist_ok=True)
    (folder / "PAES-data" / "2" / "test.tsv").write_text(_tsv_text(2, [1], 9))  # not the pinned bytes
    with pytest.raises(AESError, match="PAES-data/2/test.tsv: checksum mismatch"):
        fetch(dataset, {"source": "local", "local_dir": str(folder)})


def test_local_dir_env_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("ASAP_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(AESError, match="data.asap.local_dir: folder .*elsewhere.* not found.*ASAP_DIR"):
        fetch(ASAP, {"source": "local", "local_dir": "../shared/asap"})


def test_the_pinned_release_list_is_datas_md():
    assert [r.filename for r in ASAP.releases] == [f"PAES-data/{k}/test.tsv" for k in range(1, 9)]
    assert sum(r.rows for r in ASAP.releases) == 12975
    assert ASAP.upstream.endswith("/cross-prompt-trait-scoring/981ec606f039c5b3ee163b5b474e4329d9ebbd17/data")
    assert {p: (s.low, s.high, s.step) for p, s in SCALES.items()} == {
        "1": (2, 12, 1), "2": (1, 6, 1), "3": (0, 3, 1), "4": (0, 3, 1), "5": (0, 4, 1), "6": (0, 4, 1), "7": (0, 30, 1), "8": (0, 60, 1)}


# ------------------------------------------------------------------ validation and scales


def test_prepared_asap_essays_carry_their_prompts_scale_no_grade_and_every_length(tmp_path):
    corpus, _, dataset = _fetch(tmp_path, {1: [2, 12, 7], 8: [0, 60]})
    essays, report = validate_and_clean(corpus, SETTINGS, dataset)
    assert report == {"rows_in": 5, "rows_kept": 5, "dropped": {}}  # no word window: 11-word essays stay
    assert essays["prompt"].tolist() == ["1", "1", "1", "8", "8"] and (essays["grade"] == -1).all()
    assert essays[["score_low", "score_high", "score_step"]].to_numpy().tolist() == [[2, 12, 1]] * 3 + [[0, 60, 1]] * 2
    assert essays["y"].tolist() == essays["Overall"].tolist() == [2, 12, 7, 0, 60]


@pytest.mark.parametrize("prompt,score", [(3, 4), (1, 1), (1, 13), (2, 2.5), (7, -1)])
def test_a_score_off_its_prompts_scale_is_named_or_dropped(tmp_path, prompt, score):
    low = SCALES[str(prompt)].low
    corpus, _, dataset = _fetch(tmp_path, {prompt: [low, score, low]})
    grid = SCALES[str(prompt)].describe()
    with pytest.raises(AESError, match=rf"PAES-data/{prompt}/test.tsv row 2 \(essay_id='101'\): expected Overall on the score grid "
                                       rf"{grid} of ASAP prompt '{prompt}'; got Overall={score}"):
        validate_and_clean(corpus, SETTINGS, dataset)
    essays, report = validate_and_clean(corpus, SETTINGS, dataset, on_invalid="drop")
    assert len(essays) == 2 and report["dropped"] == {"score_off_grid": 1}


def test_a_prompt_without_a_declared_range_is_named(tmp_path):
    corpus, _, dataset = _fetch(tmp_path, {1: [2, 3]})
    corpus.loc[1, "essay_set"] = 9
    for on_invalid in ("error", "drop"):  # never silently drops a whole prompt
        with pytest.raises(AESError, match=r"PAES-data/1/test.tsv row 2 \(essay_id='101'\): ASAP: prompt '9' has no declared score range; "
                                           r"ASAP declares prompts 1, 2, 3, 4, 5, 6, 7, 8"):
            validate_and_clean(corpus, SETTINGS, dataset, on_invalid=on_invalid)


def test_an_ellipse_trait_is_not_an_asap_target(tmp_path):
    corpus, _, dataset = _fetch(tmp_path, {1: [2]})
    with pytest.raises(AESError, match=r"'prepare.targets' lists \['Cohesion'\], which ASAP does not have"):
        validate_and_clean(corpus, SETTINGS | {"targets": ["Overall", "Cohesion"]}, dataset)


# ------------------------------------------------------------------ leave one prompt out


def _lopo(tmp_path):
    corpus, _, dataset = _fetch(tmp_path, EIGHT)
    essays, _ = validate_and_clean(corpus, SETTINGS, dataset)
    return essays, dataset.split(essays, SETTINGS, "sha")


def test_leave_one_prompt_out_fold_k_is_prompt_k_and_there_is_no_locked_test(tmp_path):
    essays, splits = _lopo(tmp_path)
    assert [f["val_prompts"] for f in splits["folds"]] == [[str(p)] for p in range(1, 9)]  # fold 0 = prompt 1 ... fold 7 = prompt 8
    assert splits["protocol"] == "leave_one_prompt_out" and splits["locked_test"] is False and not has_locked_test(splits)
    assert splits["test"] == {"prompts": [], "n_essays": 0, "share": 0.0, "record_ids": []}
    cv = cv_essays(essays, splits)
    assert len(cv) == len(essays)  # every essay is a CV essay
    for fold in splits["folds"]:
        k, prompt = fold["fold"], fold["val_prompts"][0]
        val, train = cv[cv["fold"] == k], cv[cv["fold"] != k]
        assert set(val["prompt"]) == {prompt} and len(val) == (essays["prompt"] == prompt).sum() == fold["n_val"]
        assert prompt not in set(train["prompt"]) and len(train) == fold["n_train"]
    assert cv.groupby("prompt")["fold"].nunique().max() == 1


def test_inner_split_of_a_training_fold_never_sees_the_scored_prompt(tmp_path):
    essays, splits = _lopo(tmp_path)
    cv = cv_essays(essays, splits)
    for k in range(8):
        train = cv[cv["fold"] != k].reset_index(drop=True)
        scored = splits["folds"][k]["val_prompts"][0]
        tr, va = inner_split(train, 0.2, seed=k)
        seen = set(train["prompt"].iloc[tr]) | set(train["prompt"].iloc[va])
        assert scored not in seen and len(seen) == 7
        assert not set(train["prompt"].iloc[tr]) & set(train["prompt"].iloc[va])


def test_leave_one_prompt_out_needs_two_prompts(tmp_path):
    corpus, _, dataset = _fetch(tmp_path, {4: [0, 1, 2]})
    essays, _ = validate_and_clean(corpus, SETTINGS, dataset)
    with pytest.raises(AESError, match="leave one prompt out needs at least 2 prompts; the asap essays have 1"):
        dataset.split(essays, SETTINGS, "sha")


# ------------------------------------------------------------------ the data.dataset param


def _params(tmp_path, *changes) -> dict:
    text = committed_text("params.yaml")
    for key, raw in changes:
        text = with_param(text, key, raw)
    (tmp_path / "p.yaml").write_text(text)
    return load_params(tmp_path / "p.yaml")


ASAP_KEYS = (("data.dataset", "asap"), ("prepare.targets", "[Overall]"), ("finetune.target_weights", "[1.0]"))


def test_asap_params_select_its_reader_settings_and_protocol(tmp_path):
    params = _params(tmp_path, *ASAP_KEYS)
    assert data_settings(params) == {"source": "local", "local_dir": "../shared/asap"}
    assert prepare_settings(params) == {"targets": ["Overall"], "invalid_rows": "error", "seed": params["prepare"]["seed"]}


@pytest.mark.parametrize(
    "changes,message",
    [
        ((("data.dataset", "asp"),), "key 'data.dataset' must be one of ellipse, asap; got 'asp'"),
        ((("data.dataset", "asap"), ("prepare.targets", "[Overall, Cohesion]"), ("finetune.target_weights", "[1, 1]")),
         r"key 'prepare.targets' lists Cohesion, which data.dataset=asap does not have; expected score\(s\) among Overall"),
        ((("data.dataset", "asap"),), r"key 'prepare.targets' lists Cohesion, Syntax, .*Conventions, which data.dataset=asap does not have.*profiles/asap.args"),
        ((*ASAP_KEYS, ("data.source", "csv")), "key 'data.source' must be one of local, upstream for data.dataset=asap; got 'csv'"),
        ((*ASAP_KEYS, ("prepare.asap", "{n_folds: 3}")), r"unknown key 'prepare.asap.n_folds'.*known keys here: none"),
        ((("data.asap.local_dir", "7"),), "key 'data.asap.local_dir' must be str"),
    ],
)
def test_bad_dataset_params_are_named(tmp_path, changes, message):
    with pytest.raises(AESError, match=message):
        _params(tmp_path, *changes)


def _validated(params: dict) -> dict:
    from aes.data.params import check_cross_keys, validate

    return check_cross_keys(validate(params))


def test_sections_of_the_datasets_not_chosen_are_optional():
    from tests.committed import committed_params

    ellipse = committed_params()
    for section in ("data", "prepare"):
        del ellipse[section]["asap"]
    assert prepare_settings(_validated(ellipse))["n_folds"] == committed_params()["prepare"]["ellipse"]["n_folds"]
    asap = committed_params()
    asap["data"]["dataset"], asap["prepare"]["targets"], asap["finetune"]["target_weights"] = "asap", ["Overall"], [1.0]
    for section in ("data", "prepare"):
        del asap[section]["ellipse"]
    del asap["prepare"]["asap"]  # ASAP's prepare section declares no keys: it may go too
    checked = _validated(asap)
    assert data_settings(checked) == {"source": "local", "local_dir": "../shared/asap"}
    assert prepare_settings(checked) == {"targets": ["Overall"], "invalid_rows": "error", "seed": asap["prepare"]["seed"]}
    missing = committed_params()
    del missing["prepare"]["ellipse"]
    with pytest.raises(AESError, match=r"missing key 'prepare.ellipse' \(the settings of data.dataset=ellipse: min_words, max_words, test_fraction"):
        _validated(missing)


def test_source_kinds_are_declared_once():
    from aes.data.dataset import SOURCES
    from aes.data.params import SCHEMA
    from aes.data.registry import DATASETS

    assert SCHEMA["data"]["source"].choices == SOURCES and all(set(d.sources) <= set(SOURCES) for d in DATASETS)
    assert set(SCHEMA["data"]) - {"dataset", "source"} == set(SCHEMA["prepare"]) - {"targets", "invalid_rows", "seed"} == {d.name for d in DATASETS}
    with pytest.raises(AESError, match=r"sources \['ftp'\] are not data sources; expected among local, upstream, csv"):
        dataclasses.replace(ASAP, sources=("local", "ftp"))


def test_a_protocol_owns_its_settings_and_the_locked_test_rule():
    from aes.data.ellipse import ELLIPSE
    from aes.data.protocols import LEAVE_ONE_PROMPT_OUT, LOCKED_TEST

    assert ELLIPSE.protocol is LOCKED_TEST and ASAP.protocol is LEAVE_ONE_PROMPT_OUT
    assert list(ELLIPSE.prepare_schema) == ["min_words", "max_words", *LOCKED_TEST.settings] and ASAP.prepare_schema == {}
    assert has_locked_test({"test": {"n_essays": 5}}) and not has_locked_test({"protocol": "leave_one_prompt_out", "locked_test": False})


def test_unknown_dataset_name_is_named_where_it_is_looked_up():
    from aes.data.registry import get_dataset

    with pytest.raises(AESError, match="params key 'data.dataset' must be one of ellipse, asap; got 'toefl'"):
        get_dataset("toefl")


def test_scale_arrays_of_the_eight_prompts_are_finite(tmp_path):
    essays, _ = _lopo(tmp_path)
    assert np.isfinite(essays[["score_low", "score_high", "score_step"]].to_numpy()).all()


def test_asap_repairs_its_texts_and_ellipse_uses_them_as_they_are():
    from aes.data.ellipse import ELLIPSE

    repair = ASAP.text_repair
    assert ELLIPSE.text_repair is None
    assert repair("don\ufffdt") == "don't" and repair("@CAPS1") == "Smith"
    lost = "\ufffd"  # between letters an apostrophe, elsewhere a double quote
    assert repair(f"I don{lost}t know, {lost}@CAPS1 said.{lost}") == "I don't know, \"Smith said.\""
    assert repair("Dear @CAPS1 @PERSON12, on @DATE1 @NUM2 of us (@PERCENT1) met at @LOCATION3's.") == (
        "Dear Smith Smith, on 1 1 of us (1) met at Smith's.")
    assert repair("mail me at a@B1 or @ home") == "mail me at a@B1 or @ home"  # not ASAP's tokens
    assert repair("I don\u2019t know.") == "I don\u2019t know."  # typographic quotes are the features' own concern
