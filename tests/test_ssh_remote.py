"""A DVC SSH remote against a real sshd on 127.0.0.1: push, clone, pull, and run-cache restores.

The test installs Debian's openssh-server when ``sshd`` is missing (needs root and apt), then runs
its own sshd on a free port of 127.0.0.1 with throwaway keys and config in tmp.

Host keys: dvc 3.67 has no SSH remote option for known_hosts, and sshfs (under dvc-ssh) connects
with ``known_hosts=None``, i.e. asyncssh does not check the server's key at all, so nothing
prompts. The dvc subprocesses still get ``HOME`` pointing at a temp home (with a known_hosts entry
for the throwaway host key, should a later sshfs start checking), so the real ``~/.ssh`` (config,
keys, known_hosts) is never read or written.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.tiny_dvc import make_project, sh, tool_env

pytestmark = [pytest.mark.slow, pytest.mark.ssh]

HOST = "127.0.0.1"  # the only address this test talks to

TRAIN_PY = """\
import json, os, pathlib
from aes.core.params import parse_yaml

p = parse_yaml(open("params.yaml").read())["p"]
# Counts real executions, outside the repo, so a restore from the run cache is visible.
with open(os.environ["TINY_COUNTER"], "a") as fh:
    fh.write("ran p=%s\\n" % p)
pathlib.Path("model").mkdir(exist_ok=True)
pathlib.Path("model/weights.txt").write_text("w" * 1000 * p)
json.dump({"score": 0.25 * p}, open("metrics.json", "w"))
"""

DVC_YAML = """\
stages:
  train:
    cmd: python train.py
    deps: [train.py]
    params: [p]
    outs: [model]
    metrics:
      - metrics.json:
          cache: false
"""


def _find_sshd() -> str | None:
    return shutil.which("sshd") or next(
        (p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if os.access(p, os.X_OK)), None)


def _install_sshd() -> str:
    """apt-get install openssh-server without starting the system service (policy-rc.d)."""
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = not policy.exists()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        if made_policy:  # exit 101 = "do not start services": no sshd on 0.0.0.0:22
            policy.write_text("#!/bin/sh\nexit 101\n")
            policy.chmod(0o755)
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "openssh-server"]):
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                pytest.fail(f"sshd is missing and `{' '.join(cmd)}` failed (needs root and a Debian "
                            f"mirror); install openssh-server by hand.\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    except PermissionError as err:
        pytest.fail(f"sshd is missing and cannot be installed without root: {err}")
    finally:
        if made_policy and policy.exists():
            policy.unlink()
    sshd = _find_sshd()
    if not sshd:
        pytest.fail("apt-get installed openssh-server but no sshd executable was found")
    return sshd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A private sshd on 127.0.0.1; yields (port, user key path, env with HOME -> temp home)."""
    sshd_bin = _find_sshd() or _install_sshd()
    tmp = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "user_key"):
        sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", key, "-f", str(tmp / key)], tmp)
    (tmp / "authorized_keys").write_text((tmp / "user_key.pub").read_text())
    port = _free_port()
    config = tmp / "sshd_config"
    config.write_text(f"""\
Port {port}
ListenAddress {HOST}
HostKey {tmp / 'host_key'}
PidFile {tmp / 'sshd.pid'}
AuthorizedKeysFile {tmp / 'authorized_keys'}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
StrictModes no
Subsystem sftp internal-sftp
""")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege-separation dir sshd insists on
    sh([sshd_bin, "-t", "-f", str(config)], tmp)
    log = tmp / "sshd.log"  # a file, not a pipe nobody drains
    with open(log, "w") as fh:
        proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(config)], stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"sshd did not start on {HOST}:{port}: {log.read_text()}")
                time.sleep(0.05)
        home = tmp / "home"
        (home / ".ssh").mkdir(parents=True)
        host_pub = (tmp / "host_key.pub").read_text().split()
        known_hosts = home / ".ssh" / "known_hosts"
        known_hosts.write_text(f"[{HOST}]:{port} {host_pub[0]} {host_pub[1]}\n")
        # Host alias `hemma` -> 127.0.0.1. asyncssh (dvc's SSH remote and its git transport)
        # reads it via $HOME; only options asyncssh supports, else scmrepo falls back to OpenSSH.
        ssh_config = home / ".ssh" / "config"
        ssh_config.write_text(f"Host hemma\n  HostName {HOST}\n  Port {port}\n"
                              f"  User {getpass.getuser()}\n  IdentityFile {tmp / 'user_key'}\n")
        env = tool_env(HOME=str(home), TINY_COUNTER=str(tmp / "counter.txt"))
        # Plain git uses OpenSSH, which reads the passwd home, not $HOME: point it at our files.
        env["TEST_GIT_SSH"] = (f"ssh -F {ssh_config} -o UserKnownHostsFile={known_hosts} "
                               "-o StrictHostKeyChecking=yes -o BatchMode=yes -o IdentitiesOnly=yes")
        yield port, tmp / "user_key", env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


def _runs(env: dict) -> list[str]:
    path = Path(env["TINY_COUNTER"])
    return path.read_text().splitlines() if path.exists() else []


def test_push_clone_pull_and_run_cache_restore_over_ssh(sshd, tmp_path):
    port, user_key, env = sshd
    remote_dir = tmp_path / "storage"
    url = f"ssh://{getpass.getuser()}@{HOST}:{port}{remote_dir}"

    def clone(dest: Path) -> Path:
        sh(["git", "clone", "-q", str(src), str(dest)], tmp_path, env)
        sh(["dvc", "remote", "modify", "--local", "box", "keyfile", str(user_key)], dest, env)
        return dest

    src = make_project(tmp_path / "src", {"train.py": TRAIN_PY, "dvc.yaml": DVC_YAML,
                                          "params.yaml": "p: 1\n"}, env)
    # The URL is committed; the key path is per machine, so it goes to .dvc/config.local.
    sh(["dvc", "remote", "add", "-d", "box", url], src, env)
    sh(["dvc", "remote", "modify", "--local", "box", "keyfile", str(user_key)], src, env)
    sh(["dvc", "repro"], src, env)
    sh(["git", "add", "-A"], src, env)
    sh(["git", "commit", "-q", "-m", "p=1 results"], src, env)
    assert _runs(env) == ["ran p=1"]

    t0 = time.perf_counter()
    sh(["dvc", "push", "--run-cache"], src, env)
    t_push = time.perf_counter()
    first = clone(tmp_path / "clone1")
    sh(["dvc", "pull"], first, env)
    t_pull = time.perf_counter()
    print(f"\nSSH round trip: push {t_push - t0:.2f}s, clone + pull {t_pull - t_push:.2f}s, "
          f"total {t_pull - t0:.2f}s")

    assert (remote_dir / "files" / "md5").is_dir() and any((remote_dir / "runs").rglob("*"))
    assert "up to date" in sh(["dvc", "status"], first, env).stdout
    assert (first / "metrics.json").read_text() == (src / "metrics.json").read_text()
    assert (first / "model/weights.txt").read_text() == "w" * 1000
    assert _runs(env) == ["ran p=1"]

    # The "GPU box" runs p=2 without committing it and pushes the run cache with its outputs.
    (src / "params.yaml").write_text("p: 2\n")
    sh(["dvc", "repro"], src, env)
    sh(["dvc", "push", "--run-cache"], src, env)
    # dvc push --run-cache sends only the run-cache entries; push their outputs too.
    sh([sys.executable, "-m", "aes.ops.runs", "push-run-cache"], src, env)
    assert _runs(env) == ["ran p=1", "ran p=2"]

    # A fresh clone asking for p=2 restores it from the run cache instead of re-running it.
    second = clone(tmp_path / "clone2")
    sh(["dvc", "pull", "--run-cache"], second, env)
    (second / "params.yaml").write_text("p: 2\n")
    out = sh(["dvc", "repro", "--pull"], second, env).stdout
    assert "Stage 'train' is cached - skipping run" in out, out
    assert _runs(env) == ["ran p=1", "ran p=2"]
    assert (second / "metrics.json").read_text() == (src / "metrics.json").read_text()
    assert (second / "model/weights.txt").read_text() == "w" * 2000


def test_laptop_pulls_an_experiment_run_detached_on_the_box(sshd, tmp_path):
    """The README's GPU-box section end to end: aes-run on the box, `dvc exp pull` + `exp apply` here."""
    _, _, env = sshd
    box = make_project(tmp_path / "box" / "aes", {
        "train.py": TRAIN_PY, "dvc.yaml": DVC_YAML, "params.yaml": "p: 1\n", ".gitignore": "/output/\n",
    }, env)
    # As in this repo's .dvc/config: the default remote is a directory next to the checkout.
    sh(["dvc", "remote", "add", "-d", "local", "../aes-dvc-remote"], box, env)
    sh(["git", "commit", "-q", "-am", "remote"], box, env)
    runs_before = _runs(env)

    sh([sys.executable, "-m", "aes.ops.runs", "start", "--name", "p3", "--", "-S", "p=3"], box, env)
    from aes.ops import runs

    (run_dir,) = runs.list_runs(box)
    deadline = time.monotonic() + 60
    while (status := runs.run_status(run_dir))["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status["state"] == "succeeded", (run_dir / "driver.log").read_text()
    assert _runs(env) == runs_before + ["ran p=3"]

    # The laptop: clone over SSH, the box's storage as DVC remote `hemma` through the host alias.
    laptop = tmp_path / "laptop" / "aes"
    sh(["git", "clone", "-q", f"ssh://hemma{box}", str(laptop)], tmp_path,
       dict(env, GIT_SSH_COMMAND=env["TEST_GIT_SSH"]))
    sh(["dvc", "remote", "add", "--local", "hemma", f"ssh://hemma{box.parent / 'aes-dvc-remote'}"], laptop, env)
    sh(["dvc", "remote", "default", "--local", "hemma"], laptop, env)
    sh(["dvc", "exp", "pull", "origin", "p3"], laptop, env)  # origin: the box's checkout, over SSH
    sh(["dvc", "exp", "apply", "p3"], laptop, env)
    assert "up to date" in sh(["dvc", "status"], laptop, env).stdout
    assert (laptop / "metrics.json").read_text() == (box / "metrics.json").read_text()
    assert (laptop / "model/weights.txt").read_text() == "w" * 3000
    assert "p: 3" in (laptop / "params.yaml").read_text()
    assert _runs(env) == runs_before + ["ran p=3"]  # nothing retrained here
