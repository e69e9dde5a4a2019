"""Time a whole ``dvc repro`` stage by stage: the benchmark behind the stage times in docs/profiles.md.

Runs ``dvc repro`` (with any extra arguments) in a checkout, streams its output, stamps every
"Running stage" line and writes the wall time of each stage (from its start to the next stage's
start, so DVC's own hashing and caching count towards the stage that caused them) and of the
whole command. Run it in a fresh clone after the set-up command of README.md, on an idle machine:

    python -m aes.ops.bench_repro --out bench/repro.json [-- dvc repro args]
    python -m aes.ops.bench_repro --exp --out bench/asap_run.json -- $(grep -v '^#' profiles/asap.args)

``--exp`` times ``dvc exp run`` (an experiment with ``-S`` overrides) instead of ``dvc repro``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

from aes.core.machine import KERNEL_FLAGS, cpu_flags, cpu_name

STAGE_LINE = re.compile(r"^Running stage '([^']+)'")


def time_repro(args: list[str], cwd: Path, command: tuple[str, ...] = ("dvc", "repro")) -> dict:
    """Run ``command *args`` (dvc repro or dvc exp run) in ``cwd``; return {"total_s", "stages": {name: seconds}, "returncode"}."""
    started = time.perf_counter()
    marks: list[tuple[str, float]] = []
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([*command, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    for line in proc.stdout:
        sys.stdout.write(line)
        match = STAGE_LINE.match(line)
        if match:
            marks.append((match.group(1), time.perf_counter() - started))
    returncode = proc.wait()
    total = time.perf_counter() - started
    ends = [t for _, t in marks[1:]] + [total]
    return {"total_s": round(total, 1), "returncode": returncode,
            "stages": {name: round(end - start, 1) for (name, start), end in zip(marks, ends)}}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/repro.json")
    parser.add_argument("--exp", action="store_true", help="time `dvc exp run` instead of `dvc repro`")
    parser.add_argument("repro_args", nargs="*", help="extra arguments for dvc repro / dvc exp run (after --)")
    args = parser.parse_args(argv)
    command = ("dvc", "exp", "run") if args.exp else ("dvc", "repro")
    cwd = Path(".").resolve()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True).stdout.strip()
    load_before = os.getloadavg()[0]
    result = time_repro(args.repro_args, cwd, command)
    result.update({"commit": commit, "command": " ".join([*command, *args.repro_args]), "cpus": os.cpu_count(),
                   "machine": platform.machine(), "python": platform.python_version(), "load_avg_1min_before": round(load_before, 2),
                   "cpu": cpu_name(), "cpu_kernel_flags": " ".join(f for f in KERNEL_FLAGS if f in cpu_flags())})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{' '.join(command)}: {result['total_s']:.0f}s " + ", ".join(f"{s} {t:.0f}s" for s, t in result["stages"].items()))
    sys.exit(result["returncode"])


if __name__ == "__main__":
    main()
