"""Topic leakage of the prompt-holdout protocol, from a `prepare.ellipse.groups=prompt,topic` sweep.

For every model: pooled and worst-prompt QWK with their 95% prompt-bootstrap intervals (from each
experiment's metrics/report.json) when the splits keep prompts whole vs topic clusters whole, and
the change. Reads `dvc exp show --json`; prints a Markdown table.

    dvc exp run --queue -S 'prepare.ellipse.groups=prompt,topic' && dvc queue start   # docs/experiments.md, "Sweeps"
    python -m aes.ops.topic_leakage                 # newest experiment of each grouping
    python -m aes.ops.topic_leakage --prompt NAME --topic NAME
"""

from __future__ import annotations

import argparse
import json
import subprocess

from aes.core.errors import AESError, stage_main
from aes.core.registry import MODEL_LABELS, MODEL_STAGES


def experiments() -> list[dict]:
    """[{name, groups, report}] for every experiment (and the workspace) `dvc exp show` lists."""
    shown = json.loads(subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True, check=True).stdout)
    out = []
    for baseline in shown:
        revs = [baseline] + [r for e in baseline.get("experiments") or [] for r in e["revs"]]
        for rev in revs:
            data = rev.get("data") or {}
            report = (data.get("metrics") or {}).get("metrics/report.json", {}).get("data")
            prepare = (data.get("params") or {}).get("params.yaml", {}).get("data", {}).get("prepare", {})
            groups = (prepare.get("ellipse") or {}).get("groups") or prepare.get("groups")  # or as before datasets had sections
            if report and groups:
                out.append({"name": rev.get("name") or rev.get("rev"), "groups": groups, "report": report,
                            "when": data.get("timestamp") or ""})
    return out


def pick(found: list[dict], groups: str, name: str | None) -> dict:
    hits = [e for e in found if (e["name"] == name if name else e["groups"] == groups)]
    if not hits:
        raise AESError(f"no experiment with {'name ' + repr(name) if name else 'prepare.ellipse.groups=' + groups} in `dvc exp show`")
    return max(hits, key=lambda e: e["when"])


def cell(value: float | None, ci: dict | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3f} [{ci['ci_low']:.3f}, {ci['ci_high']:.3f}]" if ci and ci.get("ci_low") is not None else f"{value:.3f}"


def table(prompt: dict, topic: dict) -> str:
    lines = [f"prompt groups: `{prompt['name']}`; topic groups: `{topic['name']}` (95% prompt-bootstrap intervals)", "",
             "| model | QWK pooled, prompt | QWK pooled, topic | change | worst-prompt QWK, prompt | worst-prompt QWK, topic | change |",
             "|---|---|---|---|---|---|---|"]
    for stage in MODEL_STAGES:
        row = []
        for key, metric in (("qwk_pooled", "qwk.pooled"), ("qwk_worst_prompt", "qwk.worst_prompt")):
            a, b = prompt["report"]["models"][stage][key], topic["report"]["models"][stage][key]
            ia = prompt["report"].get("intervals", {}).get(stage, {}).get(metric)
            ib = topic["report"].get("intervals", {}).get(stage, {}).get(metric)
            change = f"{b - a:+.3f}" if a is not None and b is not None else "–"
            row += [cell(a, ia), cell(b, ib), change]
        lines.append(f"| {MODEL_LABELS[stage]} | " + " | ".join(row) + " |")
    return "\n".join(lines)


@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", help="experiment run with prepare.ellipse.groups=prompt (default: the newest)")
    parser.add_argument("--topic", help="experiment run with prepare.ellipse.groups=topic (default: the newest)")
    args = parser.parse_args()
    found = experiments()
    print(table(pick(found, "prompt", args.prompt), pick(found, "topic", args.topic)))


if __name__ == "__main__":
    main()
