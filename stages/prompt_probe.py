"""prompt_probe: how well a linear classifier recovers the prompt from each representation.

Frozen embeddings and each fine-tuning stage's pooled representation (first seed); writes
metrics/prompt_probe.json, which report reads.
"""

from aes.core.errors import stage_main
from aes.core.registry import PROBE_JSON
from aes.data.params import load_params
from aes.report.probe import write_probes


@stage_main
def main() -> None:
    probes = write_probes(load_params())
    within = {name: p["within_fold"]["accuracy"] for name, p in probes.items() if "within_fold" in p}
    print(f"prompt probe, within-fold accuracy: {within} -> {PROBE_JSON}")


if __name__ == "__main__":
    main()
