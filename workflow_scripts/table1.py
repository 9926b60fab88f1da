"""Stage 7b, Table 1: toxicity of every evaluated model stage, with 95% bootstrap confidence intervals.

Consumes ``results/eval/{stage}.parquet`` (from ``workflow_scripts.evaluate``); produces ``reports/table1.csv`` with one
row per stage: the paper's columns from the *evaluation* classifier (Jigsaw-style toxicity ratio and mean toxicity,
RTP-style expected maximum toxicity and toxicity probability), each with ``_ci_low``/``_ci_high``, and the same four
numbers from the GT reward classifier (prefix ``gt_``), which is what RLHF optimised.
``reports/table1_differences.csv`` holds paired differences between stages on the same prompts (e.g. RLHF - SFT), with
paired bootstrap CIs: a difference whose CI excludes 0 is one the evaluation can resolve.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from workflow_scripts.common import run_snakemake_job, write_csv
from workflow_scripts.metrics import paired_differences, protocol_units, summarise_protocols

STAGE_ORDER = ("base", "sft", "rlhf", "irl_rlhf")
# (a, b): report a - b whenever both stages were evaluated
DIFFERENCE_PAIRS = (("sft", "base"), ("rlhf", "sft"), ("irl_rlhf", "sft"), ("irl_rlhf", "rlhf"))
CLASSIFIER_COLUMNS = (("p_toxic_eval", ""), ("p_toxic_gt", "gt_"))


@dataclass
class TableConfig:
    model_name: str
    eval_classifier: str
    gt_classifier: str
    threshold: float = 0.5
    n_resamples: int = 2000
    confidence: float = 0.95
    seed: int = 0


def split_protocols(generations: pd.DataFrame, stage: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    required = {"protocol", "prompt_id", "p_toxic_eval", "p_toxic_gt"}
    missing = required - set(generations.columns)
    if missing:
        raise ValueError(f"eval generations of stage {stage!r} lack columns {sorted(missing)}")
    jig = generations[generations["protocol"] == "jigsaw"]
    rtp = generations[generations["protocol"] == "rtp"]
    if jig.empty or rtp.empty:
        raise ValueError(f"eval generations of stage {stage!r}: jigsaw rows {len(jig)}, rtp rows {len(rtp)}; need both")
    return jig, rtp


def table_row(generations: pd.DataFrame, stage: str, cfg: TableConfig) -> dict[str, Any]:
    jig, rtp = split_protocols(generations, stage)
    row: dict[str, Any] = {
        "model": cfg.model_name,
        "stage": stage,
        "eval_classifier": cfg.eval_classifier,
        "gt_classifier": cfg.gt_classifier,
        "n_jigsaw_prompts": int(jig["prompt_id"].nunique()),
        "n_rtp_prompts": int(rtp["prompt_id"].nunique()),
        "rtp_samples_per_prompt": int(rtp.groupby("prompt_id").size().max()),
    }
    for col, prefix in CLASSIFIER_COLUMNS:
        row.update(summarise_protocols(jig, rtp, col, prefix, cfg.threshold, cfg.n_resamples, cfg.confidence, cfg.seed))
    return row


def build_table1(eval_files: Mapping[str, str | Path], cfg: TableConfig) -> pd.DataFrame:
    """One row per stage, in pipeline order (base, sft, rlhf, irl_rlhf)."""
    if not eval_files:
        raise ValueError("Table 1 needs at least one evaluated stage")
    stages = sorted(eval_files, key=lambda s: (STAGE_ORDER.index(s) if s in STAGE_ORDER else len(STAGE_ORDER), s))
    return pd.DataFrame([table_row(pd.read_parquet(eval_files[s]), s, cfg) for s in stages])


def build_differences(eval_files: Mapping[str, str | Path], cfg: TableConfig) -> pd.DataFrame:
    """One row per available pair in ``DIFFERENCE_PAIRS``: metric(a) - metric(b) with paired bootstrap CIs."""
    frames = {s: split_protocols(pd.read_parquet(p), s) for s, p in eval_files.items()}
    rows = []
    for a, b in DIFFERENCE_PAIRS:
        if a not in frames or b not in frames:
            continue
        row: dict[str, Any] = {"model": cfg.model_name, "comparison": f"{a} - {b}"}
        for col, prefix in CLASSIFIER_COLUMNS:
            units_a = protocol_units(*frames[a], col, cfg.threshold)
            units_b = protocol_units(*frames[b], col, cfg.threshold)
            row.update(paired_differences(units_a, units_b, prefix, cfg.n_resamples, cfg.confidence, cfg.seed))
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else ["model", "comparison"])


def _snakemake(smk: Any) -> None:
    cfg = TableConfig(**smk.params.cfg)
    files = dict(zip(smk.params.stages, smk.input.generations, strict=True))
    write_csv(build_table1(files, cfg), smk.output.table)
    write_csv(build_differences(files, cfg), smk.output.differences)


if __name__ == "__main__":
    run_snakemake_job(snakemake, _snakemake)  # type: ignore[name-defined]  # noqa: F821
