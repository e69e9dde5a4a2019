"""The GPU profile (profiles/gpu.args, `-S key=value` overrides for `dvc exp run`) must name only
known params with valid values, so a GPU run never dies on a typo after hours of queueing."""

from pathlib import Path

from aes.core.params import parse_yaml, validate
from tests.committed import committed_params

ROOT = Path(__file__).resolve().parents[1]


def apply_overrides(params: dict, args_file: Path) -> dict:
    tokens = args_file.read_text().split()
    assert tokens[0::2] == ["-S"] * (len(tokens) // 2), "every override is '-S key=value'"
    for item in tokens[1::2]:
        key, value = item.split("=", 1)
        *path, leaf = key.split(".")
        section = params
        for part in path:
            section = section[part]
        assert leaf in section, f"{key} is not a params key"
        section[leaf] = parse_yaml(value)  # dvc parses -S values as YAML 1.2
    return params


def test_gpu_profile_is_valid():
    params = apply_overrides(validate(committed_params()), ROOT / "profiles" / "gpu.args")
    checked = validate(params)
    assert checked["finetune"]["trainable_layers"] == -1 and checked["finetune"]["encoder_lr"] == 2.0e-5
