"""Reward callables for PPO: ``rewards(prompts, completions) -> torch.Tensor`` of one float per completion.

The contract (checked by ``check_reward_output``): as many finite scores as completions, higher = better. The
ground-truth reward of the original code is P_toxic(prompt + reference continuation) - P_toxic(prompt + completion)
under the GT classifier (``reward_text: full``): positive when the policy continues a prompt less toxically than the
original text did. ``reward_text: continuation`` scores the two continuations without the prompt.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from workflow_scripts.lib.toxicity import ToxicityScorer

LOG = logging.getLogger("irl_llms.rewards")

# a reward: (prompts, completions) -> one score per completion (the GT classifier's or a learned IRL reward model's)
RewardFn = Callable[[Sequence[str], Sequence[str]], torch.Tensor]


def check_reward_output(scores: torch.Tensor | np.ndarray | Sequence[float], n: int, what: str) -> torch.Tensor:
    """Coerce to a 1-D float tensor and enforce the contract, naming ``what`` returned the scores when they break it."""
    out = torch.as_tensor(np.asarray(scores, dtype=np.float32)).reshape(-1)
    if out.numel() != n:
        raise ValueError(f"{what} returned {out.numel()} scores for {n} completions")
    if not torch.isfinite(out).all():
        raise FloatingPointError(f"{what} returned NaN/inf for {int((~torch.isfinite(out)).sum())} of {n} completions")
    return out


def score_completions(
    reward_fn: RewardFn, monitor: RewardFn | None, prompts: list[str], completions: list[str], iteration: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The reward of each completion, checked (a NaN stops training, naming the iteration), and the monitor's (None
    without one; the reward itself when the monitor is the reward function, scored once)."""
    try:
        raw = check_reward_output(reward_fn(prompts, completions), len(prompts), "reward function")
    except FloatingPointError as err:
        raise FloatingPointError(
            f"{err} at iteration {iteration}; stopping (the last good checkpoint is kept)"
        ) from err
    if monitor is None or monitor is reward_fn:
        return raw, None if monitor is None else raw
    return raw, check_reward_output(monitor(prompts, completions), len(prompts), "monitor reward")


REWARD_TEXTS = ("full", "continuation")


def reward_texts(prompts: Sequence[str], continuations: Sequence[str], reward_text: str) -> list[str]:
    """What the GT classifier reads for each (prompt, continuation): their concatenation (``full``, the original's
    ``samples`` = prompt + output) or the continuation alone (``continuation``)."""
    if reward_text == "full":
        return [p + c for p, c in zip(prompts, continuations, strict=True)]
    if reward_text == "continuation":
        return list(continuations)
    raise ValueError(f"rlhf.reward_text must be one of {REWARD_TEXTS}, got {reward_text!r}")


class GTToxicityReward:
    """P_toxic(text with the reference continuation) - P_toxic(text with the completion), the texts built by
    ``reward_texts`` as ``reward_text`` (``rlhf.reward_text``) says; reference scores are cached."""

    def __init__(self, scorer: ToxicityScorer, references: Mapping[str, str], reward_text: str) -> None:
        if not references:
            raise ValueError("GT reward needs at least one (prompt, reference continuation) pair")
        self.scorer = scorer
        self.reward_text = reward_text
        self.references = dict(references)
        prompts = list(self.references)
        ref_texts = reward_texts(prompts, [self.references[p] for p in prompts], reward_text)
        self._ref_p = dict(zip(prompts, scorer.p_toxic(ref_texts), strict=True))

    @classmethod
    def from_pairs(
        cls, scorer: ToxicityScorer, prompts: Sequence[str], references: Sequence[str], reward_text: str
    ) -> GTToxicityReward:
        table: dict[str, str] = {}
        for p, r in zip(prompts, references, strict=True):
            if p in table and table[p] != r:
                LOG.warning("prompt %r has several reference continuations; keeping the first", p[:60])
                continue
            table[p] = r
        return cls(scorer, table, reward_text)

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        unknown = [p for p in prompts if p not in self._ref_p]
        if unknown:
            raise KeyError(f"GT reward has no reference continuation for prompt {unknown[0][:80]!r}")
        ref = np.array([self._ref_p[p] for p in prompts], dtype=np.float64)
        gen = self.scorer.p_toxic(reward_texts(prompts, completions, self.reward_text))
        return check_reward_output(ref - gen, len(prompts), "GT toxicity reward")
