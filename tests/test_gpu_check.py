"""aes.ops.gpu_check without a GPU: its argument checks (missing folder, model, data; no GPU; an
unknown objective), and a CPU dry run of its whole `run` path on the tiny model with dvc, dvclive
and xgboost made unimportable, as on the GPU machine."""

import json
import shutil
import subprocess
import sys

import pytest
import torch

from aes.core.params import read_overrides
from aes.data.params import with_overrides
from aes.ops import gpu_check
from tests.training_fixtures import ROOT, make_training_repo


def _prep_dir(tmp_path, tiny_encoder, with_model=True, with_data=True):
    """A .gpu_check folder as `prep` writes it, with the tiny model and a tiny repo's prepared data."""
    repo = tmp_path / "repo"
    params = make_training_repo(repo, tiny_encoder)
    params = with_overrides(params, read_overrides(ROOT / "profiles" / "gpu.args"), "gpu.args")
    params = with_overrides(params, {"finetune.seeds": [7], "finetune.max_length": 64, "finetune.epochs": 2,
                                     "finetune.batch_size": 8, "finetune.encoder_lr": 1e-3, "linear.inner_folds": 2,
                                     "report.min_prompt_n": 3})
    prep = tmp_path / ".gpu_check"
    prep.mkdir()
    (prep / "params.json").write_text(json.dumps(params))
    if with_model:
        shutil.copytree(tiny_encoder, prep / "model")
    if with_data:
        shutil.copytree(repo / "data" / "prepared", prep / "prepared")
    return prep


def _error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_:
        gpu_check.main(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


def test_missing_prep_folder_says_how_to_make_it(tmp_path, capsys):
    err = _error(capsys, ["run", "--prep-dir", str(tmp_path / "nope")])
    assert "the GPU check's folder not found" in err and "python -m aes.ops.gpu_check prep" in err


def test_missing_model_folder_is_named(tmp_path, tiny_encoder, capsys):
    prep = _prep_dir(tmp_path, tiny_encoder, with_model=False)
    err = _error(capsys, ["run", "--prep-dir", str(prep)])
    assert f"{prep / 'model' / 'config.json'}: the fp16 MiniLM folder" in err and "gpu_check prep" in err


def test_missing_data_is_named(tmp_path, tiny_encoder, capsys):
    prep = _prep_dir(tmp_path, tiny_encoder, with_data=False)
    err = _error(capsys, ["run", "--prep-dir", str(prep)])
    assert f"{prep / 'prepared' / 'essays.csv'}: prepared data not found" in err


def test_prep_without_prepared_data_names_the_stages(tmp_path, capsys):
    err = _error(capsys, ["prep", "--prepared", str(tmp_path / "prepared"), "--prep-dir", str(tmp_path / "out")])
    assert "python -m stages.fetch && python -m stages.prepare" in err and not (tmp_path / "out").exists()


def test_unknown_objective_is_named(tmp_path, capsys):
    err = _error(capsys, ["run", "--prep-dir", str(tmp_path), "--objectives", "erm,mse"])
    assert "unknown objective 'mse'" in err


def test_no_gpu_says_what_would_work(tmp_path, tiny_encoder, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    err = _error(capsys, ["run", "--prep-dir", str(_prep_dir(tmp_path, tiny_encoder))])
    assert "no CUDA GPU visible" in err and "H100" in err and "python -m aes.ops.smoke" in err


BLOCKER = """
import sys
BLOCKED = ("dvc", "dvclive", "xgboost")
for name in BLOCKED:  # as if not installed: `import` raises ImportError, importlib.util.find_spec gives None
    sys.modules[name] = None
import torch
torch.set_num_threads(1)
from aes.ops.gpu_check import main
try:
    main(sys.argv[1:])
finally:
    print("LOADED", sorted(m for m, mod in sys.modules.items() if m.split(".")[0] in BLOCKED and mod is not None))
"""


def test_cpu_dry_run_of_the_whole_path_imports_no_dvc_or_xgboost(tmp_path, tiny_encoder):
    prep = _prep_dir(tmp_path, tiny_encoder)
    bench = tmp_path / "bench"
    proc = subprocess.run([sys.executable, "-c", BLOCKER, "run", "--cpu", "--prep-dir", str(prep), "--workdir",
                           str(tmp_path / "work"), "--bench-dir", str(bench), "--copy-to", str(tmp_path / "out")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last == "LOADED []", last
    assert "dvclive is not installed: training curves are not written" in proc.stderr  # the stages' fallback
    doc = json.loads((bench / "gpu_cpu_dry_run.json").read_text())
    assert (tmp_path / "out" / "gpu_cpu_dry_run.json").exists()
    assert set(doc["stages"]) == {"embed", "lp_cv", "erm", "dro"} and doc["stages"]["embed"]["frozen_pass_shared"]
    assert doc["finetune"]["trainable_layers"] == -1 and doc["finetune"]["lp_ft"] and doc["finetune"]["seeds"] == [7]
    for name in ("erm", "dro"):
        stage = doc["stages"][name]
        assert len(stage["qwk_per_fold"]) == 3 and stage["losses_finite"] and stage["train_essays_per_s"] > 0
    assert doc["projection_full_gpu_profile"]["label"].startswith("PROJECTION")
    assert {"torch", "cuda", "gpu", "cpu"} <= set(doc["machine"])
