"""The paper configs and the SLURM profile: full-DAG dry runs with no network, and the paper's hyper-parameters."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from conftest import REPO, planned_jobs, snakemake
from workflow_scripts.lib.config import load_config

PAPER_CONFIGS = {"70m": REPO / "config" / "paper-70m.yaml", "410m": REPO / "config" / "paper-410m.yaml"}
# the paper's settings as traced in resources/paper/README.md (P = paper table, A = released script, T = trlx)
PAPER = {
    "70m": {
        "rlhf": {"learning_rate": 3e-6, "init_kl_coef": 0.035, "total_steps": 600, "batch_size": 16,  # P
                 "num_rollouts": 32, "ppo_epochs": 8, "num_layers_unfrozen": 4, "target": 5.71, "chunk_size": 4,  # A
                 "weight_decay": 1e-6, "scheduler": {"name": "cosine_annealing", "T_max": 10000, "eta_min": 5.45e-6}},
        "max_prompt_tokens": 1024 - 128, "n_pairs": 100, "irl_lr": 1e-4,
    },
    "410m": {
        "rlhf": {"learning_rate": 8e-7, "init_kl_coef": 0.1, "total_steps": 12000, "batch_size": 2,
                 "num_rollouts": 48, "ppo_epochs": 5, "num_layers_unfrozen": 3, "target": 4.9, "chunk_size": 4,
                 "weight_decay": 1e-6, "scheduler": {"name": "cosine_annealing", "T_max": 10000, "eta_min": 2.2e-7}},
        "max_prompt_tokens": 10000 - 128, "n_pairs": 200, "irl_lr": 1e-6,
    },
}  # fmt: skip


def sources_tables() -> dict[str, dict[str, dict[str, str]]]:
    """The per-size tables of resources/paper/README.md as {table: {key: {"70m": value, "410m": value}}}, a row
    naming several keys (``gamma, lam, cliprange``) split into one entry per key, "same" read as the 70M value."""
    tables: dict[str, dict[str, dict[str, str]]] = {}
    title = None
    for line in (REPO / "resources" / "paper" / "README.md").read_text().replace("\u2212", "-").splitlines():
        heading = re.match(r"\*\*(.+?)\*\*", line)
        if heading:
            title = heading.group(1)
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if title is None or len(cells) != 4 or cells[0] in ("key", "---"):
            continue
        keys, small, large = cells[0].split(", "), cells[1], cells[1] if cells[2] == "same" else cells[2]
        values = [v.split(", ") if len(keys) > 1 else [v] for v in (small, large)]
        for i, key in enumerate(keys):
            tables.setdefault(title, {})[key] = {
                "70m": values[0][i] if len(values[0]) == len(keys) else small,
                "410m": values[1][i] if len(values[1]) == len(keys) else large,
            }
    return tables


SOURCES = sources_tables()
MODEL_RULES = (
    "sft", "rlhf", "irl_rlhf", "demonstrations", "irl_features", "irl_train", "irl_log_ratio", "evaluate"
)  # fmt: skip


@pytest.mark.parametrize("size", sorted(PAPER_CONFIGS))
def test_paper_config_is_valid_and_has_the_papers_settings(size: str) -> None:
    cfg = yaml.safe_load(PAPER_CONFIGS[size].read_text())
    validate(cfg, str(REPO / "config.schema.yaml"))
    load_config(PAPER_CONFIGS[size])  # merged over config.yaml as Snakemake merges it, validated, checked across keys
    rl, paper = cfg["rlhf"], PAPER[size]
    assert {k: rl[k] for k in paper["rlhf"]} == paper["rlhf"]
    assert (rl["max_new_tokens"], rl["top_k"], rl["gamma"], rl["lam"]) == (128, 30, 1.0, 0.95)
    assert (rl["cliprange"], rl["vf_coef"], rl["reward_text"]) == (0.2, 1.0, "full")
    assert cfg["data"]["max_prompt_tokens"] == paper["max_prompt_tokens"]
    assert cfg["demonstrations"]["n_train"] == paper["n_pairs"] and cfg["demonstrations"]["non_expert"] == "base"
    assert cfg["irl"]["learning_rate"] == paper["irl_lr"] and cfg["irl"]["trainable_layers"] == -1
    # every value above is the one the sources table traces (resources/paper/README.md), key by key
    ppo, irl = SOURCES["PPO"], SOURCES["Demonstrations and IRL"]
    for key in paper["rlhf"]:
        if key != "scheduler":  # (a row of three values in prose; its name is checked below)
            assert float(ppo[key][size]) == rl[key], (key, ppo[key])
    assert ppo["scheduler"][size].startswith(rl["scheduler"]["name"])
    assert int(ppo["data.max_prompt_tokens"][size]) == cfg["data"]["max_prompt_tokens"]
    assert int(irl["n_train"][size]) == cfg["demonstrations"]["n_train"]
    assert float(irl["learning_rate"][size]) == cfg["irl"]["learning_rate"]
    assert int(irl["trainable_layers"][size]) == cfg["irl"]["trainable_layers"]
    assert cfg["base_model"]["name_or_path"] == f"EleutherAI/pythia-{size}"
    assert cfg["sft"]["import_from"] == f"lomahony/eleuther-pythia{size}-hh-sft"
    assert cfg["gt_classifier"]["model"] == "s-nlp/roberta_toxicity_classifier"
    assert cfg["evaluation"]["classifier"]["model"] == "facebook/roberta-hate-speech-dynabench-r4-target"
    assert (cfg["data"]["texts"], cfg["data"]["rtp_prompts"]) == (
        "jaredjoss/jigsaw-long-2000", "allenai/real-toxicity-prompts",
    )  # fmt: skip


def rule_resources(dry_run: str) -> dict[str, str]:
    """{rule: its resources line} of a dry run (the last job of each rule)."""
    out = {}
    for block in dry_run.split("\n\n"):
        rule = re.search(r"^\s*(?:local)?rule (\w+):", block, re.M)
        res = re.search(r"resources: (.*)", block)
        if rule and res:
            out[rule.group(1)] = res.group(1)
    return out


@pytest.mark.parametrize("profile", [None, "slurm"])
@pytest.mark.parametrize("size", sorted(PAPER_CONFIGS))
def test_paper_dag_dry_runs_offline(tmp_path: Path, size: str, profile: str | None) -> None:
    args = ["-n"] + (["--workflow-profile", str(REPO / "profiles" / profile)] if profile else [])
    out = snakemake(tmp_path, *args, configfile=PAPER_CONFIGS[size]).stdout
    cfg = yaml.safe_load(PAPER_CONFIGS[size].read_text())
    jobs = planned_jobs(out)
    n_irl = len(cfg["irl"]["objectives"]) * len(cfg["irl"]["seeds"]) + 1  # + the supervised ceiling
    # every PPO stage once per seed (rlhf.seeds; IRL-RLHF takes them too), each evaluated
    n_seeds = len(cfg["rlhf"]["seeds"])
    assert jobs["rlhf"] == jobs["irl_rlhf"] == 1 and jobs["rlhf_seed"] == jobs["irl_rlhf_seed"] == n_seeds - 1
    n_eval = sum(n_seeds if s in ("rlhf", "irl_rlhf") else 1 for s in cfg["evaluation"]["stages"])
    assert jobs["irl_train"] == n_irl and jobs["evaluate"] == n_eval
    assert {"prepare_data", "base_model", "sft", "rlhf", "demonstrations", "irl_rlhf", "table1"} <= set(jobs)
    assert not (tmp_path / "results").exists()  # a dry run writes nothing
    resources = rule_resources(out)
    for rule in MODEL_RULES:
        assert "gpu=1" in resources[rule], rule
    if profile == "slurm":
        for rule in MODEL_RULES:
            assert "slurm_partition=gpu" in resources[rule] and "cpus_per_gpu=" in resources[rule], rule
        assert "slurm_partition=cpu" in resources["prepare_data"] and "gpu=1" not in resources["base_model"]
