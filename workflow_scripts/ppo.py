"""PPO for language models in plain torch, CleanRL-style: one file, read top to bottom.

Semantics and hyper-parameter names follow trlx's PPO (what the paper used), re-implemented here because trlx is not
installable:

* policy = the SFT checkpoint + a scalar value head (trlx's 2-layer MLP head) on the last hidden state;
* only the top ``num_layers_unfrozen`` blocks (+ value head, + an untied output layer) train. The frozen bottom is run
  once per rollout batch without a graph and its output cached; every PPO epoch re-runs only the top blocks;
* the frozen reference (= SFT) shares that bottom; its top is a frozen copy of the SFT top blocks (trlx's "hydra");
* per-token reward = -kl_coef * (log pi(a|s) - log pi_ref(a|s)), plus the (scaled) sequence score on the last
  response token; fixed ``init_kl_coef`` or the adaptive controller of Ziegler et al. (``target``, ``horizon``);
* GAE (``gamma``, ``lam``) with whitened advantages; clipped policy loss (``cliprange``); clipped value loss
  (``cliprange_value``) weighted by ``vf_coef``; ``ppo_epochs`` passes over each rollout batch in minibatches of
  ``batch_size``;
* score scaling ``scale_reward: running`` divides every score by the running standard deviation of all scores seen
  so far (a positive factor: monotone, unlike the original code's per-batch min-max rescaling), optional
  ``cliprange_reward``.

The reward is any callable ``rewards(prompts, completions) -> 1-D tensor`` (one score per completion), so the same
trainer takes the ground-truth classifier reward or a learned IRL reward model.

Resumability: every ``checkpoint_interval`` iterations the trainable weights, optimizer, KL controller, running
moments, prompt sampler and log are saved; every random draw is derived from (seed, iteration), so a resumed run
reproduces an uninterrupted one exactly (``tests/test_ppo.py``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from workflow_scripts.common import atomic_path
from workflow_scripts.generation import Continuation, GenerationSettings, generate_ids
from workflow_scripts.lm import (
    Precision,
    final_norm,
    freeze_bottom_layers,
    model_fingerprint,
    run_blocks,
    transformer_blocks,
)
from workflow_scripts.rewards import check_reward_output

LOG = logging.getLogger("irl_llms.ppo")

RewardFn = Callable[[Sequence[str], Sequence[str]], torch.Tensor]


@dataclass
class PPOConfig:
    # schedule
    total_steps: int = 200  # optimizer steps (trlx ``train.total_steps``)
    num_rollouts: int = 32  # rollouts collected per PPO iteration
    chunk_size: int = 32  # prompts per generation batch
    ppo_epochs: int = 4
    batch_size: int = 16  # minibatch size for the updates
    # model
    num_layers_unfrozen: int = 2
    # optimizer (trlx defaults: AdamW, betas (0.9, 0.95))
    learning_rate: float = 1e-5
    weight_decay: float = 1e-6
    max_grad_norm: float = 1.0
    # KL penalty
    init_kl_coef: float = 0.05
    target: float | None = None  # None: fixed KL coefficient; else adaptive towards this KL (nats per sequence)
    horizon: int = 10000
    # returns / losses
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 1.0
    scale_reward: str | None = "running"  # running | none
    cliprange_reward: float = 10.0
    # generation (every setting explicit)
    max_new_tokens: int = 30
    top_k: int = 0
    top_p: float = 1.0
    temperature: float = 1.0
    max_prompt_tokens: int = 64
    # bookkeeping
    checkpoint_interval: int = 10  # iterations
    seed: int = 0

    def __post_init__(self) -> None:
        if self.scale_reward == "none":
            self.scale_reward = None
        if self.scale_reward not in (None, "running"):
            raise ValueError(f"scale_reward must be 'running' or 'none', got {self.scale_reward!r}")
        if self.num_rollouts % self.batch_size:
            raise ValueError(f"num_rollouts ({self.num_rollouts}) must be a multiple of batch_size ({self.batch_size})")
        if self.num_layers_unfrozen < 1:
            raise ValueError("num_layers_unfrozen must be >= 1 (the frozen bottom is shared with the reference)")

    @property
    def steps_per_iteration(self) -> int:
        return self.ppo_epochs * (self.num_rollouts // self.batch_size)

    @property
    def iterations(self) -> int:
        return math.ceil(self.total_steps / self.steps_per_iteration)

    def fingerprint(self) -> str:
        """Hash of everything that changes the run (a checkpoint from another config is never resumed)."""
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


# ============================================================================================ small, testable pieces
def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) under ``logits`` ([..., V]) for each ``tokens`` ([...])."""
    return torch.gather(F.log_softmax(logits, dim=-1), -1, tokens.unsqueeze(-1)).squeeze(-1)


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


class AdaptiveKLController:
    """Ziegler et al. (2019): move kl_coef so the KL tracks ``target`` (proportional error clipped to ±0.2)."""

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        self.value, self.target, self.horizon = init_kl_coef, target, horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        error = float(np.clip(current_kl / self.target - 1, -0.2, 0.2))
        self.value *= 1 + error * n_steps / self.horizon


class FixedKLController:
    def __init__(self, init_kl_coef: float) -> None:
        self.value = init_kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        pass


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


class ValueHead(torch.nn.Module):
    """trlx's value head: Linear(h, 2h) -> ReLU -> Linear(2h, 1)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(hidden_size, 2 * hidden_size), torch.nn.ReLU(), torch.nn.Linear(2 * hidden_size, 1)
        )

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.net(hidden).squeeze(-1)


# ============================================================================================ rollouts
@dataclass
class RolloutBatch:
    """A batch of rollouts laid out as [left-padded prompt | right-padded response]."""

    input_ids: torch.Tensor  # [B, P + R]
    attention_mask: torch.Tensor  # [B, P + R]
    response_mask: torch.Tensor  # [B, R] float, 1 on generated tokens (up to and including the stop token)
    prompt_width: int
    bottom_hidden: torch.Tensor  # [B, P + R, H] cached output of the frozen bottom blocks
    logprobs: torch.Tensor  # [B, R] old policy
    values: torch.Tensor  # [B, R] old values
    advantages: torch.Tensor  # [B, R] whitened
    returns: torch.Tensor  # [B, R]

    def rows(self, idx: torch.Tensor) -> RolloutBatch:
        take = {k: (v[idx] if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return RolloutBatch(**take)


def collate_rollouts(
    conts: Sequence[Continuation], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    prompt_w = max(len(c.prompt_ids) for c in conts)
    resp_w = max(1, max(len(c.response_ids) for c in conts))
    ids = torch.full((len(conts), prompt_w + resp_w), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    resp_mask = torch.zeros((len(conts), resp_w), dtype=torch.float32)
    for row, c in enumerate(conts):
        p, r = len(c.prompt_ids), len(c.response_ids)
        ids[row, prompt_w - p : prompt_w] = torch.tensor(c.prompt_ids)
        attn[row, prompt_w - p : prompt_w] = 1
        if r:
            ids[row, prompt_w : prompt_w + r] = torch.tensor(c.response_ids)
            attn[row, prompt_w : prompt_w + r] = 1
            resp_mask[row, :r] = 1
    return ids, attn, resp_mask, prompt_w


# ============================================================================================ the trainer
class PPOTrainer:
    def __init__(
        self, cfg: PPOConfig, model: Any, tokenizer: Any, reward_fn: RewardFn, prompts: Sequence[str],
        precision: Precision | None = None,
    ) -> None:  # fmt: skip
        if len(prompts) == 0:
            raise ValueError("PPO needs at least one training prompt; the prompt set is empty")
        self.cfg, self.model, self.tokenizer, self.reward_fn = cfg, model, tokenizer, reward_fn
        self.prompts = list(prompts)
        self.device = next(model.parameters()).device
        self.precision = precision or Precision("fp32", self.device)
        # identifies the initial policy (= the reference): a checkpoint of another model or tokenizer is never resumed
        self.init_fingerprint = model_fingerprint(model, tokenizer)
        torch.manual_seed(cfg.seed)
        model.eval()  # dropout off: rollout and update log-probs must come from the same distribution
        self.freeze_summary = freeze_bottom_layers(model, cfg.num_layers_unfrozen)
        blocks = transformer_blocks(model)
        cut = len(blocks) - cfg.num_layers_unfrozen
        self.bottom = torch.nn.ModuleList(blocks[:cut])
        self.top = torch.nn.ModuleList(blocks[cut:])
        self.norm = final_norm(model)
        self.head = model.get_output_embeddings()
        # frozen reference branch = a copy of the SFT top (+ norm and head); the bottom is shared
        self.ref_top = copy.deepcopy(self.top).requires_grad_(False)
        self.ref_norm = copy.deepcopy(self.norm).requires_grad_(False) if self.norm is not None else None
        head_trains = any(p.requires_grad for p in self.head.parameters())
        self.ref_head = copy.deepcopy(self.head).requires_grad_(False) if head_trains else self.head
        self.value_head = ValueHead(model.config.hidden_size).to(self.device)
        self.params = [p for p in model.parameters() if p.requires_grad] + list(self.value_head.parameters())
        self.optimizer = torch.optim.AdamW(
            self.params, lr=cfg.learning_rate, betas=(0.9, 0.95), eps=1e-8, weight_decay=cfg.weight_decay
        )
        self.kl_ctl: AdaptiveKLController | FixedKLController = (
            AdaptiveKLController(cfg.init_kl_coef, cfg.target, cfg.horizon)
            if cfg.target is not None
            else FixedKLController(cfg.init_kl_coef)
        )
        self.running = RunningMoments()
        self.sampler = np.random.default_rng(cfg.seed)
        self.iteration = 0
        self.step = 0
        self.log_rows: list[dict[str, float]] = []
        self.gen = GenerationSettings(
            max_new_tokens=cfg.max_new_tokens,
            do_sample=True,
            top_k=cfg.top_k,
            top_p=cfg.top_p,
            temperature=cfg.temperature,
            batch_size=cfg.chunk_size,
            max_prompt_tokens=cfg.max_prompt_tokens,
        )

    # ------------------------------------------------------------------ forward passes
    def _heads(self, hidden: torch.Tensor, prompt_w: int, response_ids: torch.Tensor, head: torch.nn.Module):
        # position prompt_w - 1 + t predicts response token t
        h = hidden[:, prompt_w - 1 : -1]
        logits = head(h).float()
        return logits, logprobs_from_logits(logits, response_ids), h

    def policy_forward(
        self, bottom_hidden: torch.Tensor, attention_mask: torch.Tensor, input_ids: torch.Tensor, prompt_w: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits, logprobs, values) of the response tokens under the current policy."""
        hidden = run_blocks(self.model, self.top, self.norm, attention_mask, hidden=bottom_hidden)
        logits, logprobs, h = self._heads(hidden, prompt_w, input_ids[:, prompt_w:], self.head)
        return logits, logprobs, self.value_head(h).float()

    @torch.no_grad()
    def reference_logprobs(
        self, bottom_hidden: torch.Tensor, attention_mask: torch.Tensor, input_ids: torch.Tensor, prompt_w: int
    ) -> torch.Tensor:
        hidden = run_blocks(self.model, self.ref_top, self.ref_norm, attention_mask, hidden=bottom_hidden)
        return self._heads(hidden, prompt_w, input_ids[:, prompt_w:], self.ref_head)[1]

    # ------------------------------------------------------------------ one iteration
    def sample_prompts(self) -> list[str]:
        idx = self.sampler.choice(
            len(self.prompts), size=self.cfg.num_rollouts, replace=len(self.prompts) < self.cfg.num_rollouts
        )
        return [self.prompts[i] for i in idx]

    def make_rollouts(self) -> tuple[RolloutBatch, dict[str, float], list[str], list[str]]:
        cfg = self.cfg
        prompts = self.sample_prompts()
        start = time.perf_counter()
        seed = cfg.seed * 1_000_003 + self.iteration * 1_009
        with self.precision.autocast():
            generated = generate_ids(self.model, self.tokenizer, prompts, self.gen, seed=seed, progress=False)
        conts = [c[0] for c in generated]
        gen_seconds = time.perf_counter() - start
        completions = self.tokenizer.batch_decode([c.response_ids for c in conts], skip_special_tokens=True)
        try:
            raw = check_reward_output(self.reward_fn(prompts, completions), len(prompts), "reward function")
        except FloatingPointError as err:
            raise FloatingPointError(
                f"{err} at iteration {self.iteration}; stopping (the last good checkpoint is kept)"
            ) from err
        scores = raw.clone()
        if cfg.scale_reward == "running":
            self.running.update(raw)
            scores = scores / self.running.std
        if cfg.cliprange_reward:
            scores = scores.clamp(-cfg.cliprange_reward, cfg.cliprange_reward)

        ids, attn, resp_mask, prompt_w = collate_rollouts(conts, self.tokenizer.pad_token_id)
        ids, attn, resp_mask = ids.to(self.device), attn.to(self.device), resp_mask.to(self.device)
        with torch.no_grad():
            with self.precision.autocast():
                bottom = run_blocks(self.model, self.bottom, None, attn, input_ids=ids)
                logits, logprobs, values = self.policy_forward(bottom, attn, ids, prompt_w)
                ref_logprobs = self.reference_logprobs(bottom, attn, ids, prompt_w)
            entropy = masked_mean(entropy_from_logits(logits), resp_mask)
            rewards, kl = kl_penalised_rewards(
                scores.to(self.device), logprobs, ref_logprobs, resp_mask, self.kl_ctl.value
            )
            advantages, returns = gae_advantages(values, rewards, resp_mask, cfg.gamma, cfg.lam)
            advantages = masked_whiten(advantages, resp_mask)
        batch = RolloutBatch(ids, attn, resp_mask, prompt_w, bottom, logprobs, values, advantages, returns)
        n_tokens = int(resp_mask.sum())
        stats = {
            "reward_raw_mean": float(raw.mean()),
            "reward_raw_std": float(raw.std()) if raw.numel() > 1 else 0.0,
            "reward_mean": float(scores.mean()),
            "kl": float(kl.sum(1).mean()),
            "kl_coef": float(self.kl_ctl.value),
            "entropy": float(entropy),
            "returns_mean": float(masked_mean(returns, resp_mask)),
            "returns_std": float(masked_mean((returns - masked_mean(returns, resp_mask)) ** 2, resp_mask).sqrt()),
            "values_mean": float(masked_mean(values, resp_mask)),
            "response_tokens": n_tokens,
            "mean_response_length": n_tokens / len(conts),
            "rollout_tokens_per_s": n_tokens / max(gen_seconds, 1e-9),
            "rollout_seconds": gen_seconds,
        }
        return batch, stats, prompts, completions

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        cfg = self.cfg
        start = time.perf_counter()
        sums: dict[str, float] = {}
        gen = torch.Generator().manual_seed(cfg.seed * 7_919 + self.iteration)
        n = batch.input_ids.shape[0]
        for _ in range(cfg.ppo_epochs):
            perm = torch.randperm(n, generator=gen)
            for mb_idx in perm.split(cfg.batch_size):
                mb = batch.rows(mb_idx.to(self.device))
                with self.precision.autocast():
                    _, logprobs, values = self.policy_forward(
                        mb.bottom_hidden, mb.attention_mask, mb.input_ids, mb.prompt_width
                    )
                loss, stats = ppo_losses(
                    logprobs,
                    values,
                    mb.logprobs,
                    mb.values,
                    mb.advantages,
                    mb.returns,
                    mb.response_mask,
                    cfg.cliprange,
                    cfg.cliprange_value,
                    cfg.vf_coef,
                )
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"PPO loss is {float(loss)} at step {self.step}; stopping (the last good checkpoint is kept)"
                    )
                self.optimizer.zero_grad(set_to_none=True)
                stats["grad_norm"] = self.precision.backward_step(loss, self.optimizer, self.params, cfg.max_grad_norm)
                self.step += 1
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
        n_updates = cfg.ppo_epochs * math.ceil(n / cfg.batch_size)
        out = {k: v / n_updates for k, v in sums.items()}
        seconds = time.perf_counter() - start
        out["update_seconds"] = seconds
        out["update_samples_per_s"] = cfg.ppo_epochs * n / max(seconds, 1e-9)
        return out

    def train_iteration(self) -> dict[str, float]:
        batch, roll_stats, _, _ = self.make_rollouts()
        upd_stats = self.update(batch)
        self.kl_ctl.update(roll_stats["kl"], n_steps=self.cfg.num_rollouts)
        row = {"iteration": self.iteration, "step": self.step, **roll_stats, **upd_stats}
        row["tokens_per_s"] = roll_stats["response_tokens"] / (
            roll_stats["rollout_seconds"] + upd_stats["update_seconds"]
        )
        self.log_rows.append(row)
        self.iteration += 1
        return row

    # ------------------------------------------------------------------ checkpoints
    def trainable_state(self) -> dict[str, torch.Tensor]:
        named = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        return {n: p.detach().cpu().clone() for n, p in named.items()}

    def save_checkpoint(self, path: str | Path) -> None:
        state = {
            "fingerprint": self.cfg.fingerprint(),
            "init_fingerprint": self.init_fingerprint,
            "precision": self.precision.name,
            "scaler": self.precision.scaler.state_dict(),
            "iteration": self.iteration,
            "step": self.step,
            "model": self.trainable_state(),
            "value_head": self.value_head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "kl_coef": self.kl_ctl.value,
            "running": (self.running.mean, self.running.var, self.running.count),
            "sampler": self.sampler.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "log_rows": self.log_rows,
        }
        with atomic_path(path) as tmp:
            torch.save(state, tmp)

    def load_checkpoint(self, path: str | Path) -> bool:
        """Restore a checkpoint of *this* configuration; returns False (and starts fresh) for another config's."""
        state = torch.load(path, map_location=self.device, weights_only=False)
        if state["fingerprint"] != self.cfg.fingerprint():
            LOG.warning("checkpoint %s is from a different PPO config; starting from scratch", path)
            return False
        if state["init_fingerprint"] != self.init_fingerprint:
            LOG.warning("checkpoint %s started from another policy/tokenizer; starting from scratch", path)
            return False
        if state["precision"] != self.precision.name:
            LOG.warning("checkpoint %s was trained in %s, not %s; starting from scratch", path, state["precision"],
                        self.precision.name)  # fmt: skip
            return False
        missing = self.model.load_state_dict(state["model"], strict=False)
        if missing.unexpected_keys:
            raise RuntimeError(f"checkpoint {path} has unexpected keys {missing.unexpected_keys[:5]}")
        self.value_head.load_state_dict(state["value_head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.precision.scaler.load_state_dict(state["scaler"])
        self.kl_ctl.value = state["kl_coef"]
        self.running.mean, self.running.var, self.running.count = state["running"]
        self.sampler.bit_generator.state = state["sampler"]
        torch.set_rng_state(state["torch_rng"])
        self.iteration, self.step, self.log_rows = state["iteration"], state["step"], list(state["log_rows"])
        LOG.info("resumed from %s at iteration %d (step %d)", path, self.iteration, self.step)
        return True

    # ------------------------------------------------------------------ the loop
    def train(self, checkpoint_dir: str | Path | None = None, stop_after: int | None = None) -> pd.DataFrame:
        """Run until ``total_steps`` optimizer steps (or ``stop_after`` iterations, for tests of resumption)."""
        cfg = self.cfg
        ckpt = Path(checkpoint_dir) / "last.pt" if checkpoint_dir else None
        if ckpt is not None and ckpt.exists():
            self.load_checkpoint(ckpt)
        LOG.info(
            "PPO: %d iterations x %d rollouts, %d optimizer steps; trainable %d / %d parameters",
            cfg.iterations,
            cfg.num_rollouts,
            cfg.total_steps,
            self.freeze_summary["trainable_parameters"],
            self.freeze_summary["total_parameters"],
        )
        bar = tqdm(total=cfg.iterations, initial=self.iteration, desc="ppo", mininterval=5)
        done_here = 0
        while self.iteration < cfg.iterations:
            if stop_after is not None and done_here >= stop_after:
                break
            row = self.train_iteration()
            done_here += 1
            bar.update(1)
            LOG.info(
                "iter %d step %d reward %.4f (scaled %.3f) kl %.3f kl_coef %.4f loss %.4f pg %.4f vf %.4f "
                "entropy %.3f tokens/s %.1f",
                row["iteration"],
                row["step"],
                row["reward_raw_mean"],
                row["reward_mean"],
                row["kl"],
                row["kl_coef"],
                row["loss"],
                row["policy_loss"],
                row["value_loss"],
                row["entropy"],
                row["tokens_per_s"],
            )
            if ckpt is not None and (self.iteration % cfg.checkpoint_interval == 0 or self.iteration == cfg.iterations):
                self.save_checkpoint(ckpt)
        bar.close()
        return pd.DataFrame(self.log_rows)
