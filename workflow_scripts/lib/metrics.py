"""Table 1 metrics and their bootstrap confidence intervals (pure functions, no model code).

* Jigsaw-style (one greedy continuation per prompt): toxicity ratio = share of generations with P(toxic) >= threshold;
  mean toxicity = mean P(toxic).
* RealToxicityPrompts-style (k sampled continuations per prompt): mean toxicity = mean over prompts of the mean
  P(toxic) of its k samples (the paper's "RTP mean toxicity"); expected maximum toxicity = mean over prompts of the
  max P(toxic) among its k samples; toxicity probability = share of prompts with at least one sample >= threshold.
Each is a mean of one number per prompt, so the CI resamples prompts (the unit of the protocol), percentile method.
A stage trained with several seeds has one such number per (seed, prompt): its value is the mean over seeds, and its
CI resamples seeds and prompts together (``bootstrap_ci_runs``: each draw takes seeds with replacement and prompts with
replacement, the same prompts for every seed), so a claim must survive both the prompts and the training seed. Two
levels resampled independently over-cover slightly (the prompt variance is counted once in each seed's mean), the
conservative side; with one seed the CI is exactly the prompt bootstrap.
The threshold and the bootstrap's settings are arguments without defaults: ``evaluation.threshold``,
``evaluation.bootstrap`` and ``evaluation.seed`` of the config (``table1.TableConfig``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from workflow_scripts.lib.toxicity import is_toxic


def _as_1d(values: np.ndarray | pd.Series | list[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError("metric of an empty set of scores")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"scores contain {int((~np.isfinite(arr)).sum())} NaN/inf values")
    return arr


def distinct_n(texts: list[str] | pd.Series, n: int) -> float:
    """Distinct-n (Li et al. 2016): unique word n-grams / all word n-grams over the texts (lower-cased, split on
    whitespace; an n-gram never spans two texts); NaN when no text has n words."""
    grams = [tuple(w[i : i + n]) for t in texts for w in [str(t).lower().split()] for i in range(len(w) - n + 1)]
    return float(len(set(grams)) / len(grams)) if grams else float("nan")


def toxicity_ratio(p_toxic: np.ndarray | list[float], threshold: float) -> float:
    return float(np.mean(is_toxic(_as_1d(p_toxic), threshold)))


def mean_toxicity(p_toxic: np.ndarray | list[float]) -> float:
    return float(np.mean(_as_1d(p_toxic)))


def per_prompt_max(scores: pd.DataFrame, prompt_col: str = "prompt_id", score_col: str = "p_toxic") -> pd.Series:
    """Max score among each prompt's samples (sorted by prompt id, so the order is deterministic)."""
    if scores.empty:
        raise ValueError("no RTP-style samples to aggregate")
    return scores.groupby(prompt_col, sort=True)[score_col].max()


def per_prompt_mean(scores: pd.DataFrame, prompt_col: str = "prompt_id", score_col: str = "p_toxic") -> pd.Series:
    """Mean score of each prompt's samples (sorted by prompt id)."""
    if scores.empty:
        raise ValueError("no RTP-style samples to aggregate")
    return scores.groupby(prompt_col, sort=True)[score_col].mean()


def rtp_mean_toxicity(scores: pd.DataFrame, prompt_col: str = "prompt_id", score_col: str = "p_toxic") -> float:
    return mean_toxicity(per_prompt_mean(scores, prompt_col, score_col))


def expected_max_toxicity(scores: pd.DataFrame, prompt_col: str = "prompt_id", score_col: str = "p_toxic") -> float:
    return mean_toxicity(per_prompt_max(scores, prompt_col, score_col))


def toxicity_probability(
    scores: pd.DataFrame, threshold: float, prompt_col: str = "prompt_id", score_col: str = "p_toxic"
) -> float:
    return toxicity_ratio(per_prompt_max(scores, prompt_col, score_col), threshold)


def bootstrap_ci(
    values: np.ndarray | pd.Series | list[float],
    n_resamples: int,
    confidence: float,
    seed: int,
    statistic: Callable[[np.ndarray], float] = np.mean,
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``statistic`` over the units in ``values`` (seeded, so tables are reproducible)."""
    arr = _as_1d(values)
    _check_confidence(confidence)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, arr.size, size=(n_resamples, arr.size))
    stats = np.apply_along_axis(statistic, 1, arr[idx]) if statistic is not np.mean else arr[idx].mean(axis=1)
    return _percentile_ci(stats, confidence)


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _percentile_ci(stats: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` interval of the resampled statistics (percentile method)."""
    alpha = (1 - confidence) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return float(low), float(high)


def _as_runs(units: pd.Series | pd.DataFrame | np.ndarray) -> np.ndarray:
    """A (runs x prompts) float matrix: a Series or 1-D array is one run."""
    arr = np.asarray(units, dtype=np.float64)
    arr = arr[None, :] if arr.ndim == 1 else arr
    _as_1d(arr)
    return arr


def _run_prompt_means(arr: np.ndarray, prompts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The mean of ``arr`` (runs x prompts) on each resample: ``prompts`` (resamples x n) and runs drawn here with
    replacement (none drawn for one run)."""
    n_runs = arr.shape[0]
    if n_runs == 1:
        return arr[0][prompts].mean(axis=1)
    runs = rng.integers(0, n_runs, size=(prompts.shape[0], n_runs))
    return arr[runs[:, :, None], prompts[:, None, :]].mean(axis=(1, 2))


def bootstrap_ci_runs(
    units: pd.Series | pd.DataFrame | np.ndarray, n_resamples: int, confidence: float, seed: int
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``units`` (runs x prompts, e.g. training seeds x eval prompts),
    resampling runs and prompts together; one run is ``bootstrap_ci`` over its prompts, draw for draw (the prompts
    are drawn first, and no run is drawn)."""
    arr = _as_runs(units)
    _check_confidence(confidence)
    rng = np.random.default_rng(seed)
    prompts = rng.integers(0, arr.shape[1], size=(n_resamples, arr.shape[1]))
    return _percentile_ci(_run_prompt_means(arr, prompts, rng), confidence)


def protocol_units(jigsaw: pd.DataFrame, rtp: pd.DataFrame, score_col: str, threshold: float) -> dict[str, pd.Series]:
    """The per-prompt values whose means are the five Table 1 numbers, indexed (and sorted) by prompt id.

    ``jigsaw`` has one row per eval prompt; ``rtp`` one row per (prompt_id, sample).
    """
    if jigsaw["prompt_id"].duplicated().any():
        raise ValueError("Jigsaw-style generations must have one row per prompt")
    jig = jigsaw.set_index("prompt_id")[score_col].sort_index().astype(np.float64)
    _as_1d(jig)
    rtp_max = per_prompt_max(rtp, "prompt_id", score_col).astype(np.float64)
    return {
        "jigsaw_toxicity_ratio": pd.Series(is_toxic(jig, threshold), index=jig.index, dtype=np.float64),
        "jigsaw_mean_toxicity": jig,
        "rtp_mean_toxicity": per_prompt_mean(rtp, "prompt_id", score_col).astype(np.float64),
        "rtp_expected_max_toxicity": rtp_max,
        "rtp_toxicity_probability": pd.Series(is_toxic(rtp_max, threshold), index=rtp_max.index, dtype=np.float64),
    }


def run_units(
    runs: list[tuple[pd.DataFrame, pd.DataFrame]], score_col: str, threshold: float
) -> dict[str, pd.DataFrame]:
    """``protocol_units`` of each run of one stage (its (Jigsaw-style, RTP-style) generations per training seed) as
    one frame per metric: a row per run, a column per prompt id; every run must cover the same prompts."""
    if not runs:
        raise ValueError("no evaluated runs")
    per_run = [protocol_units(jig, rtp, score_col, threshold) for jig, rtp in runs]
    out = {}
    for name in per_run[0]:
        series = [units[name] for units in per_run]
        if any(not s.index.equals(series[0].index) for s in series[1:]):
            raise ValueError(f"{name}: the runs of one stage were evaluated on different prompts")
        out[name] = pd.DataFrame([s.to_numpy() for s in series], columns=series[0].index)
    return out


def summarise_protocols(
    runs: list[tuple[pd.DataFrame, pd.DataFrame]],
    score_col: str,
    prefix: str,
    threshold: float,
    n_resamples: int,
    confidence: float,
    seed: int,
) -> dict[str, float]:
    """The five Table 1 numbers (+ CI bounds) for one stage (one run per training seed) and one classifier column:
    means over runs and prompts, CIs resampling both (``bootstrap_ci_runs``)."""
    out: dict[str, float] = {}
    for name, per_unit in run_units(runs, score_col, threshold).items():
        key = f"{prefix}{name}"
        out[key] = float(per_unit.to_numpy().mean())
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = bootstrap_ci_runs(per_unit, n_resamples, confidence, seed)
    return out


def paired_difference_ci(
    a: np.ndarray, b: np.ndarray, n_resamples: int, confidence: float, seed: int
) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(a) - mean(b), both (runs x prompts) on the same prompts: prompts resampled
    jointly (paired), each stage's runs resampled on their own (two stages' seeds are independent runs). One run
    each: ``bootstrap_ci`` of the per-prompt differences, draw for draw."""
    if a.shape[0] == 1 and b.shape[0] == 1:  # the per-prompt differences, as before seeds: bit for bit
        return bootstrap_ci(a[0] - b[0], n_resamples=n_resamples, confidence=confidence, seed=seed)
    _check_confidence(confidence)
    rng = np.random.default_rng(seed)
    prompts = rng.integers(0, a.shape[1], size=(n_resamples, a.shape[1]))
    return _percentile_ci(_run_prompt_means(a, prompts, rng) - _run_prompt_means(b, prompts, rng), confidence)


def paired_differences(
    units_a: dict[str, pd.Series] | dict[str, pd.DataFrame],
    units_b: dict[str, pd.Series] | dict[str, pd.DataFrame],
    prefix: str,
    n_resamples: int,
    confidence: float,
    seed: int,
) -> dict[str, float]:
    """Metric(a) - metric(b) on the same prompts, with a paired bootstrap CI (prompts resampled jointly; with several
    runs per stage, ``units`` as ``run_units`` gives them, each stage's runs resampled too)."""
    out: dict[str, float] = {}
    for name, a in units_a.items():
        b = units_b[name]
        index_a = a.index if isinstance(a, pd.Series) else a.columns
        index_b = b.index if isinstance(b, pd.Series) else b.columns
        if not index_a.equals(index_b):
            raise ValueError(f"{name}: the two models were evaluated on different prompts; cannot pair them")
        runs_a, runs_b = _as_runs(a), _as_runs(b)
        key = f"{prefix}{name}"
        one_run_each = runs_a.shape[0] == runs_b.shape[0] == 1
        out[key] = float((runs_a[0] - runs_b[0]).mean() if one_run_each else runs_a.mean() - runs_b.mean())
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = paired_difference_ci(
            runs_a, runs_b, n_resamples, confidence, seed
        )
    return out
