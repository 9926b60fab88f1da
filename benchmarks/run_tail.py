"""Two costs of the default run that bought nothing, each against its fix, in one process on a finished run:

1. ``engine``: transformers' greedy Jigsaw-style generation (the base checkpoint, the eval prompts, 50 new tokens,
   batch 128, as ``evaluate`` runs it) with a CTranslate2 engine of the same checkpoint loaded in the process (as
   ``generation.backend: auto`` left it after its probe picked transformers) and after
   ``AutoGenerator.release_engine``; the outputs must be identical.
2. ``bootstrap``: the IRL summary's bootstrap (``irl_metrics.summarise``'s draws for one run's held-out texts,
   ``irl.bootstrap.n_resamples`` of them): ``reward_metrics`` (scikit-learn / scipy) once per draw, as before, and
   ``metric_draws`` over all draws at once; the largest difference of any draw's metric.

Run from the repository root on an idle machine, after a default run::

    .venv/bin/python benchmarks/run_tail.py --run . --out results/benchmarks/run_tail.json

Reported: seconds of each variant (the minimum of ``--repeats`` alternating runs), the machine and its fp32 matmul
rate before and after.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from machine import describe_machine, matmul_gflops, warn_if_busy  # (benchmarks/machine.py)

from workflow_scripts.lib import irl_metrics
from workflow_scripts.lib.compute import ComputeConfig
from workflow_scripts.lib.config import load_config
from workflow_scripts.lib.engine import AutoGenerator
from workflow_scripts.lib.generation import GenerationSettings


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default=".", help="a finished default run's directory")
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs of each variant; the minimum counts")
    ap.add_argument("--out", default="results/benchmarks/run_tail.json")
    return ap.parse_args()


def engine_loaded_vs_released(run: Path, cfg: dict, repeats: int) -> dict:
    prompts = pd.read_parquet(run / "results" / "data" / "eval.parquet")["prompt"].tolist()
    jig = cfg["evaluation"]["jigsaw"]
    settings = GenerationSettings.greedy(jig["max_new_tokens"], jig["batch_size"], cfg["data"]["max_prompt_tokens"])
    auto = AutoGenerator(run / "results" / "base" / "model", ComputeConfig("cpu", "fp32"), run / "results" / "engine")
    times: dict[str, list[float]] = {"ctranslate2 loaded": [], "released": []}
    reference = None
    for _ in range(repeats):
        for variant in times:
            if variant == "ctranslate2 loaded":
                auto.measure(prompts, settings)  # auto's probe itself: both backends generate, the engine stays
            else:
                auto.release_engine()
            start = time.perf_counter()
            out = auto.hf.generate(prompts, settings, seed=0)
            times[variant].append(time.perf_counter() - start)
            reference = reference or out
            assert out == reference, "the loaded engine changed transformers' greedy outputs"
    return {v: {"seconds_min": min(t), "seconds": t} for v, t in times.items()} | {"prompts": len(prompts)}


def bootstrap_per_draw_vs_at_once(run: Path, cfg: dict, repeats: int) -> dict:
    rewards = pd.read_parquet(run / "results" / "irl" / "max_margin" / "seed0" / "rewards.parquet")
    r = rewards[(rewards["split"] == "heldout") & (rewards["epoch"] == rewards["epoch"].max())]
    args = (r["reward"].to_numpy(), r["gt_reward"].to_numpy(), r["gt_toxic"].to_numpy(), 0.0)
    n_resamples = cfg["irl"]["bootstrap"]["n_resamples"]
    idx = irl_metrics.resample_indices(np.random.default_rng(0), len(r), n_resamples)
    times: dict[str, list[float]] = {"per draw (scikit-learn, scipy)": [], "at once (metric_draws)": []}
    for _ in range(repeats):
        start = time.perf_counter()
        per_draw = [irl_metrics.reward_metrics(*(a[i] for a in args[:3]), args[3]) for i in idx]
        times["per draw (scikit-learn, scipy)"].append(time.perf_counter() - start)
        start = time.perf_counter()
        at_once = irl_metrics.metric_draws(*args, idx)
        times["at once (metric_draws)"].append(time.perf_counter() - start)
    diff = max(float(np.nanmax(np.abs(at_once[m] - np.array([d[m] for d in per_draw])))) for m in irl_metrics.METRICS)
    return {v: {"seconds_min": min(t), "seconds": t} for v, t in times.items()} | {
        "texts": len(r), "draws": n_resamples, "max_abs_difference": diff,
        "note": "irl_report computes 4 objectives x 2 text sets of these, and 3 paired gaps",
    }  # fmt: skip


def main() -> None:
    args = parse_args()
    warn_if_busy()
    torch.set_num_threads(2)  # the evaluate rule's threads
    run = Path(args.run)
    cfg = load_config(run / "config.yaml")
    gflops_before = matmul_gflops()
    result = {
        "engine": engine_loaded_vs_released(run, cfg, args.repeats),
        "bootstrap": bootstrap_per_draw_vs_at_once(run, cfg, args.repeats),
    }
    result = {"machine": describe_machine(), "matmul_gflops_before": gflops_before,
              "matmul_gflops_after": matmul_gflops(), **result}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
