"""YAML in tests, with the library DVC and aes.core.params use (ruamel.yaml, YAML 1.2)."""

from __future__ import annotations

import io

from aes.core.params import parse_yaml


def load_yaml(text: str):
    return parse_yaml(text)


def dump_yaml(data) -> str:
    """Block-style YAML of plain data, key order kept."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()
