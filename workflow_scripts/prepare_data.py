"""Stage 0, data: the prompt data sets every later stage reads.

Consumes the shipped ``resources/jigsaw_style_texts.parquet`` (``text``, ``label``, ``source``) and
``resources/rtp_challenging_prompts.parquet`` (``prompt``, ``categories``). Produces
``results/data/train.parquet`` and ``results/data/eval.parquet`` (``id``, ``prompt``, ``original_output``, ``text``,
``label``, ``source``: each text split at its middle word, seeded label-stratified split) and
``results/data/rtp_prompts.parquet`` (``id``, ``prompt``, ``categories``) in a seeded order that interleaves the
categories, so the first n prompts (``evaluation.rtp.n_prompts``) cover every category evenly.
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workflow_scripts.common import dataclass_from_dict, run_snakemake_job, write_parquet
from workflow_scripts.text_data import make_prompt_dataset, normalise_key, text_id, validate_texts_frame

LOG = logging.getLogger("irl_llms.data")


@dataclass
class DataConfig:
    texts: str
    rtp_prompts: str
    eval_fraction: float = 0.2
    n_train: int | None = None
    n_eval: int | None = None
    seed: int = 0


def order_rtp_prompts(rtp: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Seeded shuffle within each (first) category, then round-robin across categories."""
    if "prompt" not in rtp.columns or rtp.empty:
        raise ValueError("RTP prompt set is empty or has no 'prompt' column")
    rtp = rtp.copy()
    if "categories" not in rtp.columns:
        rtp["categories"] = "unknown"
    rtp["id"] = rtp["prompt"].map(text_id)
    rtp = rtp.drop_duplicates("id").sort_values("id", kind="mergesort").reset_index(drop=True)
    rng = np.random.default_rng(seed)
    first = rtp["categories"].astype(str).str.split(",").str[0]
    rtp["_rank"] = 0
    for cat in sorted(first.unique()):
        idx = np.flatnonzero(first.to_numpy() == cat)
        rtp.loc[idx, "_rank"] = rng.permutation(len(idx))
    rtp["_cat"] = first
    rtp = rtp.sort_values(["_rank", "_cat"], kind="mergesort").reset_index(drop=True)
    return rtp[["id", "prompt", "categories"]]


def prepare_data(
    cfg: DataConfig,
    texts_path: str | Path,
    rtp_path: str | Path,
    out_train: str | Path,
    out_eval: str | Path,
    out_rtp: str | Path,
) -> dict[str, int]:
    texts = pd.read_parquet(texts_path)
    validate_texts_frame(texts, str(texts_path))
    train, evaluation = make_prompt_dataset(texts, cfg.eval_fraction, cfg.seed, cfg.n_train, cfg.n_eval)
    rtp = order_rtp_prompts(pd.read_parquet(rtp_path), cfg.seed)
    # The RTP-style protocol must measure generalisation: no evaluation prompt may occur in a training text.
    train_keys = set(train["text"].map(normalise_key))
    leaked = [p for p in rtp["prompt"] if normalise_key(p) in train_keys]
    if leaked:
        raise ValueError(f"{len(leaked)} RTP-style prompt(s) also occur in the training texts, e.g. {leaked[0]!r}")
    write_parquet(train, out_train)
    write_parquet(evaluation, out_eval)
    write_parquet(rtp, out_rtp)
    counts = {
        "train": len(train),
        "eval": len(evaluation),
        "rtp_prompts": len(rtp),
        "train_toxic": int(train["label"].sum()),
        "eval_toxic": int(evaluation["label"].sum()),
    }
    LOG.info("data: %s", counts)
    return counts


def _snakemake(smk: Any) -> None:
    cfg = dataclass_from_dict(DataConfig, smk.params.cfg)
    prepare_data(cfg, smk.input.texts, smk.input.rtp, smk.output.train, smk.output.eval, smk.output.rtp)


if __name__ == "__main__":
    run_snakemake_job(snakemake, _snakemake)  # type: ignore[name-defined]  # noqa: F821
