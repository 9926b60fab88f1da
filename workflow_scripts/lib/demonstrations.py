"""Demonstrations (stage 4): greedy completions of the same prompts by the expert (RLHF) and a non-expert model.

Consumes ``results/rlhf/model/``, the non-expert checkpoint (``results/sft/model/`` by default, or the base model) and
the train/eval splits. Produces ``results/demonstrations/train.parquet`` and ``results/demonstrations/eval.parquet``:
one row per prompt with ``prompt_id``, ``prompt``, ``original_output``, ``label``/``source`` of the source text,
``expert`` and ``non_expert`` completions, their GT toxicity (``gt_toxicity_expert``/``gt_toxicity_non_expert``),
the model ids and the generation settings. IRL learns a reward from these pairs.

Default non-expert: the SFT model, i.e. the policy RLHF started from, so that a pair differs only in what RLHF
changed. The paper's non-expert is the base model, which also differs in everything SFT changed (domain, style);
``demonstrations.non_expert: base`` reproduces that.
"""

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from workflow_scripts.lib.common import seed_everything, write_parquet
from workflow_scripts.lib.engine import TextGenerator
from workflow_scripts.lib.generation import GenerationSettings
from workflow_scripts.lib.text_data import stratified_subsample
from workflow_scripts.lib.toxicity import ToxicityScorer

LOG = logging.getLogger("irl_llms.demonstrations")

DEMO_COLUMNS = [
    "prompt_id", "prompt", "original_output", "label", "source", "expert", "non_expert",
    "gt_toxicity_expert", "gt_toxicity_non_expert", "expert_model", "non_expert_model", "max_new_tokens", "decoding",
]  # fmt: skip


@dataclass
class DemoConfig:
    """The ``demonstrations`` section (defaults and docs in config.schema.yaml)."""

    non_expert: str  # sft | base: recorded; the rule picks the checkpoint
    n_train: int | None  # pairs from the train split; None = all
    n_eval: int | None  # pairs from the eval split; None = all
    max_new_tokens: int
    batch_size: int
    seed: int

    def __post_init__(self) -> None:
        if self.non_expert not in ("sft", "base"):
            raise ValueError(f"demonstrations.non_expert must be 'sft' or 'base', got {self.non_expert!r}")


def select_prompts(df: pd.DataFrame, n: int | None, seed: int, path: str | Path) -> pd.DataFrame:
    if df.empty:
        raise ValueError(f"{path}: no prompts for demonstrations")
    if n is None or n >= len(df):
        return df.reset_index(drop=True)
    return stratified_subsample(df, n, seed=seed).reset_index(drop=True)


def make_demonstrations(
    cfg: DemoConfig,
    open_model: Callable[[str], TextGenerator],
    splits: dict[str, tuple[str | Path, str | Path]],
    gt_scorer: ToxicityScorer,
) -> dict[str, pd.DataFrame]:
    """``splits`` maps split name -> (prompt parquet, output parquet); both models complete every selected prompt.
    ``open_model(role)`` opens the ``expert`` or ``non_expert`` checkpoint (``engine.open_generator``), one at a
    time."""
    seed_everything(cfg.seed)
    selected = {
        name: select_prompts(pd.read_parquet(src), cfg.n_train if name == "train" else cfg.n_eval, cfg.seed, src)
        for name, (src, _) in splits.items()
    }
    settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, do_sample=False, batch_size=cfg.batch_size)
    completions: dict[str, dict[str, list[str]]] = {name: {} for name in splits}
    sources = {}
    for role in ("expert", "non_expert"):
        generator = open_model(role)
        sources[role] = generator.source
        for name, df in selected.items():
            out = generator.generate(df["prompt"].tolist(), settings, desc=f"{role} {name}")
            completions[name][role] = [c[0] for c in out]
        del generator
    frames = {}
    for name, df in selected.items():
        frame = pd.DataFrame(
            {
                "prompt_id": df["id"].astype(str),
                "prompt": df["prompt"],
                "original_output": df["original_output"],
                "label": df["label"].astype(int),
                "source": df["source"],
                "expert": completions[name]["expert"],
                "non_expert": completions[name]["non_expert"],
            }
        )
        frame["gt_toxicity_expert"] = gt_scorer.p_toxic(frame["expert"].tolist())
        frame["gt_toxicity_non_expert"] = gt_scorer.p_toxic(frame["non_expert"].tolist())
        frame["expert_model"] = sources["expert"]
        frame["non_expert_model"] = sources["non_expert"]
        frame["max_new_tokens"] = cfg.max_new_tokens
        frame["decoding"] = "greedy"
        frame = frame[DEMO_COLUMNS]
        write_parquet(frame, splits[name][1])
        LOG.info(
            "%s: %d pairs; GT toxicity expert %.3f vs non-expert %.3f; identical completions %d",
            name,
            len(frame),
            frame["gt_toxicity_expert"].mean(),
            frame["gt_toxicity_non_expert"].mean(),
            int((frame["expert"] == frame["non_expert"]).sum()),
        )
        frames[name] = frame
    LOG.info("demonstration config: %s", asdict(cfg))
    return frames
