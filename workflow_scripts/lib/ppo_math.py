"""The pure pieces of PPO (trlx semantics), each checkable by hand in ``tests/test_ppo.py``:

* per-token reward = -kl_coef * (log pi(a|s) - log pi_ref(a|s)), plus the (scaled) sequence score on the last
  response token; fixed ``init_kl_coef`` or the adaptive controller of Ziegler et al. (``target``, ``horizon``);
* GAE (``gamma``, ``lam``) with whitened advantages; clipped policy loss (``cliprange``); clipped value loss
  (``cliprange_value``) weighted by ``vf_coef``;
* scores clipped to ±``cliprange_reward``, then (``scale_reward: running``) divided by the running standard deviation
  of all clipped scores seen so far (a positive factor: monotone, unlike the original code's per-batch min-max
  rescaling), in trlx's order;
* the optimizer (AdamW, trlx's betas and eps) and its learning-rate schedule (``scheduler``: constant or cosine
  annealing, stepped once per optimizer step);
* the value head, and the layout of a rollout batch: each row is its left-padded prompt followed by its right-padded
  response, so every prompt ends at column ``prompt_width - 1`` and response token t sits at column
  ``prompt_width + t`` in every row. Per-token tensors ([B, R]) cover the response columns only; ``mask`` is 1 on
  generated tokens (up to and including the stop token).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

import numpy as np
import torch
import torch.nn.functional as F

from workflow_scripts.lib.generation import Continuation
from workflow_scripts.lib.lm import pad
from workflow_scripts.lib.ppo_config import PPOConfig


# ============================================================================================ entropy, masked ops
def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Normalise to unit variance (and zero mean) over the masked entries, as trlx does for advantages."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    white = (x - mean) * torch.rsqrt(var + 1e-8)
    return white if shift_mean else white + mean


# ============================================================================================ rewards and returns
class RunningMoments:
    """Running mean/std of all scores seen (parallel-variance update, as trlx's ``RunningMoments``)."""

    def __init__(self) -> None:
        self.mean, self.var, self.count = 0.0, 1.0, 1e-24

    def update(self, xs: torch.Tensor) -> None:
        xs = xs.double()
        n = xs.numel()
        batch_mean, batch_var = float(xs.mean()), float(xs.var(unbiased=False))
        delta = batch_mean - self.mean
        total = self.count + n
        self.mean += delta * n / total
        self.var = (self.var * self.count + batch_var * n + delta**2 * self.count * n / total) / total
        self.count = total

    @property
    def std(self) -> float:
        return math.sqrt(self.var * self.count / max(self.count - 1, 1e-24)) if self.count > 1 else 1.0


def scale_scores(
    raw: torch.Tensor, scale_reward: str | None, cliprange_reward: float, running: RunningMoments
) -> torch.Tensor:
    """trlx's order: scores are clipped to ±``cliprange_reward``, then ``running`` divides them by the std of every
    (clipped) score seen so far, this batch included (a positive factor, so the ranking of completions is kept)."""
    scores = raw.clone()
    if cliprange_reward:
        scores = scores.clamp(-cliprange_reward, cliprange_reward)
    if scale_reward == "running":
        running.update(scores)
        scores = scores / running.std
    return scores


def kl_penalised_rewards(
    scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: -kl_coef * (logp - logp_ref) everywhere, + score on each row's last response token.

    Returns (rewards [B, R], per-token KL estimate [B, R]); both are zero where ``mask`` is 0.
    """
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    last = mask.long().cumsum(1).argmax(1)  # index of the last 1 in each row
    rewards[torch.arange(len(scores)), last] += scores
    return rewards * mask, kl


def gae_advantages(
    values: torch.Tensor, rewards: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response tokens (right-padded, ``mask`` 1 on real tokens).

    delta_t = r_t + gamma * V_{t+1} - V_t (V after the last real token is 0); A_t = delta_t + gamma * lam * A_{t+1}.
    Returns (advantages, returns = advantages + values), zero on padding. Advantages are *not* whitened here.
    """
    values = values * mask
    rewards = rewards * mask
    advantages = torch.zeros_like(rewards)
    last_gae = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(last_gae)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last_gae = (delta + gamma * lam * last_gae) * mask[:, t]
        advantages[:, t] = last_gae
    return advantages, (advantages + values) * mask


# ============================================================================================ losses
def ppo_losses(
    logprobs: torch.Tensor,
    values: torch.Tensor,
    old_logprobs: torch.Tensor,
    old_values: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
    cliprange_value: float,
    vf_coef: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate policy loss + clipped value loss (trlx ``AutoModelForCausalLMWithValueHead`` loss)."""
    values_clipped = torch.clamp(values, old_values - cliprange_value, old_values + cliprange_value)
    vf_loss = 0.5 * masked_mean(torch.max((values - returns) ** 2, (values_clipped - returns) ** 2), mask)
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = torch.exp(log_ratio)
    pg_loss = masked_mean(
        torch.max(-advantages * ratio, -advantages * torch.clamp(ratio, 1 - cliprange, 1 + cliprange)), mask
    )
    loss = pg_loss + vf_coef * vf_loss
    with torch.no_grad():
        stats = {
            "loss": float(loss),
            "policy_loss": float(pg_loss),
            "value_loss": float(vf_loss),
            "clipfrac": float(masked_mean((torch.abs(ratio - 1) > cliprange).float(), mask)),
            "approx_kl": float(masked_mean((ratio - 1) - log_ratio, mask)),
        }
    return loss, stats


# ============================================================================================ KL coefficient
class FixedKLController:
    def __init__(self, init_kl_coef: float) -> None:
        self.value = init_kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        pass

    def update_iteration(self, current_kl: float, num_rollouts: int, batch_size: int) -> None:
        """trlx's schedule: after the PPO epochs on each rollout minibatch, one ``update`` with ``n_steps =
        batch_size``, every one with the KL measured at the rollout (trlx ``post_backward_callback``)."""
        for _ in range(num_rollouts // batch_size):
            self.update(current_kl, batch_size)


class AdaptiveKLController(FixedKLController):
    """Ziegler et al. (2019): move kl_coef so the KL tracks ``target`` (proportional error clipped to ±0.2)."""

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        self.value, self.target, self.horizon = init_kl_coef, target, horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        error = float(np.clip(current_kl / self.target - 1, -0.2, 0.2))
        self.value *= 1 + error * n_steps / self.horizon


def kl_controller(init_kl_coef: float, target: float | None, horizon: int) -> AdaptiveKLController | FixedKLController:
    """``target: null`` keeps ``init_kl_coef`` fixed; a number adapts the coefficient towards that KL."""
    if target is None:
        return FixedKLController(init_kl_coef)
    return AdaptiveKLController(init_kl_coef, target, horizon)


def make_optimizer(
    params: list[torch.nn.Parameter], cfg: PPOConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW (``learning_rate``, ``weight_decay``; trlx's betas (0.9, 0.95) and eps 1e-8) and the ``scheduler``
    section's schedule: ``constant``, or ``cosine_annealing`` (torch's CosineAnnealingLR, as trlx; ``T_max`` null =
    ``total_steps``)."""
    optimizer = torch.optim.AdamW(
        params, lr=cfg.learning_rate, betas=(0.9, 0.95), eps=1e-8, weight_decay=cfg.weight_decay
    )
    name, t_max, eta_min = (cfg.scheduler[k] for k in ("name", "T_max", "eta_min"))
    if name == "constant":
        return optimizer, torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if name == "cosine_annealing":
        t_max = t_max or cfg.total_steps
        return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max, eta_min=eta_min)
    raise ValueError(f"rlhf.scheduler.name must be constant or cosine_annealing, got {name!r}")


# ======================================================================================== value head, rollout layout
class ValueHead(torch.nn.Module):
    """trlx's value head: Linear(h, 2h) -> ReLU -> Linear(2h, 1)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(hidden_size, 2 * hidden_size), torch.nn.ReLU(), torch.nn.Linear(2 * hidden_size, 1)
        )

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.net(hidden).squeeze(-1)


@dataclass
class RolloutView:
    """What a policy pass reads: rows laid out as [left-padded prompt | right-padded response]
    (``collate_rollouts``) and the frozen bottom's output for them."""

    input_ids: torch.Tensor  # [B, P + R]
    attention_mask: torch.Tensor  # [B, P + R]
    response_mask: torch.Tensor  # [B, R] float, 1 on generated tokens (up to and including the stop token)
    prompt_width: int
    bottom_hidden: torch.Tensor  # [B, P + R, H] cached output of the frozen bottom blocks

    def rows(self, idx: torch.Tensor) -> Self:
        """These rows, without the columns that are padding in all of them (a minibatch without the batch's longest
        prompt or response computes nothing for it; positions come from the attention mask, so nothing changes)."""
        take = {k: (v[idx] if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        used = take["attention_mask"].bool().any(0)
        lead = int(used[: self.prompt_width].long().argmax()) if used[: self.prompt_width].any() else 0
        width = max(int(take["response_mask"].sum(1).max()), 1)
        for k, v in take.items():
            if k in ("input_ids", "attention_mask", "bottom_hidden"):
                take[k] = v[:, lead : self.prompt_width + width]
            elif isinstance(v, torch.Tensor):
                take[k] = v[:, :width]
        take["prompt_width"] = self.prompt_width - lead
        return type(self)(**take)

    def length_buckets(self, size: int | None) -> list[torch.Tensor]:
        """The row indices in pieces of ``size`` rows of similar length (sorted by prompt, then response length), so
        that each piece, cut by ``rows``, computes little padding; one piece of every row when ``size`` is None."""
        n = self.input_ids.shape[0]
        if size is None or size >= n:
            return [torch.arange(n, device=self.input_ids.device)]
        prompt_len = self.attention_mask[:, : self.prompt_width].sum(1).cpu().tolist()
        response_len = self.response_mask.sum(1).cpu().tolist()
        order = sorted(range(n), key=lambda i: (prompt_len[i], response_len[i]))
        return list(torch.tensor(order, device=self.input_ids.device).split(size))


@dataclass
class RolloutBatch(RolloutView):
    """A batch of rollouts (a ``RolloutView``) with what the update needs from the rollout phase."""

    logprobs: torch.Tensor  # [B, R] old policy
    values: torch.Tensor  # [B, R] old values
    advantages: torch.Tensor  # [B, R] whitened
    returns: torch.Tensor  # [B, R]


def collate_hidden(conts: Sequence[Continuation], prompt_width: int, response_width: int) -> torch.Tensor | None:
    """The continuations' cached hidden states (``Continuation.hidden``) in the ``collate_rollouts`` layout, zeros on
    padding (masked everywhere downstream); None when a continuation has none."""
    if any(c.hidden is None for c in conts):
        return None
    first = conts[0].hidden
    out = torch.zeros(len(conts), prompt_width + response_width, first.shape[-1], dtype=first.dtype)
    for row, c in enumerate(conts):
        n_prompt, n_resp = len(c.prompt_ids), len(c.response_ids)
        out[row, prompt_width - n_prompt : prompt_width + n_resp] = c.hidden
    return out


def collate_rollouts(
    conts: Sequence[Continuation], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(input_ids, attention_mask, response_mask as float, prompt_width) of [left-padded prompt | right-padded
    response] rows; the response part is at least one column wide so per-token tensors are never empty."""
    prompt_ids, prompt_attn = pad([c.prompt_ids for c in conts], pad_id, "left")
    resp_ids, resp_attn = pad([c.response_ids for c in conts], pad_id, "right")
    if resp_ids.shape[1] == 0:
        resp_ids, resp_attn = torch.full((len(conts), 1), pad_id), torch.zeros((len(conts), 1), dtype=torch.long)
    ids, attn = torch.cat([prompt_ids, resp_ids], 1), torch.cat([prompt_attn, resp_attn], 1)
    return ids, attn, resp_attn.float(), prompt_ids.shape[1]
