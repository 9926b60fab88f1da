"""The IRL variant study (README "What limits IRL here"): which pair labels and pooling recover the GT reward best,
chosen on validation texts only, with held-out numbers reported beside.

On a finished pipeline run (``--run``: its ``results/irl/features.pt`` and, for ``log_ratio`` labels,
``results/irl/log_ratio/pairs.parquet``), trains one reward model per variant x seed with the run's own training
code (``workflow_scripts.lib.irl.train_irl``) and the ``irl`` settings of the config, overriding only the variant's
keys, into ``<run>/results/irl_variants/<variant>/seed<k>/`` (a finished run is reused, so the study resumes).
Variants (``pair_labels``/``pooling``; ``gt`` is a diagnostic that reads the GT classifier, not IRL; ``ceiling`` is
the supervised ceiling of each pooling):

    expert/last (the paper's), expert/mean, log_ratio/last, log_ratio/mean, gt/last, gt/mean, ceiling/last,
    ceiling/mean

and, without training, the run's implicit reward (``results/irl/log_ratio/seed0``). Writes one row per run and one
per variant (means over seeds; the held-out paired gap to the same pooling's ceiling, seed 0, with its bootstrap CI,
for the run each variant would pick on validation AUC) to ``--out`` (CSV, plus ``.md``), with each job's seconds and
the machine's fp32 matmul rate.

    .venv/bin/python benchmarks/irl_variants.py --run . --seeds 0 1 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd
from config_options import CONFIG_HELP, add_config_option, load_config_option
from machine import describe_machine, matmul_gflops

from workflow_scripts.lib.config import from_config
from workflow_scripts.lib.irl import IRLConfig, train_irl
from workflow_scripts.lib.irl_metrics import CEILING, paired_gaps, select_runs

VARIANTS = {
    "expert/last": {"pair_labels": "expert", "pooling": "last"},
    "expert/mean": {"pair_labels": "expert", "pooling": "mean"},
    "log_ratio/last": {"pair_labels": "log_ratio", "pooling": "last"},
    "log_ratio/mean": {"pair_labels": "log_ratio", "pooling": "mean"},
    "gt/last": {"pair_labels": "gt", "pooling": "last"},
    "gt/mean": {"pair_labels": "gt", "pooling": "mean"},
    "ceiling/last": {"objective": CEILING, "pooling": "last"},
    "ceiling/mean": {"objective": CEILING, "pooling": "mean"},
}
REPORTED = ("auc", "spearman", "accuracy")


def train_one(run: Path, cfg: IRLConfig, out: Path) -> dict[str, Any]:
    """One variant x seed (skipped when its metrics exist); returns its selected row and wall seconds."""
    import torch

    torch.set_num_threads(1)  # --jobs processes side by side, one core each
    seconds = float("nan")
    if not (out / "metrics.parquet").exists():
        start = time.perf_counter()
        pairs = run / "results/irl/log_ratio/pairs.parquet" if cfg.pair_labels == "log_ratio" else None
        train_irl(
            cfg, run / "results/base/model", run / "results/irl/features.pt", out / "reward_model",
            out / "metrics.parquet", out / "rewards.parquet", None, run / "results/irl/frozen_backbone.safetensors",
            pairs,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        (out / "seconds.json").write_text(json.dumps({"seconds": seconds}))
    elif (out / "seconds.json").exists():
        seconds = json.loads((out / "seconds.json").read_text())["seconds"]
    return {"seconds": seconds}


def run_row(variant: str, seed: int, epoch: int, seconds: float, selected: pd.Series) -> dict[str, Any]:
    """One run's row: its validation and held-out columns at the selected epoch."""
    return {"variant": variant, "seed": seed, "epoch": epoch, "seconds": seconds,
            **{f"{split}_{m}": selected[f"{split}_{m}"] for split in ("val", "heldout") for m in REPORTED}}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    _, config = load_config_option(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="+", default=[], help=CONFIG_HELP)
    parser.add_argument("--run", type=Path, required=True, help="directory of a finished pipeline run")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side, one torch thread each")
    add_config_option(parser, config, "--objective", "irl_rlhf.objective", str, "the IRL objective of every variant")
    add_config_option(parser, config, "--n-resamples", "irl.bootstrap.n_resamples", int, "paired bootstrap draws")
    add_config_option(parser, config, "--confidence", "irl.bootstrap.confidence", float, "CI level")
    parser.add_argument("--out", type=Path, default=None, help="default: <run>/results/benchmarks/irl_variants.csv")
    args = parser.parse_args(argv)
    run = args.run.resolve()
    if config["irl"]["init"] != "base":
        raise SystemExit("this study reads results/base/model as the backbone: irl.init must be base")
    out_csv = args.out or run / "results/benchmarks/irl_variants.csv"
    settings = {f.name for f in fields(IRLConfig)}  # the irl keys a training job reads (as rule irl_train passes)
    base = from_config(IRLConfig, "irl", {k: v for k, v in config["irl"].items() if k in settings},
                       objective=args.objective, seed=0)  # fmt: skip
    jobs = []
    for name in args.variants:
        for seed in args.seeds:
            cfg = replace(base, seed=seed, **VARIANTS[name])
            jobs.append((name, seed, cfg, run / "results/irl_variants" / name.replace("/", "_") / f"seed{seed}"))
    machine = {**describe_machine(), "matmul_gflops_2048": round(matmul_gflops(), 1)}
    print(json.dumps(machine))
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        timings = list(pool.map(train_one, *zip(*[(run, cfg, out) for _, _, cfg, out in jobs], strict=True)))
    rows, texts = [], {}
    for (name, seed, _, out), timing in zip(jobs, timings, strict=True):
        sel = select_runs(pd.read_parquet(out / "metrics.parquet")).iloc[0]
        rewards = pd.read_parquet(out / "rewards.parquet")
        heldout = rewards[(rewards.epoch == sel["epoch"]) & (rewards.split == "heldout")]
        texts[(name, seed)] = (heldout, sel["threshold"])
        rows.append(run_row(name, seed, int(sel["epoch"]), timing["seconds"], sel))
    implicit = run / "results/irl/log_ratio/seed0"
    if (implicit / "metrics.parquet").exists():  # the run's implicit reward: no training, one "seed"
        sel = pd.read_parquet(implicit / "metrics.parquet").iloc[0]
        rewards = pd.read_parquet(implicit / "rewards.parquet")
        texts[("implicit", 0)] = (rewards[rewards.split == "heldout"], sel["threshold"])
        rows.append(run_row("implicit", 0, 0, float("nan"), sel))
    runs = pd.DataFrame(rows)
    summary = []
    for name, group in runs.groupby("variant", sort=False):
        picked = group.sort_values(["val_auc", "seed"], ascending=[False, True]).iloc[0]
        row = {"variant": name, "seeds": len(group), "minutes_per_run": group["seconds"].mean() / 60,
               **{c: group[c].mean() for c in group.columns if c.startswith(("val_", "heldout_"))},
               "picked_seed": int(picked["seed"]), "picked_heldout_auc": picked["heldout_auc"]}  # fmt: skip
        pooling = VARIANTS.get(name, {"pooling": "last"})["pooling"]
        ceiling = texts.get((f"ceiling/{pooling}", 0))
        if ceiling is not None and not name.startswith("ceiling"):
            own, threshold = texts[(name, int(picked["seed"]))]
            gaps = paired_gaps(own, ceiling[0], threshold, ceiling[1], args.n_resamples, args.confidence, seed=0)
            for m, (d, lo, hi) in gaps.items():
                row[f"{m}_minus_ceiling"] = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        summary.append(row)
    summary_df = pd.DataFrame(summary).sort_values("val_auc", ascending=False)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out_csv.with_name(out_csv.stem + "_runs.csv"), index=False)
    summary_df.to_csv(out_csv, index=False)
    text = f"machine: {machine['cpu']}, fp32 2048² matmul {machine['matmul_gflops_2048']} GFLOP/s\n\n"
    text += summary_df.to_markdown(index=False, floatfmt=".3f")
    out_csv.with_suffix(".md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
