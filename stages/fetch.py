"""fetch: the chosen dataset's release files (local copy or upstream; ELLIPSE also your own CSV), checksum-verified."""

from aes.core.errors import stage_main
from aes.core.io import write_json
from aes.core.registry import PROVENANCE, RAW_CSV
from aes.data.fetch import fetch
from aes.data.params import load_params
from aes.data.registry import data_settings, dataset_of


@stage_main
def main() -> None:
    params = load_params()
    dataset = dataset_of(params)
    corpus, provenance = fetch(dataset, data_settings(params))
    RAW_CSV.parent.mkdir(parents=True, exist_ok=True)
    corpus.to_csv(RAW_CSV, index=False)
    write_json(PROVENANCE, provenance)
    print(f"fetched {provenance['rows']} {dataset.title} rows from {[f['file'] for f in provenance['files']]}")


if __name__ == "__main__":
    main()
