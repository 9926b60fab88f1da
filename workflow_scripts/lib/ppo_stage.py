"""A PPO stage (rules ``rlhf`` and ``irl_rlhf``): PPO from the SFT checkpoint against a reward callable.

Consumes the SFT checkpoint and the training prompts; produces the policy checkpoint (HF checkpoint +
``value_head.safetensors`` + provenance.json) and the training log (one row per PPO iteration: losses, rewards
raw/normalised, KL, entropy, tokens/s). Resume checkpoints go to the rule's ``checkpoint_dir``; a killed job resumes
from there when rerun and reaches the same final weights and log; the directory is removed once the final model is
written.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from workflow_scripts.lib.atomic_io import write_parquet
from workflow_scripts.lib.compute import ComputeConfig, describe_device
from workflow_scripts.lib.config import from_config
from workflow_scripts.lib.curves import last_fifth
from workflow_scripts.lib.lm import load_lm, save_checkpoint_dir
from workflow_scripts.lib.ppo import PPOTrainer
from workflow_scripts.lib.ppo_config import PPOConfig
from workflow_scripts.lib.provenance import provenance
from workflow_scripts.lib.rewards import RewardFn
from workflow_scripts.lib.seeding import seed_everything

LOG = logging.getLogger("irl_llms.ppo_stage")


def run_ppo_stage(
    stage: str,
    cfg: PPOConfig,
    policy_dir: str | Path,
    prompts: list[str],
    reward_fn: RewardFn,
    out_model: str | Path,
    out_log: str | Path,
    checkpoint_dir: str | Path,
    reward_description: dict[str, Any],
    compute: ComputeConfig | None = None,
    monitor: RewardFn | None = None,
    kl_budget: float | None = None,
) -> pd.DataFrame:
    """PPO from ``policy_dir``; writes the final checkpoint and log atomically, then drops the resume checkpoints.
    ``monitor``: a reward logged beside the optimised one; ``kl_budget``: stop once the final KL reaches it
    (``PPOTrainer``)."""
    compute = compute or ComputeConfig.default()
    seed_everything(cfg.seed)
    model, tokenizer, precision = load_lm(policy_dir, compute)
    trainer = PPOTrainer(cfg, model, tokenizer, reward_fn, prompts, precision, monitor, kl_budget)
    log = trainer.train(checkpoint_dir)
    tail = last_fifth(log)
    summary = {
        "iterations": int(len(log)),
        "optimizer_steps": int(trainer.step),
        "reward_first": float(log["reward_raw_mean"].iloc[0]),
        "reward_last_fifth": float(tail["reward_raw_mean"].mean()),
        "kl_last_fifth": float(tail["kl"].mean()),
        "kl_budget": kl_budget,
        "stopped_at_kl_budget": bool(len(log) < cfg.iterations),
        **trainer.policy.freeze_summary,
    }
    record = provenance(
        stage, asdict(cfg), cfg.seed, policy_init=str(policy_dir), reward=reward_description,
        compute=describe_device(precision.device, precision.name, compute.device), **summary,
    )  # fmt: skip
    model.config.use_cache = True  # the saved policy generates with a KV cache, whatever the loaded config said
    value_head = trainer.policy.value_head.state_dict()
    save_checkpoint_dir(out_model, model, tokenizer, record, extra_tensors={"value_head.safetensors": value_head})
    write_parquet(log, out_log)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    LOG.info(
        "%s done: reward %.4f -> %.4f, KL %.3f",
        stage,
        summary["reward_first"],
        summary["reward_last_fifth"],
        summary["kl_last_fifth"],
    )
    return log


def run_ppo_job(
    smk: Any, prompts: list[str], reward_fn: RewardFn, reward_description: dict[str, Any], monitor: RewardFn,
    kl_budget: float | None = None,
) -> None:  # fmt: skip
    """``run_ppo_stage`` wired to a PPO rule: ``params.{rlhf,compute,checkpoint_dir,max_prompt_tokens}``,
    ``input.sft``, ``output.{model,log}`` (rules ``rlhf`` and ``irl_rlhf`` and their ``_seed`` replicates;
    ``params.rlhf`` holds the rule's PPO settings with the job's one seed of the seed list as ``seed``);
    ``monitor``: the GT reward, logged as ``monitor_reward_mean`` (for rlhf, the reward itself); ``kl_budget``:
    see ``PPOTrainer``."""
    settings = dict(smk.params.rlhf)
    seed = settings.pop("seed")  # a job value: the section has the seed list
    run_ppo_stage(
        smk.rule, from_config(PPOConfig, "rlhf", settings, max_prompt_tokens=smk.params.max_prompt_tokens, seed=seed),
        smk.input.sft, prompts, reward_fn,
        smk.output.model, smk.output.log, smk.params.checkpoint_dir, reward_description,
        from_config(ComputeConfig, "compute", smk.params.compute), monitor, kl_budget,
    )  # fmt: skip
