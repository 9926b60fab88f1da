"""PPO: the math on hand-checkable cases, and the trainer on a real tiny model (freezing, resume, reward contract)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import (
    PROMPTS,
    assert_fp32_sums_close,
    head_magnitude,
    length_reward,
    network_depth,
    ppo_job,
    tiny_cfg,
)
from workflow_scripts.lib.generation import Continuation
from workflow_scripts.lib.lm import (
    load_causal_lm,
    position_ids_from_mask,
    run_blocks,
    split_backbone,
    transformer_blocks,
)
from workflow_scripts.lib.ppo import HydraPolicy, PPOTrainer
from workflow_scripts.lib.ppo_math import (
    AdaptiveKLController,
    FixedKLController,
    RolloutView,
    RunningMoments,
    collate_rollouts,
    gae_advantages,
    kl_controller,
    kl_penalised_rewards,
    masked_whiten,
    ppo_losses,
    scale_scores,
)
from workflow_scripts.lib.rewards import GTToxicityReward
from workflow_scripts.lib.toxicity import GTBiLSTMScorer

TIMING = ("rollout_seconds", "update_seconds", "rollout_tokens_per_s", "update_samples_per_s", "tokens_per_s")


# ------------------------------------------------------------------------------------------------ math
def test_gae_by_hand() -> None:
    rewards = torch.tensor([[1.0, 0.0, 2.0]])
    values = torch.tensor([[0.5, 0.5, 0.5]])
    mask = torch.ones(1, 3)
    adv, ret = gae_advantages(values, rewards, mask, gamma=1.0, lam=1.0)
    # lam = gamma = 1: A_t = (sum of future rewards) - V_t = [3, 2, 2] - 0.5
    assert torch.allclose(adv, torch.tensor([[2.5, 1.5, 1.5]]))
    assert torch.allclose(ret, torch.tensor([[3.0, 2.0, 2.0]]))
    adv0, _ = gae_advantages(values, rewards, mask, gamma=1.0, lam=0.0)
    # lam = 0: one-step TD errors r_t + V_{t+1} - V_t, with V after the last token = 0
    assert torch.allclose(adv0, torch.tensor([[1.0, 0.0, 1.5]]))
    adv_g, _ = gae_advantages(values, rewards, mask, gamma=0.5, lam=1.0)
    # discounted: A_2 = 2 - .5; A_1 = 0 + .5*2 - .5; A_0 = 1 + .5*0 + .25*2 - .5
    assert torch.allclose(adv_g, torch.tensor([[1.0, 0.5, 1.5]]))


def test_gae_ignores_padding() -> None:
    rewards = torch.tensor([[1.0, 2.0, 99.0]])
    values = torch.tensor([[0.0, 1.0, 99.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    adv, ret = gae_advantages(values, rewards, mask, gamma=1.0, lam=1.0)
    assert torch.allclose(adv, torch.tensor([[3.0, 1.0, 0.0]]))
    assert torch.allclose(ret, torch.tensor([[3.0, 2.0, 0.0]]))


def test_kl_penalty_and_score_placement() -> None:
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, -1.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0], [-1.0, -2.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards, kl = kl_penalised_rewards(torch.tensor([10.0, 20.0]), logp, ref, mask, kl_coef=0.1)
    assert torch.allclose(kl, torch.tensor([[0.5, 0.0, -1.0], [0.0, 1.0, 0.0]]))
    # -0.1 * kl everywhere, score on the last *real* token of each row
    assert torch.allclose(rewards, torch.tensor([[-0.05, 0.0, 10.1], [0.0, 19.9, 0.0]]))


def test_policy_clipping_by_hand() -> None:
    one = torch.ones(1, 1)
    ratio = 1.5
    logp = torch.full((1, 1), math.log(ratio))
    args = dict(
        values=0 * one, old_values=0 * one, returns=0 * one, mask=one, cliprange=0.2, cliprange_value=0.2, vf_coef=1.0
    )
    # positive advantage: the gain is capped at (1 + clip) * A
    loss, stats = ppo_losses(logp, old_logprobs=0 * one, advantages=one, **args)
    assert stats["policy_loss"] == pytest.approx(-1.2) and stats["clipfrac"] == 1.0
    # negative advantage: the pessimistic (unclipped) term wins
    _, stats = ppo_losses(logp, old_logprobs=0 * one, advantages=-one, **args)
    assert stats["policy_loss"] == pytest.approx(1.5)
    # inside the trust region: plain ratio * A
    _, stats = ppo_losses(torch.full((1, 1), math.log(1.1)), old_logprobs=0 * one, advantages=one, **args)
    assert stats["policy_loss"] == pytest.approx(-1.1) and stats["clipfrac"] == 0.0


def test_value_clipping_by_hand() -> None:
    one = torch.ones(1, 1)
    _, stats = ppo_losses(
        0 * one,
        values=one,
        old_logprobs=0 * one,
        old_values=0 * one,
        advantages=0 * one,
        returns=one,
        mask=one,
        cliprange=0.2,
        cliprange_value=0.2,
        vf_coef=1.0,
    )
    # unclipped error 0, clipped value 0.2 has error 0.8^2; the max is taken: 0.5 * 0.64
    assert stats["value_loss"] == pytest.approx(0.32)


def test_whitening_uses_only_masked_entries() -> None:
    x = torch.tensor([[1.0, 3.0, 1000.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    w = masked_whiten(x, mask)
    assert torch.allclose(w[0, :2], torch.tensor([-1.0, 1.0]), atol=1e-4)


def test_adaptive_kl_controller() -> None:
    ctl = AdaptiveKLController(0.1, target=2.0, horizon=100)
    ctl.update(current_kl=10.0, n_steps=10)  # far above target: error clipped to +0.2
    assert ctl.value == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))
    ctl.update(current_kl=1.5, n_steps=10)  # below target: error -0.25 -> clipped -0.2
    assert ctl.value == pytest.approx(0.1 * 1.02 * 0.98)
    # target: null keeps the coefficient fixed
    fixed = kl_controller(0.1, target=None, horizon=100)
    fixed.update(current_kl=10.0, n_steps=10)
    assert isinstance(fixed, FixedKLController) and fixed.value == 0.1
    assert isinstance(kl_controller(0.1, target=2.0, horizon=100), AdaptiveKLController)


def test_kl_controller_updates_as_trlx_once_per_rollout_minibatch() -> None:
    """trlx calls update(KL of the rollout, n_steps=batch_size) after each rollout minibatch's PPO epochs: 32 rollouts
    in minibatches of 8 give 4 compounding updates per iteration, not one with n_steps=32."""
    ctl = AdaptiveKLController(0.05, target=1.0, horizon=1000)
    ctl.update_iteration(current_kl=3.0, num_rollouts=32, batch_size=8)  # error clipped to +0.2
    assert ctl.value == pytest.approx(0.05 * (1 + 0.2 * 8 / 1000) ** 4, rel=1e-12)
    fixed = FixedKLController(0.05)
    fixed.update_iteration(current_kl=3.0, num_rollouts=32, batch_size=8)
    assert fixed.value == 0.05


def test_running_moments_match_numpy() -> None:
    rng = np.random.default_rng(0)
    chunks = [rng.normal(2.0, 3.0, size=n) for n in (5, 17, 8)]
    rm = RunningMoments()
    for c in chunks:
        rm.update(torch.tensor(c))
    allx = np.concatenate(chunks)
    assert rm.mean == pytest.approx(allx.mean())
    assert rm.std == pytest.approx(allx.std(ddof=1))


def test_score_scaling_clips_then_divides_by_the_running_std() -> None:
    running = RunningMoments()
    first = torch.tensor([1.0, 3.0])
    scaled = scale_scores(first, "running", 10.0, running)
    # the batch itself is in the running std (sample std of [1, 3] = sqrt(2)); the raw scores are untouched
    assert torch.allclose(scaled, first / math.sqrt(2.0)) and torch.equal(first, torch.tensor([1.0, 3.0]))
    second = torch.tensor([5.0, 7.0])
    assert torch.allclose(scale_scores(second, "running", 10.0, running), second / np.std([1, 3, 5, 7], ddof=1))
    # no scaling: only the clip
    assert torch.equal(
        scale_scores(torch.tensor([-20.0, 0.5]), None, 10.0, RunningMoments()), torch.tensor([-10.0, 0.5])
    )
    # trlx's order: clip the raw scores first, then scale by the std of the clipped ones (no second clip)
    big = torch.tensor([40.0, -20.0, 2.0])
    clipped = torch.tensor([10.0, -10.0, 2.0])
    got = scale_scores(big, "running", 10.0, RunningMoments())
    assert torch.allclose(got, clipped / float(clipped.std()))
    assert float(got.abs().max()) < 10.0  # after scaling nothing is clipped again


def test_rollout_layout_left_pads_prompts_and_right_pads_responses() -> None:
    conts = [Continuation([11, 12, 13], [21]), Continuation([14], [22, 23, 24])]
    ids, attn, resp_mask, prompt_w = collate_rollouts(conts, pad_id=0)
    assert prompt_w == 3
    assert ids.tolist() == [[11, 12, 13, 21, 0, 0], [0, 0, 14, 22, 23, 24]]
    assert attn.tolist() == [[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1]]
    assert resp_mask.dtype == torch.float32 and resp_mask.tolist() == [[1, 0, 0], [1, 1, 1]]
    # every prompt ends at column prompt_w - 1, so that position predicts each row's first response token
    assert ids[:, prompt_w].tolist() == [21, 22]
    # an all-empty response batch still has one (masked) response column
    _, _, empty_mask, _ = collate_rollouts([Continuation([5], [])], pad_id=0)
    assert empty_mask.tolist() == [[0.0]]


# ------------------------------------------------------------------------------------------------ trainer
def test_layer_split_equals_full_forward(tiny_model_dir: Path) -> None:
    model, tok = load_causal_lm(tiny_model_dir)
    enc = tok(["a short one", "and a considerably longer prompt here"], return_tensors="pt", padding=True)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
        top = final_hidden(model, ids, mask)
    # two code paths over the same weights (the model's forward vs. our block loop): equal up to summation order
    split = model.get_output_embeddings()(top)
    assert_fp32_sums_close(split, full, network_depth(model.config, ids.shape[1]), head_magnitude(model, top))


def final_hidden(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The normed last hidden states, bottom block(s) then the top one (what the LM head projects)."""
    backbone = split_backbone(model, 1)
    h = run_blocks(model, backbone.bottom, None, mask, input_ids=ids)
    return run_blocks(model, backbone.top, backbone.norm, mask, hidden=h)


def test_hydra_policy_and_reference_equal_the_full_model_before_training(tiny_model_dir: Path) -> None:
    model, tok = load_causal_lm(tiny_model_dir)
    conts = [
        Continuation(tok("a short one")["input_ids"], [5, 6]),
        Continuation(tok("and a longer one")["input_ids"], [7]),
    ]
    ids, mask, resp_mask, prompt_w = collate_rollouts(conts, tok.pad_token_id)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    torch.manual_seed(0)
    policy = HydraPolicy(model, 1, None)
    with torch.no_grad():
        view = RolloutView(ids, mask, resp_mask, prompt_w, policy.bottom_hidden(ids, mask))
        logits, logprobs, values = policy.forward(view)
        ref_logprobs = policy.reference_logprobs(view)
        top = final_hidden(model, ids, mask)
    # cached bottom + trainable top == the whole model, at the positions that predict generated tokens (only there).
    # The policy projects onto the vocabulary at those positions only, the full model at every position: two matrix
    # products of different shapes, which a CPU's GEMM may sum in another order, so equal up to fp32 rounding
    expected = full[:, prompt_w - 1 : -1][resp_mask.bool()].float()
    assert_fp32_sums_close(logits, expected, network_depth(model.config, ids.shape[1]), head_magnitude(model, top))
    assert logprobs[resp_mask == 0].eq(0).all()
    # exact: the reference branch is a copy of the top run on the same tensors (the same computation)
    assert torch.equal(ref_logprobs, logprobs) and values.shape == resp_mask.shape
    # only the top block (+ final norm, + untied head) and the value head are optimised
    trainable = {id(p) for p in policy.parameters()}
    assert all(id(p) not in trainable for p in policy.bottom.parameters())
    assert all(id(p) in trainable for p in [*policy.top.parameters(), *policy.value_head.parameters()])
    assert not any(p.requires_grad for p in policy.ref_top.parameters())


# prompts of very different lengths, so that length buckets regroup the rows
VARIED_PROMPTS = [
    "hi", "the weather today is", "a much longer prompt about the garden and the rain that falls on it all day", "you",
    "some words here and", "x y", "what is the", "one two three four five six seven",
]  # fmt: skip


def test_length_buckets_give_the_one_pass_numbers_with_less_padding(tiny_model_dir: Path) -> None:
    model, tok = load_causal_lm(tiny_model_dir)
    trainer = PPOTrainer(tiny_cfg(bucket_rows=None), model, tok, length_reward, VARIED_PROMPTS)
    batch, _, _, _ = trainer.make_rollouts()
    policy, out, positions = trainer.policy, {}, {}
    for rows in (None, 3):  # 3 rows per piece: pieces of unequal size too (8 = 3 + 3 + 2)
        policy.bucket_rows, policy.positions = rows, [0, 0]
        with torch.no_grad():
            out[rows] = (*policy.forward(batch)[1:], policy.reference_logprobs(batch))
        positions[rows] = policy.positions
    pieces = batch.length_buckets(3)
    assert sorted(torch.cat(pieces).tolist()) == list(range(8)) and [len(p) for p in pieces] == [3, 3, 2]
    assert not torch.equal(torch.cat(pieces), torch.arange(8))  # the buckets do regroup these rows
    # the same real positions, far fewer computed (two passes each: policy and reference)
    assert positions[3][0] == positions[None][0] and positions[3][1] < 0.8 * positions[None][1]
    with torch.no_grad():
        top = final_hidden(model, batch.input_ids, batch.attention_mask)
        w1, w2 = (layer.weight.abs() for layer in policy.value_head.net[::2])
        values_magnitude = float(((top.abs() @ w1.T).clamp(min=0) @ w2.T).max())
    # pieces cut to their own widths run matrix products of other shapes: equal up to fp32 rounding (no row mixed up)
    depth = network_depth(model.config, batch.input_ids.shape[1])
    magnitude = max(head_magnitude(model, top), values_magnitude)
    for got, expected in zip(out[3], out[None], strict=True):
        assert_fp32_sums_close(got, expected, depth, magnitude)
        assert got[batch.response_mask == 0].eq(0).all()


def test_bucketed_update_equals_the_one_pass_update(tiny_model_dir: Path) -> None:
    """One PPO iteration (rollouts, 2 epochs x 2 minibatches of 4) with pieces of 2 rows and with one pass: the same
    losses up to fp32 rounding and the same weight updates up to that rounding after four Adam steps, which divide
    each gradient by its own running scale (observed: within 0.05% of each tensor's largest update)."""
    runs = {}
    for rows in (None, 2):
        model, tok = load_causal_lm(tiny_model_dir)
        trainer = PPOTrainer(tiny_cfg(bucket_rows=rows), model, tok, length_reward, VARIED_PROMPTS)
        before = trainer.policy.trainable_state()
        log = trainer.train_iteration()
        runs[rows] = (before, trainer.policy.trainable_state(), log)
    (before, after, log), (before_b, after_b, log_b) = runs[None], runs[2]
    for key in ("loss", "policy_loss", "value_loss", "approx_kl", "kl"):
        assert log_b[key] == pytest.approx(log[key], abs=1e-5), key  # O(1) terms, whitened advantages
    assert log_b["update_padding_share"] < 0.5 * log["update_padding_share"]
    for name, weight in after.items():
        update, update_b = weight - before[name], after_b[name] - before_b[name]
        assert float(update.abs().max()) > 0, name  # every trainable tensor moved
        assert float((update_b - update).abs().max()) <= 1e-2 * float(update.abs().max()), name


def test_rollout_reuses_the_bottom_that_generation_computed(tiny_model_dir: Path) -> None:
    """The frozen bottom's output kept by generate equals a fresh bottom pass at every position the update reads, so
    the rollout phase does not run the bottom twice."""
    model, tok = load_causal_lm(tiny_model_dir)
    trainer = PPOTrainer(tiny_cfg(num_layers_unfrozen=1), model, tok, length_reward, PROMPTS)
    batch, _, _, _ = trainer.make_rollouts()
    with torch.no_grad():
        fresh = trainer.policy.bottom_hidden(batch.input_ids, batch.attention_mask)
    # every real token except each row's last (it predicts nothing the loss reads; generate never fed it)
    real = batch.attention_mask.bool().clone()
    last = batch.prompt_width + batch.response_mask.sum(1).long() - 1
    real[torch.arange(len(real)), last] = False
    # generate computed them step by step over a KV cache, the fresh pass over the whole sequence: other shapes,
    # equal up to the order of fp32 sums (conftest), on the residual stream's scale
    depth = network_depth(trainer.policy.model.config, batch.input_ids.shape[1])
    assert_fp32_sums_close(batch.bottom_hidden[real], fresh[real], depth, float(fresh[real].abs().max()))
    assert not batch.bottom_hidden[real].eq(0).all(-1).any()


def test_frozen_layers_stay_frozen_and_reference_is_fixed(tiny_model_dir: Path) -> None:
    model, tok = load_causal_lm(tiny_model_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = PPOTrainer(tiny_cfg(), model, tok, length_reward, PROMPTS)
    ref_before = {k: v.clone() for k, v in trainer.policy.ref_top.state_dict().items()}
    log = trainer.train()
    assert len(log) == 2 and trainer.step == 8
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(
        k.startswith(("gpt_neox.layers.2.", "gpt_neox.final_layer_norm", "lm_head")) for k in changed
    )
    ref_after = trainer.policy.ref_top.state_dict()
    assert all(torch.equal(v, ref_after[k]) for k, v in ref_before.items())
    # the reference branch still reproduces the untouched SFT model
    assert torch.equal(before["gpt_neox.layers.2.mlp.dense_h_to_4h.weight"], ref_after["0.mlp.dense_h_to_4h.weight"])


def test_cosine_schedule_steps_once_per_optimizer_step(tiny_model_dir: Path) -> None:
    """scheduler cosine_annealing: torch's CosineAnnealingLR over optimizer steps (trlx); eta_min may exceed the
    learning rate (the original 70M run), then the rate rises."""
    model, tok = load_causal_lm(tiny_model_dir)
    cfg = tiny_cfg(total_steps=8, scheduler={"name": "cosine_annealing", "T_max": 6, "eta_min": 1e-4})
    log = PPOTrainer(cfg, model, tok, length_reward, PROMPTS).train()
    lrs = [1e-4 + (1e-3 - 1e-4) * (1 + math.cos(math.pi * t / 6)) / 2 for t in range(8)]  # steps 0..7
    # the log holds each iteration's mean over its 4 optimizer steps
    assert log["learning_rate"].tolist() == pytest.approx([np.mean(lrs[:4]), np.mean(lrs[4:])], rel=1e-6)
    rising = tiny_cfg(total_steps=4, scheduler={"name": "cosine_annealing", "T_max": None, "eta_min": 2e-3})
    model, tok = load_causal_lm(tiny_model_dir)
    trainer = PPOTrainer(rising, model, tok, length_reward, PROMPTS)
    trainer.train()
    assert trainer.optimizer.param_groups[0]["lr"] > 1e-3  # T_max = total_steps, the floor above the start
    constant = PPOTrainer(tiny_cfg(total_steps=4), *load_causal_lm(tiny_model_dir), length_reward, PROMPTS).train()
    assert (constant["learning_rate"] == 1e-3).all()


def test_resume_reaches_the_same_weights_and_log(tiny_model_dir: Path, tmp_path: Path) -> None:
    # 4 iterations, with the parts a checkpoint must carry: a cosine schedule and an adaptive KL coefficient
    cfg = tiny_cfg(total_steps=16, scheduler={"name": "cosine_annealing", "T_max": 10, "eta_min": 0.0}, target=0.5)
    model_a, tok = load_causal_lm(tiny_model_dir)
    straight = PPOTrainer(cfg, model_a, tok, length_reward, PROMPTS)
    log_a = straight.train(tmp_path / "a")

    model_b, _ = load_causal_lm(tiny_model_dir)
    killed = PPOTrainer(cfg, model_b, tok, length_reward, PROMPTS)
    killed.train(tmp_path / "b", stop_after=2)  # "killed" after 2 iterations (checkpoint written at 2)
    del killed, model_b
    model_c, _ = load_causal_lm(tiny_model_dir)
    resumed = PPOTrainer(cfg, model_c, tok, length_reward, PROMPTS)
    log_c = resumed.train(tmp_path / "b")
    assert resumed.step == straight.step == 16
    state_a, state_c = straight.policy.trainable_state(), resumed.policy.trainable_state()
    assert state_a.keys() == state_c.keys() and all(torch.equal(state_a[k], state_c[k]) for k in state_a)
    head_a, head_c = straight.policy.value_head.state_dict(), resumed.policy.value_head.state_dict()
    assert all(torch.equal(v, head_c[k]) for k, v in head_a.items())
    pd.testing.assert_frame_equal(log_a.drop(columns=list(TIMING)), log_c.drop(columns=list(TIMING)))
    # and a different seed gives a different run
    model_d, _ = load_causal_lm(tiny_model_dir)
    other = PPOTrainer(tiny_cfg(total_steps=16, seed=6), model_d, tok, length_reward, PROMPTS)
    other.train()
    assert not all(torch.equal(state_a[k], other.policy.trainable_state()[k]) for k in state_a)


def test_kl_budget_stops_at_the_first_iteration_whose_final_kl_reaches_it(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(total_steps=24)  # 6 iterations of 4 optimizer steps
    full = PPOTrainer(cfg, *load_causal_lm(tiny_model_dir), length_reward, PROMPTS).train()
    kl = full["kl"].to_numpy()
    budget = float(kl[1:4].max())  # reached by iteration 4 at the latest: the run stops early
    assert budget > 0 and len(full) == cfg.iterations == 6

    def final(n: int) -> float:  # Table 1's final KL of the first n iterations: the mean over their last fifth
        return float(kl[n - max(1, n // 5) : n].mean())

    expected = next(n for n in range(1, 7) if final(n) >= budget)
    assert 2 <= expected <= 4
    stopped = PPOTrainer(cfg, *load_causal_lm(tiny_model_dir), length_reward, PROMPTS, kl_budget=budget)
    log = stopped.train(tmp_path / "a")
    assert len(log) == stopped.iteration == expected and stopped.kl_budget_reached()
    # the budget changes no iteration before the stop: the stopped run is the full run's prefix
    pd.testing.assert_frame_equal(log.drop(columns=list(TIMING)), full.head(expected).drop(columns=list(TIMING)))
    # killed after one iteration and resumed: the same stop
    killed = PPOTrainer(cfg, *load_causal_lm(tiny_model_dir), length_reward, PROMPTS, kl_budget=budget)
    killed.train(tmp_path / "b", stop_after=1)
    resumed = PPOTrainer(cfg, *load_causal_lm(tiny_model_dir), length_reward, PROMPTS, kl_budget=budget)
    assert len(resumed.train(tmp_path / "b")) == expected
    state, other = stopped.policy.trainable_state(), resumed.policy.trainable_state()
    assert all(torch.equal(state[k], other[k]) for k in state)
    with pytest.raises(ValueError, match="kl_budget must be a positive number"):
        PPOTrainer(cfg, *load_causal_lm(tiny_model_dir), length_reward, PROMPTS, kl_budget=float("nan"))


def test_nan_reward_stops_and_keeps_last_good_checkpoint(tiny_model_dir: Path, tmp_path: Path) -> None:
    calls = {"n": 0}

    def flaky(prompts, completions):
        calls["n"] += 1
        return torch.full((len(completions),), float("nan") if calls["n"] == 3 else 1.0)

    model, tok = load_causal_lm(tiny_model_dir)
    trainer = PPOTrainer(tiny_cfg(total_steps=16), model, tok, flaky, PROMPTS)
    with pytest.raises(FloatingPointError, match="NaN/inf .* iteration 2"):
        trainer.train(tmp_path)
    saved = torch.load(tmp_path / "last.pt", weights_only=False)
    assert saved["iteration"] == 2


def test_reward_contract_errors(tiny_model_dir: Path) -> None:
    model, tok = load_causal_lm(tiny_model_dir)
    trainer = PPOTrainer(tiny_cfg(), model, tok, lambda p, c: torch.zeros(len(c) + 1), PROMPTS)
    with pytest.raises(ValueError, match="returned 9 scores for 8 completions"):
        trainer.train()
    with pytest.raises(ValueError, match="prompt set is empty"):
        PPOTrainer(tiny_cfg(), model, tok, length_reward, [])


def test_gt_toxicity_reward(gt_wheel: Path) -> None:
    scorer = GTBiLSTMScorer(str(gt_wheel))
    prompts = ["You are such a", "The weather today"]
    refs = [" stupid worthless idiot and I hate you", " is sunny and warm"]
    reward = GTToxicityReward.from_pairs(scorer, prompts, refs, reward_text="full")
    completions = [" kind and thoughtful person", " is sunny and warm"]
    got = reward(prompts, completions)
    full = [[p + c for p, c in zip(prompts, texts, strict=True)] for texts in (refs, completions)]
    expected = scorer.p_toxic(full[0]) - scorer.p_toxic(full[1])  # the original's: prompt + continuation
    assert got.dtype == torch.float32 and got.shape == (2,)
    assert torch.allclose(got, torch.tensor(expected, dtype=torch.float32))
    assert got[0] > 0.3 and got[1] == pytest.approx(0.0, abs=1e-6)  # detoxified vs. identical continuation
    with pytest.raises(KeyError, match="no reference continuation"):
        reward(["unknown prompt"], ["x"])


def test_checkpoint_of_another_policy_is_not_resumed(tiny_model_dir: Path, tmp_path: Path) -> None:
    model, tok = load_causal_lm(tiny_model_dir)
    PPOTrainer(tiny_cfg(), model, tok, length_reward, PROMPTS).train(tmp_path, stop_after=1)
    other, _ = load_causal_lm(tiny_model_dir)
    with torch.no_grad():
        transformer_blocks(other)[0].mlp.dense_h_to_4h.weight.add_(0.01)  # a different initial policy
    fresh = PPOTrainer(tiny_cfg(), other, tok, length_reward, PROMPTS)
    assert not fresh.load_checkpoint(tmp_path / "last.pt")
    assert fresh.iteration == 0
    same, _ = load_causal_lm(tiny_model_dir)
    assert PPOTrainer(tiny_cfg(), same, tok, length_reward, PROMPTS).load_checkpoint(tmp_path / "last.pt")


def test_ppo_job_writes_the_checkpoint_log_and_drops_resume_state(tiny_model_dir: Path, tmp_path: Path) -> None:

    from safetensors.torch import load_file

    from workflow_scripts.lib.config import schema_defaults
    from workflow_scripts.lib.ppo_stage import run_ppo_job

    # what rule rlhf passes as params.rlhf (the config section; keys it leaves out take the schema's defaults)
    rlhf = {"total_steps": 8, "num_rollouts": 8, "chunk_size": 8, "ppo_epochs": 2, "batch_size": 4}
    rlhf |= {"num_layers_unfrozen": 1, "max_new_tokens": 6, "seed": 5}
    smk = ppo_job(rlhf, {"device": "cpu", "precision": "fp32"}, tiny_model_dir, tmp_path)

    def shortness(prompts, completions) -> torch.Tensor:  # a monitor: logged, never optimised
        return -length_reward(prompts, completions)

    run_ppo_job(smk, PROMPTS, length_reward, {"kind": "length"}, monitor=shortness)
    out = tmp_path / "model"
    assert {"model.safetensors", "value_head.safetensors", "provenance.json", "config.json"} <= {
        p.name for p in out.iterdir()
    }
    value_head = load_file(out / "value_head.safetensors")
    assert set(value_head) == {"net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"}
    record = json.loads((out / "provenance.json").read_text())
    assert record["stage"] == "rlhf" and record["optimizer_steps"] == 8 and record["reward"] == {"kind": "length"}
    assert record["config"]["learning_rate"] == schema_defaults("rlhf")["learning_rate"]  # nothing overrode it
    log = pd.read_parquet(tmp_path / "train_log.parquet")
    assert len(log) == 2 and not (tmp_path / "checkpoints").exists()
    np.testing.assert_allclose(log["monitor_reward_mean"], -log["reward_raw_mean"], rtol=1e-6)
    # the monitor changes nothing else: the same job monitoring the reward itself trains the same weights (the same
    # computation, exact)
    again = ppo_job(rlhf, {"device": "cpu", "precision": "fp32"}, tiny_model_dir, tmp_path / "again")
    run_ppo_job(again, PROMPTS, length_reward, {"kind": "length"}, monitor=length_reward)
    other = pd.read_parquet(tmp_path / "again" / "train_log.parquet")
    pd.testing.assert_series_equal(other["monitor_reward_mean"], other["reward_raw_mean"], check_names=False)
    weights, again_weights = load_file(out / "model.safetensors"), load_file(tmp_path / "again/model/model.safetensors")
    assert all(torch.equal(weights[k], again_weights[k]) for k in weights)


def test_the_kl_budget_of_stop_at_kl(tmp_path: Path) -> None:
    """irl_rlhf.stop_at_kl: rlhf = the mean over RLHF's runs of Table 1's final KL (the last fifth of iterations);
    a number is itself, null none; an RLHF that moved nowhere (KL <= 0) has no KL to match and is refused."""
    from workflow_scripts.irl_rlhf import kl_budget

    logs = []
    for seed, kls in enumerate(([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0], [0.0, 0.5, 1.0, 1.5, 2.0])):
        path = tmp_path / f"seed{seed}.parquet"
        pd.DataFrame({"iteration": np.arange(len(kls))[::-1], "kl": kls[::-1]}).to_parquet(path)  # any row order
        logs.append(str(path))
    assert kl_budget("rlhf", logs) == pytest.approx(np.mean([(8.0 + 9.0) / 2, 2.0]))  # last 2 of 10, last 1 of 5
    assert kl_budget(1.5, logs) == 1.5 and kl_budget(None, logs) is None
    flat = tmp_path / "flat.parquet"
    pd.DataFrame({"iteration": [0, 1, 2], "kl": [0.0, 0.01, -0.02]}).to_parquet(flat)
    with pytest.raises(ValueError, match="RLHF's final KL to SFT is -0.02 nats .* set irl_rlhf.stop_at_kl: null"):
        kl_budget("rlhf", [str(flat)])
