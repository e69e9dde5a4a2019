"""embed: mean-pooled frozen-encoder embeddings of the CV essays (the locked test is never read)."""

import time

from aes.core.errors import stage_main
from aes.core.io import write_json
from aes.core.machine import compute_fingerprint
from aes.core.params import load_params
from aes.core.registry import EMBED_METRICS, EMBEDDINGS
from aes.data.corpus import load_essays
from aes.data.splits import cv_essays, load_splits
from aes.encoders.embedding import embed_texts, resolve_device, save_embeddings


@stage_main
def main() -> None:
    params = load_params()["embed"]
    cv = cv_essays(load_essays(), load_splits())
    started = time.perf_counter()
    embeddings = embed_texts(cv["text"].tolist(), params["model"], params["max_length"], params["batch_size"], device="auto",
                             bf16=params["mixed_precision"] == "bf16")
    runtime_s = time.perf_counter() - started  # includes loading the encoder
    save_embeddings(EMBEDDINGS, embeddings, cv["record_id"])
    write_json(EMBED_METRICS, {
        "n_essays": int(len(cv)), "dim": int(embeddings.shape[1]), "model": params["model"],
        "max_length": params["max_length"], "mixed_precision": params["mixed_precision"], "runtime_s": round(runtime_s, 1),
        "essays_per_s": round(len(cv) / runtime_s, 2), "compute": compute_fingerprint(params["mixed_precision"], resolve_device("auto")),
    })
    print(f"embedded {len(cv)} CV essays -> {embeddings.shape[1]}-d in {runtime_s:.0f} s")


if __name__ == "__main__":
    main()
