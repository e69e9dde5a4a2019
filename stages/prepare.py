"""prepare: validate and clean the essays, then split them by the dataset's protocol (locked test + CV folds, or leave one prompt out)."""

from aes.core.errors import AESError, stage_main
from aes.core.io import sha256_file, write_json
from aes.core.params import load_params
from aes.core.registry import ESSAYS, PREPARE_METRICS, RAW_CSV, SPLITS
from aes.data.corpus import read_csv_as_written, validate_and_clean
from aes.data.datasets import dataset_of, prepare_settings
from aes.data.protocols import split_essays


@stage_main
def main() -> None:
    params = load_params()
    dataset, settings = dataset_of(params), prepare_settings(params)
    if not RAW_CSV.exists():
        raise AESError(f"{RAW_CSV}: not found; run `dvc repro fetch` first")
    corpus = read_csv_as_written(RAW_CSV, str(RAW_CSV), dtype={dataset.id_column: str})
    essays, report = validate_and_clean(corpus, settings, dataset, on_invalid=settings["invalid_rows"])
    ESSAYS.parent.mkdir(parents=True, exist_ok=True)
    essays.to_csv(ESSAYS, index=False)
    splits = split_essays(essays, dataset, settings, sha256_file(ESSAYS))
    write_json(SPLITS, splits)
    n_prompts = int(essays["prompt"].nunique())
    report.update(
        prompts=n_prompts,
        groups={"by": settings.get("groups", "prompt"), "n": len(splits["topics"]) if "topics" in splits else n_prompts},
        test={k: splits["test"][k] for k in ("n_essays", "share")} | {"prompts": len(splits["test"]["prompts"])},
        cv={"n_essays": int(len(essays) - splits["test"]["n_essays"]), "folds": {str(f["fold"]): f["n_val"] for f in splits["folds"]}},
    )
    write_json(PREPARE_METRICS, report)
    print(f"kept {report['rows_kept']}/{report['rows_in']} {dataset.title} essays; dropped {report['dropped']}; "
          f"locked test: {len(splits['test']['prompts'])} prompts, {splits['test']['n_essays']} essays; {len(splits['folds'])} folds")


if __name__ == "__main__":
    main()
