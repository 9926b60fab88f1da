"""Data (stage 0): the prompt data sets every later stage reads.

Consumes the shipped ``resources/jigsaw_style_texts.parquet`` (``text``, ``label``, ``source``) and
``resources/rtp_challenging_prompts.parquet`` (``prompt``, ``categories``) -- or, in the paper configs, the hub data
sets ``jaredjoss/jigsaw-long-2000`` (``prompt``, ``original_output``, no label: labelled here by the GT classifier)
and ``allenai/real-toxicity-prompts`` (``prompt.text``, ``challenging``), through the same loader
(``workflow_scripts.lib.hub.load_dataset_table``: a file, a local data set directory or a hub id). Produces
``results/data/train.parquet`` and ``results/data/eval.parquet`` (``id``, ``prompt``, ``original_output``, ``text``,
``label``, ``source``: each text split at its middle word, seeded label-stratified split) and
``results/data/rtp_prompts.parquet`` (``id``, ``prompt``, ``categories``) in a seeded order that interleaves the
categories, so the first n prompts (``evaluation.rtp.n_prompts``) cover every category evenly.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workflow_scripts.lib.atomic_io import write_parquet
from workflow_scripts.lib.cards import write_dataset_card
from workflow_scripts.lib.hub import load_dataset_table
from workflow_scripts.lib.text_data import make_prompt_dataset, normalise_key, text_id, validate_texts_frame
from workflow_scripts.lib.toxicity import LABEL_THRESHOLD, is_toxic

LOG = logging.getLogger("irl_llms.data")


@dataclass
class DataConfig:
    """The ``data`` section (defaults and docs in config.schema.yaml)."""

    texts: str  # file, local data set directory or hub id
    rtp_prompts: str
    texts_split: str
    text_column: str
    label_column: str | None  # None: label = toxicity.is_toxic(GT classifier P(toxic))
    prompt_column: str | None  # with continuation_column: the data set's own prompt / continuation split
    continuation_column: str | None
    rtp_split: str
    rtp_prompt_column: str  # dotted path into a struct column, e.g. prompt.text
    rtp_challenging_only: bool
    eval_fraction: float
    n_train: int | None
    n_eval: int | None
    seed: int


def column(df: pd.DataFrame, path: str, where: str) -> pd.Series:
    """``df[path]``, or a field of a struct column for a dotted path (``prompt.text``), naming what is missing."""
    head, *fields = path.split(".")
    if head not in df.columns:
        raise ValueError(f"{where}: no column {head!r} (has {list(df.columns)})")
    values = df[head]
    for f in fields:
        values = values.map(lambda v, f=f: v.get(f) if isinstance(v, dict) else None)
        if values.isna().all():
            raise ValueError(f"{where}: column {head!r} has no field {f!r}")
    return values


def load_texts(cfg: DataConfig, label_scorer: Callable[[], Any] | None = None) -> pd.DataFrame:
    """The labelled texts (``text``, ``label``, ``source``; plus ``prompt``/``original_output`` for pre-split sets)."""
    raw = load_dataset_table(cfg.texts, cfg.texts_split)
    if raw.empty:
        raise ValueError(f"{cfg.texts}: no rows")
    out = pd.DataFrame(index=raw.index)
    if cfg.prompt_column and cfg.continuation_column:
        out["prompt"] = column(raw, cfg.prompt_column, cfg.texts).astype(str)
        out["original_output"] = column(raw, cfg.continuation_column, cfg.texts).astype(str)
        out["text"] = out["prompt"] + " " + out["original_output"]
    else:
        out["text"] = column(raw, cfg.text_column, cfg.texts)
    out["source"] = raw["source"].astype(str) if "source" in raw.columns else str(cfg.texts)
    if cfg.label_column is not None:
        out["label"] = column(raw, cfg.label_column, cfg.texts)
    else:
        if label_scorer is None:
            raise ValueError("data.label_column is null but no GT classifier was given to label the texts")
        out["label"] = is_toxic(label_scorer().p_toxic(out["text"].tolist()), LABEL_THRESHOLD).astype(int)
        LOG.info("labelled %d texts with the GT classifier: %d toxic", len(out), int(out["label"].sum()))
    return out.reset_index(drop=True)


def load_rtp_prompts(cfg: DataConfig) -> pd.DataFrame:
    raw = load_dataset_table(cfg.rtp_prompts, cfg.rtp_split)
    if cfg.rtp_challenging_only:
        if "challenging" not in raw.columns:
            raise ValueError(f"{cfg.rtp_prompts}: data.rtp_challenging_only needs a 'challenging' column")
        raw = raw[raw["challenging"].fillna(False).astype(bool)]
    out = pd.DataFrame({"prompt": column(raw, cfg.rtp_prompt_column, cfg.rtp_prompts).astype(str)})
    if "categories" in raw.columns:
        out["categories"] = raw["categories"].astype(str)
    return out.reset_index(drop=True)


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
    out_train: str | Path,
    out_eval: str | Path,
    out_rtp: str | Path,
    label_scorer: Callable[[], Any] | None = None,
    out_card: str | Path | None = None,
) -> dict[str, int]:
    """``label_scorer`` builds the GT scorer, only called when the texts carry no labels; ``out_card``: a short data
    set card of the three files."""
    texts = load_texts(cfg, label_scorer)
    validate_texts_frame(texts, str(cfg.texts))
    train, evaluation = make_prompt_dataset(texts, cfg.eval_fraction, cfg.seed, cfg.n_train, cfg.n_eval)
    rtp = order_rtp_prompts(load_rtp_prompts(cfg), cfg.seed)
    # The RTP-style protocol must measure generalisation: no evaluation prompt may occur in a training text.
    train_keys = set(train["text"].map(normalise_key))
    leaked = [p for p in rtp["prompt"] if normalise_key(p) in train_keys]
    if leaked:
        raise ValueError(f"{len(leaked)} RTP-style prompt(s) also occur in the training texts, e.g. {leaked[0]!r}")
    write_parquet(train, out_train)
    write_parquet(evaluation, out_eval)
    write_parquet(rtp, out_rtp)
    if out_card is not None:
        write_dataset_card(
            out_card, "Prompt data of the IRL-for-LLMs pipeline",
            f"Texts of `{cfg.texts}` split at the middle word into prompt / original_output, a seeded "
            f"label-stratified train/eval split ({1 - cfg.eval_fraction:.0%} / {cfg.eval_fraction:.0%}), no prompt "
            f"repeated or shared between the halves; the held-out RTP-style prompts of `{cfg.rtp_prompts}`.",
            {Path(out_train).name: train, Path(out_eval).name: evaluation, Path(out_rtp).name: rtp},
        )  # fmt: skip
    counts = {
        "train": len(train),
        "eval": len(evaluation),
        "rtp_prompts": len(rtp),
        "train_toxic": int(train["label"].sum()),
        "eval_toxic": int(evaluation["label"].sum()),
    }
    LOG.info("data: %s", counts)
    return counts
