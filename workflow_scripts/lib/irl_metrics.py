"""IRL metrics and run selection: how well a learned reward recovers the ground truth, and which run to trust.

* ``choose_threshold`` / ``reward_metrics``: accuracy and F1 (toxic = positive) of ``reward < threshold``, with the
  threshold chosen on *validation* texts, the threshold-free AUC of the reward as a toxicity detector, and Pearson /
  Kendall / Spearman correlations with the GT reward;
* ``paired_gaps``: a learned reward minus the supervised ceiling on the same held-out texts, with a paired bootstrap
  CI (texts resampled jointly);
* ``paper_protocol`` / ``paper_protocol_table``: the paper's own scoring, labelled as such (every IRL run at its
  selected epoch, all data-set texts, the reward cut at 0, no threshold tuning; the best run picked on those texts),
  beside the paper's per-run figures (``resources/paper/irl_runs.csv``);
* ``select_runs`` / ``best_run``: each seed's epoch and the best seed, chosen on validation pairs only;
* ``summarise`` / ``long_table`` / ``seed_agreement``: the tables of ``reports/irl_metrics*.csv`` and
  ``reports/irl_seed_agreement.csv`` (bootstrap CIs over texts, spread across seeds, seed-to-seed rank agreement);
* ``choose_reward_model``: the reward model IRL-RLHF optimises.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

LOG = logging.getLogger("irl_llms.irl_metrics")
METRICS = ("accuracy", "f1", "auc", "pearson", "kendall", "spearman")
GAP_METRICS = ("accuracy", "auc", "spearman")  # reported as IRL minus the supervised ceiling, with a paired CI
WITH_CI = ("accuracy", "auc", "f1")  # shown with their CIs on the report page
TEXT_SETS = ("heldout", "train_texts")
CEILING = "supervised"  # objective name of the GT-label reference run (``irl.train_irl``)
IMPLICIT = "log_ratio"  # objective name of the policy's implicit reward, scored without training (``implicit_reward``)


# ============================================================================================ reward vs ground truth
def choose_threshold(rewards: np.ndarray, toxic: np.ndarray) -> float:
    """Reward threshold below which a text is called toxic, maximising balanced accuracy on *validation* texts.

    Higher reward = less toxic. Candidates are midpoints between sorted rewards (and the extremes).
    """
    rewards, toxic = np.asarray(rewards, dtype=np.float64), np.asarray(toxic).astype(bool)
    if rewards.size == 0:
        raise ValueError("cannot choose a threshold on an empty validation set")
    r = np.sort(np.unique(rewards))
    candidates = np.concatenate([[r[0] - 1e-6], (r[:-1] + r[1:]) / 2, [r[-1] + 1e-6]])
    if toxic.all() or not toxic.any():
        LOG.warning("validation texts are all of one GT class; threshold falls back to the median reward")
        return float(np.median(rewards))
    scores = [balanced_accuracy_score(toxic, rewards < c) for c in candidates]
    return float(candidates[int(np.argmax(scores))])


def reward_metrics(rewards: np.ndarray, gt_reward: np.ndarray, gt_toxic: np.ndarray, threshold: float) -> dict:
    """Accuracy/F1 (toxic = positive) of ``reward < threshold``, AUC, and correlations with the GT reward (NaN where
    undefined: one GT class for the AUC, a constant reward for the correlations)."""
    pred_toxic = np.asarray(rewards) < threshold
    const = np.ptp(rewards) == 0
    one_class = np.all(gt_toxic) or not np.any(gt_toxic)
    return {
        "accuracy": float(accuracy_score(gt_toxic, pred_toxic)),
        "f1": float(f1_score(gt_toxic, pred_toxic, zero_division=0.0)),
        # toxic = positive, a lower reward = more toxic; no threshold involved
        "auc": float("nan") if one_class else float(roc_auc_score(gt_toxic, -np.asarray(rewards, dtype=np.float64))),
        "pearson": float("nan") if const else float(stats.pearsonr(rewards, gt_reward)[0]),
        "kendall": float("nan") if const else float(stats.kendalltau(rewards, gt_reward)[0]),
        "spearman": float("nan") if const else float(stats.spearmanr(rewards, gt_reward)[0]),
    }


# ============================================================================================ run selection
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


# ============================================================================================ tables
def resample_indices(rng: np.random.Generator, n: int, n_resamples: int) -> np.ndarray:
    """``n_resamples`` bootstrap draws of ``n`` text indices (resamples x texts), one ``rng.integers`` per draw."""
    return np.stack([rng.integers(0, n, n) for _ in range(n_resamples)])


def _row_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))


def metric_draws(
    rewards: np.ndarray, gt_reward: np.ndarray, gt_toxic: np.ndarray, threshold: float, idx: np.ndarray,
    metrics: Sequence[str] = METRICS,
) -> dict[str, np.ndarray]:  # fmt: skip
    """``reward_metrics`` of every resample ``idx[i]`` at once (``idx``: resamples x texts), equal to it within float
    rounding (tests/test_irl_metrics.py): one call per draw spent about 50 s of the default run in scikit-learn's
    input checks. AUC is the Mann-Whitney rank sum (average ranks for ties, as ``roc_auc_score``), Spearman the
    Pearson correlation of average ranks (as ``spearmanr``); Kendall's tau-b stays ``scipy.stats.kendalltau`` per
    draw."""
    r, g = (np.asarray(x, dtype=np.float64)[idx] for x in (rewards, gt_reward))
    y = np.asarray(gt_toxic).astype(bool)[idx]
    pred = r < threshold
    const = np.ptp(r, axis=1) == 0
    out: dict[str, np.ndarray] = {}
    if "accuracy" in metrics:
        out["accuracy"] = (pred == y).mean(axis=1)
    if "f1" in metrics:
        tp, fp, fn = (pred & y).sum(axis=1), (pred & ~y).sum(axis=1), (~pred & y).sum(axis=1)
        denom = 2 * tp + fp + fn
        out["f1"] = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)  # zero_division=0
    if "auc" in metrics:
        n_pos, n_neg = y.sum(axis=1), (~y).sum(axis=1)
        ranks = stats.rankdata(-r, axis=1)  # toxic = positive, a lower reward = more toxic
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = (np.where(y, ranks, 0.0).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        out["auc"] = np.where((n_pos == 0) | (n_neg == 0), np.nan, auc)
    if "pearson" in metrics:
        out["pearson"] = np.where(const, np.nan, _row_pearson(r, g))
    if "spearman" in metrics:
        out["spearman"] = np.where(const, np.nan, _row_pearson(stats.rankdata(r, axis=1), stats.rankdata(g, axis=1)))
    if "kendall" in metrics:
        out["kendall"] = np.array(
            [np.nan if c else stats.kendalltau(a, b)[0] for a, b, c in zip(r, g, const, strict=True)], dtype=np.float64
        )
    return out


def bootstrap_metrics(
    rewards: np.ndarray, gt_reward: np.ndarray, gt_toxic: np.ndarray, threshold: float,
    n_resamples: int, confidence: float, seed: int,
) -> dict[str, tuple[float, float]]:  # fmt: skip
    """Percentile bootstrap CIs of every reward metric, resampling texts."""
    idx = resample_indices(np.random.default_rng(seed), len(rewards), n_resamples)
    draws = metric_draws(rewards, gt_reward, gt_toxic, threshold, idx)
    alpha = (1 - confidence) / 2
    return {m: tuple(float(q) for q in np.nanquantile(draws[m], [alpha, 1 - alpha])) for m in METRICS}


def paired_gaps(
    a: pd.DataFrame, b: pd.DataFrame, threshold_a: float, threshold_b: float,
    n_resamples: int, confidence: float, seed: int,
) -> dict[str, tuple[float, float, float]]:  # fmt: skip
    """``GAP_METRICS`` of run ``a`` minus run ``b`` on the same texts (``text_index`` and GT must agree), each with
    its own threshold: (difference, CI low, CI high), the CI a percentile bootstrap resampling texts jointly, so the
    texts both runs find easy or hard cancel."""
    a, b = a.sort_values("text_index"), b.sort_values("text_index")
    if not np.array_equal(a["text_index"].to_numpy(), b["text_index"].to_numpy()):
        raise ValueError("paired comparison needs the same texts in both runs")
    gt_reward, gt_toxic = a["gt_reward"].to_numpy(), a["gt_toxic"].to_numpy()
    if not np.array_equal(gt_toxic, b["gt_toxic"].to_numpy()):
        raise ValueError("paired comparison: the two runs disagree on the GT labels of the same texts")
    ra, rb = a["reward"].to_numpy(), b["reward"].to_numpy()
    ma, mb = (reward_metrics(x, gt_reward, gt_toxic, t) for x, t in ((ra, threshold_a), (rb, threshold_b)))
    idx = resample_indices(np.random.default_rng(seed), len(ra), n_resamples)
    da = metric_draws(ra, gt_reward, gt_toxic, threshold_a, idx, GAP_METRICS)
    db = metric_draws(rb, gt_reward, gt_toxic, threshold_b, idx, GAP_METRICS)
    alpha = (1 - confidence) / 2
    return {m: (ma[m] - mb[m], *map(float, np.nanquantile(da[m] - db[m], [alpha, 1 - alpha]))) for m in GAP_METRICS}


def run_texts(rewards: dict[tuple[str, int], pd.DataFrame], run: pd.Series, split: str) -> pd.DataFrame:
    """One run's per-text rewards on ``split`` at the run's epoch."""
    r = rewards[(str(run["objective"]), int(run["seed"]))]
    return r[(r["epoch"] == run["epoch"]) & (r["split"] == split)]


def summarise(
    metrics: pd.DataFrame, rewards: dict[tuple[str, int], pd.DataFrame], n_resamples: int, confidence: float, seed: int
) -> pd.DataFrame:
    """Per objective and text set: the validation-selected run with bootstrap CIs (``irl.bootstrap``), the spread of
    each seed's own selected epoch, and, on the held-out texts when the supervised ceiling ran, the paired gap to
    it (``{metric}_minus_ceiling`` with its CI)."""
    selected = select_runs(metrics)
    ceiling = best_run(selected[selected["objective"] == CEILING]) if (selected["objective"] == CEILING).any() else None
    rows = []
    for objective, group in selected.groupby("objective", sort=True):
        best = best_run(group)
        for text_set in TEXT_SETS:
            r = run_texts(rewards, best, text_set)
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
                "val_pair_ties": int(best["val_pair_ties"]) if "val_pair_ties" in best else 0,
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
            if ceiling is not None and objective != CEILING and text_set == "heldout":
                gaps = paired_gaps(
                    r, run_texts(rewards, ceiling, text_set), float(best["threshold"]), float(ceiling["threshold"]),
                    n_resamples, confidence, seed,
                )  # fmt: skip
                for m, (gap, low, high) in gaps.items():
                    row[f"{m}_minus_ceiling"], row[f"{m}_minus_ceiling_ci_low"] = gap, low
                    row[f"{m}_minus_ceiling_ci_high"] = high
            rows.append(row)
    return pd.DataFrame(rows)


# ============================================================================================ the paper's protocol
PAPER_THRESHOLD = 0.0  # the released code calls a text toxic when the learned reward is below 0 (no tuning)


def paper_protocol(metrics: pd.DataFrame, rewards: dict[tuple[str, int], pd.DataFrame]) -> pd.DataFrame:
    """The paper's scoring of every IRL run (not the supervised ceiling) at its validation-selected epoch: all
    data-set texts (held-out and train split together), toxic iff the reward is below 0, against the GT label. One
    row per run: accuracy, F1, AUC, Spearman and the share of texts called toxic."""
    selected = select_runs(metrics)
    rows = []
    for _, run in selected[selected["objective"] != CEILING].iterrows():
        r = pd.concat([run_texts(rewards, run, split) for split in TEXT_SETS])
        values = reward_metrics(r["reward"].to_numpy(), r["gt_reward"].to_numpy(), r["gt_toxic"].to_numpy(),
                                PAPER_THRESHOLD)  # fmt: skip
        rows.append({
            "objective": run["objective"], "seed": int(run["seed"]), "epoch": int(run["epoch"]), "n_texts": len(r),
            **{m: values[m] for m in ("accuracy", "f1", "auc", "spearman")},
            "share_toxic": float((r["reward"] < PAPER_THRESHOLD).mean()),
        })  # fmt: skip
    return pd.DataFrame(rows)


PAPER_RUN_COLUMNS = (
    "model", "runs", "accuracy_mean", "accuracy_median", "accuracy_min", "accuracy_max", "accuracy_best", "f1_best",
    "auc_mean", "spearman_mean", "share_toxic_min", "share_toxic_max", "runs_at_least_075", "source",
)  # fmt: skip


def paper_protocol_table(runs: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Per-run statistics of ``paper_protocol`` (each objective, and all runs together), the best run picked on the
    texts it is scored on (as the paper picked its "80%"), beside the paper's own rows (``irl_runs.csv``)."""
    groups = [(f"ours: {o}", g) for o, g in runs.groupby("objective", sort=True)]
    trained = runs[runs["objective"] != IMPLICIT]  # the paper's runs are trained reward models
    if trained["objective"].nunique() > 1:
        groups.append(("ours: all trained IRL runs", trained))
    rows = []
    for name, g in groups:
        best = g.sort_values(["accuracy", "objective", "seed"], ascending=[False, True, True]).iloc[0]
        rows.append({
            "model": name, "runs": len(g), "accuracy_mean": g["accuracy"].mean(),
            "accuracy_median": g["accuracy"].median(), "accuracy_min": g["accuracy"].min(),
            "accuracy_max": g["accuracy"].max(), "accuracy_best": best["accuracy"], "f1_best": best["f1"],
            "auc_mean": g["auc"].mean(), "spearman_mean": g["spearman"].mean(),
            "share_toxic_min": g["share_toxic"].min(), "share_toxic_max": g["share_toxic"].max(),
            "runs_at_least_075": int((g["accuracy"] >= 0.75).sum()),
            "source": f"this run: {int(g['n_texts'].iloc[0])} data-set texts, best = {best['objective']} seed "
                      f"{int(best['seed'])}",
        })  # fmt: skip
    theirs = paper.assign(model="paper " + paper["model"].astype(str))
    return pd.concat([pd.DataFrame(rows), theirs[list(PAPER_RUN_COLUMNS)]], ignore_index=True)


def load_runs(
    metric_files: Sequence[str | Path], reward_files: Sequence[str | Path]
) -> tuple[pd.DataFrame, dict[tuple[str, int], pd.DataFrame]]:
    """Every run's per-epoch metrics in one frame, and each run's per-text rewards keyed by (objective, seed)."""
    metrics = pd.concat([pd.read_parquet(f) for f in metric_files], ignore_index=True)
    if metrics.empty:
        raise ValueError("no IRL metrics to report")
    rewards = {}
    for f in reward_files:
        frame = pd.read_parquet(f)
        runs = frame[["objective", "seed"]].drop_duplicates()
        if len(runs) != 1:
            raise ValueError(f"{f}: expected the rewards of exactly one (objective, seed) run")
        rewards[(str(runs.iloc[0]["objective"]), int(runs.iloc[0]["seed"]))] = frame
    return metrics, rewards


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


# ============================================================================================ the report page
def markdown_page(summary: pd.DataFrame, agreement: pd.DataFrame, protocol: pd.DataFrame) -> str:
    """``reports/irl_metrics.html`` in words and tables: the selected runs with CIs (the supervised ceiling marked)
    and their paired gap to it, the seed-to-seed agreement of each objective's rewards, and, apart, the paper's
    protocol on this run beside the paper's own runs."""
    rows = []
    for _, r in summary.iterrows():
        name = "supervised ceiling (GT labels)" if r["objective"] == CEILING else r["objective"]
        gap = ""
        if pd.notna(r.get("auc_minus_ceiling")):
            low, high = r["auc_minus_ceiling_ci_low"], r["auc_minus_ceiling_ci_high"]
            gap = f"{r['auc_minus_ceiling']:+.3f} [{low:+.3f}, {high:+.3f}]"
        rows.append(
            {
                "objective": name, "texts": f"{r['text_set']} ({int(r['n_texts'])})",
                "selected (seed, epoch)": f"{int(r['selected_seed'])}, {int(r['selected_epoch'])}",
                "validation pair accuracy (ties)": f"{r['val_pair_accuracy']:.3f} ({int(r.get('val_pair_ties', 0))})",
                **{m: f"{r[m]:.3f} [{r[m + '_ci_low']:.3f}, {r[m + '_ci_high']:.3f}]" for m in WITH_CI},
                **{m: f"{r[m]:.3f}" for m in ("pearson", "kendall", "spearman")},
                "AUC minus ceiling (paired CI)": gap,
                "accuracy across seeds": f"{r['accuracy_seed_mean']:.3f} ± {r['accuracy_seed_sd']:.3f}",
            }
        )  # fmt: skip
    table = pd.DataFrame(rows).to_markdown(index=False)
    by_objective = (
        agreement.groupby("objective")["spearman"].agg(["count", "min", "median", "max"]).reset_index()
        if not agreement.empty
        else pd.DataFrame(columns=["objective", "count", "min", "median", "max"])
    )
    agree = by_objective.rename(columns={"count": "seed pairs"}).to_markdown(index=False, floatfmt=".3f")
    shown = ["model", "runs", "accuracy_mean", "accuracy_median", "accuracy_min", "accuracy_max", "accuracy_best",
             "auc_mean", "spearman_mean", "share_toxic_min", "share_toxic_max"]  # fmt: skip
    paper_way = protocol[shown].to_markdown(index=False, floatfmt=".3f")
    return (
        "# IRL: the learned rewards against the ground truth\n\n"
        "Per objective, the run selected on *validation* pairs (seed and epoch), scored on the held-out eval texts "
        "(never seen by IRL) and on the train-split texts; 95% bootstrap CIs over texts. AUC is threshold-free (the "
        "reward as a toxicity detector); accuracy and F1 use the threshold chosen on validation texts. The supervised "
        "ceiling is the same reward model trained on GT labels: the most these features allow (its train-split row "
        "includes the texts it was trained on); each IRL row's gap to it is paired (the same held-out texts "
        "resampled jointly).\n\n"
        f"{table}\n\n## Seed agreement (non-identifiability)\n\n"
        "Spearman correlation between the rewards of two seeds on the held-out texts, over every pair of seeds.\n\n"
        f"{agree}\n\n## The paper's protocol, computed on this run (not comparable with the tables above)\n\n"
        "Every IRL run at its selected epoch, scored on all data-set texts, toxic iff the reward is below 0 (no "
        "threshold tuning); the best run is picked on the texts it is scored on, as the paper's 80% was (the best of "
        "its 78 runs for 70M). The paper's rows are recomputed from its released per-run rewards "
        "(resources/paper/irl_runs.csv).\n\n"
        f"{paper_way}\n"
    )
