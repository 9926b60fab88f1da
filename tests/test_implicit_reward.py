"""The policy's implicit reward (lib/implicit_reward.py): the expert's summed log-ratio to the non-expert over a
completion's tokens, on a tiny real model and a perturbed copy of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import FP32_EPS, network_depth
from workflow_scripts.lib.compute import ComputeConfig
from workflow_scripts.lib.implicit_reward import log_ratio, shared_bottom
from workflow_scripts.lib.irl_data import text_parts
from workflow_scripts.lib.lm import final_norm, load_lm, transformer_blocks

CPU = ComputeConfig(device="cpu", precision="fp32")
PROMPTS = ["a short one", "and a considerably longer prompt here", "x"]
COMPLETIONS = [" that ends", " and goes on for a while longer", ""]


@pytest.fixture(params=["all", "top"])
def two_models(request: pytest.FixtureRequest, tiny_model_dir: Path) -> tuple:
    """An expert moved away from its reference, as RLHF moves it: every weight (``all``; nothing shared) or only the
    top block, norm and head (``top``: as PPO with one unfrozen layer; the bottom is then computed once for both)."""
    expert, non_expert = load_lm(tiny_model_dir, CPU), load_lm(tiny_model_dir, CPU)
    model = expert[0]
    moved = list(model.parameters())
    if request.param == "top":
        moved = [*transformer_blocks(model)[-1].parameters(), *final_norm(model).parameters()]
        moved.append(model.get_output_embeddings().weight)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in moved:
            p.add_(0.05 * torch.randn_like(p))
    n_blocks = len(transformer_blocks(model))
    assert shared_bottom(model, non_expert[0]) == (n_blocks - 1 if request.param == "top" else 0)
    return expert, non_expert


def by_hand(model: torch.nn.Module, tok, prompt: str, completion: str) -> tuple[float, float]:
    """One text, no padding: the log-probabilities of the completion's tokens from the model's logits, summed; and the
    largest |logit| seen (the scale of the sums the comparison's tolerance is derived from)."""
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    c = tok(completion, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([p + c])).logits[0].double()
    logprobs = torch.log_softmax(logits, dim=-1)
    return float(sum(logprobs[len(p) - 1 + t, token] for t, token in enumerate(c))), float(logits.abs().max())


def test_log_ratio_equals_a_hand_computation_from_the_two_models_logits(two_models: tuple) -> None:
    expert, non_expert = two_models
    got = log_ratio(expert, non_expert, PROMPTS, COMPLETIONS, max_prompt_tokens=64)
    for i, (prompt, completion) in enumerate(zip(PROMPTS, COMPLETIONS, strict=True)):
        (e, e_scale), (n, n_scale) = (by_hand(m[0], m[1], prompt, completion) for m in (expert, non_expert))
        n_tokens = len(expert[1](completion, add_special_tokens=False)["input_ids"])
        # batched and right-padded vs one unpadded text: the same sums in another order. Each logit moves by at most
        # 2 x depth x eps x its scale (conftest), a log-softmax value by twice that, a sum over n tokens n times
        # that, for each of the two models
        depth = network_depth(expert[0].config, 16)
        bound = 2 * n_tokens * 2 * (2 * depth * FP32_EPS * max(e_scale, n_scale)) * 2
        assert got[i] == pytest.approx(e - n, abs=bound + 1e-12), (i, got[i], e - n, bound)
    assert got[2] == 0.0  # an empty completion carries no evidence
    assert abs(got[1]) > 0.01  # the perturbed expert really differs from its reference
    same = log_ratio(non_expert, non_expert, PROMPTS, COMPLETIONS, max_prompt_tokens=64)
    np.testing.assert_array_equal(same, np.zeros(3))  # a model against itself: exactly 0 (the same computation)
    # the batch is sorted by length and cut into passes: the order of the texts changes nothing
    flipped = log_ratio(expert, non_expert, PROMPTS[::-1], COMPLETIONS[::-1], max_prompt_tokens=64)
    np.testing.assert_allclose(flipped[::-1], got, rtol=0, atol=1e-9)


def test_the_prompt_is_cut_as_for_generation(two_models: tuple) -> None:
    """Cutting the prompt to its last tokens changes the context and so the score; a longer cut changes nothing."""
    expert, non_expert = two_models
    full = log_ratio(expert, non_expert, PROMPTS[1:2], COMPLETIONS[1:2], max_prompt_tokens=64)
    cut = log_ratio(expert, non_expert, PROMPTS[1:2], COMPLETIONS[1:2], max_prompt_tokens=2)
    assert full[0] != cut[0]
    np.testing.assert_array_equal(full, log_ratio(expert, non_expert, PROMPTS[1:2], COMPLETIONS[1:2], 1000))


def test_text_parts_split_every_text_into_prompt_and_continuation() -> None:
    demos = pd.DataFrame({"prompt": ["P1"], "original_output": [" o"], "expert": [" e"], "non_expert": [" n"]})
    split = pd.DataFrame({"prompt": ["Q"], "original_output": [" q"]})
    assert text_parts(demos, split) == {
        "P1 e": ("P1", " e"), "P1 n": ("P1", " n"), "P1 o": ("P1", " o"), "Q q": ("Q", " q")
    }  # fmt: skip
