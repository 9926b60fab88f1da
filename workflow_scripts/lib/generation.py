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
from transformers import DynamicCache, LogitsProcessor, LogitsProcessorList, PreTrainedModel, PreTrainedTokenizerBase

from workflow_scripts.lib.lm import pad, position_ids_from_mask, stop_token_ids

LOG = logging.getLogger("irl_llms.generation")


@dataclass
class GenerationSettings:
    """How one generation call decodes. No defaults: every caller builds it from its config section (``rlhf``,
    ``demonstrations``, ``evaluation.jigsaw``/``rtp``) and ``data.max_prompt_tokens``."""

    max_new_tokens: int
    do_sample: bool
    top_k: int  # 0 disables top-k
    top_p: float
    temperature: float
    num_return_sequences: int
    batch_size: int
    max_prompt_tokens: int  # prompts are cut from the left to their last ``max_prompt_tokens`` tokens

    @classmethod
    def greedy(cls, max_new_tokens: int, batch_size: int, max_prompt_tokens: int) -> GenerationSettings:
        """One argmax continuation per prompt: no sampling filter applies (top_k 0, top_p 1, temperature 1)."""
        return cls(max_new_tokens=max_new_tokens, do_sample=False, top_k=0, top_p=1.0, temperature=1.0,
                   num_return_sequences=1, batch_size=batch_size, max_prompt_tokens=max_prompt_tokens)  # fmt: skip

    def generate_kwargs(self, seed: int) -> dict:
        """``model.generate`` options. Sampling runs through :class:`NucleusSampler` (the same filtered distribution
        as transformers' warpers, drawn without sorting the vocabulary), so generate itself decodes greedily over
        the sampler's one-hot scores; every sampling default stored in the checkpoint is neutralised."""
        kw: dict = {"max_new_tokens": self.max_new_tokens, "do_sample": False, "top_k": None, "top_p": None,
                    "temperature": None}  # fmt: skip
        if self.do_sample:
            sampler = NucleusSampler(self.top_k, self.top_p, self.temperature, seed)
            kw["logits_processor"] = LogitsProcessorList([sampler])
        return kw


# ============================================================================================ sampling
def filter_logits(scores: torch.Tensor, top_k: int, top_p: float, temperature: float, m: int = 256) -> torch.Tensor:
    """``scores`` after temperature, top-k and top-p exactly as transformers' ``TemperatureLogitsWarper``,
    ``TopKLogitsWarper`` and ``TopPLogitsWarper`` (``min_tokens_to_keep=1``) apply them in ``generate``: -inf
    outside the kept set. Top-k keeps every token tied with the k-th score; top-p keeps a token when the probability
    of the tokens above it is < ``top_p`` (so the token crossing ``top_p`` stays). The nucleus is searched among the
    ``m`` most likely tokens, then ``8m``, ... for the rows whose candidates hold less than ``top_p``: no full sort of
    the vocabulary unless a row needs it.
    ``tests/test_generation.py`` compares the result with transformers' warpers on logits built to sit on each
    boundary."""
    scores = scores.float() / temperature if temperature != 1.0 else scores.float()
    vocab = scores.shape[-1]
    if 0 < top_k < vocab:
        kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p >= 1.0:
        return scores
    probs = scores.softmax(-1)
    keep = torch.zeros_like(scores, dtype=torch.bool)
    rows = torch.arange(len(scores), device=scores.device)
    while len(rows):  # candidates: the top m, then 8m, ... until they hold top_p (at most the whole vocabulary)
        m = min(m, vocab)
        top = torch.topk(probs[rows], m, dim=-1)
        above = top.values.cumsum(-1) - top.values  # mass of the tokens ranked above each candidate
        done = (top.values.sum(-1) >= top_p) | (m == vocab)
        keep[rows[done]] = torch.zeros_like(keep[rows[done]]).scatter_(-1, top.indices[done], above[done] < top_p)
        rows, m = rows[~done], m * 8
    keep[torch.arange(len(scores)), probs.argmax(-1)] = True  # min_tokens_to_keep = 1
    return scores.masked_fill(~keep, float("-inf"))


def sample_filtered(scores: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token per row from softmax(``scores``) (scores already filtered), by inverting the CDF with one uniform
    draw per row: the distribution ``torch.multinomial`` samples, at a fraction of its cost on a 50k vocabulary."""
    cdf = scores.softmax(-1).cumsum(-1)
    u = torch.rand(len(scores), 1, generator=generator, device="cpu").to(cdf.device) * cdf[:, -1:]
    # right=True: the first token whose CDF exceeds u, so a token of zero probability (a plateau) is never drawn
    return torch.searchsorted(cdf, u, right=True).clamp_(max=scores.shape[-1] - 1).squeeze(-1)


class NucleusSampler(LogitsProcessor):
    """A logits processor that samples: filters (:func:`filter_logits`), draws one token per row from its own seeded
    generator, and returns scores that are 0 on that token and -inf elsewhere, so ``generate(do_sample=False)``
    emits exactly the drawn token. Sampling inside ``generate`` this way keeps its KV cache, stopping and padding."""

    def __init__(self, top_k: int, top_p: float, temperature: float, seed: int) -> None:
        self.top_k, self.top_p, self.temperature = top_k, top_p, temperature
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        token = sample_filtered(filter_logits(scores, self.top_k, self.top_p, self.temperature), self.generator)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(-1, token.unsqueeze(-1), 0.0)


@dataclass
class Continuation:
    """One generated continuation: the (truncated) prompt ids and the response ids up to and including the first
    stop token (later padding removed), exactly as sampled, so RL code never re-tokenises decoded text. With
    ``generate_ids(hidden_layer=n)``: ``hidden`` [prompt + response tokens, H], the input of block ``n`` at each
    position as generate computed it (the last response token, never fed back, gets zeros)."""

    prompt_ids: list[int]
    response_ids: list[int]
    hidden: torch.Tensor | None = None


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


def cut_at_stop(ids: list[int], stop_ids: set[int]) -> list[int]:
    for pos, tok in enumerate(ids):
        if tok in stop_ids:
            return ids[: pos + 1]
    return ids


def length_sorted_batches(encoded: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Indices of ``encoded`` sorted by (length, index) and cut into batches of ``batch_size``: each padded batch
    wastes little compute, and the batching is a function of the prompts alone (so seeded sampling reproduces)."""
    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i]), i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.inference_mode()
def generate_ids(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    settings: GenerationSettings,
    seed: int,
    progress: bool = True,
    desc: str = "generate",
    hidden_layer: int | None = None,
    share_prefill: bool = True,
) -> list[list[Continuation]]:
    """Continue every prompt; ``num_return_sequences`` continuations per prompt, in prompt order.

    Sampling is seeded per batch (``seed`` + batch index) so results do not depend on what ran before.
    ``hidden_layer``: also keep each continuation's hidden states at that depth (PPO caches its frozen bottom so).
    ``share_prefill``: the k continuations of a prompt share its prefill (:func:`shared_prefill`); False computes it
    once per continuation (the reference the tests compare with).
    """
    encoded = encode_prompts(tokenizer, prompts, settings.max_prompt_tokens)
    device = next(model.parameters()).device
    k = settings.num_return_sequences
    results: list[list[Continuation]] = [[] for _ in prompts]
    stop_list = stop_token_ids(tokenizer, model)
    stop_set = set(stop_list)
    pad_id = tokenizer.pad_token_id
    batches = length_sorted_batches(encoded, settings.batch_size)
    for b, idx in enumerate(tqdm(batches, desc=desc, disable=not progress, mininterval=5)):
        rows = [i for i in idx for _ in range(k)]  # k continuations per prompt, in order
        input_ids, attention = pad([encoded[i] for i in rows], pad_id, "left")
        input_ids, attention = input_ids.to(device), attention.to(device)
        shared = share_prefill and k > 1 and hidden_layer is None and input_ids.shape[1] > 1
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            eos_token_id=stop_list,
            pad_token_id=pad_id,
            return_dict_in_generate=True,
            output_hidden_states=hidden_layer is not None,
            **({"cache": shared_prefill(model, input_ids[::k], attention[::k], k)} if shared else {}),
            **settings.generate_kwargs(seed + b),  # sampling seeded per batch
        )
        new_tokens = out.sequences[:, input_ids.shape[1] :].cpu().tolist()
        for r, (i, new) in enumerate(zip(rows, new_tokens, strict=True)):
            cont = Continuation(encoded[i], cut_at_stop(new, stop_set))
            if hidden_layer is not None:
                cont.hidden = continuation_hidden(out.hidden_states, hidden_layer, r, cont)
            results[i].append(cont)
    return results


def shared_prefill(model: PreTrainedModel, input_ids: torch.Tensor, attention: torch.Tensor, k: int) -> DynamicCache:
    """The KV cache of each (left-padded) prompt but its last token, computed once per prompt and repeated for its
    ``k`` rows: ``generate`` then feeds only the last prompt token, and every sample of a prompt shares its prefill.
    With causal attention a prompt's keys and values do not depend on what follows, so each step's distribution is the
    unshared one up to fp32 rounding (the prefill's products have other shapes; ``tests/test_generation.py``)."""
    cache = DynamicCache(config=model.config)
    model(
        input_ids=input_ids[:, :-1], attention_mask=attention[:, :-1], position_ids=position_ids_from_mask(
            attention[:, :-1]), cache=cache, use_cache=True,
    )  # fmt: skip
    cache.batch_repeat_interleave(k)
    return cache


def continuation_hidden(steps: tuple, layer: int, row: int, cont: Continuation) -> torch.Tensor:
    """Row ``row`` of generate's per-step hidden states at depth ``layer``, unpadded: step 0 holds the (left-padded)
    prompt, step t the token fed at step t (response token t - 1)."""
    prompt = steps[0][layer][row, steps[0][layer].shape[1] - len(cont.prompt_ids) :]
    fed = [steps[t][layer][row] for t in range(1, len(cont.response_ids))]
    last = torch.zeros_like(prompt[:1])
    return torch.cat([prompt, *fed, last]).cpu()


def decode_continuations(tokenizer: PreTrainedTokenizerBase, conts: list[list[Continuation]]) -> list[list[str]]:
    """The response text of every continuation (special tokens such as EOS dropped)."""
    return [
        tokenizer.batch_decode([c.response_ids for c in per_prompt], skip_special_tokens=True) for per_prompt in conts
    ]


def generate(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], settings: GenerationSettings,
    seed: int, **options: Any,
) -> list[list[str]]:  # fmt: skip
    """Like :func:`generate_ids` (the same ``progress``/``desc`` options), decoded to text (special tokens such as
    EOS dropped)."""
    return decode_continuations(tokenizer, generate_ids(model, tokenizer, prompts, settings, seed, **options))
