"""A malformed config fails before any job, with a message naming the offending key or file."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from conftest import REPO, TEST_CONFIG, snakemake

SCHEMA = str(REPO / "config.schema.yaml")


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("path", [REPO / "config.yaml", TEST_CONFIG])
def test_shipped_configs_are_valid_and_get_defaults(path: Path) -> None:
    cfg = load(path)
    validate(cfg, SCHEMA)
    assert cfg["sft"]["max_grad_norm"] == 1.0  # filled in from the schema
    assert cfg["evaluation"]["bootstrap"]["confidence"] == 0.95


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda c: c["sft"].update(learnin_rate=1e-3), "learnin_rate"),
        (lambda c: c["sft"].update(batch_size="big"), "instance['sft']['batch_size']"),
        (lambda c: c["data"].update(eval_fraction=1.5), "instance['data']['eval_fraction']"),
        (lambda c: c["evaluation"]["rtp"].update(k=0), "instance['evaluation']['rtp']['k']"),
        (lambda c: c.update(unknown_section={}), "unknown_section"),
        (lambda c: c["base_model"].update(source="hub"), "instance['base_model']['source']"),
    ],
)
def test_schema_rejects_bad_values(mutate, needle: str) -> None:
    cfg = copy.deepcopy(load(TEST_CONFIG))
    mutate(cfg)
    with pytest.raises(Exception) as err:
        validate(cfg, SCHEMA)
    assert needle in str(err.value)


def run_with_bad_config(tmp_path: Path, section: str, key: str, value: object) -> str:
    """Run the whole workflow with one config value changed; it must fail before any job writes a result."""
    cfg = load(TEST_CONFIG)
    cfg[section][key] = value
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path / "run", configfile=bad, check=False)
    assert proc.returncode != 0
    assert not (tmp_path / "run" / "results").exists()
    return proc.stderr + proc.stdout


def test_bad_config_fails_before_any_job(tmp_path: Path) -> None:
    assert "learnin_rate" in run_with_bad_config(tmp_path, "sft", "learnin_rate", 1e-3)


def test_missing_input_file_is_named(tmp_path: Path) -> None:
    missing = str(tmp_path / "no_such_texts.parquet")
    out = run_with_bad_config(tmp_path, "data", "texts", missing)
    assert f"text data set (data.texts) not found: {missing}" in out


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("objective", "max_margin", None),  # valid: control case, must dry-run
        ("seed", 9, "irl_rlhf.seed=9 is not among irl.seeds [0, 1]"),
        ("ppo", {"total_stepz": 10}, "irl_rlhf.ppo: unknown PPO key(s) ['total_stepz']"),
        ("ppo", {"learning_rate": 2.0}, "irl_rlhf.ppo.learning_rate: 2.0 is greater than the maximum of 1"),
    ],
)
def test_irl_rlhf_reward_choice_and_overrides_are_checked(tmp_path: Path, key: str, value: object, needle) -> None:
    cfg = load(TEST_CONFIG)
    cfg["irl_rlhf"][key] = value
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path / "run", "-n", configfile=path, check=False)
    if needle is None:
        assert proc.returncode == 0, proc.stderr[-2000:]
    else:
        assert proc.returncode != 0 and needle in proc.stderr + proc.stdout


def test_irl_rlhf_objective_must_be_trained(tmp_path: Path) -> None:
    cfg = load(TEST_CONFIG)
    cfg["irl"]["objectives"] = ["hinge"]
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path / "run", "-n", configfile=path, check=False)
    assert proc.returncode != 0
    assert "irl_rlhf.objective='max_margin' is not among irl.objectives ['hinge']" in proc.stderr + proc.stdout


def dry_run_with(tmp_path: Path, change) -> tuple[int, str]:
    cfg = load(TEST_CONFIG)
    change(cfg)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path / "run", "-n", configfile=path, check=False)
    return proc.returncode, proc.stderr + proc.stdout


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda c: c["irl"].update(learning_rate=float("nan")), "irl.learning_rate: nan is not a finite number"),
        (lambda c: c["rlhf"].update(cliprange=float("inf")), "rlhf.cliprange: inf is not a finite number"),
        (
            lambda c: c["rlhf"].update(batch_size=64, num_rollouts=32),
            "rlhf.num_rollouts (32) must be a multiple of rlhf.batch_size (64)",
        ),
        (
            lambda c: c["irl_rlhf"].update(ppo={"batch_size": 3}),
            "irl_rlhf.ppo (over rlhf).num_rollouts (8) must be a multiple of irl_rlhf.ppo (over rlhf).batch_size (3)",
        ),
        (
            lambda c: c["demonstrations"].update(greedy=False, samples=0),
            "demonstrations.greedy is false and demonstrations.samples is 0",
        ),
        (lambda c: c["sft"].update(source="import"), "sft.source is 'import' but sft.import_from is empty"),
        (
            lambda c: c["base_model"].update(source="pretrained"),
            "base_model.source is 'pretrained' but base_model.name_or_path is empty",
        ),
    ],
)
def test_cross_key_and_non_finite_values_stop_before_any_job(tmp_path: Path, change, needle: str) -> None:
    """Values each key's schema accepts, but not together (or NaN/inf, which pass numeric bounds): the workflow
    stops at parse time, naming the keys, and plans no job."""
    rc, out = dry_run_with(tmp_path, change)
    assert rc != 0 and needle in out, out[-2000:]
    assert "invalid configuration" in out and not (tmp_path / "run" / "results").exists()
