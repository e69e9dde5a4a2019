"""prepare: validate and clean the essays, then split them by the dataset's protocol (locked test + CV folds, or leave one prompt out)."""

from aes.core.errors import stage_main
from aes.core.io import sha256_file, write_json
from aes.core.registry import ESSAYS, PREPARE_METRICS, SPLITS, TOPICS_JSON
from aes.data.clean import validate_and_clean
from aes.data.fetch import read_fetched
from aes.data.params import load_params
from aes.data.registry import dataset_of, prepare_settings
from aes.data.topics import holdout_topics


@stage_main
def main() -> None:
    params = load_params()
    dataset, settings = dataset_of(params), prepare_settings(params)
    essays, report = validate_and_clean(read_fetched(dataset), settings, dataset, on_invalid=settings["invalid_rows"])
    ESSAYS.parent.mkdir(parents=True, exist_ok=True)
    essays.to_csv(ESSAYS, index=False)
    topics = holdout_topics(TOPICS_JSON, settings, essays["prompt"])  # None: the splits keep prompts whole
    splits = dataset.split(essays, settings, sha256_file(ESSAYS), topics)
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
