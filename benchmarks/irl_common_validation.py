"""Two demonstration settings on the validation texts they share (README "What limits IRL here", the axes).

An IRL run's validation AUC is measured on the data-set texts of its validation prompts (``irl_data.validation_pairs``),
so runs of two settings can be compared on validation only where those texts are the same: two settings with the
same train prompts (``demonstrations.n_train``, ``data.*``) split them alike, up to prompts whose only pair is tied.
For each finished run given (``--run LABEL=DIR``, a pipeline run directory, or a copy made for one axis) this reads
every IRL run of ``--objective`` (``results/irl/<objective>/seed*/``, each at its validation-selected epoch), scores
its rewards on the validation texts all settings share (from ``rewards.parquet``: the train-split texts, which hold
them), and prints per run and per setting (means over seeds) the AUC against the GT label and the Spearman
correlation with the GT reward there, beside each run's held-out AUC (reported, never used to choose); then the
difference of the seed-mean AUC and Spearman of the first setting minus each other one, with a percentile bootstrap
CI that resamples the shared texts (the same draw for both).

    .venv/bin/python benchmarks/irl_common_validation.py --run default=. greedy=../axis_greedy
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from config_options import CONFIG_HELP, add_config_option, load_config_option
from scipy import stats
from sklearn.metrics import roc_auc_score

from workflow_scripts.lib.irl_data import FeatureStore, validation_pairs
from workflow_scripts.lib.irl_metrics import select_runs


def validation_rewards(run: Path, objective: str, validation_fraction: float) -> tuple[set[str], dict]:
    """The run's validation texts, and per seed the rewards, GT labels and GT rewards of its train-split texts at
    the seed's selected epoch (indexed by text), with its held-out AUC."""
    state = FeatureStore(run / "results/irl/features.pt", mmap=True).state
    texts = np.array(state["roles"]["train_texts"])
    val_texts = set(validation_pairs(state, validation_fraction)[3])
    seeds = {}
    for d in sorted((run / "results/irl" / objective).glob("seed*")):
        selected = select_runs(pd.read_parquet(d / "metrics.parquet")).iloc[0]
        r = pd.read_parquet(d / "rewards.parquet")
        r = r[(r["split"] == "train_texts") & (r["epoch"] == selected["epoch"])]
        frame = r[["reward", "gt_reward", "gt_toxic"]].set_axis(texts[r["text_index"].to_numpy()])
        seeds[d.name] = (frame, float(selected["heldout_auc"]))
    if not seeds:
        raise SystemExit(f"{run}: no finished IRL run of {objective}")
    return val_texts, seeds


def seed_mean(frames: list[pd.DataFrame], idx: np.ndarray) -> np.ndarray:
    """(mean AUC, mean Spearman) over seeds on the texts at ``idx`` (a lower reward = more toxic)."""
    auc = [roc_auc_score(f["gt_toxic"].to_numpy()[idx], -f["reward"].to_numpy()[idx]) for f in frames]
    rho = [stats.spearmanr(f["reward"].to_numpy()[idx], f["gt_reward"].to_numpy()[idx])[0] for f in frames]
    return np.array([np.mean(auc), np.mean(rho)])


def main(argv: list[str] | None = None) -> None:
    _, config = load_config_option(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="+", default=[], help=CONFIG_HELP)
    parser.add_argument("--run", nargs="+", required=True, metavar="LABEL=DIR", help="finished runs, first = base")
    add_config_option(parser, config, "--objective", "irl_rlhf.objective", str, "the IRL objective compared")
    add_config_option(parser, config, "--validation-fraction", "irl.validation_fraction", float, "the IRL split")
    add_config_option(parser, config, "--n-resamples", "irl.bootstrap.n_resamples", int, "bootstrap draws")
    add_config_option(parser, config, "--confidence", "irl.bootstrap.confidence", float, "CI level")
    args = parser.parse_args(argv)
    settings = dict(spec.split("=", 1) for spec in args.run)
    loaded = {
        label: validation_rewards(Path(d), args.objective, args.validation_fraction) for label, d in settings.items()
    }
    common = sorted(set.intersection(*(v for v, _ in loaded.values())))
    print(
        ", ".join(f"{label}: {len(v)} validation texts" for label, (v, _) in loaded.items()), f"; shared: {len(common)}"
    )
    frames = {label: [f.loc[common] for f, _ in seeds.values()] for label, (_, seeds) in loaded.items()}
    gt = frames[next(iter(frames))][0]["gt_toxic"].to_numpy()
    if any(not np.array_equal(f["gt_toxic"].to_numpy(), gt) for fs in frames.values() for f in fs):
        raise SystemExit("the settings disagree on the GT labels of the shared texts")
    rows = []
    for label, (_, seeds) in loaded.items():
        for (seed, (_, heldout)), f in zip(seeds.items(), frames[label], strict=True):
            auc, rho = seed_mean([f], np.arange(len(common)))
            rows.append({"setting": label, "run": seed, "shared_val_auc": auc, "shared_val_spearman": rho,
                         "heldout_auc": heldout})  # fmt: skip
    table = pd.DataFrame(rows)
    print(table.round(3).to_string(index=False))
    print(
        table.groupby("setting", sort=False)[["shared_val_auc", "shared_val_spearman", "heldout_auc"]].mean().round(3)
    )
    rng, n = np.random.default_rng(0), len(common)
    base, *others = frames
    alpha = (1 - args.confidence) / 2
    for other in others:
        point = seed_mean(frames[base], np.arange(n)) - seed_mean(frames[other], np.arange(n))
        draws = []
        for _ in range(args.n_resamples):
            idx = rng.integers(0, n, n)
            if 0 < gt[idx].sum() < n:  # both classes, or no AUC
                draws.append(seed_mean(frames[base], idx) - seed_mean(frames[other], idx))
        low, high = np.quantile(draws, [alpha, 1 - alpha], axis=0)
        print(f"{base} - {other} on the {n} shared validation texts: seed-mean AUC {point[0]:+.3f} "
              f"[{low[0]:+.3f}, {high[0]:+.3f}], Spearman {point[1]:+.3f} [{low[1]:+.3f}, {high[1]:+.3f}]")  # fmt: skip


if __name__ == "__main__":
    main()
