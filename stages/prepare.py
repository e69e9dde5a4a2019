"""prepare: validate and clean the essays, then carve the locked test and the CV folds."""

from pathlib import Path

import pandas as pd

from aes.data import sha256_file, validate_and_clean
from aes.errors import AESError, stage_main
from aes.evaluation import write_json
from aes.params import load_params
from aes.splits import build_splits

RAW = Path("data/raw/ellipse.csv")
ESSAYS = Path("data/prepared/essays.csv")
SPLITS = Path("data/prepared/splits.json")
REPORT = Path("metrics/prepare.json")


@stage_main
def main() -> None:
    params = load_params()["prepare"]
    if not RAW.exists():
        raise AESError(f"{RAW}: not found; run `dvc repro fetch` first")
    corpus = pd.read_csv(RAW, dtype={"text_id_kaggle": str}, keep_default_na=True)
    essays, report = validate_and_clean(corpus, params, on_invalid=params["invalid_rows"])
    ESSAYS.parent.mkdir(parents=True, exist_ok=True)
    essays.to_csv(ESSAYS, index=False)
    splits = build_splits(essays, params, sha256_file(ESSAYS))
    write_json(SPLITS, splits)
    report.update(
        prompts=int(essays["prompt"].nunique()),
        test={k: splits["test"][k] for k in ("n_essays", "share")} | {"prompts": len(splits["test"]["prompts"])},
        cv={"n_essays": int(len(essays) - splits["test"]["n_essays"]), "folds": {str(f["fold"]): f["n_val"] for f in splits["folds"]}},
    )
    write_json(REPORT, report)
    print(f"kept {report['rows_kept']}/{report['rows_in']} essays; dropped {report['dropped']}; "
          f"locked test: {len(splits['test']['prompts'])} prompts, {splits['test']['n_essays']} essays")


if __name__ == "__main__":
    main()
