"""Stage 3, RLHF: PPO from the SFT checkpoint against a reward callable (default: the GT toxicity reward).

Consumes ``results/sft/model/`` and ``results/data/train.parquet`` (``prompt``, ``original_output``); produces
``results/rlhf/model/`` (HF checkpoint + ``value_head.safetensors`` + provenance.json) and
``results/rlhf/train_log.parquet`` (one row per PPO iteration: losses, rewards raw/normalised, KL, entropy, tokens/s).
Checkpoints go to ``results/rlhf/checkpoints/``; a killed job resumes from there when rerun and reaches the same
final weights and log; the directory is removed once the final model is written.
The IRL-RLHF stage reuses ``run_ppo_stage`` with a learned reward.
"""

import logging
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
from safetensors.torch import save_file

from workflow_scripts.common import (
    atomic_path,
    dataclass_from_dict,
    provenance,
    read_table,
    run_snakemake_job,
    seed_everything,
    write_json,
    write_parquet,
)
from workflow_scripts.lm import ComputeConfig
from workflow_scripts.ppo import PPOConfig, PPOTrainer, RewardFn
from workflow_scripts.rewards import GTToxicityReward
from workflow_scripts.toxicity import load_scorer

LOG = logging.getLogger("irl_llms.rlhf")


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
) -> pd.DataFrame:
    """PPO from ``policy_dir``; writes the final checkpoint and log atomically, then drops the resume checkpoints."""
    compute = compute or ComputeConfig()
    seed_everything(cfg.seed)
    model, tokenizer, precision = compute.load_lm(policy_dir)
    trainer = PPOTrainer(cfg, model, tokenizer, reward_fn, prompts, precision)
    log = trainer.train(checkpoint_dir)
    tail = log.tail(max(1, len(log) // 5))
    summary = {
        "iterations": int(len(log)),
        "optimizer_steps": int(trainer.step),
        "reward_first": float(log["reward_raw_mean"].iloc[0]),
        "reward_last_fifth": float(tail["reward_raw_mean"].mean()),
        "kl_last_fifth": float(tail["kl"].mean()),
        **trainer.freeze_summary,
    }
    record = provenance(
        stage, asdict(cfg), cfg.seed, policy_init=str(policy_dir), reward=reward_description, compute=asdict(compute),
        **summary,
    )  # fmt: skip
    model.config.use_cache = True
    with atomic_path(out_model, is_dir=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        save_file(
            {k: v.cpu().contiguous() for k, v in trainer.value_head.state_dict().items()},
            tmp / "value_head.safetensors",
        )
        write_json(record, tmp / "provenance.json")
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


def run_ppo_job(smk: Any, prompts: list[str], reward_fn: RewardFn, reward_description: dict[str, Any]) -> None:
    """``run_ppo_stage`` wired to a PPO rule: ``params.{ppo,compute}``, ``input.sft``, ``output.{model,log}``,
    ``params.checkpoint_dir`` (rules ``rlhf`` and ``irl_rlhf``)."""
    cfg = dataclass_from_dict(PPOConfig, smk.params.ppo)
    run_ppo_stage(
        smk.rule, cfg, smk.input.sft, prompts, reward_fn, smk.output.model, smk.output.log, smk.params.checkpoint_dir,
        reward_description, dataclass_from_dict(ComputeConfig, smk.params.compute),
    )  # fmt: skip


def _snakemake(smk: Any) -> None:
    data = read_table(smk.input.train, ("prompt", "original_output"), "training prompts")
    reward = GTToxicityReward.from_pairs(
        load_scorer(smk.params.gt_classifier), data["prompt"].tolist(), data["original_output"].tolist()
    )
    run_ppo_job(smk, data["prompt"].tolist(), reward, {"kind": "gt_toxicity", "classifier": smk.params.gt_classifier})


if __name__ == "__main__":
    run_snakemake_job(snakemake, _snakemake)  # type: ignore[name-defined]  # noqa: F821
