"""Demonstrations (stage 4): completions of the same prompts by the expert (RLHF) and a non-expert model, as pairs.

Consumes ``results/rlhf/model/``, the non-expert checkpoint (``results/sft/model/`` by default, or the base model) and
the train/eval splits. Produces ``results/demonstrations/train.parquet`` and ``results/demonstrations/eval.parquet``:
one row per (expert, non-expert) pair with ``prompt_id``, ``prompt``, ``original_output``, ``label``/``source`` of the
source text, ``expert`` and ``non_expert`` completions, ``pair_kind`` (``greedy`` or ``sampled``) and the indices of
the two samples (``expert_sample``/``non_expert_sample``, -1 for greedy), their GT toxicity
(``gt_toxicity_expert``/``gt_toxicity_non_expert``, of the completion), the model ids and the decoding settings,
and the same pair in the preference format other tools read (``prompt``, ``chosen`` = expert, ``rejected`` =
non-expert: ``datasets.load_dataset("parquet", ...)``, then e.g. TRL's reward or DPO trainers).
IRL learns a reward from these pairs.

Per prompt of the train split: the greedy pair (``greedy: true``) and, with ``samples: k``, k sampled completions from
each model paired by index (``pairing: matched``, k pairs) or all with all (``pairing: all``, k^2 pairs). Sampling is
seeded (``seed``), so the demonstrations are reproducible. The eval split gets the greedy pair only: it describes the
two models on held-out prompts and never trains anything.

Default non-expert: the SFT model, i.e. the policy RLHF started from, so that a pair differs only in what RLHF
changed. The paper's non-expert is the base model, which also differs in everything SFT changed (domain, style);
``demonstrations.non_expert: base`` reproduces that.
"""

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from workflow_scripts.lib.atomic_io import write_parquet
from workflow_scripts.lib.config import demonstration_problems, raise_problems
from workflow_scripts.lib.engine import TextGenerator
from workflow_scripts.lib.generation import GenerationSettings
from workflow_scripts.lib.seeding import seed_everything
from workflow_scripts.lib.text_data import stratified_subsample
from workflow_scripts.lib.toxicity import ToxicityScorer

LOG = logging.getLogger("irl_llms.demonstrations")

DEMO_COLUMNS = [
    "prompt_id", "prompt", "original_output", "label", "source", "pair_kind", "expert_sample", "non_expert_sample",
    "expert", "non_expert", "gt_toxicity_expert", "gt_toxicity_non_expert", "expert_model", "non_expert_model",
    "expert_backend", "non_expert_backend", "max_new_tokens", "decoding", "chosen", "rejected",
]  # fmt: skip
PAIRINGS = ("matched", "all")


@dataclass
class DemoConfig:
    """The ``demonstrations`` section (defaults and docs in config.schema.yaml)."""

    non_expert: str  # sft | base: recorded; the rule picks the checkpoint
    n_train: int | None  # pairs from the train split; None = all
    n_eval: int | None  # pairs from the eval split; None = all
    max_new_tokens: int
    batch_size: int
    greedy: bool  # the greedy pair of every prompt
    samples: int  # k sampled completions per train prompt and model (0: none)
    pairing: str  # matched (sample i with sample i) | all (every expert sample with every non-expert sample)
    top_k: int
    top_p: float
    temperature: float
    seed: int
    max_prompt_tokens: int  # data.max_prompt_tokens, from the rule

    def __post_init__(self) -> None:
        if self.non_expert not in ("sft", "base"):
            raise ValueError(f"demonstrations.non_expert must be 'sft' or 'base', got {self.non_expert!r}")
        if self.pairing not in PAIRINGS:
            raise ValueError(f"demonstrations.pairing must be one of {PAIRINGS}, got {self.pairing!r}")
        raise_problems(demonstration_problems(asdict(self)))

    def greedy_settings(self) -> GenerationSettings:
        return GenerationSettings.greedy(self.max_new_tokens, self.batch_size, self.max_prompt_tokens)

    def sampled_settings(self) -> GenerationSettings:
        return GenerationSettings(
            max_new_tokens=self.max_new_tokens, do_sample=True, top_k=self.top_k, top_p=self.top_p,
            temperature=self.temperature, num_return_sequences=self.samples,
            batch_size=max(1, self.batch_size // self.samples), max_prompt_tokens=self.max_prompt_tokens,
        )  # fmt: skip

    def sample_pairs(self) -> list[tuple[int, int]]:
        """(expert sample, non-expert sample) index pairs of one prompt."""
        if self.pairing == "matched":
            return [(i, i) for i in range(self.samples)]
        return [(i, j) for i in range(self.samples) for j in range(self.samples)]


def select_prompts(df: pd.DataFrame, n: int | None, seed: int, path: str | Path) -> pd.DataFrame:
    if df.empty:
        raise ValueError(f"{path}: no prompts for demonstrations")
    if n is None or n >= len(df):
        return df.reset_index(drop=True)
    return stratified_subsample(df, n, seed=seed).reset_index(drop=True)


def pair_frame(df: pd.DataFrame, completions: dict[str, dict[str, list[list[str]]]], cfg: DemoConfig) -> pd.DataFrame:
    """One row per pair: for each prompt its greedy pair, then its sampled pairs (``cfg.sample_pairs``)."""
    sampled_decoding = f"sampled top_k={cfg.top_k} top_p={cfg.top_p} temperature={cfg.temperature} seed={cfg.seed}"
    rows = []
    for i, src in enumerate(df.itertuples(index=False)):
        base = {
            "prompt_id": str(src.id), "prompt": src.prompt, "original_output": src.original_output,
            "label": int(src.label), "source": src.source,
        }  # fmt: skip
        if completions["greedy"]:
            expert, non_expert = completions["greedy"]["expert"][i][0], completions["greedy"]["non_expert"][i][0]
            rows.append({**base, "pair_kind": "greedy", "expert_sample": -1, "non_expert_sample": -1,
                         "expert": expert, "non_expert": non_expert, "decoding": "greedy"})  # fmt: skip
        if completions["sampled"]:
            expert, non_expert = completions["sampled"]["expert"][i], completions["sampled"]["non_expert"][i]
            for a, b in cfg.sample_pairs():
                pair = {"pair_kind": "sampled", "expert_sample": a, "non_expert_sample": b}
                rows.append({**base, **pair, "expert": expert[a], "non_expert": non_expert[b],
                             "decoding": sampled_decoding})  # fmt: skip
    return pd.DataFrame(rows)


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
    # completions[split][kind][role]: one list of completions per prompt (1 greedy, or k samples); empty: not drawn
    completions: dict[str, dict[str, dict[str, list[list[str]]]]] = {n: {"greedy": {}, "sampled": {}} for n in splits}
    sources = {}
    backends: dict[tuple[str, str, str], str] = {}  # (split, pair kind, role) -> the backend that generated it
    for role in ("expert", "non_expert"):
        generator = open_model(role)
        sources[role] = generator.source
        for name, df in selected.items():
            prompts = df["prompt"].tolist()
            if cfg.greedy or name != "train":
                out = generator.generate(prompts, cfg.greedy_settings(), cfg.seed, desc=f"{role} {name} greedy")
                completions[name]["greedy"][role] = out
                backends[name, "greedy", role] = generator.backend
            if cfg.samples and name == "train":
                out = generator.generate(prompts, cfg.sampled_settings(), cfg.seed, desc=f"{role} {name} sampled")
                completions[name]["sampled"][role] = out
                backends[name, "sampled", role] = generator.backend
        del generator
    frames = {}
    for name, df in selected.items():
        frame = pair_frame(df, completions[name], cfg)
        frame["gt_toxicity_expert"] = gt_scorer.p_toxic(frame["expert"].tolist())
        frame["gt_toxicity_non_expert"] = gt_scorer.p_toxic(frame["non_expert"].tolist())
        frame["expert_model"] = sources["expert"]
        frame["non_expert_model"] = sources["non_expert"]
        for role in ("expert", "non_expert"):
            frame[f"{role}_backend"] = [backends[name, kind, role] for kind in frame["pair_kind"]]
        frame["max_new_tokens"] = cfg.max_new_tokens
        # the preference format of TRL and kin (prompt / chosen / rejected): the expert's completion is preferred
        frame["chosen"], frame["rejected"] = frame["expert"], frame["non_expert"]
        frame = frame[DEMO_COLUMNS]
        write_parquet(frame, splits[name][1])
        LOG.info(
            "%s: %d pairs of %d prompts; GT toxicity expert %.3f vs non-expert %.3f; identical completions %d",
            name,
            len(frame),
            frame["prompt_id"].nunique(),
            frame["gt_toxicity_expert"].mean(),
            frame["gt_toxicity_non_expert"].mean(),
            int((frame["expert"] == frame["non_expert"]).sum()),
        )
        frames[name] = frame
    LOG.info("demonstration config: %s", asdict(cfg))
    return frames
