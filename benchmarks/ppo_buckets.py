"""PPO iterations with and without length buckets (``rlhf.bucket_rows``), one after the other in one process.

Run from the repository root on an idle machine, after a default run (see ``benchmarks/README.md``)::

    .venv/bin/python benchmarks/ppo_buckets.py --model results/sft/model --out results/benchmarks/ppo_buckets.json

Each setting (``--buckets``, ``0`` = null, one pass per minibatch) builds the stage's own ``PPOConfig`` from the
config's ``rlhf`` section (``--config`` files merged over ``config.yaml``) with only ``bucket_rows`` changed, and runs
``1 + --iterations`` iterations of ``PPOTrainer.train_iteration`` from the same checkpoint, seed and prompts (the
first a warm-up, dropped). The first iteration's rollouts are the same draws for every setting. The reward is the
GT classifier's ``1 - P_toxic(completion)`` (``ppo_vs_trl.NonToxicityReward``). Reported per setting, medians over
the measured iterations: rollout seconds (generation), scoring seconds (reward, log-probs, values, reference: the
iteration minus generation and update), update seconds, the update's padding share of top-block positions, and the
whole iteration; with the machine and its fp32 matmul rate before and after.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from config_options import CONFIG_HELP, load_config_option  # (benchmarks/)
from machine import describe_machine, matmul_gflops, warn_if_busy  # (benchmarks/machine.py)
from ppo_vs_trl import PPO_FIELDS, NonToxicityReward, load_prompt_texts  # (benchmarks/)

from workflow_scripts.lib.config import from_config
from workflow_scripts.lib.lm import load_causal_lm
from workflow_scripts.lib.ppo import PPOTrainer
from workflow_scripts.lib.ppo_config import PPOConfig

MEASURED = ("rollout_seconds", "scoring_seconds", "update_seconds", "update_padding_share", "iteration_seconds")


def run_setting(args: argparse.Namespace, config: dict[str, Any], bucket_rows: int | None) -> dict[str, Any]:
    rlhf = {k: v for k, v in config["rlhf"].items() if k in PPO_FIELDS}
    job = {"max_prompt_tokens": config["data"]["max_prompt_tokens"], "seed": config["rlhf"]["seeds"][0]}
    cfg = from_config(PPOConfig, "rlhf", {**rlhf, "bucket_rows": bucket_rows}, **job)
    model, tokenizer = load_causal_lm(args.model, device="cpu", dtype=torch.float32)
    prompts = load_prompt_texts(args.prompts, tokenizer, cfg.max_prompt_tokens)
    trainer = PPOTrainer(cfg, model, tokenizer, NonToxicityReward(config["gt_classifier"]["wheel"]), prompts)
    iterations = []
    for i in range(1 + args.iterations):
        start = time.perf_counter()
        row = trainer.train_iteration()
        wall = time.perf_counter() - start
        it = {"iteration_seconds": wall, **{k: float(row[k]) for k in MEASURED if k in row}}
        it["scoring_seconds"] = wall - it["rollout_seconds"] - it["update_seconds"]
        iterations.append(it)
        print(f"  bucket_rows {bucket_rows} iter {i}{' (warm-up)' if i == 0 else ''}: {json.dumps(it)}", flush=True)
    medians = {k: statistics.median(it[k] for it in iterations[1:]) for k in MEASURED}
    return {"bucket_rows": bucket_rows, "iterations": iterations, "median": medians}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    _, config = load_config_option(argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", nargs="+", default=[], metavar="CONFIGFILE", help=CONFIG_HELP)
    ap.add_argument("--model", default="results/sft/model")
    ap.add_argument("--prompts", default="results/data/train.parquet")
    ap.add_argument("--buckets", type=int, nargs="+", default=[0, 4], help="rows per bucket; 0 = one pass (null)")
    ap.add_argument("--iterations", type=int, default=3, help="measured iterations after one warm-up")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="results/benchmarks/ppo_buckets.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warn_if_busy()
    before = matmul_gflops()
    settings = [run_setting(args, config, rows or None) for rows in args.buckets]
    after = matmul_gflops()
    result = {"machine": describe_machine(), "matmul_gflops_before": before, "matmul_gflops_after": after,
              "args": vars(args), "settings": settings}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    print(f"\n{result['machine']}\nfp32 2048^2 matmul: {before:.0f} / {after:.0f} GFLOP/s (before/after)")
    print("| bucket_rows | " + " | ".join(MEASURED) + " |\n|---|" + "---|" * len(MEASURED))
    for s in settings:
        print(f"| {s['bucket_rows']} | " + " | ".join(f"{s['median'][k]:.3g}" for k in MEASURED) + " |")
    return result


if __name__ == "__main__":
    main()
