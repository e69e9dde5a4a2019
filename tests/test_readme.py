"""The report's tables in the docs are written by `aes-readme` (no stage writes outside what DVC
declares): each block on its page (aes.ops.readme.HOMES), the front page's compact views
(README.md, aes.ops.readme.COMPACT), and every committed block agrees with its committed report."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from aes.ops.readme import BLOCKS, COMPACT, FRONT_PAGE, HOMES, block_span, block_text, update_docs, update_readme
from tests.committed import committed_params, committed_text

ROOT = Path(__file__).resolve().parents[1]


def current_block(text: str, block: str = "results") -> str | None:
    """The text between the block's markers in README text, or None when they are absent."""
    span = block_span(text, block)
    return None if span is None else text[span[0] : span[1]]


def test_committed_results_page_and_front_page_match_committed_report():
    """The commit's pages against the commit's report: a fresh `dvc repro` on another CPU kind
    (other bf16 kernels, other last digits) rewrites metrics/report.json, not the commit."""
    report = json.loads(committed_text("metrics/report.json"))
    assert current_block(committed_text(str(HOMES["results"]))) == block_text("results", report), \
        "run `aes-readme` after `dvc repro`, then commit the pages and the report"
    assert current_block(committed_text(str(FRONT_PAGE)), COMPACT["results"]) == block_text(COMPACT["results"], report), \
        "run `aes-readme` after `dvc repro`, then commit README.md too"


def test_committed_asap_front_page_view_matches_committed_asap_report():
    report = json.loads(committed_text("reports/asap/report.json"))
    assert current_block(committed_text(str(FRONT_PAGE)), COMPACT["asap"]) == block_text(COMPACT["asap"], report), \
        "`aes-readme --block asap --report reports/asap/report.json`, commit"


def test_one_report_writes_its_page_and_the_front_page_view(tmp_path):
    report = _fresh_report(tmp_path / "ws")
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (root / FRONT_PAGE).write_text("# front\n<!-- results_compact:start -->\n<!-- results_compact:end -->\nlegend\n")
    (root / HOMES["results"]).write_text("# full\n<!-- results:start -->\n<!-- results:end -->\n")
    assert update_docs(root, report) == [HOMES["results"], FRONT_PAGE]
    front, full = (root / FRONT_PAGE).read_text(), (root / HOMES["results"]).read_text()
    assert current_block(full) == block_text("results", report) and current_block(front, "results_compact") == block_text("results_compact", report)
    assert front.endswith("<!-- results_compact:end -->\nlegend\n")
    compact = current_block(front, "results_compact")
    assert compact.splitlines()[1].startswith("| model | seeds | QWK pooled | within-prompt QWK | worst-quarter QWK | prompt offset (noise) |")
    assert "(docs/results-ellipse.md)" in compact and "(../reports/decision.md)" in current_block(full)
    # an experiment without a front-page view writes its page only
    (root / HOMES["whole_encoder"]).write_text("<!-- whole_encoder:start -->\n<!-- whole_encoder:end -->\n")
    assert update_docs(root, report, "whole_encoder") == [HOMES["whole_encoder"]]


@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_every_block_has_its_markers_on_its_committed_page_and_its_links_resolve(block):
    page = next((FRONT_PAGE for b, view in COMPACT.items() if view == block), HOMES.get(block))
    text = committed_text(str(page))
    assert block_span(text, block) is not None, f"{page} lacks the markers of block {block!r}"
    for target in re.findall(r"\]\(([^)#]+)\)", current_block(text, block)):
        committed_text(os.path.normpath(os.path.join(os.path.dirname(str(page)), target)))  # the link resolves in the commit


def _fresh_report(root: Path) -> dict:
    """metrics/report.json as the report stage writes it now, from constructed model outputs (all six stages)."""
    import warnings

    from aes.data.params import validate
    from aes.report.assemble import build_report
    from tests.report_fixtures import write_fake_workspace

    params = validate(committed_params())
    params["report"].update(bootstrap_resamples=200, calibration="none", q1_metrics=["qwk.pooled"], q2_metrics=["qwk.pooled", "qwk.worst_quarter"])
    write_fake_workspace(root, representations=False, curves=False, n_prompts=8, per_prompt=25)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # no representations: the probe is skipped
        report, _ = build_report(params, root)
    return json.loads(json.dumps(report))  # as read back from metrics/report.json


def test_update_replaces_only_the_block(tmp_path):
    from aes.core.registry import MODEL_LABELS, MODEL_STAGES

    report = _fresh_report(tmp_path / "ws")
    readme = tmp_path / "README.md"
    readme.write_text("# t\n<!-- results:start -->\nOLD\n<!-- results:end -->\nkeep me\n")
    assert update_readme(readme, report)
    text = readme.read_text()
    assert "OLD" not in text and text.startswith("# t\n<!-- results:start -->\n") and text.endswith("<!-- results:end -->\nkeep me\n")
    assert current_block(text) == block_text("results", report)
    block = current_block(text)
    for stage in MODEL_STAGES:  # one row per model, with its number of seeds
        assert f"| {MODEL_LABELS[stage]}" in block
    assert f"| {MODEL_LABELS['finetune_cv']} | 3 | " in block and f"| {MODEL_LABELS['linear_cv']} | 1 | " in block
    # the block quotes both questions' verdicts as the report states them
    q1, q2 = report["q1"], report["q2"]
    assert f"(`{q1['reference']}`), on qwk.pooled: **{q1['verdict']}**" in block
    assert f"Q2, on qwk.pooled, qwk.worst_quarter: GRL vs ERM **{q2['grl']['verdict']}**; DRO vs ERM **{q2['dro']['verdict']}**" in block
    # a second update with the same report changes nothing
    assert update_readme(readme, report) and readme.read_text() == text


def test_readme_without_markers_is_left_alone(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.warns(UserWarning, match="lacks the markers"):
        assert not update_readme(readme, json.loads(committed_text("metrics/report.json")))
    assert readme.read_text() == "# no markers\n"


def test_command_names_a_missing_report(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "aes.ops.readme", "--report", "nope.json"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2 and "nope.json: not found; run `dvc repro report` first" in proc.stderr


def test_committed_asap_block_matches_committed_asap_report():
    """The ASAP page's table is the committed ASAP experiment's report (reports/asap/report.json)."""
    from aes.data.asap import ASAP

    report = json.loads(committed_text("reports/asap/report.json"))
    assert current_block(committed_text(str(HOMES["asap"])), "asap") == block_text("asap", report, ASAP), \
        "run the ASAP experiment, copy its metrics/report.json to reports/asap/report.json, `aes-readme --block asap --report ...`, commit"


def test_asap_block_lists_every_prompt_model_and_published_row(tmp_path):
    from aes.core.registry import MODEL_STAGES
    from aes.data.asap import ASAP

    report = _fresh_report(tmp_path / "ws")  # 8 prompts, like ASAP
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- asap:start -->\nOLD\n<!-- asap:end -->\n<!-- results:start -->\nR\n<!-- results:end -->\n")
    assert update_readme(readme, report, "asap")
    text = readme.read_text()
    block = current_block(text, "asap")
    assert block == block_text("asap", report, ASAP) and current_block(text) == "\nR\n"  # the other block is untouched
    rows = [line for line in block.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + len(MODEL_STAGES) + len(ASAP.published)
    assert all(line.count("|") == 8 + 4 for line in rows)  # system, 8 prompts, mean, worst
    for stage in MODEL_STAGES:
        per_prompt = report["per_prompt_qwk"][stage]
        row = next(line for line in rows if line.startswith(f"| {report_row_label(report, stage)}"))
        assert [c.strip() for c in row.split("|")[2:10]] == [f"{v:.3f}" for v in per_prompt.values()]
    assert "| published: KAES (Li & Pan 2025)" in block and "0.695" in block
    # the published rows carry the label the project's own transductive rows carry, and only those that scale features per prompt
    assert "KAES (Li & Pan 2025); POS encoder + handcrafted features + cluster descriptions [transductive: features min-max per prompt]" in block
    hi_att = next(line for line in rows if "Hi-att" in line)
    assert "[transductive" not in hi_att
    assert f"**{report['q1']['verdict']}**" in block


def test_the_published_rows_are_the_datasets_the_report_was_made_on(tmp_path):
    from aes.data.asap import ASAP
    from aes.data.ellipse import ELLIPSE
    from aes.ops.readme import asap_block, block_dataset

    report = _fresh_report(tmp_path / "ws")
    assert ELLIPSE.published == () and ASAP.published
    assert block_dataset("asap") is ASAP and block_dataset("results") is ELLIPSE  # the block's namesake, else the default
    assert "| published:" not in asap_block(report, ELLIPSE)
    readme = tmp_path / "README.md"
    readme.write_text("<!-- asap:start -->\n<!-- asap:end -->\n")
    assert update_readme(readme, report, "asap", ELLIPSE)
    assert current_block(readme.read_text(), "asap") == block_text("asap", report, ELLIPSE)


def report_row_label(report: dict, stage: str) -> str:
    from aes.report.markdown import report_labels

    return report_labels(report)[stage]


@pytest.mark.parametrize("name", ["whole_encoder", "whole_encoder_text"])
def test_committed_experiment_blocks_match_their_committed_reports(name):
    """The whole-encoder experiments' tables are their committed reports (reports/<name>/report.json),
    each linking its own decision.md."""
    from aes.ops.readme import EXPERIMENTS

    assert name in EXPERIMENTS
    report = json.loads(committed_text(f"reports/{name}/report.json"))
    block = current_block(committed_text(str(HOMES[name])), name)
    assert block == BLOCKS[name](report), f"copy the experiment's report to reports/{name}/, `aes-readme --block {name} --report ...`, commit"
    assert f"[reports/{name}/decision.md](../reports/{name}/decision.md)" in block
    committed_text(f"reports/{name}/decision.md")  # the link resolves in the commit


def test_committed_asap_inductive_block_matches_its_report_without_repeating_the_published_rows():
    """ASAP's inductive run (training-fold feature scaling) keeps its own table on the ASAP page, beside the
    profile's transductive one; the published rows appear once, under the transductive table."""
    from aes.data.asap import ASAP
    from aes.ops.readme import ASAP_INDUCTIVE, block_dataset

    assert block_dataset(ASAP_INDUCTIVE) is ASAP
    report = json.loads(committed_text(f"reports/{ASAP_INDUCTIVE}/report.json"))
    block = current_block(committed_text(str(HOMES[ASAP_INDUCTIVE])), ASAP_INDUCTIVE)
    assert block == block_text(ASAP_INDUCTIVE, report) and "| published:" not in block
    assert f"[reports/{ASAP_INDUCTIVE}/decision.md](../reports/{ASAP_INDUCTIVE}/decision.md)" in block
    assert not any(r.get("transductive") for r in (report.get("inputs") or {}).values())
