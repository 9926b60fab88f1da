"""Stage 6, IRL-RLHF: PPO from the SFT checkpoint again, now against the reward recovered by IRL.

Consumes ``results/sft/model/``, ``results/data/train.parquet`` (the same prompts RLHF trained on) and, for the
configured objective, ``results/irl/{objective}/seed{seed}/{metrics.parquet,reward_model/}``.
Which seed's reward model is used is decided on *validation* pairs only (``irl_report.best_run``: highest validation
pair accuracy), unless the config names a seed.
Produces ``results/irl_rlhf/model/`` and ``results/irl_rlhf/train_log.parquet`` through the same trainer
(``rlhf.run_ppo_job``), the same monotone running-std reward scaling and the same resume checkpoints as RLHF; the
original code's per-batch min-max rescaling of the learned reward is not used.
"""

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from workflow_scripts.common import dataclass_from_dict, read_table, run_snakemake_job
from workflow_scripts.irl import load_reward_model
from workflow_scripts.irl_report import best_run, select_runs
from workflow_scripts.lm import ComputeConfig
from workflow_scripts.rlhf import run_ppo_job

LOG = logging.getLogger("irl_llms.irl_rlhf")


def choose_reward_model(
    metrics_files: Sequence[str | Path], model_dirs: Sequence[str | Path], objective: str, seed: int | None
) -> tuple[Path, dict[str, Any]]:
    """The reward model of ``objective`` to optimise: ``seed`` if given, else the seed best on validation pairs.

    ``metrics_files[i]`` and ``model_dirs[i]`` belong to the same run. Returns the model directory and a description
    of the choice (objective, seed, epoch, the validation numbers it rests on) for the provenance record.
    """
    if len(metrics_files) != len(model_dirs) or not metrics_files:
        raise ValueError(f"need one metrics file per reward model, got {len(metrics_files)} and {len(model_dirs)}")
    runs = pd.concat([pd.read_parquet(f).assign(_dir=str(d)) for f, d in zip(metrics_files, model_dirs, strict=True)])
    runs = select_runs(runs[runs["objective"] == objective])
    if runs.empty:
        raise ValueError(f"no IRL run of objective {objective!r} among {list(map(str, metrics_files))}")
    if seed is None:
        chosen, how = best_run(runs), "best validation pair accuracy across seeds"
    else:
        match = runs[runs["seed"] == seed]
        if match.empty:
            raise ValueError(f"irl_rlhf.seed={seed}: no IRL run of {objective!r} with that seed")
        chosen, how = match.iloc[0], "named in the config"
    choice = {
        "kind": "learned",
        "objective": objective,
        "seed": int(chosen["seed"]),
        "epoch": int(chosen["epoch"]),
        "chosen_by": how,
        "val_pair_accuracy": float(chosen["val_pair_accuracy"]),
        "val_loss": float(chosen["val_loss"]),
        "reward_model": str(chosen["_dir"]),
    }
    return Path(chosen["_dir"]), choice


def _snakemake(smk: Any) -> None:
    choice_cfg = smk.params.reward
    model_dir, choice = choose_reward_model(
        smk.input.metrics, smk.input.reward_models, choice_cfg["objective"], choice_cfg["seed"]
    )
    LOG.info("learned reward: %s", choice)
    compute = dataclass_from_dict(ComputeConfig, smk.params.compute)
    reward = load_reward_model(model_dir, batch_size=choice_cfg["batch_size"], compute=compute)
    data = read_table(smk.input.train, ("prompt",), "training prompts")
    run_ppo_job(smk, data["prompt"].tolist(), reward, choice)


if __name__ == "__main__":
    run_snakemake_job(snakemake, _snakemake)  # type: ignore[name-defined]  # noqa: F821
