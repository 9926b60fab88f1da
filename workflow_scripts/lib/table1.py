"""Table 1 (stage 7b): toxicity of every evaluated model stage, with 95% bootstrap confidence intervals.

Consumes ``results/eval/{stage}.parquet`` (from ``workflow_scripts.lib.evaluation``) and the paper's own Table 1
(``resources/paper/table1_v1.csv``). Produces
  * ``reports/table1.csv``: one row per stage; the paper's columns from the *evaluation* classifier (Jigsaw-style
    toxicity ratio and mean toxicity, RTP-style mean and expected maximum toxicity and toxicity probability), each with
    ``_ci_low``/``_ci_high``, and the same five numbers from the GT reward classifier (prefix ``gt_``), which is what
    the RL optimised; beside them what a "less toxic" could also come from (``OUTPUT_SHAPE``): output length in words
    (Jigsaw-style, with CI), distinct-2 of the Jigsaw-style and RTP-style generations, and for a PPO stage its final
    KL to the SFT reference (``ppo_kl``, nats per sequence over its last fifth of iterations, from its train log);
  * ``reports/table1_differences.csv``: paired differences between stages on the same prompts (e.g. IRL-RLHF - SFT)
    with paired bootstrap CIs: a difference whose CI excludes 0 is one the evaluation can resolve;
  * ``reports/table1_claims.csv``: for each of the paper's claims ("IRL-RLHF is less toxic than SFT", "... than RLHF")
    a verdict computed from those CIs, per classifier, next to what the paper's own numbers show;
  * ``reports/table1_vs_paper.csv``: our numbers and the paper's on the paper's three columns, labelled by source;
  * ``reports/table1.md``: all of the above in words and tables, and ``reports/table1.html``, the same rendered for
    the Snakemake report (``pages.write_markdown_page``).
The rule script ``workflow_scripts/table1.py`` writes them.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workflow_scripts.lib.curves import last_fifth
from workflow_scripts.lib.inputs import read_table
from workflow_scripts.lib.metrics import (
    bootstrap_ci_runs,
    distinct_n,
    paired_differences,
    run_units,
    summarise_protocols,
)  # fmt: skip

STAGE_ORDER = ("base", "sft", "rlhf", "irl_rlhf")
# (a, b): report a - b whenever both stages were evaluated
DIFFERENCE_PAIRS = (("sft", "base"), ("rlhf", "sft"), ("irl_rlhf", "sft"), ("irl_rlhf", "rlhf"))
CLASSIFIER_COLUMNS = (("p_toxic_eval", ""), ("p_toxic_gt", "gt_"))
STAGE_LABELS = {"base": "base", "sft": "SFT", "rlhf": "RLHF", "irl_rlhf": "IRL-RLHF"}
METRIC_LABELS = {
    "jigsaw_toxicity_ratio": "Jigsaw toxicity ratio",
    "jigsaw_mean_toxicity": "Jigsaw mean toxicity",
    "rtp_mean_toxicity": "RTP mean toxicity",
    "rtp_expected_max_toxicity": "RTP expected max. toxicity",
    "rtp_toxicity_probability": "RTP toxicity probability",
}
PAPER_METRICS = ("jigsaw_toxicity_ratio", "rtp_mean_toxicity", "rtp_toxicity_probability")  # the paper's columns
# (a, b, claim): the paper's claims about its Table 1, each read as "a is less toxic than b"
CLAIMS = (
    ("irl_rlhf", "sft", "IRL-RLHF is less toxic than SFT"),
    ("irl_rlhf", "rlhf", "IRL-RLHF is less toxic than the original RLHF model"),
    ("rlhf", "sft", "RLHF is less toxic than SFT (the premise)"),
)


def stage_label(stage: str) -> str:
    return STAGE_LABELS.get(stage, stage)


@dataclass
class TableConfig:
    """What Table 1 needs from the config: labels (``model_name``, the two classifiers' kinds), the toxicity
    threshold (``evaluation.threshold``) and the bootstrap (``evaluation.bootstrap``, ``evaluation.seed``)."""

    model_name: str
    eval_classifier: str
    gt_classifier: str
    threshold: float
    n_resamples: int
    confidence: float
    seed: int


def split_protocols(generations: pd.DataFrame, stage: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    required = {"protocol", "prompt_id", "generation", "p_toxic_eval", "p_toxic_gt"}
    missing = required - set(generations.columns)
    if missing:
        raise ValueError(f"eval generations of stage {stage!r} lack columns {sorted(missing)}")
    jig = generations[generations["protocol"] == "jigsaw"]
    rtp = generations[generations["protocol"] == "rtp"]
    if jig.empty or rtp.empty:
        raise ValueError(f"eval generations of stage {stage!r}: jigsaw rows {len(jig)}, rtp rows {len(rtp)}; need both")
    return jig, rtp


# columns of reports/table1.csv that describe the output's shape rather than its toxicity (labels for the page)
OUTPUT_SHAPE = {
    "jigsaw_mean_words": "Jigsaw words per output",
    "jigsaw_distinct_2": "Jigsaw distinct-2",
    "rtp_distinct_2": "RTP distinct-2",
    "ppo_kl": "final KL to SFT (nats)",
}


def final_kl(train_log: str | Path) -> float:
    """A PPO stage's KL to its reference at the end of training: the mean summed per-sequence KL (``kl``) over the
    last fifth of its iterations, as the stage's provenance record reports it (``kl_last_fifth``)."""
    return float(last_fifth(read_table(train_log, ("iteration", "kl"), "PPO train log"))["kl"].mean())


# a stage's runs: one file, or one per training seed (a PPO stage with several rlhf.seeds), the first seed first
Runs = str | Path | Sequence[str | Path]


def _paths(runs: Runs) -> list[str | Path]:
    return [runs] if isinstance(runs, str | Path) else list(runs)


def table_row(
    generations: list[pd.DataFrame], stage: str, cfg: TableConfig, train_logs: Runs | None = None
) -> dict[str, Any]:
    """One stage's row from its runs' generations (one per training seed); each number is the mean over runs and its
    CI resamples runs and prompts (``metrics.bootstrap_ci_runs``); ``train_logs``: a PPO stage's train log(s), for
    its final KL (mean over runs; NaN without any)."""
    runs = [split_protocols(g, stage) for g in generations]
    jig, rtp = runs[0]
    row: dict[str, Any] = {
        "model": cfg.model_name,
        "stage": stage,
        "n_seeds": len(runs),
        "eval_classifier": cfg.eval_classifier,
        "gt_classifier": cfg.gt_classifier,
        "n_jigsaw_prompts": int(jig["prompt_id"].nunique()),
        "n_rtp_prompts": int(rtp["prompt_id"].nunique()),
        "rtp_samples_per_prompt": int(rtp.groupby("prompt_id").size().max()),
    }
    for col, prefix in CLASSIFIER_COLUMNS:
        row.update(summarise_protocols(runs, col, prefix, cfg.threshold, cfg.n_resamples, cfg.confidence, cfg.seed))
    words = np.stack(
        [j.groupby("prompt_id", sort=True)["generation"].first().str.split().str.len().to_numpy() for j, _ in runs]
    )
    row["jigsaw_mean_words"] = float(words.mean())
    row["jigsaw_mean_words_ci_low"], row["jigsaw_mean_words_ci_high"] = bootstrap_ci_runs(
        words, cfg.n_resamples, cfg.confidence, cfg.seed
    )
    row["jigsaw_distinct_2"] = float(np.mean([distinct_n(j["generation"], 2) for j, _ in runs]))
    row["rtp_distinct_2"] = float(np.mean([distinct_n(r["generation"], 2) for _, r in runs]))
    logs = _paths(train_logs) if train_logs is not None else []
    row["ppo_kl"] = float(np.mean([final_kl(log) for log in logs])) if logs else float("nan")
    return row


def _stage_order(stages: Sequence[str]) -> list[str]:
    return sorted(stages, key=lambda s: (STAGE_ORDER.index(s) if s in STAGE_ORDER else len(STAGE_ORDER), s))


def build_table1(
    eval_files: Mapping[str, Runs], cfg: TableConfig, train_logs: Mapping[str, Runs] | None = None
) -> pd.DataFrame:
    """One row per stage, in pipeline order (base, sft, rlhf, irl_rlhf); ``eval_files``: each stage's generations,
    one file per run; ``train_logs``: the PPO stages' logs."""
    if not eval_files:
        raise ValueError("Table 1 needs at least one evaluated stage")
    logs = train_logs or {}
    return pd.DataFrame(
        [
            table_row([pd.read_parquet(p) for p in _paths(eval_files[s])], s, cfg, logs.get(s))
            for s in _stage_order(list(eval_files))
        ]
    )


def build_differences(eval_files: Mapping[str, Runs], cfg: TableConfig) -> pd.DataFrame:
    """One row per available pair in ``DIFFERENCE_PAIRS``: metric(a) - metric(b) with paired bootstrap CIs (each
    stage's runs resampled too, where it has several)."""
    frames = {s: [split_protocols(pd.read_parquet(p), s) for p in _paths(runs)] for s, runs in eval_files.items()}
    rows = []
    for a, b in DIFFERENCE_PAIRS:
        if a not in frames or b not in frames:
            continue
        row: dict[str, Any] = {"model": cfg.model_name, "comparison": f"{a} - {b}"}
        for col, prefix in CLASSIFIER_COLUMNS:
            units_a = run_units(frames[a], col, cfg.threshold)
            units_b = run_units(frames[b], col, cfg.threshold)
            row.update(paired_differences(units_a, units_b, prefix, cfg.n_resamples, cfg.confidence, cfg.seed))
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else ["model", "comparison"])


# ============================================================================================ claims
def direction(low: float, high: float) -> str:
    """What a CI of a - b says: ``lower`` (all below 0), ``higher`` (all above 0) or ``unresolved``."""
    if high < 0:
        return "lower"
    if low > 0:
        return "higher"
    return "unresolved"


def verdict(directions: list[str]) -> str:
    """A claim "a is less toxic than b" over several columns, from each column's CI direction."""
    n, lower, higher = len(directions), directions.count("lower"), directions.count("higher")
    if lower == n:
        return "holds"
    if higher and lower:
        return f"mixed: lower on {lower}, higher on {higher} of {n} columns"
    if higher:
        return f"does not hold: higher on {higher} of {n} columns"
    if lower:
        return f"holds on {lower} of {n} columns, the rest unresolved"
    return "not resolved"


def paper_shows(paper: pd.DataFrame, a: str, b: str) -> str:
    """How many of the paper's columns have a below b, per paper model (the paper has no CIs)."""
    parts = []
    for model, rows in paper.groupby("model", sort=False):
        by_stage = rows.set_index("stage")
        if a not in by_stage.index or b not in by_stage.index:
            continue
        lower = sum(by_stage.loc[a, m] < by_stage.loc[b, m] for m in PAPER_METRICS)
        parts.append(f"{model}: lower on {lower} of {len(PAPER_METRICS)}")
    return "; ".join(parts) if parts else "not in the paper's table"


def comparison_label(comparison: str) -> str:
    """``irl_rlhf - sft`` -> ``IRL-RLHF - SFT``."""
    return " - ".join(stage_label(s.strip()) for s in comparison.split(" - "))


def _fmt_ci(value: float, low: float, high: float) -> str:
    return f"{value:+.3f} [{low:+.3f}, {high:+.3f}]"


def build_claims(
    differences: pd.DataFrame, paper: pd.DataFrame, metrics: tuple[str, ...] = PAPER_METRICS
) -> pd.DataFrame:
    """One row per (claim, classifier) whose stages were both evaluated: verdict and evidence on ``metrics``."""
    rows = []
    by_comparison = differences.set_index("comparison")
    for a, b, claim in CLAIMS:
        comparison = f"{a} - {b}"
        if comparison not in by_comparison.index:
            continue
        diff = by_comparison.loc[comparison]
        for prefix, classifier in (("", "evaluation"), ("gt_", "GT reward")):
            keys = [prefix + m for m in metrics]
            dirs = [direction(diff[f"{k}_ci_low"], diff[f"{k}_ci_high"]) for k in keys]
            evidence = "; ".join(
                f"{METRIC_LABELS[m]} {_fmt_ci(diff[k], diff[f'{k}_ci_low'], diff[f'{k}_ci_high'])} ({d})"
                for m, k, d in zip(metrics, keys, dirs, strict=True)
            )
            rows.append(
                {
                    "claim": claim,
                    "comparison": comparison_label(comparison),
                    "classifier": classifier,
                    "verdict": verdict(dirs),
                    "columns_lower": dirs.count("lower"),
                    "columns_higher": dirs.count("higher"),
                    "columns": len(dirs),
                    "evidence": evidence,
                    "paper_shows": paper_shows(paper, a, b),
                }
            )
    return pd.DataFrame(rows)


def versus_paper(table: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Our numbers (with CIs) and the paper's (without) on the paper's three columns, labelled by source."""
    ours = table[["model", "stage"]].copy()
    ours.insert(0, "source", "this run")
    for m in PAPER_METRICS:
        ours[m], ours[f"{m}_ci_low"], ours[f"{m}_ci_high"] = table[m], table[f"{m}_ci_low"], table[f"{m}_ci_high"]
    theirs = paper[["model", "stage", *PAPER_METRICS]].copy()
    theirs.insert(0, "source", "paper (arXiv 2410.12491 v1, Table 1)")
    out = pd.concat([ours, theirs], ignore_index=True)
    out["stage"] = out["stage"].map(stage_label)
    return out


def read_paper_table(path: str | Path) -> pd.DataFrame:
    paper = read_table(path, ("model", "stage", *PAPER_METRICS), "the paper's Table 1")
    values = paper[list(PAPER_METRICS)].to_numpy(dtype=float)
    if not np.all((values >= 0) & (values <= 1)):
        raise ValueError(f"{path}: the paper's Table 1 values must be fractions in [0, 1]")
    return paper


def _md_table(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, floatfmt=".3f")


def output_shape(table: pd.DataFrame) -> pd.DataFrame:
    """The ``OUTPUT_SHAPE`` columns of Table 1, formatted (the length with its CI; no KL for non-PPO stages)."""
    out = pd.DataFrame({"stage": table["stage"]})
    out[OUTPUT_SHAPE["jigsaw_mean_words"]] = [
        f"{v:.1f} [{lo:.1f}, {hi:.1f}]"
        for v, lo, hi in zip(table["jigsaw_mean_words"], table["jigsaw_mean_words_ci_low"],
                             table["jigsaw_mean_words_ci_high"], strict=True)
    ]  # fmt: skip
    for key in ("jigsaw_distinct_2", "rtp_distinct_2"):
        out[OUTPUT_SHAPE[key]] = table[key].map("{:.3f}".format)
    out[OUTPUT_SHAPE["ppo_kl"]] = table["ppo_kl"].map(lambda v: "" if np.isnan(v) else f"{v:.2f}")
    return out


def table1_markdown(
    table: pd.DataFrame, differences: pd.DataFrame, claims: pd.DataFrame, paper: pd.DataFrame, cfg: TableConfig
) -> str:
    """Table 1 in words: our table with CIs, the paired differences, the verdict on each claim, the paper's table."""
    level = f"{cfg.confidence:.0%}"

    def with_ci(frame: pd.DataFrame, keys: list[str], first: str, fmt: str) -> pd.DataFrame:
        out = pd.DataFrame({first: frame[first]})
        for k in keys:
            base = k.removeprefix("gt_")
            label = METRIC_LABELS[base] + (" (GT)" if k.startswith("gt_") else "")
            out[label] = [
                fmt.format(v, lo, hi)
                for v, lo, hi in zip(frame[k], frame[f"{k}_ci_low"], frame[f"{k}_ci_high"], strict=True)
            ]
        return out

    labelled = table.assign(stage=table["stage"].map(stage_label))
    ours = with_ci(labelled, list(METRIC_LABELS), "stage", "{:.3f} [{:.3f}, {:.3f}]")
    gt = with_ci(labelled, ["gt_" + m for m in METRIC_LABELS], "stage", "{:.3f} [{:.3f}, {:.3f}]")
    n_jig, n_rtp, k = (int(table[c].iloc[0]) for c in ("n_jigsaw_prompts", "n_rtp_prompts", "rtp_samples_per_prompt"))
    seeded = [f"{stage_label(s)} {n}" for s, n in zip(table["stage"], table["n_seeds"], strict=True) if n > 1]
    seeds_note = (
        f"Training seeds: {', '.join(seeded)}; such a stage's numbers are means over its seeds, and its CIs (and"
        " those of its differences) resample seeds and prompts together."
        if seeded
        else "One training seed per stage: the CIs cover the prompts, not the training seed."
    )
    lines = [
        f"# Table 1: {cfg.model_name}",
        "",
        "Generated by the `table1` rule from `results/eval/*.parquet`; evaluation classifier",
        f"`{cfg.eval_classifier}`, GT reward classifier `{cfg.gt_classifier}`, toxic = P(toxic) >= {cfg.threshold}.",
        f"Brackets: {level} bootstrap CIs over prompts ({cfg.n_resamples} resamples).",
        f"Jigsaw-style: {n_jig} held-out prompts, one greedy continuation each; RTP-style: {n_rtp} prompts x {k}",
        "sampled continuations. Lower is less toxic.",
        seeds_note,
        "",
        "## Evaluation classifier",
        "",
        _md_table(ours),
        "",
        "## GT reward classifier (what the RL optimised)",
        "",
        _md_table(gt),
        "",
        "## Output length, diversity and distance from SFT",
        "",
        "A stage that is less toxic only because it says less, or repeats itself, shows here: words per Jigsaw-style",
        "output (with CI), distinct-2 (unique word bigrams / all bigrams) of each protocol's generations, and for a",
        "PPO stage its KL to the SFT reference at the end of training (a claim between two PPO stages holds at",
        "these KLs; with `irl_rlhf.stop_at_kl: rlhf`, the default, IRL-RLHF trained until its KL reached RLHF's).",
        "",
        _md_table(output_shape(labelled)),
        "",
    ]
    if not claims.empty:
        lines += [
            "## The paper's claims on this run",
            "",
            f'A claim "a is less toxic than b" holds on a column when the {level} paired-bootstrap CI of a - b',
            "(same prompts) lies below 0 (*lower*); the column contradicts it when the CI lies above 0 (*higher*);",
            "otherwise the column is *unresolved*. The verdict is over the paper's columns",
            f"({', '.join(METRIC_LABELS[m] for m in PAPER_METRICS)}).",
            "",
        ]
        for _, c in claims.iterrows():
            lines.append(f"- **{c['claim']}** ({c['classifier']} classifier): **{c['verdict']}**. {c['evidence']}.")
            lines.append(f"  The paper's own numbers: {c['paper_shows']}.")
        lines.append("")
    if not differences.empty:
        keys = [p + m for p in ("", "gt_") for m in METRIC_LABELS]
        diffs = with_ci(
            differences.assign(comparison=differences["comparison"].map(comparison_label)),
            keys,
            "comparison",
            "{:+.3f} [{:+.3f}, {:+.3f}]",
        )
        lines += [
            "## Paired differences",
            "",
            _md_table(diffs.set_index("comparison").T.reset_index(names="metric")),
            "",
        ]
    shown = paper.assign(stage=paper["stage"].map(stage_label)).rename(columns=METRIC_LABELS)
    lines += [
        "## The paper's Table 1 (the paper's numbers, not this run's)",
        "",
        "arXiv 2410.12491 v1, Pythia models, other classifiers and generation lengths: compare directions, not levels",
        "(see `resources/paper/README.md`).",
        "",
        _md_table(shown),
        "",
    ]
    return "\n".join(lines)
