"""Detached experiment runs for the GPU box: ``aes-run start | status | tail | stop | push-run-cache``.

``aes-run start`` launches ``dvc exp run --name NAME ...`` in a new session (no controlling
terminal, stdin from /dev/null), so it survives logout and the launching shell. Each run gets
``output/<UTC stamp>_<name>/`` (git-ignored) holding:

- ``driver.log``: every line the job printed (dvc, stages, push);
- ``status.json``: state (running | succeeded | failed), stage (the last one dvc announced in the
  log, or ``push``), started_at / finished_at (UTC ISO-8601), exit_code, pid (the supervisor, which
  is also the process-group id), command, push commands, git commit, host;
- ``progress.json``: written by :func:`aes.core.progress.update_progress` inside the stages (the
  launcher sets ``$AES_PROGRESS_FILE``).

A supervisor process (``python -m aes.ops.runs _supervise RUN_DIR``) runs the experiment, then pushes
it (``dvc exp push --run-cache GIT_REMOTE NAME``, or ``dvc push --run-cache`` without a git
remote) and the outputs of every run-cache entry (:func:`push_run_cache_outputs`), and writes the
final state. If it is killed (``kill -9``, reboot) the file still says ``running``; ``status``
sees that the pid is gone and reports ``died``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from aes.core.errors import AESError, stage_main
from aes.core.io import write_json
from aes.core.progress import ENV_VAR as PROGRESS_ENV

OUTPUT_DIR = "output"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
# dvc repro prints these when it starts or restores a stage; the last one is the current stage.
STAGE_RE = re.compile(rb"(?:Running stage|Stage) '([^']+)'(?::| is cached)")
POLL_S = 1.0


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_utc(stamp: str | None) -> float | None:
    if not stamp:
        return None
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as err:
        raise AESError(f"{path}: not valid JSON ({err})") from None


def _git(root: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else ""


def repo_root(start: Path | None = None) -> Path:
    """The git work tree that contains ``start`` (default: cwd); it must also hold ``.dvc/``."""
    start = Path(start or Path.cwd()).resolve()
    top = _git(start, "rev-parse", "--show-toplevel")
    if not top or not (Path(top) / ".dvc").is_dir():
        raise AESError(f"{start}: not inside a git + DVC repository (no .git or .dvc/ found)")
    return Path(top)


def _job_env() -> dict:
    """Environment for the job: the launcher's, with this interpreter's bin dir first on PATH so
    ``dvc`` and the stages' ``python`` are the ones of this virtual environment."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --------------------------------------------------------------------------------------- start
def start(
    exp_args: list[str],
    name: str | None = None,
    push: bool = True,
    git_remote: str | None = None,
    dvc_remote: str | None = None,
    root: Path | None = None,
    queued: bool = False,
) -> Path:
    """Launch ``dvc exp run --name NAME *exp_args`` detached; return the run directory.

    queued=True runs the queued sweep instead (``dvc exp run --run-all *exp_args``, after
    ``dvc exp run --queue -S ...``) and pushes every experiment derived from HEAD; NAME then names
    the run directory only.

    git_remote: where ``dvc exp push`` sends the experiment's git ref; default ``origin`` when
    the repository has one, else none (then only ``dvc push --run-cache`` runs).
    dvc_remote: DVC remote for the cache and run cache; default DVC's default remote.
    """
    root = repo_root(root)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name = name or f"run-{stamp}"
    if not NAME_RE.match(name):
        raise AESError(f"--name {name!r}: expected letters, digits, '.', '_' or '-' (a git ref name)")
    if subprocess.run(["git", "check-ignore", "-q", f"{OUTPUT_DIR}/x"], cwd=root).returncode != 0:
        raise AESError(f"{root / '.gitignore'}: add '/{OUTPUT_DIR}/' so run logs stay out of experiments")

    env = _job_env()
    push_cmds: list[list[str]] = []
    if push:
        listing = subprocess.run(
            ["dvc", "remote", "list"], cwd=root, env=env, capture_output=True, text=True
        ).stdout
        remotes = [line.split()[0] for line in listing.splitlines() if line.strip()]
        if not remotes:
            raise AESError(f"{root / '.dvc/config'}: no DVC remote configured; add one "
                           "(docs/gpu-box.md) or pass --no-push")
        if dvc_remote and dvc_remote not in remotes:
            raise AESError(f"--remote {dvc_remote!r}: not a DVC remote; expected one of {remotes}")
        r = ["-r", dvc_remote] if dvc_remote else []
        if git_remote is None and "origin" in _git(root, "remote").split():
            git_remote = "origin"
        if git_remote:
            which = ["--rev", "HEAD"] if queued else [name]  # a sweep: every experiment based on this commit
            push_cmds.append(["dvc", "exp", "push", "--run-cache", *r, git_remote, *which])
        else:
            push_cmds.append(["dvc", "push", "--run-cache", *r])
        push_cmds.append([sys.executable, "-m", "aes.ops.runs", "push-run-cache", *r])

    run_dir = root / OUTPUT_DIR / f"{stamp}_{name}"
    run_dir.mkdir(parents=True, exist_ok=False)
    status = {
        "name": name,
        "state": "running",
        "stage": None,
        "started_at": _utc_now(),
        "finished_at": None,
        "exit_code": None,
        "pid": None,
        "command": ["dvc", "exp", "run", *(["--run-all"] if queued else ["--name", name]), *exp_args],
        "push_commands": push_cmds,
        "git_commit": _git(root, "rev-parse", "HEAD"),
        "host": socket.gethostname(),
    }
    write_json(run_dir / "status.json", status)
    env[PROGRESS_ENV] = str(run_dir / "progress.json")
    with open(run_dir / "driver.log", "ab") as log:
        # New session: no controlling terminal, so closing the shell (SIGHUP) does not reach it.
        subprocess.Popen(
            [sys.executable, "-m", "aes.ops.runs", "_supervise", str(run_dir)],
            cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True,
        )
    # Wait for the supervisor to register its pid, so `status` right after `start` is meaningful.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _read_json(run_dir / "status.json").get("pid") is None:
        time.sleep(0.05)
    if _read_json(run_dir / "status.json").get("pid") is None:
        raise AESError(f"{run_dir / 'driver.log'}: the detached job did not start; see this log")
    return run_dir


def _supervise(run_dir: Path) -> int:
    """Body of the detached job: run the experiment, push it, record the outcome."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # like nohup; inherited by dvc and the stages
    # `aes-run stop` signals the whole group: dvc exits and we survive to record the failure.
    # A handler, not SIG_IGN, since an ignored signal would stay ignored in the children too.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    status_path = run_dir / "status.json"
    status = _read_json(status_path)
    status.update(pid=os.getpid())
    write_json(status_path, status)
    log_path = run_dir / "driver.log"

    def run_logged(cmd: list[str]) -> int:
        print(f"== aes-run {_utc_now()}: {' '.join(cmd)}", flush=True)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        offset = log_path.stat().st_size
        while proc.poll() is None:
            time.sleep(POLL_S)
            with open(log_path, "rb") as fh:  # follow the log for the stage dvc is running
                fh.seek(offset)
                chunk = fh.read()
            offset += len(chunk)
            stages = STAGE_RE.findall(chunk)
            if stages and stages[-1].decode() != status["stage"]:
                status["stage"] = stages[-1].decode()
                write_json(status_path, status)
        return proc.returncode

    code = run_logged(status["command"])
    log_text = log_path.read_bytes()
    stages = STAGE_RE.findall(log_text)
    last_stage = stages[-1].decode() if stages else None
    if code != 0:
        errors = [ln for ln in log_text.decode(errors="replace").splitlines() if ln.startswith("ERROR")]
        status["error"] = errors[-1] if errors else f"dvc exp run exited with {code}"
    else:
        for cmd in status.get("push_commands", []):
            status["stage"] = "push"
            write_json(status_path, status)
            code = run_logged(cmd)
            if code != 0:
                status["error"] = "push failed; the experiment itself succeeded (see driver.log)"
                break
        else:
            status["stage"] = last_stage
    if code < 0:
        status["error"] = f"killed by signal {-code}"
    status.update(
        state="succeeded" if code == 0 else "failed", exit_code=code, finished_at=_utc_now()
    )
    write_json(status_path, status)
    print(f"== aes-run {_utc_now()}: {status['state']} (exit code {code})", flush=True)
    return 0


# -------------------------------------------------------------------------------------- status
def _pid_alive(pid: int | None, run_dir: Path) -> bool:
    """True while the run's supervisor exists (not a zombie, not a reused pid)."""
    if not pid:
        return False
    proc = Path(f"/proc/{pid}")
    if Path("/proc/self").exists():
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] != "Z" and run_dir.name.encode() in cmdline
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def run_status(run_dir: Path) -> dict:
    """status.json plus ``state='died'`` when it says running but the supervisor is gone,
    ``elapsed_s`` and the progress fields."""
    status = _read_json(run_dir / "status.json")
    if status.get("state") == "running" and not _pid_alive(status.get("pid"), run_dir):
        started = _parse_utc(status.get("started_at")) or 0
        if status.get("pid") or time.time() - started > 30:
            status["state"] = "died"
    start_s = _parse_utc(status.get("started_at"))
    end_s = _parse_utc(status.get("finished_at")) or time.time()
    if status.get("state") == "died" and (run_dir / "driver.log").exists():
        end_s = (run_dir / "driver.log").stat().st_mtime  # its last sign of life
    status["elapsed_s"] = round(end_s - start_s) if start_s else None
    status["progress"] = _read_json(run_dir / "progress.json")
    status["run"] = run_dir.name
    return status


def list_runs(root: Path) -> list[Path]:
    out = root / OUTPUT_DIR
    return sorted(p for p in out.glob("*_*") if (p / "status.json").exists()) if out.is_dir() else []


def find_run(root: Path, run: str) -> Path:
    """A run by directory path, directory name, or experiment name (the latest of that name)."""
    if (Path(run) / "status.json").exists():
        return Path(run).resolve()
    runs = list_runs(root)
    hits = [p for p in runs if p.name == run] or [p for p in runs if p.name.split("_", 1)[1] == run]
    if not hits:
        names = ", ".join(p.name for p in runs[-5:]) or "none yet"
        raise AESError(f"run {run!r}: not found under {root / OUTPUT_DIR} (latest: {names})")
    return hits[-1]


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _progress_text(progress: dict, width: int = 60) -> str:
    text = " ".join(f"{k}={v}" for k, v in progress.items() if k not in ("updated_at", "stage"))
    return text if len(text) <= width else text[: width - 1] + "…"


def _tail(path: Path, n: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - 200 * n))
            lines = fh.read().decode(errors="replace").replace("\r", "\n").splitlines()
    except FileNotFoundError:
        return ""
    return "\n".join(lines[-n:])


def print_table(root: Path) -> None:
    rows = [run_status(p) for p in list_runs(root)]
    if not rows:
        print(f"no runs under {root / OUTPUT_DIR}")
        return
    head = ("RUN", "STATE", "STAGE", "STARTED", "ELAPSED", "PROGRESS")
    table = [head] + [
        (s["run"], s.get("state", "?"), s.get("stage") or "-", (s.get("started_at") or "-").replace("T", " "),
         _hms(s["elapsed_s"]), _progress_text(s["progress"]))
        for s in rows
    ]
    widths = [max(len(str(r[i])) for r in table) for i in range(len(head) - 1)]
    for r in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])


def print_run(run_dir: Path, lines: int) -> None:
    status = run_status(run_dir)
    for key in ("run", "name", "state", "stage", "started_at", "finished_at", "exit_code", "error",
                "pid", "host", "git_commit"):
        if status.get(key) is not None:
            print(f"{key:12s} {status[key]}")
    print(f"{'elapsed':12s} {_hms(status['elapsed_s'])}")
    print(f"{'command':12s} {' '.join(status.get('command', []))}")
    if status["progress"]:
        print(f"{'progress':12s} {json.dumps(status['progress'])}")
    print(f"--- last {lines} lines of {run_dir / 'driver.log'}")
    print(_tail(run_dir / "driver.log", lines))


# ------------------------------------------------------------------------------ push-run-cache
def push_run_cache_outputs(root: Path, remote: str | None = None) -> tuple[int, int]:
    """Push the outputs recorded in every local run-cache entry; return (pushed, failed) counts.

    ``dvc push --run-cache`` (dvc 3.67) sends only the entries under ``.dvc/cache/runs``, not the
    outputs they point to, and uncached outs (git-tracked metrics) are never pushed at all, so
    another clone cannot restore those stages. Pushing the entries' objects closes that gap.
    """
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        runs = Path(repo.stage_cache.cache_dir)
        entries = [(k.name, v.name) for k in runs.glob("*/*") for v in k.iterdir()] if runs.is_dir() else []
        pushed = failed = 0
        for odb, objs in repo.stage_cache.get_used_objs(entries).items():
            result = repo.cloud.push(objs, remote=remote, odb=odb)
            pushed += len(result.transferred)
            failed += len(result.failed)
    return pushed, failed


# ---------------------------------------------------------------------------------------- CLI
@stage_main
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    exp_args: list[str] = []
    if "--" in argv:  # everything after `--` goes to `dvc exp run`
        i = argv.index("--")
        argv, exp_args = argv[:i], argv[i + 1:]
    parser = argparse.ArgumentParser(
        prog="aes-run", description="Detached `dvc exp run` on the GPU box (docs/gpu-box.md).")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="{start,status,tail,stop,push-run-cache}")
    p = sub.add_parser("start", help="start `dvc exp run` detached; args after `--` go to dvc exp run")
    p.add_argument("--name", help="experiment name (default run-<UTC stamp>)")
    p.add_argument("--no-push", action="store_true", help="do not push the experiment when it succeeds")
    p.add_argument("--git-remote", help="git remote for `dvc exp push` (default origin if it exists)")
    p.add_argument("-r", "--remote", help="DVC remote to push to (default: DVC's default remote)")
    p.add_argument("--queued", action="store_true",
                   help="run the queued sweep (`dvc exp run --run-all`) and push all its experiments")
    p = sub.add_parser("status", help="table of runs, or one run's details and log tail")
    p.add_argument("run", nargs="?", help="run directory, its name, or the experiment name")
    p.add_argument("-n", "--lines", type=int, default=20, help="log lines to show for one run")
    p = sub.add_parser("tail", help="print the end of a run's driver.log")
    p.add_argument("run")
    p.add_argument("-n", "--lines", type=int, default=40)
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the run ends")
    p = sub.add_parser("stop", help="send SIGTERM to a run's process group")
    p.add_argument("run")
    p = sub.add_parser("push-run-cache", help="push the outputs of all run-cache entries")
    p.add_argument("-r", "--remote", help="DVC remote (default: DVC's default remote)")
    p = sub.add_parser("_supervise")  # internal: the detached job itself
    p.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)
    if exp_args and args.cmd != "start":
        parser.error("arguments after `--` are only for `start`")

    if args.cmd == "_supervise":
        return _supervise(args.run_dir)
    root = repo_root()
    if args.cmd == "start":
        run_dir = start(exp_args, args.name, not args.no_push, args.git_remote, args.remote, root, queued=args.queued)
        status = _read_json(run_dir / "status.json")
        print(f"started {run_dir.relative_to(root)} (pid {status.get('pid')})")
        print(f"  aes-run status {status['name']}    aes-run tail -f {status['name']}")
    elif args.cmd == "status":
        if args.run:
            print_run(find_run(root, args.run), args.lines)
        else:
            print_table(root)
    elif args.cmd == "tail":
        run_dir = find_run(root, args.run)
        print(_tail(run_dir / "driver.log", args.lines), flush=True)
        if args.follow:
            offset = (run_dir / "driver.log").stat().st_size
            while True:
                with open(run_dir / "driver.log", "rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read()
                offset += len(chunk)
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
                if not chunk and run_status(run_dir)["state"] != "running":
                    break
                time.sleep(POLL_S)
    elif args.cmd == "stop":
        status = run_status(find_run(root, args.run))
        if status["state"] != "running":
            raise AESError(f"run {status['run']}: state is {status['state']}, nothing to stop")
        os.killpg(status["pid"], signal.SIGTERM)
        print(f"sent SIGTERM to process group {status['pid']}")
    elif args.cmd == "push-run-cache":
        pushed, failed = push_run_cache_outputs(root, args.remote)
        print(f"run-cache outputs: {pushed} pushed, {failed} missing locally or failed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
