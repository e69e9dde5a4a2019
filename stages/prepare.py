"""prepare: validate and clean the essays, then carve the locked test and the CV folds (by prompt or by topic)."""

from aes.core.errors import AESError, stage_main
from aes.core.io import sha256_file, write_json
from aes.core.params import load_params
from aes.core.registry import ESSAYS, PREPARE_METRICS, RAW_CSV, SPLITS
from aes.data.corpus import read_csv_as_written, validate_and_clean
from aes.data.splits import build_splits
from aes.data.topics import holdout_topics


@stage_main
def main() -> None:
    params = load_params()["prepare"]
    if not RAW_CSV.exists():
        raise AESError(f"{RAW_CSV}: not found; run `dvc repro fetch` first")
    corpus = read_csv_as_written(RAW_CSV, str(RAW_CSV), dtype={"text_id_kaggle": str})
    essays, report = validate_and_clean(corpus, params, on_invalid=params["invalid_rows"])
    ESSAYS.parent.mkdir(parents=True, exist_ok=True)
    essays.to_csv(ESSAYS, index=False)
    topics = holdout_topics(params, essays["prompt"].tolist())  # None: group by prompt
    splits = build_splits(essays, params, sha256_file(ESSAYS), topics)
    write_json(SPLITS, splits)
    report.update(
        prompts=int(essays["prompt"].nunique()),
        groups={"by": params["groups"], "n": len(set(topics.values())) if topics else int(essays["prompt"].nunique())},
        test={k: splits["test"][k] for k in ("n_essays", "share")} | {"prompts": len(splits["test"]["prompts"])},
        cv={"n_essays": int(len(essays) - splits["test"]["n_essays"]), "folds": {str(f["fold"]): f["n_val"] for f in splits["folds"]}},
    )
    write_json(PREPARE_METRICS, report)
    print(f"kept {report['rows_kept']}/{report['rows_in']} essays; dropped {report['dropped']}; "
          f"locked test: {len(splits['test']['prompts'])} prompts, {splits['test']['n_essays']} essays")


if __name__ == "__main__":
    main()
