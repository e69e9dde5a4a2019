"""Write the report's tables into the documentation between their markers.

Run by hand after `dvc repro` (no stage writes outside what DVC declares):

    aes-readme            # or: python -m aes.ops.readme

Each block (between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``) lives on one page
(:data:`HOMES`): the default run's full tables in docs/results-ellipse.md, and a compact view of
the default run and of ASAP on the front page, README.md (:data:`COMPACT`). The default reads
metrics/report.json only. `tests/test_readme.py` fails when a committed block and its committed
report disagree.

The other blocks come from documented experiments, each report kept as ``reports/NAME/report.json``
(copy the experiment's metrics/report.json and reports/decision.md there after it ran). A report
does not record its dataset: ``--dataset`` names it, by default the dataset the block is named
after (asap), else the default dataset; the asap block lists that dataset's published results
(``Dataset.published``).

    aes-readme --block asap --report reports/asap/report.json                    # profiles/asap.args
    aes-readme --block asap_inductive --report reports/asap_inductive/report.json  # the earlier inductive run (bench/asap_run_inductive.json)
    aes-readme --block whole_encoder --report reports/whole_encoder/report.json  # profiles/whole_encoder.args
    aes-readme --block whole_encoder_text --report reports/whole_encoder_text/report.json
"""

from __future__ import annotations

import argparse
import functools
import json
import posixpath
import warnings
from pathlib import Path

from aes.core.errors import AESError, stage_main
from aes.core.registry import DECISION_MD, REPORT_JSON
from aes.data.dataset import Dataset
from aes.data.registry import BY_NAME, DATASETS, get_dataset
from aes.report.markdown import (
    calibrated_verdicts_line,
    calibration_md,
    compact_table_md,
    finetune_phrase,
    per_prompt_rows,
    report_labels,
    results_table_md,
    traits_table_md,
)

README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"
ASAP_REPORT = Path("reports/asap/report.json")  # the ASAP experiment's report, committed (aggregates only)
FRONT_PAGE = Path("README.md")


def markers(block: str) -> tuple[str, str]:
    """The (start, end) markers of a block: 'results' (the default run), 'asap', an experiment's or a front-page view."""
    return (README_START, README_END) if block == "results" else (f"<!-- {block}:start -->", f"<!-- {block}:end -->")


def link(target: str, page: str) -> str:
    """A Markdown link to the repository path ``target`` from the page ``page`` (both relative to the root)."""
    return f"[{target}]({posixpath.relpath(target, posixpath.dirname(page) or '.')})"


def asap_block(report: dict, dataset: Dataset, page: str = str(FRONT_PAGE), details: str = "reports/asap/decision.md",
               published: bool = True) -> str:
    """ASAP's table: every model's QWK on each unseen prompt, their mean (the literature's headline)
    and worst, then (``published``) the published systems' means under the same protocol
    (``dataset.published``, ``dataset`` being the one the report was made on), and both verdicts;
    ``page``: the page it goes on; ``details``: the report's decision.md."""
    labels, per_prompt = report_labels(report), report["per_prompt_qwk"]
    prompts = list(next(iter(per_prompt.values())))
    lines = ["| system | " + " | ".join(f"P{p}" for p in prompts) + " | mean QWK | worst prompt |", "|---" * (len(prompts) + 3) + "|",
             *per_prompt_rows(report, labels, with_seeds=True)]
    for p in dataset.published if published else ():
        label = f"published: {p.system}; {p.inputs}" + (f" [transductive: {p.transductive}]" if p.transductive else "")
        lines.append(f"| {label} | " + " | ".join("" for _ in prompts) + f" | {p.qwk:.3f} | |")
    q1, q2 = report["q1"], report["q2"]
    q2_text = "; ".join(f"{o.upper()} vs ERM **{q['verdict']}**" for o, q in q2.items())
    return ("\n" + "\n".join(lines) + f"\n\nQ1, {finetune_phrase(report)} vs the strongest frozen model (`{q1['reference']}`), on "
            f"{', '.join(report['rule']['q1_metrics'])}: **{q1['verdict']}**. Q2, on {', '.join(report['rule']['q2_metrics'])}: {q2_text}."
            f"{calibrated_verdicts_line(report)} CIs: {report['bootstrap']['unit']} bootstrap. Details: {link(details, page)}.\n")


def results_block(report: dict, details: str = str(DECISION_MD), page: str = str(FRONT_PAGE)) -> str:
    """The text that belongs between the markers for this report (``details``: its decision.md; ``page``: the page it goes on)."""
    q1, q2 = report["q1"], report["q2"]
    q2_text = "; ".join(f"{o.upper()} vs ERM **{q['verdict']}**" for o, q in q2.items())
    traits = traits_table_md(report)
    traits_text = f"\n\nPooled QWK per target (mean over seeds; mean trait QWK ± sd over seeds):\n\n{traits}" if traits else ""
    calibration = "\n".join(calibration_md(report, heading="###"))
    return (f"\n{results_table_md(report)}{traits_text}\n\nQ1, {finetune_phrase(report)} vs the strongest frozen model (`{q1['reference']}`), "
            f"on {', '.join(report['rule']['q1_metrics'])}: **{q1['verdict']}**. Q2, on {', '.join(report['rule']['q2_metrics'])}: "
            f"{q2_text}.{calibrated_verdicts_line(report)} Every number is the mean ± sd over seeds; verdicts use the 95% prompt x seed "
            f"bootstrap CI and the seed spread. Details: {link(details, page)}.\n{calibration}{chr(10) if calibration else ''}")


def block_span(text: str, block: str = "results") -> tuple[int, int] | None:
    """(start, end) of the text between the block's markers, or None when they are absent."""
    start_marker, end_marker = markers(block)
    start, end = text.find(start_marker), text.find(end_marker)
    return None if start < 0 or end < start else (start + len(start_marker), end)


def compact_block(report: dict, dataset: Dataset, full: str) -> str:
    """The front page's view of a report: :func:`aes.report.markdown.compact_table_md`, the verdicts in
    one line, ``dataset``'s published means (if any) and a link to ``full``, the page with every table."""
    q1, q2 = report["q1"], report["q2"]
    q2_text = ", ".join(f"{o.upper()} vs ERM **{q['verdict']}**" for o, q in q2.items())
    published = "; ".join(f"{p.system} {p.qwk:.3f}" + (" [transductive]" if p.transductive else "") for p in dataset.published)
    published_text = f" Published means under the same protocol: {published}." if published else ""
    return (f"\n{compact_table_md(report)}\n\nQ1 (ERM vs `{q1['reference']}`): **{q1['verdict']}**. Q2: {q2_text}."
            f"{calibrated_verdicts_line(report)}{published_text} "
            f"Every table: {link(full, str(FRONT_PAGE))}.\n")


EXPERIMENTS = ("whole_encoder", "whole_encoder_text")  # results tables of experiments beside the default
# ASAP's inductive run (training-fold feature scaling): its own table beside the profile's transductive one
ASAP_INDUCTIVE = "asap_inductive"
HOMES = {"results": Path("docs/results-ellipse.md"), "asap": Path("docs/asap.md"), ASAP_INDUCTIVE: Path("docs/asap.md"),
         **{name: Path("docs/whole-encoder.md") for name in EXPERIMENTS}}  # the page each block lives on
COMPACT = {"results": "results_compact", "asap": "asap_compact"}  # the front-page view of a block, on FRONT_PAGE
BLOCKS = {"results": functools.partial(results_block, page=str(HOMES["results"])),
          "asap": functools.partial(asap_block, page=str(HOMES["asap"])),
          ASAP_INDUCTIVE: functools.partial(asap_block, page=str(HOMES[ASAP_INDUCTIVE]), details=f"reports/{ASAP_INDUCTIVE}/decision.md",
                                            published=False),
          **{name: functools.partial(results_block, details=f"reports/{name}/decision.md", page=str(HOMES[name])) for name in EXPERIMENTS},
          **{view: functools.partial(compact_block, full=str(HOMES[block])) for block, view in COMPACT.items()}}
DATASET_BLOCKS = ("asap", ASAP_INDUCTIVE, *COMPACT.values())  # blocks that also take the dataset the report was made on
BLOCK_DATASETS = {ASAP_INDUCTIVE: "asap"}  # blocks not named after their dataset


def base_block(block: str) -> str:
    """The block a front-page view shows ('results_compact' -> 'results'); any other block is its own."""
    return next((b for b, view in COMPACT.items() if view == block), block)


def block_dataset(block: str) -> Dataset:
    """The dataset a block's report was made on by default: the one the block (or the block a
    front-page view shows) is named after, else the default dataset."""
    block = base_block(block)
    return BY_NAME.get(BLOCK_DATASETS.get(block, block), DATASETS[0])


def block_pages(block: str) -> list[tuple[Path, str]]:
    """(page, block name) of every block one report writes: ``block`` on its page, and its front-page view if it has one."""
    return [(HOMES[block], block), *([(FRONT_PAGE, COMPACT[block])] if block in COMPACT else [])]


def block_text(block: str, report: dict, dataset: Dataset | None = None) -> str:
    """The text between ``block``'s markers for ``report``; ``dataset``: the one the report was made on
    (None: :func:`block_dataset`), read by the blocks of ``DATASET_BLOCKS`` only."""
    if block in DATASET_BLOCKS:
        return BLOCKS[block](report, dataset or block_dataset(block))
    return BLOCKS[block](report)


def update_readme(readme: Path, report: dict, block: str = "results", dataset: Dataset | None = None) -> bool:
    """Replace the text between the block's markers of the Markdown file ``readme`` (:func:`block_text`);
    False (with a warning) if the file or the markers are absent."""
    if not readme.exists():
        warnings.warn(f"{readme} not found; results table not written there", stacklevel=2)
        return False
    text = readme.read_text()
    span = block_span(text, block)
    if span is None:
        warnings.warn(f"{readme} lacks the markers {' ... '.join(markers(block))}; left unchanged", stacklevel=2)
        return False
    readme.write_text(text[: span[0]] + block_text(block, report, dataset) + text[span[1] :])
    return True


def update_docs(root: Path, report: dict, block: str = "results", dataset: Dataset | None = None) -> list[Path]:
    """Write ``report`` into every page of :func:`block_pages` under ``root``; the pages written (relative to ``root``)."""
    return [page for page, name in block_pages(block) if update_readme(root / page, report, name, dataset)]


@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(prog="aes-readme", description="Write a report's tables into the docs pages and the front page.")
    parser.add_argument("--root", default=".", type=Path, help="the repository root the pages are under (default: .)")
    parser.add_argument("--report", default=str(REPORT_JSON), type=Path)
    parser.add_argument("--block", default="results", choices=tuple(HOMES), help="results (the default run) or an experiment's block")
    parser.add_argument("--dataset", choices=tuple(BY_NAME), default=None,
                        help="the dataset the report was made on (its published results); default: the block's namesake, else "
                             f"{DATASETS[0].name}")
    args = parser.parse_args()
    if not args.report.exists():
        raise AESError(f"{args.report}: not found; run `dvc repro report` first (for an experiment's block: run the experiment, "
                       f"then copy its metrics/report.json to reports/<block>/report.json, e.g. {ASAP_REPORT})")
    dataset = get_dataset(args.dataset) if args.dataset else None
    for page in update_docs(args.root, json.loads(args.report.read_text()), args.block, dataset):
        print(f"{page}: {args.block} table updated from {args.report}")


if __name__ == "__main__":
    main()
