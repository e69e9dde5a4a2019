"""Small synthetic ELLIPSE-shaped data for tests (never the real essays)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

WORDS = (
    "school students should because think many people believe important learn time help "
    "online classes teacher idea reason example success work community phone summer project "
    "however therefore first second finally conclusion agree disagree opinion life"
).split()

ELLIPSE_COLUMNS = [
    "text_id_kaggle", "full_text", "prompt", "task", "gender", "grade", "race_ethnicity", "SES",
    "num_words", "num_words2", "num_words3", "num_sent", "num_para", "num_word_div_para", "MTLD",
    "TTR", "Type", "Token", "Overall", "Cohesion", "Syntax", "Vocabulary", "Phraseology",
    "Grammar", "Conventions", "set",
]

TRAITS = ("Cohesion", "Syntax", "Vocabulary", "Phraseology", "Grammar", "Conventions")


def make_ellipse_frame(n_prompts: int = 12, per_prompt: int = 10, seed: int = 0, words: tuple[int, int] = (210, 320)) -> pd.DataFrame:
    """ELLIPSE-shaped rows whose score loosely tracks essay length and vocabulary.

    Overall drives the vocabulary; each of the six traits is Overall plus its own half-band
    noise (a second generator, so the texts and Overall stay what they were before traits).
    """
    rng = np.random.default_rng(seed)
    trait_rng = np.random.default_rng([seed, 17])
    rows = []
    for p in range(n_prompts):
        for i in range(per_prompt):
            score = float(np.clip(np.round(rng.normal(3.0, 0.7) * 2) / 2, 1.0, 5.0))
            n = int(rng.integers(*words))
            vocab = WORDS[: 8 + int(score * 5)]
            text = " ".join(rng.choice(vocab, size=n)) + f". prompt{p} topic words."
            row = {c: "" for c in ELLIPSE_COLUMNS}
            row.update(
                text_id_kaggle=f"{p:02d}{i:04d}abcdef",
                full_text=text,
                prompt=f"Prompt {p}",
                task="Independent",
                grade=int(rng.choice([8, 10, 11, 12])),
                num_words=n,
                set="test",
            )
            row["Overall"] = score
            for col in TRAITS:
                row[col] = float(np.clip(score + 0.5 * trait_rng.integers(-1, 2), 1.0, 5.0))
            rows.append(row)
    return pd.DataFrame(rows, columns=ELLIPSE_COLUMNS)


def write_ellipse_csv(path: Path, **kwargs) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    make_ellipse_frame(**kwargs).to_csv(path, index=False)
    return path
