"""``requirements.lock``: the exact versions of every installed distribution, as a pip constraints file.

``python -m aes.ops.lock_env`` writes it from the running environment (what ``pip freeze
--exclude-editable`` lists: every installed distribution but pip's own tooling and editable
installs, so the project itself is left out). torch's local label is dropped (``2.13.0+cpu`` ->
``2.13.0``): a constraint ``torch==2.13.0`` matches the CPU wheel and a CUDA build of the same
version alike (PEP 440 ignores the candidate's local label when the specifier has none).

``python -m aes.ops.lock_env --check`` compares the running environment with the lock and exits 1
listing the differences: a locked package at another version, or an installed package the lock
does not pin. Locked packages that are not installed (an optional extra such as ``bench``) are
listed but are no difference: a constraints file only says which version, never whether.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from aes.core.errors import AESError, stage_main

LOCK = Path("requirements.lock")
PROJECT = "aes"
# What `pip freeze` leaves out without --all: the installer's own tooling.
TOOLING = frozenset({"pip", "setuptools", "wheel", "distribute"})
# Distributions whose builds differ only by a local label (CPU / CUDA wheels of one release).
LOCAL_LABEL_DROPPED = frozenset({"torch"})
HEADER = """\
# Pinned environment: the exact version of every installed distribution the committed numbers
# (metrics/, dvc.lock) come from. A pip constraints file: `pip install -c requirements.lock ...`
# pins whatever the install pulls in and installs nothing by itself. torch carries no local label,
# so the CPU wheel and a CUDA build of the same version both satisfy it.
# Regenerate from the current environment: python -m aes.ops.lock_env
# Compare the current environment with it: python -m aes.ops.lock_env --check
"""


def _is_editable(dist: importlib.metadata.Distribution) -> bool:
    """True for an editable install (PEP 660 records it in direct_url.json)."""
    raw = dist.read_text("direct_url.json")
    if not raw:
        return False
    try:
        return bool(json.loads(raw).get("dir_info", {}).get("editable", False))
    except ValueError:
        return False


def locked_version(name: str, version: str) -> str:
    """``version`` as the lock writes it: without the local label for ``LOCAL_LABEL_DROPPED``."""
    if canonicalize_name(name) in LOCAL_LABEL_DROPPED:
        return Version(version).public
    return version


def installed() -> dict[str, str]:
    """{distribution name as its metadata spells it: version as locked} for the running environment.

    Leaves out pip's tooling, editable installs and the project itself (as ``pip freeze
    --exclude-editable`` does); one entry per canonical name (the first on sys.path wins, as for
    imports).
    """
    out: dict[str, str] = {}
    seen: set[str] = set()
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if not name:
            continue
        key = canonicalize_name(name)
        if key in seen or key in TOOLING or key == PROJECT or _is_editable(dist):
            continue
        seen.add(key)
        out[name] = locked_version(name, dist.version)
    return out


def render(pins: dict[str, str]) -> str:
    """The lock file's text: the header, then ``name==version`` sorted case-insensitively (pip freeze's order)."""
    lines = [f"{name}=={pins[name]}" for name in sorted(pins, key=str.lower)]
    return HEADER + "\n".join(lines) + "\n"


def read_lock(path: Path) -> dict[str, str]:
    """{canonical name: version} from a lock file; AESError naming the file and line when a line is not ``name==version``."""
    if not path.is_file():
        raise AESError(f"{path}: not found; write it with `python -m aes.ops.lock_env`")
    pins: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement as err:
            raise AESError(f"{path} line {number}: {line!r} is not a requirement ({err}); expected name==version") from None
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or req.extras or req.marker or req.url:
            raise AESError(f"{path} line {number}: {line!r}; expected exactly name==version")
        key = canonicalize_name(req.name)
        if key in pins:
            raise AESError(f"{path} line {number}: {req.name} is pinned twice")
        pins[key] = specs[0].version
    return pins


def differences(pins: dict[str, str], current: dict[str, str]) -> tuple[list[str], list[str]]:
    """(differences, locked but not installed) between the lock ``pins`` and ``current`` (from :func:`installed`).

    A difference is an installed package at a version the lock's ``==`` does not accept, or one
    the lock does not pin. Each entry is one readable line.
    """
    current = {canonicalize_name(name): version for name, version in current.items()}
    diffs, absent = [], []
    for key in sorted(set(pins) | set(current)):
        if key not in current:
            absent.append(f"{key}=={pins[key]}: locked, not installed")
        elif key not in pins:
            diffs.append(f"{key}=={current[key]}: installed, not in the lock")
        elif Version(current[key]) != Version(pins[key]):
            diffs.append(f"{key}: installed {current[key]}, locked {pins[key]}")
    return diffs, absent


@stage_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aes.ops.lock_env", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare the environment with the lock; exit 1 on a difference")
    parser.add_argument("--lock", type=Path, default=LOCK, help=f"the lock file (default {LOCK})")
    args = parser.parse_args(argv)
    if not args.check:
        pins = installed()
        args.lock.write_text(render(pins))
        print(f"{args.lock}: {len(pins)} distributions pinned")
        return 0
    diffs, absent = differences(read_lock(args.lock), installed())
    for line in absent:
        print(f"note: {line}")
    for line in diffs:
        print(f"differs: {line}")
    if diffs:
        print(f"{args.lock}: the environment differs in {len(diffs)} distribution(s); "
              f"install with `pip install -c {args.lock} ...` or regenerate the lock", file=sys.stderr)
        return 1
    print(f"{args.lock}: the environment matches")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
