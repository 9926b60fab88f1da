"""A malformed config fails before any job, with a message naming the offending key or file."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from conftest import REPO, TEST_CONFIG, snakemake
from snakemake.utils import validate

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
        (lambda c: c["sft"].update(batch_size="big"), "big"),
        (lambda c: c["data"].update(eval_fraction=1.5), "1.5"),
        (lambda c: c["evaluation"]["rtp"].update(k=0), "0"),
        (lambda c: c.update(unknown_section={}), "unknown_section"),
        (lambda c: c["base_model"].update(source="hub"), "hub"),
    ],
)
def test_schema_rejects_bad_values(mutate, needle: str) -> None:
    cfg = copy.deepcopy(load(TEST_CONFIG))
    mutate(cfg)
    with pytest.raises(Exception) as err:
        validate(cfg, SCHEMA)
    assert needle in str(err.value)


def test_bad_config_fails_before_any_job(tmp_path: Path) -> None:
    cfg = load(TEST_CONFIG)
    cfg["sft"]["learnin_rate"] = 1e-3
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path / "run", configfile=bad, check=False)
    assert proc.returncode != 0
    assert "learnin_rate" in proc.stderr + proc.stdout
    assert not (tmp_path / "run" / "results").exists()


def test_missing_input_file_is_named(tmp_path: Path) -> None:
    cfg = load(TEST_CONFIG)
    cfg["data"]["texts"] = str(tmp_path / "no_such_texts.parquet")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path / "run", configfile=bad, check=False)
    assert proc.returncode != 0
    assert "no_such_texts.parquet" in proc.stderr + proc.stdout
    assert not (tmp_path / "run" / "results").exists()
