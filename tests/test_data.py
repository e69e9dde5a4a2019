import shutil
from pathlib import Path

import pytest

from aes.core.errors import AESError
from aes.core.io import sha256_file
from aes.data import corpus as data
from aes.data.clean import validate_and_clean
from aes.data.ellipse import ELLIPSE
from aes.data.fetch import fetch
from aes.data.params import load_params
from tests.committed import committed_params, committed_text, with_param
from tests.synthetic import make_ellipse_frame

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "ellipse"
SCORES = ["Overall", "Cohesion", "Syntax", "Vocabulary", "Phraseology", "Grammar", "Conventions"]
PREP = {"targets": SCORES, "min_words": 200, "max_words": 1000}
GRID = "score grid 1-5 in steps of 0.5 of ELLIPSE prompt 'Prompt 0'"  # synthetic row 8 is prompt 0's


def _corpus(**kwargs):
    frame = make_ellipse_frame(**kwargs)
    frame["source_file"] = "own.csv"
    frame["source_row"] = range(1, len(frame) + 1)
    return frame


def test_local_release_verified_and_read():
    corpus, prov = fetch(ELLIPSE, {"source": "local", "local_dir": str(SHARED), "csv_path": "", "zip_password": "ellipse_test"})
    assert len(corpus) == 2571 and prov["files"][0]["member_sha256"].startswith("7e990c")


def test_missing_folder(tmp_path):
    with pytest.raises(AESError, match="data.ellipse.local_dir: folder .* not found"):
        fetch(ELLIPSE, {"source": "local", "local_dir": str(tmp_path / "nope"), "csv_path": "", "zip_password": "x"})


def test_checksum_mismatch(tmp_path):
    (tmp_path / "ELLIPSE_Final_github_test.zip").write_bytes(b"not the release")
    with pytest.raises(AESError, match="checksum mismatch"):
        fetch(ELLIPSE, {"source": "local", "local_dir": str(tmp_path), "csv_path": "", "zip_password": "x"})


def test_wrong_zip_password(tmp_path, monkeypatch):
    shutil.copy(SHARED / "ELLIPSE_Final_github_test.zip", tmp_path)
    with pytest.raises(AESError, match="data.ellipse.zip_password"):
        fetch(ELLIPSE, {"source": "local", "local_dir": str(tmp_path), "csv_path": "", "zip_password": "wrong"})


def test_env_var_overrides_local_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(ELLIPSE.local_dir_env, str(tmp_path / "elsewhere"))
    with pytest.raises(AESError, match="elsewhere"):
        fetch(ELLIPSE, {"source": "local", "local_dir": str(SHARED), "csv_path": "", "zip_password": "ellipse_test"})


def test_own_csv_sha_recorded(tmp_path):
    path = tmp_path / "own.csv"
    make_ellipse_frame(n_prompts=3, per_prompt=4).to_csv(path, index=False)
    corpus, prov = fetch(ELLIPSE, {"source": "csv", "local_dir": "", "csv_path": str(path), "zip_password": ""})
    assert len(corpus) == 12 and prov["files"][0]["sha256"] == sha256_file(path)
    with pytest.raises(AESError, match="data.ellipse.csv_path"):
        fetch(ELLIPSE, {"source": "csv", "local_dir": "", "csv_path": str(tmp_path / "missing.csv"), "zip_password": ""})


def test_header_only_csv_names_the_file_and_says_it_has_no_essays(tmp_path):
    path = tmp_path / "header_only.csv"
    make_ellipse_frame(n_prompts=3, per_prompt=4).head(0).to_csv(path, index=False)
    assert path.read_text().count("\n") == 1  # the header row and nothing else
    with pytest.raises(AESError, match=r"header_only\.csv: has no essays \(a header row and no data rows\)"):
        fetch(ELLIPSE, {"source": "csv", "local_dir": "", "csv_path": str(path), "zip_password": ""})


def test_missing_column():
    with pytest.raises(AESError, match=r"missing column\(s\) \['prompt'\]"):
        validate_and_clean(_corpus().drop(columns="prompt"), PREP, ELLIPSE)


@pytest.mark.parametrize(
    "column,value,reason",
    [("full_text", "   ", "non-empty full_text"), ("Overall", 3.25, GRID), ("Overall", 5.5, GRID), ("Overall", None, GRID),
     ("Grammar", 3.25, f"Grammar on the {GRID}.*; got Grammar=3.25"), ("Cohesion", None, f"Cohesion on the {GRID}.*; got Cohesion=an empty cell")],
)
def test_bad_rows_named(column, value, reason):
    corpus = _corpus()
    corpus[column] = corpus[column].astype(object)
    corpus.loc[7, column] = value
    with pytest.raises(AESError, match=rf"own.csv row 8 .*{reason}"):
        validate_and_clean(corpus, PREP, ELLIPSE)
    cleaned, report = validate_and_clean(corpus, PREP, ELLIPSE, on_invalid="drop")
    assert len(cleaned) == len(corpus) - 1 and sum(report["dropped"].values()) == 1


def test_duplicate_id_named():
    corpus = _corpus()
    corpus.loc[9, "text_id_kaggle"] = corpus.loc[2, "text_id_kaggle"]
    with pytest.raises(AESError, match="own.csv row 10 .*not seen in an earlier row"):
        validate_and_clean(corpus, PREP, ELLIPSE)


def test_word_window_counted():
    corpus = _corpus(words=(150, 260))
    cleaned, report = validate_and_clean(corpus, PREP, ELLIPSE)
    assert report["rows_in"] == len(corpus)
    assert report["rows_kept"] + report["dropped"]["word_count_outside_window"] == len(corpus)
    assert cleaned["n_words"].between(200, 1000).all()


def test_unknown_and_mistyped_params(tmp_path):
    text = committed_text("params.yaml")
    renamed = with_param(text, "prepare.ellipse.n_folds", "5").replace("\n    n_folds:", "\n    n_fold:", 1)
    (tmp_path / "p.yaml").write_text(renamed)
    with pytest.raises(AESError, match="unknown key 'prepare.ellipse.n_fold' \\(did you mean 'prepare.ellipse.n_folds'\\?\\)"):
        load_params(tmp_path / "p.yaml")
    for dotted, raw, message in [
        ("prepare.ellipse.n_folds", "five", "'prepare.ellipse.n_folds' must be int"),
        ("finetune.epochs", "0", "key 'finetune.epochs' must be >= 1; got 0"),
        ("finetune.warmup_ratio", "1.0", r"key 'finetune.warmup_ratio' must be >= 0 and < 1; got 1.0"),
        ("objective", "sgd", "'objective' must be one of erm, grl, dro"),
    ]:
        (tmp_path / "p.yaml").write_text(with_param(text, dotted, raw))
        with pytest.raises(AESError, match=message):
            load_params(tmp_path / "p.yaml")


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("finetune.seeds", "[]", r"key 'finetune.seeds' must have at least 1 item\(s\); got \[\]"),
        ("finetune.seeds", "[7, 8, 7]", "key 'finetune.seeds' repeats 7; every item must be distinct"),
        ("finetune.seeds", "[7, '8']", "key 'finetune.seeds' must be a list of int"),
        ("gbm.seeds", "7", "key 'gbm.seeds' must be list"),
        ("gbm.max_depth", "[]", r"key 'gbm.max_depth' must have at least 1 item"),
        ("gbm.max_depth", "4", "key 'gbm.max_depth' must be list"),
        ("linear.alphas", "[1.0, 1, 10.0]", "key 'linear.alphas' repeats 1"),
        ("linear.inner_folds", "1", "key 'linear.inner_folds' must be >= 2; got 1"),
        ("finetune.lp_ft", "maybe", "key 'finetune.lp_ft' must be bool"),
        ("report.q1_metrics", "[qwk.pooled, qwk.worst_qarter]",
         r"key 'report.q1_metrics' has unknown item 'qwk.worst_qarter' \(did you mean 'qwk.worst_quarter'\?\); "
         r"known: qwk.pooled, .*qwk.worst_quarter"),
        ("report.q2_metrics", "[]", r"key 'report.q2_metrics' must have at least 1 item"),
        ("report.q2_metrics", "[rmse, rmse]", "key 'report.q2_metrics' repeats 'rmse'"),
        ("embed.mixed_precision", "fp16", "key 'embed.mixed_precision' must be one of no, bf16"),
        ("finetune.mixed_precision", "fp32", "key 'finetune.mixed_precision' must be one of no, bf16, fp16"),
    ],
)
def test_list_params_are_checked_and_named(tmp_path, key, value, message):
    (tmp_path / "p.yaml").write_text(with_param(committed_text("params.yaml"), key, value))
    with pytest.raises(AESError, match=message):
        load_params(tmp_path / "p.yaml")


@pytest.mark.parametrize("gone", ["gbm.text_stats", "gbm.seed", "finetune.seed", "report.decision_metric", "report.max_worst_prompt_drop"])
def test_removed_params_are_unknown_keys(tmp_path, gone):
    """Keys of the old schema are rejected by name, so a stale `-S` override fails loudly."""
    section, key = gone.split(".")
    text = committed_text("params.yaml").replace(f"\n{section}:\n", f"\n{section}:\n  {key}: 1\n", 1)
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(AESError, match=f"unknown key '{gone}'"):
        load_params(tmp_path / "p.yaml")


def test_params_read_as_dvc_writes_them(tmp_path):
    """`dvc exp run -S` rewrites params.yaml as YAML 1.2: `"no"` loses its quotes, floats may be 2e-5."""
    text = committed_text("params.yaml")
    committed = committed_params()
    text = with_param(text, "finetune.mixed_precision", "no")
    text = with_param(text, "finetune.encoder_lr", "3e-4")
    text = with_param(text, "linear.alphas", "[1, 10, 100]")  # ints in a float list
    (tmp_path / "p.yaml").write_text(text)
    params = load_params(tmp_path / "p.yaml")
    assert params["finetune"]["mixed_precision"] == "no"
    assert params["finetune"]["encoder_lr"] == 3e-4
    for key in ("lora", "epochs", "seeds"):  # untouched keys keep the committed values and types
        assert params["finetune"][key] == committed["finetune"][key]
    assert type(params["finetune"]["lora"]) is bool and params["gbm"]["max_depth"] == committed["gbm"]["max_depth"]
    alphas = params["linear"]["alphas"]
    assert alphas == [1.0, 10.0, 100.0] and all(type(a) is float for a in alphas)


@pytest.mark.parametrize("written,shown", [("3.25", "got Overall=3.25 ("), ("N/A", "got Overall='N/A' ("), ("", "got Overall=an empty cell (")])
def test_bad_score_is_quoted_as_written(tmp_path, written, shown):
    """A score read from a CSV is quoted the way the person wrote it, never as np.float64(3.25) or nan."""
    frame = make_ellipse_frame().astype({"Overall": object})
    frame.loc[7, "Overall"] = written
    path = tmp_path / "own.csv"
    frame.to_csv(path, index=False)
    corpus, _ = fetch(ELLIPSE, {"source": "csv", "csv_path": str(path), "local_dir": "", "zip_password": ""})
    with pytest.raises(AESError, match="own.csv row 8 ") as err:
        validate_and_clean(corpus, PREP, ELLIPSE)
    assert shown in str(err.value) and "np.float64" not in str(err.value)


def test_prepared_essays_carry_every_target_in_declared_order():
    corpus = _corpus()
    order = ["Overall", "Grammar", "Cohesion"]
    cleaned, _ = validate_and_clean(corpus, PREP | {"targets": order}, ELLIPSE)
    assert data.declared_targets(cleaned) == order
    assert (cleaned["y"] == cleaned["Overall"]).all()
    assert data.target_matrix(cleaned).shape == (len(cleaned), 3)
    assert (cleaned["Grammar"] != cleaned["Overall"]).any()  # the synthetic traits are not copies of Overall


def test_csv_without_traits_works_with_overall_only_and_fails_clearly_with_the_default(tmp_path):
    """A user CSV with Overall but none of the six traits: `targets: [Overall]` works, the seven-target default names the fix."""
    frame = make_ellipse_frame().drop(columns=SCORES[1:])
    path = tmp_path / "own.csv"
    frame.to_csv(path, index=False)
    corpus, _ = fetch(ELLIPSE, {"source": "csv", "csv_path": str(path), "local_dir": "", "zip_password": ""})
    cleaned, _ = validate_and_clean(corpus, PREP | {"targets": ["Overall"]}, ELLIPSE)
    assert data.declared_targets(cleaned) == ["Overall"] and len(cleaned) == len(frame)
    with pytest.raises(AESError, match=r"own.csv: missing column\(s\) \['Cohesion', .*'Conventions'\].*prepare.targets.*targets: \[Overall\]"):
        validate_and_clean(corpus, PREP, ELLIPSE)


SEVEN = "[Overall, Cohesion, Syntax, Vocabulary, Phraseology, Grammar, Conventions]"


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("prepare.targets", "[Overall, Cohesion, Syntax, Vocabulary, Phraseology, Grammar, Grammar]", "key 'prepare.targets' repeats 'Grammar'"),
        ("prepare.targets", "[Overall, Cohesion, Syntax, Vocabulary, Phraseology, Grammar, Spelling]",
         r"key 'prepare.targets' has unknown item 'Spelling'.*known: Overall, Cohesion"),
        ("prepare.targets", "[Overall, Cohesion, Syntax, Vocabulary, Phraseology, Grammar, Convention]", r"did you mean 'Conventions'\?"),
        ("finetune.target_weights", "[1.0, 1.0]",
         r"'finetune.target_weights' has 2 weight\(s\) but key 'prepare.targets' lists 7 target\(s\)"),
        ("finetune.target_weights", "[0, 0, 0, 0, 0, 0, 0]", "'finetune.target_weights' must be >= 0 with at least one weight > 0"),
        ("finetune.target_weights", "[1, one, 1, 1, 1, 1, 1]", "'finetune.target_weights' must be a list of float"),
    ],
)
def test_bad_targets_and_weights_are_named(tmp_path, key, value, message):
    # the seven-target default, whatever the commit's targets and weights are
    text = with_param(with_param(committed_text("params.yaml"), "prepare.targets", SEVEN), "finetune.target_weights", "[1, 1, 1, 1, 1, 1, 1]")
    (tmp_path / "p.yaml").write_text(with_param(text, key, value))
    with pytest.raises(AESError, match=message):
        load_params(tmp_path / "p.yaml")


def test_overall_only_params_load(tmp_path):
    text = with_param(committed_text("params.yaml"), "prepare.targets", "[Overall]")
    (tmp_path / "p.yaml").write_text(with_param(text, "finetune.target_weights", "[1]"))
    params = load_params(tmp_path / "p.yaml")
    assert params["prepare"]["targets"] == ["Overall"] and params["finetune"]["target_weights"] == [1.0]


def test_ellipse_essays_carry_the_half_band_scale():
    cleaned, _ = validate_and_clean(_corpus(), PREP, ELLIPSE)
    assert list(cleaned.columns) == [*data.PREPARED_COLUMNS, *SCORES, "score_low", "score_high", "score_step"]
    assert (cleaned["score_low"] == 1.0).all() and (cleaned["score_high"] == 5.0).all() and (cleaned["score_step"] == 0.5).all()


def test_ellipse_settings_keep_the_key_order_splits_json_records():
    """splits.json records the flat prepare settings: the order of the one prepare section before
    datasets had sections, so the same params give a byte-identical splits.json."""
    from aes.data.params import validate
    from aes.data.registry import data_settings, prepare_settings

    params = validate(committed_params())
    assert params["data"]["dataset"] == "ellipse"  # the default
    assert list(prepare_settings(params)) == ["targets", "min_words", "max_words", "invalid_rows", "test_fraction",
                                              "test_candidates", "n_folds", "seed", "groups", "topic_model", "topic_similarity"]
    assert list(data_settings(params)) == ["source", "local_dir", "csv_path", "zip_password"]
    assert params["data"]["ellipse"]["local_dir"] == ELLIPSE.default_local_dir
