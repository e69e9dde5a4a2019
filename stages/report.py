"""report: compare every model on the CV essays, bootstrap the differences over prompts, decide.

Writes metrics/report.json, reports/decision.md, plots/report/ and README.md's results table.
"""

from aes.core.errors import stage_main
from aes.data.params import load_params
from aes.report.assemble import run_report


@stage_main
def main() -> None:
    report = run_report(load_params())
    d = report["decision"]
    print(f"decision: {d['verdict']} (candidate {report['objective']}); " + "; ".join(d["reasons"]))


if __name__ == "__main__":
    main()
