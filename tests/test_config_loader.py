"""lib/config.py builds the configuration a run uses, for the workflow and for every script outside it (benchmarks,
tests): config.yaml with --configfile files merged over it, validated, defaulted, checked across keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import REPO, TEST_CONFIG
from workflow_scripts.lib.config import ConfigError, irl_rlhf_ppo, load_config, merge


def write(tmp_path: Path, cfg: dict) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_merge_overrides_section_by_section_and_copies() -> None:
    base = {"a": {"x": 1, "y": {"p": 1, "q": 2}}, "b": [1, 2]}
    out = merge(base, {"a": {"y": {"q": 3}}, "b": [3]})
    assert out == {"a": {"x": 1, "y": {"p": 1, "q": 3}}, "b": [3]}  # nested keys kept, lists replaced
    assert base == {"a": {"x": 1, "y": {"p": 1, "q": 2}}, "b": [1, 2]}  # the inputs are not changed


def test_load_config_is_what_the_workflow_used(pipeline_run: Path) -> None:
    """The .test run's reports/config_used.yaml is the config Snakemake held after parsing; the loader agrees."""
    used = yaml.safe_load((pipeline_run / "reports" / "config_used.yaml").read_text())
    assert load_config(TEST_CONFIG) == used


def test_load_config_merges_over_config_yaml_and_fills_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, {"rlhf": {"total_steps": 16}}))
    default = yaml.safe_load((REPO / "config.yaml").read_text())
    assert cfg["rlhf"]["total_steps"] == 16 and cfg["rlhf"]["num_rollouts"] == default["rlhf"]["num_rollouts"]
    assert cfg["sft"]["max_grad_norm"] == 1.0  # a schema default config.yaml does not restate
    assert cfg["irl"]["seeds"] == default["irl"]["seeds"]


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"rlhf": {"max_prompt_tokens": 64}}, "rlhf: Additional properties are not allowed ('max_prompt_tokens'"),
        ({"rlhf": {"learning_rate": "fast"}}, "rlhf.learning_rate: 'fast' is not of type 'number'"),
        ({"rlhf": {"batch_size": 64, "num_rollouts": 32}}, "rlhf.num_rollouts (32) must be a multiple of"),
        ({"irl": {"learning_rate": float("nan")}}, "irl.learning_rate: nan is not a finite number"),
    ],
)
def test_a_moved_renamed_or_bad_key_fails_loudly(tmp_path: Path, override: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, override))
    assert needle in str(err.value), str(err.value)


def test_irl_rlhf_ppo_overrides_rlhf_and_is_validated_like_it() -> None:
    cfg = load_config(TEST_CONFIG)
    cfg["irl_rlhf"]["ppo"] = {"init_kl_coef": 0.2}
    merged = irl_rlhf_ppo(cfg)
    assert merged == {**cfg["rlhf"], "init_kl_coef": 0.2}
    cfg["irl_rlhf"]["ppo"] = {"reward_text": "continuation"}  # the GT reward's key: not IRL-RLHF's to set
    with pytest.raises(ConfigError, match=r"irl_rlhf.ppo: unknown PPO key\(s\) \['reward_text'\]"):
        irl_rlhf_ppo(cfg)
    cfg["irl_rlhf"]["ppo"] = {"learning_rate": -1}
    with pytest.raises(ConfigError, match=r"irl_rlhf.ppo.learning_rate: -1 is less than"):
        irl_rlhf_ppo(cfg)
