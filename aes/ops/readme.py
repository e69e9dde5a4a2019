"""Write the report's results table into README.md between the results markers.

Run by hand after `dvc repro` (no stage writes outside what DVC declares):

    aes-readme            # or: python -m aes.ops.readme

It reads metrics/report.json only. `tests/test_readme.py` fails when the committed README
table and metrics/report.json disagree.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

from aes.core.errors import AESError, stage_main
from aes.core.registry import DECISION_MD, REPORT_JSON
from aes.report.markdown import finetune_phrase, results_table_md, traits_table_md

README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def results_block(report: dict) -> str:
    """The text that belongs between the markers for this report."""
    q1, q2 = report["q1"], report["q2"]
    q2_text = "; ".join(f"{o.upper()} vs ERM **{q['verdict']}**" for o, q in q2.items())
    traits = traits_table_md(report)
    traits_text = f"\n\nPooled QWK per target (mean over seeds; mean trait QWK ± sd over seeds):\n\n{traits}" if traits else ""
    return (f"\n{results_table_md(report)}{traits_text}\n\nQ1, {finetune_phrase(report)} vs the strongest frozen model (`{q1['reference']}`), "
            f"on {', '.join(report['rule']['q1_metrics'])}: **{q1['verdict']}**. Q2, on {', '.join(report['rule']['q2_metrics'])}: "
            f"{q2_text}. Every number is the mean ± sd over seeds; verdicts use the 95% prompt x seed bootstrap CI and the "
            f"seed spread. Details: [{DECISION_MD}]({DECISION_MD}).\n")


def _block_span(text: str) -> tuple[int, int] | None:
    """(start, end) of the text between the markers, or None when they are absent."""
    start, end = text.find(README_START), text.find(README_END)
    return None if start < 0 or end < start else (start + len(README_START), end)


def current_block(text: str) -> str | None:
    """The text between the markers, or None when they are absent."""
    span = _block_span(text)
    return None if span is None else text[span[0] : span[1]]


def update_readme(readme: Path, report: dict) -> bool:
    """Replace the text between the results markers of README.md; False (with a warning) if absent."""
    if not readme.exists():
        warnings.warn(f"{readme} not found; results table not written there", stacklevel=2)
        return False
    text = readme.read_text()
    span = _block_span(text)
    if span is None:
        warnings.warn(f"{readme} lacks the markers {README_START} ... {README_END}; left unchanged", stacklevel=2)
        return False
    readme.write_text(text[: span[0]] + results_block(report) + text[span[1] :])
    return True


@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(prog="aes-readme", description="Write metrics/report.json's results table into README.md.")
    parser.add_argument("--readme", default="README.md", type=Path)
    parser.add_argument("--report", default=str(REPORT_JSON), type=Path)
    args = parser.parse_args()
    if not args.report.exists():
        raise AESError(f"{args.report}: not found; run `dvc repro report` first")
    if update_readme(args.readme, json.loads(args.report.read_text())):
        print(f"{args.readme}: results table updated from {args.report}")


if __name__ == "__main__":
    main()
