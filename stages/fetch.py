"""fetch: the ELLIPSE releases (local copy, upstream GitHub or your own CSV), checksum-verified."""

from pathlib import Path

from aes.data import fetch
from aes.errors import stage_main
from aes.evaluation import write_json
from aes.params import load_params

RAW = Path("data/raw/ellipse.csv")
PROVENANCE = Path("data/provenance.json")


@stage_main
def main() -> None:
    params = load_params()
    corpus, provenance = fetch(params["data"])
    RAW.parent.mkdir(parents=True, exist_ok=True)
    corpus.to_csv(RAW, index=False)
    write_json(PROVENANCE, provenance)
    print(f"fetched {provenance['rows']} rows from {[f['file'] for f in provenance['files']]}")


if __name__ == "__main__":
    main()
