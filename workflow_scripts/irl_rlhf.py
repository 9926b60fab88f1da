"""Rule ``irl_rlhf`` (stage 6): PPO from the SFT checkpoint again, now against the reward recovered by IRL.

Consumes ``results/sft/model/``, ``results/data/train.parquet`` (the same prompts RLHF trained on) and, for the
configured objective, ``results/irl/{objective}/seed{seed}/{metrics.parquet,reward_model/}``. The seed whose reward
model is used is chosen on *validation* pairs only (``irl_metrics.choose_reward_model``) unless the config names one.
The GT reward of RLHF is computed on every rollout batch and logged (``monitor_reward_mean``), never optimised.
Produces ``results/irl_rlhf/model/`` and ``results/irl_rlhf/train_log.parquet`` through the same trainer, reward
scaling and resume checkpoints as rule ``rlhf`` (``lib.ppo_stage.run_ppo_job``); the original code's per-batch
min-max rescaling of the learned reward is not used.

``irl_rlhf.stop_at_kl: rlhf`` (the default) stops it once its final KL to SFT reaches RLHF's (``input.rlhf_logs``,
the mean over RLHF's seeds of Table 1's final KL), so Table 1 compares the two rewards at matched KL; a number is a
fixed budget, null trains the full ``total_steps`` (the paper's protocol).
"""

import logging
from typing import Any

import numpy as np

from workflow_scripts.lib.compute import ComputeConfig
from workflow_scripts.lib.config import from_config
from workflow_scripts.lib.inputs import read_table
from workflow_scripts.lib.irl_metrics import choose_reward_model
from workflow_scripts.lib.job import run_snakemake_job
from workflow_scripts.lib.ppo_stage import run_ppo_job
from workflow_scripts.lib.reward_model import load_reward_model
from workflow_scripts.lib.rewards import GTToxicityReward
from workflow_scripts.lib.table1 import final_kl
from workflow_scripts.lib.toxicity import load_scorer

LOG = logging.getLogger("irl_llms.irl_rlhf")


def kl_budget(stop_at_kl: str | float | None, rlhf_logs: list[str]) -> float | None:
    """The KL budget of ``irl_rlhf.stop_at_kl``: RLHF's final KL (mean over its runs' train logs) for ``rlhf``."""
    if stop_at_kl != "rlhf":
        return None if stop_at_kl is None else float(stop_at_kl)
    if not rlhf_logs:
        raise ValueError("irl_rlhf.stop_at_kl: rlhf needs RLHF's train logs (rule irl_rlhf's input rlhf_logs)")
    budget = float(np.mean([final_kl(log) for log in rlhf_logs]))
    if not budget > 0:
        raise ValueError(
            f"irl_rlhf.stop_at_kl: rlhf, but RLHF's final KL to SFT is {budget:.4g} nats (from "
            f"{', '.join(map(str, rlhf_logs))}): no KL to match; set irl_rlhf.stop_at_kl: null or a number"
        )
    return budget


def _snakemake(smk: Any) -> None:
    choice_cfg = smk.params.irl_rlhf
    model_dir, choice = choose_reward_model(
        smk.input.metrics, smk.input.reward_models, choice_cfg["objective"], choice_cfg["seed"]
    )
    LOG.info("learned reward: %s", choice)
    compute = from_config(ComputeConfig, "compute", smk.params.compute)
    reward = load_reward_model(model_dir, batch_size=choice_cfg["batch_size"], compute=compute)
    data = read_table(smk.input.train, ("prompt", "original_output"), "training prompts")
    prompts = data["prompt"].tolist()
    gt_reward = GTToxicityReward.from_pairs(  # logged, never optimised: does the learned reward lead to the GT one?
        load_scorer(smk.params.gt_classifier), prompts, data["original_output"].tolist(), smk.params.reward_text
    )
    budget = kl_budget(smk.params.stop_at_kl, list(smk.input.rlhf_logs))
    LOG.info("KL budget: %s (irl_rlhf.stop_at_kl: %s)", "none" if budget is None else f"{budget:.3f} nats",
             smk.params.stop_at_kl)  # fmt: skip
    run_ppo_job(smk, prompts, reward, choice, monitor=gt_reward, kl_budget=budget)


if __name__ == "__main__":
    run_snakemake_job(snakemake, _snakemake)  # type: ignore[name-defined]  # noqa: F821
