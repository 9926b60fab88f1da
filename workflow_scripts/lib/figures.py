"""The paper's figures, drawn from pipeline artifacts only (seaborn style, matplotlib Agg); each is a rule output.

* Figure 2 (``irl_report``): IRL reward vs. the GT reward -- (a) held-out accuracy per epoch (bars) and correlations
  (lines) of each objective's selected run; (b) accuracy and F1 of the selected models with CIs.
* Figure 3 (``fig3_ppo_curves``): PPO training curves of RLHF (solid) and IRL-RLHF (dashed) over optimizer steps, from
  ``results/{rlhf,irl_rlhf}/train_log.parquet``: total and policy loss, returns mean and std, the normalised reward
  mean (what PPO saw after running-std scaling, comparable across the two rewards), the GT reward of the same
  rollouts (for IRL-RLHF logged, never optimised: does climbing the learned reward buy GT reward?) and the KL to the
  SFT reference.
* Figure 4 (``fig4_table1``): Table 1 as bars with 95% CI whiskers, from ``reports/table1.csv``: one panel per metric,
  the evaluation classifier in the top row and the GT reward classifier in the bottom row.
* Figure 5 (``irl_report``): held-out accuracy of every IRL run, seed x epoch, one panel per objective.

The drawing functions return the ``Figure`` (tests read its lines, bars and labels); ``save_figure`` writes it.
"""

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from workflow_scripts.lib.atomic_io import atomic_path  # noqa: E402
from workflow_scripts.lib.irl_metrics import CEILING, best_run, select_runs  # noqa: E402
from workflow_scripts.lib.table1 import METRIC_LABELS, STAGE_LABELS, stage_label  # noqa: E402

PPO_PANELS = (
    ("loss", "total loss"),
    ("policy_loss", "policy loss"),
    ("returns_mean", "returns mean"),
    ("returns_std", "returns std"),
    ("reward_raw_mean", "reward mean (raw, the optimised one)"),
    ("monitor_reward_mean", "GT reward mean (raw)"),
    ("reward_mean", "reward mean (clipped, scaled)"),
    ("kl", "KL to SFT (nats / sequence)"),
    ("entropy", "entropy (nats / token)"),
)
OPTIONAL_PPO_COLUMNS = {"monitor_reward_mean"}  # logged since the GT monitor; older logs lack it
PPO_STYLES = {"rlhf": "-", "irl_rlhf": "--"}
CLASSIFIER_ROWS = (("", "evaluation classifier"), ("gt_", "GT reward classifier"))


def save_figure(fig: plt.Figure, path: str | Path, vector: str | Path | None = None) -> None:
    """PNG at ``path`` (what the report shows) and, with ``vector``, the same figure as SVG (for papers)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    if vector is not None:
        with atomic_path(vector) as tmp:
            fig.savefig(tmp, bbox_inches="tight", format="svg")
    plt.close(fig)


def figure3_ppo_curves(logs: Mapping[str, pd.DataFrame]) -> plt.Figure:
    """One panel per PPO quantity; one line per stage (RLHF solid, IRL-RLHF dashed), x = optimizer step."""
    if not logs:
        raise ValueError("Figure 3 needs at least one PPO training log")
    sns.set_theme(style="whitegrid", context="paper")
    palette = dict(zip(PPO_STYLES, sns.color_palette("colorblind", len(PPO_STYLES)), strict=True))
    fig, axes = plt.subplots(3, 3, figsize=(14, 9.5))
    for ax, (column, title) in zip(axes.flat, PPO_PANELS, strict=True):
        for stage, log in logs.items():
            if column in OPTIONAL_PPO_COLUMNS and column not in log.columns:
                continue  # a log written before the monitor existed: nothing to draw
            if column not in log.columns or "step" not in log.columns:
                raise ValueError(f"PPO log of {stage!r} lacks column {column!r} or 'step'")
            ax.plot(
                log["step"], log[column], PPO_STYLES.get(stage, ":"), color=palette.get(stage), label=stage_label(stage)
            )
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
    axes.flat[0].legend()
    fig.suptitle("Figure 3: PPO training, RLHF (GT reward, solid) vs IRL-RLHF (learned reward, dashed)")
    fig.tight_layout()
    return fig


def figure_sft_loss(log: pd.DataFrame, window: int = 10) -> plt.Figure:
    """The SFT training loss per optimizer step, with its running mean over ``window`` steps; an imported SFT
    checkpoint (empty log) gets a figure that says so."""
    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(7, 3.6))
    if log.empty:
        ax.text(0.5, 0.5, "SFT checkpoint imported (sft.source: import): no training here", ha="center")
        ax.set_axis_off()
        return fig
    ax.plot(log["step"], log["loss"], color="lightsteelblue", label="loss per step")
    ax.plot(log["step"], log["loss"].rolling(window, min_periods=1).mean(), color="tab:blue", label=f"mean of {window}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.legend()
    ax.set_title("SFT training loss")
    fig.tight_layout()
    return fig


def figure4_table1(table: pd.DataFrame, metrics: tuple[str, ...] = tuple(METRIC_LABELS)) -> plt.Figure:
    """Bars = Table 1 values per stage, whiskers = their 95% bootstrap CIs; rows: evaluation / GT classifier."""
    if table.empty:
        raise ValueError("Figure 4 needs a non-empty Table 1")
    sns.set_theme(style="whitegrid", context="paper")
    stages = table["stage"].tolist()
    colors = sns.color_palette("colorblind", len(STAGE_LABELS))
    stage_colors = [colors[list(STAGE_LABELS).index(s)] if s in STAGE_LABELS else "grey" for s in stages]
    fig, axes = plt.subplots(len(CLASSIFIER_ROWS), len(metrics), figsize=(3.0 * len(metrics), 6.2), squeeze=False)
    x = np.arange(len(stages))
    for r, (prefix, row_label) in enumerate(CLASSIFIER_ROWS):
        for c, metric in enumerate(metrics):
            ax, key = axes[r][c], prefix + metric
            value = table[key].to_numpy(dtype=float)
            err = np.vstack([value - table[f"{key}_ci_low"], table[f"{key}_ci_high"] - value])
            ax.bar(x, value, yerr=err, capsize=3, color=stage_colors, edgecolor="black", linewidth=0.4)
            ax.set_xticks(x, [stage_label(s) for s in stages], rotation=30)
            ax.set_ylim(0, 1)
            ax.set_title(METRIC_LABELS[metric], fontsize=9)
            if c == 0:
                ax.set_ylabel(row_label)
    fig.suptitle(f"Table 1 of this run ({table['model'].iloc[0]}), 95% bootstrap CIs; lower is less toxic")
    fig.tight_layout()
    return fig


# ============================================================================================ IRL (Figures 2, 5)
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
    """(a) per IRL objective: held-out metrics by epoch of the validation-selected seed; (b) the selected models'
    held-out accuracy and F1 with CIs, and the supervised ceiling (when present) as a reference line and band."""
    objectives = sorted(o for o in metrics["objective"].unique() if o != CEILING)
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
    held = summary[summary["text_set"] == "heldout"]
    ceiling, held = held[held["objective"] == CEILING], held[held["objective"] != CEILING].reset_index(drop=True)
    x = np.arange(len(held))
    for offset, m in ((-0.2, "accuracy"), (0.2, "f1")):
        err = np.vstack([held[m] - held[f"{m}_ci_low"], held[f"{m}_ci_high"] - held[m]])
        ax.bar(x + offset, held[m], width=0.4, yerr=err, capsize=3, label=m)
    if not ceiling.empty:
        top = ceiling.iloc[0]
        ax.axhspan(top["accuracy_ci_low"], top["accuracy_ci_high"], color="tab:green", alpha=0.15, lw=0)
        ax.axhline(
            top["accuracy"], color="tab:green", lw=1.5, label=f"supervised ceiling, accuracy {top['accuracy']:.2f}"
        )
    ax.axhline(0.5, color="grey", lw=1, ls="--")
    ax.set_xticks(x, held["objective"])
    ax.set_ylim(0, 1)
    ax.set_title("(b) selected models, held-out texts (95% CI)")
    ax.legend(fontsize=7)
    fig.suptitle("Figure 2: IRL reward vs. ground truth", y=1.04)
    return fig
