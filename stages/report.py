"""report: compare every model on the CV essays, bootstrap the differences over prompts, decide.

Writes metrics/report.json, reports/decision.md, plots/report/ and README.md's results table.
"""

from aes.errors import stage_main
from aes.params import load_params
from aes.report import run_report


@stage_main
def main() -> None:
    report = run_report(load_params())
    d = report["decision"]
    print(f"decision: {d['verdict']} (candidate {report['objective']}); " + "; ".join(d["reasons"]))


if __name__ == "__main__":
    main()
