"""Batched, seeded text generation shared by evaluation, RLHF rollouts and demonstrations.

Every generation setting is passed explicitly (transformers silently applies ``top_k=50`` when sampling unless told
otherwise). Prompts are sorted by token length so each left-padded batch wastes little compute; outputs come back in
the caller's order. Only the newly generated tokens are decoded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from workflow_scripts.lib.lm import pad, stop_token_ids

LOG = logging.getLogger("irl_llms.generation")


@dataclass
class GenerationSettings:
    max_new_tokens: int = 50
    do_sample: bool = False
    top_k: int = 0  # 0 disables top-k
    top_p: float = 1.0
    temperature: float = 1.0
    num_return_sequences: int = 1
    batch_size: int = 32
    max_prompt_tokens: int = 128  # prompts are cut from the left to their last ``max_prompt_tokens`` tokens

    def generate_kwargs(self) -> dict:
        kw: dict = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample}
        if self.do_sample:
            kw.update(top_k=self.top_k, top_p=self.top_p, temperature=self.temperature)
        else:
            # Greedy: neutralise any sampling defaults stored in the checkpoint's generation_config.
            kw.update(top_k=None, top_p=None, temperature=None)
        return kw


@dataclass
class Continuation:
    """One generated continuation: the (truncated) prompt ids and the response ids up to and including the first
    stop token (later padding removed), exactly as sampled, so RL code never re-tokenises decoded text."""

    prompt_ids: list[int]
    response_ids: list[int]


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], max_prompt_tokens: int
) -> list[list[int]]:
    """Token ids per prompt, cut from the left to the last ``max_prompt_tokens``; an empty prompt becomes EOS."""
    if len(prompts) == 0:
        raise ValueError("got an empty prompt list")
    if any(not isinstance(p, str) for p in prompts):
        raise TypeError("prompts must be strings")
    return [
        tokenizer(p, add_special_tokens=False)["input_ids"][-max_prompt_tokens:] or [tokenizer.eos_token_id]
        for p in prompts
    ]


def _cut_at_stop(ids: list[int], stop_ids: set[int]) -> list[int]:
    for pos, tok in enumerate(ids):
        if tok in stop_ids:
            return ids[: pos + 1]
    return ids


@torch.inference_mode()
def generate_ids(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    settings: GenerationSettings,
    seed: int = 0,
    progress: bool = True,
    desc: str = "generate",
) -> list[list[Continuation]]:
    """Continue every prompt; ``num_return_sequences`` continuations per prompt, in prompt order.

    Sampling is seeded per batch (``seed`` + batch index) so results do not depend on what ran before.
    """
    encoded = encode_prompts(tokenizer, prompts, settings.max_prompt_tokens)
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: (len(encoded[i]), i))
    k = settings.num_return_sequences
    results: list[list[Continuation]] = [[] for _ in prompts]
    stop_list = stop_token_ids(tokenizer, model)
    stop_set = set(stop_list)
    pad_id = tokenizer.pad_token_id
    batches = [order[i : i + settings.batch_size] for i in range(0, len(order), settings.batch_size)]
    for b, idx in enumerate(tqdm(batches, desc=desc, disable=not progress, mininterval=5)):
        input_ids, attention = pad([encoded[i] for i in idx], pad_id, "left")
        if settings.do_sample:
            torch.manual_seed(seed + b)
        out = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            num_return_sequences=k,
            eos_token_id=stop_list,
            pad_token_id=pad_id,
            **settings.generate_kwargs(),
        )
        new_tokens = out[:, input_ids.shape[1] :].cpu().tolist()
        for row, i in enumerate(idx):
            results[i] = [Continuation(encoded[i], _cut_at_stop(new_tokens[row * k + j], stop_set)) for j in range(k)]
    return results


def generate(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], settings: GenerationSettings,
    **options: Any,
) -> list[list[str]]:  # fmt: skip
    """Like :func:`generate_ids` (same ``seed``/``progress``/``desc`` options), decoded to text (special tokens such
    as EOS dropped)."""
    conts = generate_ids(model, tokenizer, prompts, settings, **options)
    return [
        tokenizer.batch_decode([c.response_ids for c in per_prompt], skip_special_tokens=True) for per_prompt in conts
    ]
