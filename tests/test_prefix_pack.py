"""Shared prompt states (``lib.prefix_pack``): texts that begin alike, packed so their common prefix is computed once,
give every text the states, rewards and gradients of its own unpacked pass, up to fp32 rounding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import assert_fp32_sums_close, head_magnitude, network_depth, tiny_llama
from workflow_scripts.lib.irl_data import Pairs, Texts, packed_bottom
from workflow_scripts.lib.lm import final_norm, load_causal_lm, run_blocks, transformer_blocks
from workflow_scripts.lib.prefix_pack import common_prefix, pack_prefixes, packed_attention, run_packed
from workflow_scripts.lib.reward_model import RewardModel

PROMPTS = ["the garden is", "you are a", "my neighbour said that the"]
COMPLETIONS = [
    [" lovely in spring", " full of weeds and old bikes"],
    [" stupid idiot", " kind person, thank you"],
    [" road is closed", " road is closed"],  # identical texts: everything shared
]


def test_pack_layout_by_hand() -> None:
    seqs = [[1, 2, 3, 4], [1, 2, 5], [7, 8], [1, 2, 3, 4]]
    assert common_prefix(seqs[:2]) == 2 and common_prefix([seqs[0], seqs[3]]) == 4 and common_prefix(seqs[1:3]) == 0
    pack = pack_prefixes(seqs, [[0, 1], [2], [3]])
    assert pack.runs[0] == [(0, 0, 2), (0, 2, 4), (1, 2, 3)]
    assert pack.segment[0] == [0, 0, 1, 1, 2] and pack.position[0] == [0, 1, 2, 3, 2]
    assert pack.where[0] == (0, [0, 1, 2, 3]) and pack.where[1] == (0, [0, 1, 4]) and pack.where[2] == (1, [0, 1])
    assert pack.segment[1] == [0, 0] and pack.where[3] == (2, [0, 1, 2, 3])  # a group of one: all prefix
    assert pack.shared_positions() == 2
    mask, positions = packed_attention(pack, "cpu")
    allowed = mask[0, 0]
    # the second member's token (packed 4) sees the prefix and itself, not the first member's rest (2, 3)
    assert allowed[4].tolist() == [True, True, False, False, True]
    assert allowed[3].tolist() == [True, True, True, True, False]
    assert positions[1].tolist() == [0, 1, 0, 0, 0]
    assert mask[1, 0, 2].tolist() == [False, False, True, False, False]  # padding sees only itself
    with pytest.raises(ValueError, match="exactly one group"):
        pack_prefixes(seqs, [[0, 1], [2]])


@pytest.mark.parametrize("arch", ["gpt_neox", "llama"])
def test_packed_states_equal_each_texts_own_pass(tiny_model_dir: Path, tmp_path: Path, arch: str) -> None:
    """The whole network over packed rows: every text's logits equal its own forward pass (fp32 sums, conftest)."""
    model, tok = load_causal_lm(tiny_model_dir if arch == "gpt_neox" else tiny_llama(tiny_model_dir, tmp_path / "m"))
    texts = [p + c for p, cs in zip(PROMPTS, COMPLETIONS, strict=True) for c in cs]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    pack = pack_prefixes(ids, [[0, 1], [2, 3], [4, 5]])
    assert pack.shared_positions() >= sum(len(tok(p)["input_ids"]) for p in PROMPTS) - len(PROMPTS)
    blocks, norm = transformer_blocks(model), final_norm(model)
    with torch.no_grad():
        packed = run_packed(model, blocks, norm, pack, input_ids=ids)
        for seq, states in zip(ids, packed, strict=True):
            x = torch.tensor([seq])
            alone = run_blocks(model, blocks, norm, torch.ones_like(x), input_ids=x)[0]
            head = model.get_output_embeddings()
            assert_fp32_sums_close(head(states), head(alone), network_depth(model.config, len(seq)),
                                   head_magnitude(model, alone))  # fmt: skip
            assert not torch.allclose(head(states), head(alone[torch.arange(len(seq)).flip(0)]))  # it can fail


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_pairs_share_prompt_states_with_the_same_rewards_and_gradients(tiny_model_dir: Path, pooling: str) -> None:
    """IRL pairs (and the frozen-bottom features they come from): packed, each side's reward and the gradient of the
    pair loss on the trained top equal scoring each side on its own."""
    lm, tok = load_causal_lm(tiny_model_dir)
    torch.manual_seed(0)
    model = RewardModel(lm, tok, trainable_layers=1, max_length=64, pooling=pooling)
    expert = [p + c[0] for p, c in zip(PROMPTS, COMPLETIONS, strict=True)]
    non_expert = [p + c[1] for p, c in zip(PROMPTS, COMPLETIONS, strict=True)]
    texts = expert + non_expert
    ids = model.encode(texts)
    hidden, shared = packed_bottom(model, ids, PROMPTS + PROMPTS)
    assert shared > 0
    alone = [model.bottom_hidden([x])[0] for x in ids]
    depth = network_depth(lm.config, max(len(x) for x in ids))
    for h, a in zip(hidden, alone, strict=True):  # bottom states: no norm after them, so bound by their own scale
        assert_fp32_sums_close(h, a, depth, float(a.abs().max()) * lm.config.hidden_size)
    starts = model.completion_starts(texts, [len(p) for p in PROMPTS + PROMPTS])
    n = len(PROMPTS)
    pairs = Pairs(Texts(alone[:n], starts[:n]), Texts(alone[n:], starts[n:]), (ids[:n], ids[n:]))
    idx = list(range(n))

    def loss_and_grads(score) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        r_e, r_n = score()
        (r_e - r_n).sum().backward()
        return r_e.detach(), r_n.detach(), [p.grad.clone() for p in model.trainable_parameters()]

    e_packed, n_packed, g_packed = loss_and_grads(lambda: pairs.score(model, idx))
    e_alone, n_alone, g_alone = loss_and_grads(
        lambda: (pairs.expert.score(model, idx), pairs.non_expert.score(model, idx))
    )
    magnitude = float(e_alone.abs().max() + n_alone.abs().max()) * lm.config.hidden_size
    assert_fp32_sums_close(e_packed, e_alone, depth, magnitude)
    assert_fp32_sums_close(n_packed, n_alone, depth, magnitude)
    assert float(e_packed[2] - n_packed[2]) == pytest.approx(0.0, abs=1e-6)  # identical texts, identical rewards
    for gp, ga in zip(g_packed, g_alone, strict=True):
        assert_fp32_sums_close(gp, ga, 2 * depth, float(ga.abs().max()) * lm.config.hidden_size)
    assert any(float(g.abs().max()) > 0 for g in g_alone)
    got = pairs.score_all(model, idx)
    assert_fp32_sums_close(torch.tensor(got[0]), e_alone, depth, magnitude)


def test_packing_refuses_an_attention_that_ignores_custom_masks(tiny_model_dir: Path) -> None:
    """Flash-attention kernels take no 4D mask: packed rows would let a member see another's tokens. Refused by name."""
    model, tok = load_causal_lm(tiny_model_dir)
    ids = [tok("the garden", add_special_tokens=False)["input_ids"]]
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="flash_attention_2"):
        run_packed(model, transformer_blocks(model), final_norm(model), pack_prefixes(ids, [[0]]), input_ids=ids)
