"""Batched, seeded text generation shared by evaluation, RLHF rollouts and demonstrations.

Every generation setting is passed explicitly (transformers silently applies ``top_k=50`` when sampling unless told
otherwise). Prompts are sorted by token length so each left-padded batch wastes little compute; outputs come back in
the caller's order. Only the newly generated tokens are decoded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from workflow_scripts.lm import stop_token_ids

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


@torch.inference_mode()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    settings: GenerationSettings,
    seed: int = 0,
    progress: bool = True,
    desc: str = "generate",
) -> list[list[str]]:
    """Continue every prompt; returns ``num_return_sequences`` continuations per prompt, in prompt order.

    Sampling is seeded per batch (``seed`` + batch index) so results do not depend on what ran before.
    """
    if len(prompts) == 0:
        raise ValueError("generate() got an empty prompt list")
    if any(not isinstance(p, str) for p in prompts):
        raise TypeError("prompts must be strings")
    device = next(model.parameters()).device
    encoded = [
        tokenizer(p, add_special_tokens=False)["input_ids"][-settings.max_prompt_tokens :] or [tokenizer.eos_token_id]
        for p in prompts
    ]
    order = sorted(range(len(prompts)), key=lambda i: (len(encoded[i]), i))
    k = settings.num_return_sequences
    results: list[list[str]] = [[] for _ in prompts]
    stop_ids = stop_token_ids(tokenizer, model)
    pad_id = tokenizer.pad_token_id
    batches = [order[i : i + settings.batch_size] for i in range(0, len(order), settings.batch_size)]
    for b, idx in enumerate(tqdm(batches, desc=desc, disable=not progress, mininterval=5)):
        width = max(len(encoded[i]) for i in idx)
        input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids = encoded[i]
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention[row, width - len(ids) :] = 1
        if settings.do_sample:
            torch.manual_seed(seed + b)
        out = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            num_return_sequences=k,
            eos_token_id=stop_ids,
            pad_token_id=pad_id,
            **settings.generate_kwargs(),
        )
        new_tokens = out[:, width:].cpu()
        texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        for row, i in enumerate(idx):
            results[i] = texts[row * k : (row + 1) * k]
    return results
