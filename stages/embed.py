"""embed: mean-pooled frozen-encoder embeddings of the CV essays (the locked test is never read)."""

import time
from pathlib import Path

from aes.data import load_essays
from aes.embedding import embed_texts, save_embeddings
from aes.errors import stage_main
from aes.evaluation import write_json
from aes.params import load_params
from aes.splits import cv_essays, load_splits

OUT_DIR = Path("data/embeddings")
METRICS = Path("metrics/embed.json")


@stage_main
def main() -> None:
    params = load_params()["embed"]
    cv = cv_essays(load_essays(), load_splits())
    started = time.perf_counter()
    embeddings = embed_texts(cv["text"].tolist(), params["model"], params["max_length"], params["batch_size"], device="auto")
    runtime_s = time.perf_counter() - started  # includes loading the encoder
    save_embeddings(OUT_DIR, embeddings, cv["record_id"])
    write_json(METRICS, {
        "n_essays": int(len(cv)), "dim": int(embeddings.shape[1]), "model": params["model"],
        "max_length": params["max_length"], "runtime_s": round(runtime_s, 1),
        "essays_per_s": round(len(cv) / runtime_s, 2),
    })
    print(f"embedded {len(cv)} CV essays -> {embeddings.shape[1]}-d in {runtime_s:.0f} s")


if __name__ == "__main__":
    main()
