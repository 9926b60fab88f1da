"""Stage 5b, IRL report: aggregate every (objective, seed) run into tables and the paper's Figures 2 and 5.

Consumes ``results/irl/{objective}/seed{seed}/metrics.parquet`` and ``rewards.parquet``. Produces
  * ``reports/irl_metrics.csv`` -- per objective and text set (``heldout``: eval texts never trained on;
    ``train_texts``: the train split, labelled as such): the run selected by *validation* pair accuracy (across
    seeds and epochs) with 95% bootstrap CIs on accuracy, F1, Pearson, Kendall, Spearman, next to the mean / sd /
    min / max across seeds of each seed's own validation-selected epoch;
  * ``reports/irl_metrics_long.csv`` -- every metric per objective, seed and epoch (the data behind the heatmap);
  * ``reports/irl_seed_agreement.csv`` -- Spearman correlation between the learned rewards of every pair of seeds on the
    held-out texts: how (non-)identifiable the reward is, in numbers;
  * ``reports/figures/fig2_irl.png`` -- (a) held-out accuracy per epoch (bars) and correlations (lines) of each
    objective's selected run; (b) accuracy and F1 of the selected models with CIs;
  * ``reports/figures/fig5_irl_heatmap.png`` -- held-out accuracy, seed x epoch, one panel per objective.
"""

import itertools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from scipy import stats  # noqa: E402

from workflow_scripts.common import run_snakemake_job, write_csv  # noqa: E402
from workflow_scripts.figures import save_figure  # noqa: E402
from workflow_scripts.irl import reward_metrics  # noqa: E402

LOG = logging.getLogger("irl_llms.irl_report")
METRICS = ("accuracy", "f1", "pearson", "kendall", "spearman")
TEXT_SETS = ("heldout", "train_texts")


def select_runs(metrics: pd.DataFrame) -> pd.DataFrame:
    """Each seed's selected epoch (flag written by training), i.e. chosen on validation data only."""
    sel = metrics[metrics["selected"]]
    if sel.groupby(["objective", "seed"]).size().ne(1).any():
        raise ValueError("every (objective, seed) run must have exactly one selected epoch")
    return sel


def best_run(selected: pd.DataFrame) -> pd.Series:
    """Across seeds: highest validation pair accuracy, then lowest validation loss, then lowest seed."""
    ordered = selected.sort_values(["val_pair_accuracy", "val_loss", "seed"], ascending=[False, True, True])
    return ordered.iloc[0]


def bootstrap_metrics(
    rewards: np.ndarray, gt_reward: np.ndarray, gt_toxic: np.ndarray, threshold: float,
    n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0,
) -> dict[str, tuple[float, float]]:  # fmt: skip
    """Percentile bootstrap CIs of every reward metric, resampling texts."""
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {m: [] for m in METRICS}
    n = len(rewards)
    for _ in range(n_resamples):
        idx = rng.integers(0, n, n)
        values = reward_metrics(rewards[idx], gt_reward[idx], gt_toxic[idx], threshold)
        for m in METRICS:
            draws[m].append(values[m])
    alpha = (1 - confidence) / 2
    return {m: tuple(float(q) for q in np.nanquantile(v, [alpha, 1 - alpha])) for m, v in draws.items()}


def summarise(
    metrics: pd.DataFrame, rewards: dict[tuple[str, int], pd.DataFrame], n_resamples: int = 1000,
    confidence: float = 0.95, seed: int = 0,
) -> pd.DataFrame:  # fmt: skip
    selected = select_runs(metrics)
    rows = []
    for objective, group in selected.groupby("objective", sort=True):
        best = best_run(group)
        run_rewards = rewards[(objective, int(best["seed"]))]
        for text_set in TEXT_SETS:
            r = run_rewards[(run_rewards["epoch"] == best["epoch"]) & (run_rewards["split"] == text_set)]
            cis = bootstrap_metrics(
                r["reward"].to_numpy(),
                r["gt_reward"].to_numpy(),
                r["gt_toxic"].to_numpy(),
                float(best["threshold"]),
                n_resamples,
                confidence,
                seed,
            )
            row: dict[str, Any] = {
                "objective": objective, "text_set": text_set, "n_texts": len(r),
                "selected_seed": int(best["seed"]), "selected_epoch": int(best["epoch"]),
                "val_pair_accuracy": float(best["val_pair_accuracy"]), "n_seeds": int(group["seed"].nunique()),
            }  # fmt: skip
            for m in METRICS:
                col = f"{text_set}_{m}"
                row[m] = float(best[col])
                row[f"{m}_ci_low"], row[f"{m}_ci_high"] = cis[m]
                row[f"{m}_seed_mean"] = float(group[col].mean())
                row[f"{m}_seed_sd"] = float(group[col].std(ddof=1)) if len(group) > 1 else 0.0
                row[f"{m}_seed_min"], row[f"{m}_seed_max"] = float(group[col].min()), float(group[col].max())
            rows.append(row)
    return pd.DataFrame(rows)


def long_table(metrics: pd.DataFrame) -> pd.DataFrame:
    value_cols = [c for c in metrics.columns if c not in ("objective", "seed", "epoch", "selected")]
    out = metrics.melt(id_vars=["objective", "seed", "epoch", "selected"], value_vars=value_cols, var_name="metric")
    return out.sort_values(["objective", "seed", "epoch", "metric"], kind="mergesort").reset_index(drop=True)


def seed_agreement(metrics: pd.DataFrame, rewards: dict[tuple[str, int], pd.DataFrame]) -> pd.DataFrame:
    """Spearman rho between two seeds' learned rewards on the held-out texts, each at its selected epoch."""
    selected = select_runs(metrics)
    rows = []
    for objective, group in selected.groupby("objective", sort=True):
        per_seed = {}
        for _, run in group.iterrows():
            r = rewards[(objective, int(run["seed"]))]
            r = r[(r["epoch"] == run["epoch"]) & (r["split"] == "heldout")].sort_values("text_index")
            per_seed[int(run["seed"])] = r["reward"].to_numpy()
        for a, b in itertools.combinations(sorted(per_seed), 2):
            rho = stats.spearmanr(per_seed[a], per_seed[b])[0]
            rows.append({"objective": objective, "seed_a": a, "seed_b": b, "spearman": float(rho)})
    return pd.DataFrame(rows, columns=["objective", "seed_a", "seed_b", "spearman"])


# ============================================================================================ figures
def figure5_heatmap(metrics: pd.DataFrame, metric: str = "heldout_accuracy") -> plt.Figure:
    objectives = sorted(metrics["objective"].unique())
    fig, axes = plt.subplots(1, len(objectives), figsize=(5.5 * len(objectives), 3.2), squeeze=False)
    for ax, objective in zip(axes[0], objectives, strict=True):
        grid = metrics[metrics["objective"] == objective].pivot(index="seed", columns="epoch", values=metric)
        sns.heatmap(
            grid,
            ax=ax,
            vmin=0.3,
            vmax=0.8,
            cmap="viridis",
            annot=True,
            fmt=".2f",
            annot_kws={"size": 7},
            cbar_kws={"label": "held-out accuracy"},
        )
        ax.set_title(objective)
        ax.set_xlabel("epoch")
        ax.set_ylabel("seed")
    fig.suptitle("Figure 5: IRL held-out accuracy by seed and epoch (non-identifiability)", y=1.04)
    return fig


def figure2(metrics: pd.DataFrame, summary: pd.DataFrame) -> plt.Figure:
    objectives = sorted(metrics["objective"].unique())
    fig, axes = plt.subplots(1, len(objectives) + 1, figsize=(4.8 * (len(objectives) + 1), 3.6), squeeze=False)
    selected = select_runs(metrics)
    for ax, objective in zip(axes[0], objectives, strict=False):
        best = best_run(selected[selected["objective"] == objective])
        run = metrics[(metrics["objective"] == objective) & (metrics["seed"] == best["seed"])]
        ax.bar(run["epoch"], run["heldout_accuracy"], color="lightsteelblue", label="accuracy")
        for m, style in (("pearson", "-"), ("kendall", "--"), ("spearman", ":")):
            ax.plot(run["epoch"], run[f"heldout_{m}"], style, color="k", label=m)
        ax.axvline(best["epoch"], color="tab:red", lw=1, label="selected (validation)")
        ax.set_ylim(-1.0, 1.0)
        ax.axhline(0.0, color="grey", lw=0.5)
        ax.set_title(f"(a) {objective}, seed {int(best['seed'])}")
        ax.set_xlabel("epoch")
    axes[0][0].legend(fontsize=7, loc="lower right")
    ax = axes[0][-1]
    held = summary[summary["text_set"] == "heldout"].reset_index(drop=True)
    x = np.arange(len(held))
    for offset, m in ((-0.2, "accuracy"), (0.2, "f1")):
        err = np.vstack([held[m] - held[f"{m}_ci_low"], held[f"{m}_ci_high"] - held[m]])
        ax.bar(x + offset, held[m], width=0.4, yerr=err, capsize=3, label=m)
    ax.axhline(0.5, color="grey", lw=1, ls="--")
    ax.set_xticks(x, held["objective"])
    ax.set_ylim(0, 1)
    ax.set_title("(b) selected models, held-out texts (95% CI)")
    ax.legend(fontsize=7)
    fig.suptitle("Figure 2: IRL reward vs. ground truth", y=1.04)
    return fig


def build_report(
    metric_files: Sequence[str | Path], reward_files: Sequence[str | Path], outputs: dict[str, str | Path],
    n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0,
    reader: Callable[[str | Path], pd.DataFrame] = pd.read_parquet,
) -> pd.DataFrame:  # fmt: skip
    metrics = pd.concat([reader(f) for f in metric_files], ignore_index=True)
    if metrics.empty:
        raise ValueError("no IRL metrics to report")
    rewards = {}
    for f in reward_files:
        frame = reader(f)
        runs = frame[["objective", "seed"]].drop_duplicates()
        if len(runs) != 1:
            raise ValueError(f"{f}: expected the rewards of exactly one (objective, seed) run")
        rewards[(str(runs.iloc[0]["objective"]), int(runs.iloc[0]["seed"]))] = frame
    summary = summarise(metrics, rewards, n_resamples, confidence, seed)
    write_csv(summary, outputs["summary"])
    write_csv(long_table(metrics), outputs["long"], float_format="%.6f")
    write_csv(seed_agreement(metrics, rewards), outputs["agreement"])
    save_figure(figure2(metrics, summary), outputs["fig2"])
    save_figure(figure5_heatmap(metrics), outputs["fig5"])
    return summary


def _snakemake(smk: Any) -> None:
    build_report(smk.input.metrics, smk.input.rewards, dict(smk.output.items()), **smk.params.bootstrap)


if __name__ == "__main__":
    run_snakemake_job(snakemake, _snakemake)  # type: ignore[name-defined]  # noqa: F821
