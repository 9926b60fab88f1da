"""PPO for language models in plain torch, CleanRL-style: read top to bottom.

Semantics and hyper-parameter names follow trlx's PPO (what the paper used), re-implemented here because trlx is not
installable:

* policy = the SFT checkpoint + a scalar value head (trlx's 2-layer MLP head) on the last hidden state;
* only the top ``num_layers_unfrozen`` blocks (+ value head, + an untied output layer) train. The frozen bottom is run
  once per rollout batch without a graph and its output cached; every PPO epoch re-runs only the top blocks;
* the frozen reference (= SFT) shares that bottom; its top is a frozen copy of the SFT top blocks (trlx's "hydra");
* an iteration samples ``num_rollouts`` prompts, generates, scores (reward scaling, KL-penalised per-token rewards,
  GAE: ``ppo_math``), then makes ``ppo_epochs`` passes over the batch in minibatches of ``batch_size``.

The reward is any callable ``rewards(prompts, completions) -> 1-D tensor`` (one score per completion), so the same
trainer takes the ground-truth classifier reward or a learned IRL reward model.

Resumability: every ``checkpoint_interval`` iterations the trainable weights, optimizer, KL controller, running
moments, prompt sampler and log are saved; every random draw is derived from (seed, iteration), so a resumed run
reproduces an uninterrupted one exactly (``tests/test_ppo.py``).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from workflow_scripts.lib.compute import Precision
from workflow_scripts.lib.curves import last_fifth
from workflow_scripts.lib.generation import Continuation, generate_ids
from workflow_scripts.lib.lm import freeze_bottom_layers, model_fingerprint, run_blocks, split_backbone
from workflow_scripts.lib.ppo_checkpoint import load_trainer, save_trainer
from workflow_scripts.lib.ppo_config import PPOConfig
from workflow_scripts.lib.ppo_math import (
    RolloutBatch,
    RolloutView,
    RunningMoments,
    ValueHead,
    collate_hidden,
    collate_rollouts,
    entropy_from_logits,
    gae_advantages,
    kl_controller,
    kl_penalised_rewards,
    make_optimizer,
    masked_mean,
    masked_whiten,
    ppo_losses,
    scale_scores,
)
from workflow_scripts.lib.rewards import RewardFn, score_completions

LOG = logging.getLogger("irl_llms.ppo")


# ============================================================================================ the policy
class HydraPolicy:
    """The policy (trainable top + value head) and the frozen reference as two branches on one frozen bottom: a
    rollout batch runs the bottom once (``bottom_hidden``) and every later pass (policy, reference, each PPO epoch)
    starts from its cached output. Construct under a fixed torch seed: the value head is freshly initialised.

    ``bucket_rows`` (``rlhf.bucket_rows``): every pass over the top runs in pieces of that many rows of similar length
    (``RolloutView.length_buckets``), each cut to its own width, and the pieces' outputs are put back in row order: the
    same numbers as one pass over the padded batch up to fp32 rounding, with little padding computed. None: one pass.
    ``positions`` counts (real, computed) top-block positions, for the update's padding share."""

    def __init__(self, model: Any, num_layers_unfrozen: int, bucket_rows: int | None) -> None:
        self.model, self.bucket_rows = model, bucket_rows
        self.positions = [0, 0]
        self.device = next(model.parameters()).device
        model.eval()  # dropout off: rollout and update log-probs must come from the same distribution
        self.freeze_summary = freeze_bottom_layers(model, num_layers_unfrozen)
        backbone = split_backbone(model, num_layers_unfrozen)
        self.bottom, self.top, self.norm = backbone.bottom, backbone.top, backbone.norm
        self.head = model.get_output_embeddings()
        # reference branch = a frozen copy of the SFT top (+ norm, + the head when it trains), taken before any update
        self.ref_top = copy.deepcopy(self.top).requires_grad_(False)
        self.ref_norm = copy.deepcopy(self.norm).requires_grad_(False) if self.norm is not None else None
        head_trains = any(p.requires_grad for p in self.head.parameters())
        self.ref_head = copy.deepcopy(self.head).requires_grad_(False) if head_trains else self.head
        self.value_head = ValueHead(model.config.hidden_size).to(self.device)

    def parameters(self) -> list[torch.nn.Parameter]:
        """What the optimizer updates: the model's trainable parameters, then the value head's."""
        return [p for p in self.model.parameters() if p.requires_grad] + list(self.value_head.parameters())

    def bottom_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return run_blocks(self.model, self.bottom, None, attention_mask, input_ids=input_ids)

    def _response_head(self, hidden: torch.Tensor, batch: RolloutView, head: torch.nn.Module):
        """Logits only at generated tokens (not padding), their log-probs ([B, R], 0 on padding), response hiddens."""
        h = hidden[:, batch.prompt_width - 1 : -1]  # position prompt_width - 1 + t predicts response token t
        keep = batch.response_mask.bool()
        logits = head(h[keep]).float()  # [generated tokens, V]
        targets = batch.input_ids[:, batch.prompt_width :][keep]
        logprobs = torch.zeros(keep.shape, dtype=logits.dtype, device=logits.device)
        logprobs[keep] = -torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        return logits, logprobs, h

    def _branch(
        self, batch: RolloutView, top: Any, norm: Any, head: torch.nn.Module, values: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One branch (policy or reference) over ``batch`` in length buckets: (logits of generated tokens [N, V], in
        bucket order; logprobs [B, R]; values [B, R] or None), 0 on padding."""
        width = batch.response_mask.shape[1]
        pieces, logits, logprobs, vals = batch.length_buckets(self.bucket_rows), [], [], []
        for idx in pieces:
            piece = batch.rows(idx) if len(pieces) > 1 else batch
            hidden = run_blocks(self.model, top, norm, piece.attention_mask, hidden=piece.bottom_hidden)
            self.positions[0] += int(piece.attention_mask.sum())
            self.positions[1] += piece.attention_mask.numel()
            piece_logits, piece_logprobs, h = self._response_head(hidden, piece, head)
            logits.append(piece_logits)
            logprobs.append(torch.nn.functional.pad(piece_logprobs, (0, width - piece_logprobs.shape[1])))
            if values:
                piece_values = self.value_head(h).float() * piece.response_mask
                vals.append(torch.nn.functional.pad(piece_values, (0, width - piece_values.shape[1])))
        back = torch.argsort(torch.cat(pieces))  # bucket order -> row order
        return torch.cat(logits), torch.cat(logprobs)[back], torch.cat(vals)[back] if values else None

    def forward(self, batch: RolloutView) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits of generated tokens [N, V], logprobs [B, R], values [B, R]; 0 on padding) under the current
        policy."""
        logits, logprobs, values = self._branch(batch, self.top, self.norm, self.head, values=True)
        assert values is not None
        return logits, logprobs, values

    @torch.no_grad()
    def reference_logprobs(self, batch: RolloutView) -> torch.Tensor:
        return self._branch(batch, self.ref_top, self.ref_norm, self.ref_head, values=False)[1]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The model's trainable weights (the frozen rest is the initial checkpoint, identified by its fingerprint)."""
        return {n: p.detach().cpu().clone() for n, p in self.model.named_parameters() if p.requires_grad}


# ============================================================================================ rollouts
def score_rollouts(
    policy: HydraPolicy, conts: Sequence[Continuation], pad_id: int, scores: torch.Tensor, kl_coef: float,
    cfg: PPOConfig, precision: Precision,
) -> tuple[RolloutBatch, dict[str, float]]:  # fmt: skip
    """The rollouts as a batch with old log-probs and values, KL-penalised rewards and whitened GAE advantages. The
    frozen bottom's output is taken from generation when it kept it (``Continuation.hidden``), else computed."""
    ids, attn, resp_mask, prompt_w = collate_rollouts(conts, pad_id)
    ids, attn, resp_mask = ids.to(policy.device), attn.to(policy.device), resp_mask.to(policy.device)
    with torch.no_grad():  # the rollout phase: no graph; the update recomputes what it differentiates
        with precision.autocast():
            cached = collate_hidden(conts, prompt_w, resp_mask.shape[1])  # None unless generation kept every row's
            bottom = policy.bottom_hidden(ids, attn) if cached is None else cached.to(policy.device)
            view = RolloutView(ids, attn, resp_mask, prompt_w, bottom)
            logits, logprobs, values = policy.forward(view)
            ref_logprobs = policy.reference_logprobs(view)
        entropy = entropy_from_logits(logits).mean()
        rewards, kl = kl_penalised_rewards(scores.to(policy.device), logprobs, ref_logprobs, resp_mask, kl_coef)
        advantages, returns = gae_advantages(values, rewards, resp_mask, cfg.gamma, cfg.lam)
        advantages = masked_whiten(advantages, resp_mask)
    batch = RolloutBatch(ids, attn, resp_mask, prompt_w, bottom, logprobs, values, advantages, returns)
    returns_mean = masked_mean(returns, resp_mask)
    stats = {
        "kl": float(kl.sum(1).mean()), "kl_coef": float(kl_coef), "entropy": float(entropy),
        "kl_trlx": float(((kl.exp() - 1 - kl) * resp_mask).sum(1).mean()),  # the KL trlx's controller tracks
        "returns_mean": float(returns_mean), "values_mean": float(masked_mean(values, resp_mask)),
        "returns_std": float(masked_mean((returns - returns_mean) ** 2, resp_mask).sqrt()),
    }  # fmt: skip
    return batch, stats


# ============================================================================================ the update
def ppo_update(
    policy: HydraPolicy, optim: tuple[torch.optim.Optimizer, Any], precision: Precision, batch: RolloutBatch,
    cfg: PPOConfig, iteration: int, step: int,
) -> dict[str, float]:  # fmt: skip
    """``ppo_epochs`` shuffled passes over ``batch`` in minibatches of ``batch_size``, one optimizer and scheduler
    step each (``optim``; ``step`` = optimizer steps before this update, for error messages); returns the mean of
    each loss statistic and the learning rate."""
    optimizer, scheduler = optim
    start = time.perf_counter()
    sums: dict[str, float] = {}
    # the minibatch order is a function of (seed, iteration) only, so a resumed run shuffles as an uninterrupted one
    gen = torch.Generator().manual_seed(cfg.seed * 7_919 + iteration)
    n = batch.input_ids.shape[0]
    params = policy.parameters()
    policy.positions = [0, 0]
    for _ in range(cfg.ppo_epochs):
        perm = torch.randperm(n, generator=gen)
        for mb_idx in perm.split(cfg.batch_size):
            mb = batch.rows(mb_idx.to(policy.device))
            with precision.autocast():
                _, logprobs, values = policy.forward(mb)
            loss, stats = ppo_losses(
                logprobs, values, mb.logprobs, mb.values, mb.advantages, mb.returns, mb.response_mask,
                cfg.cliprange, cfg.cliprange_value, cfg.vf_coef,
            )  # fmt: skip
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"PPO loss is {float(loss)} at step {step}; stopping (the last good checkpoint is kept)"
                )
            optimizer.zero_grad(set_to_none=True)
            stats["grad_norm"] = precision.backward_step(loss, optimizer, params, cfg.max_grad_norm)
            stats["learning_rate"] = optimizer.param_groups[0]["lr"]  # the rate this step used
            scheduler.step()
            step += 1
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
    n_updates = cfg.ppo_epochs * math.ceil(n / cfg.batch_size)
    out = {k: v / n_updates for k, v in sums.items()}
    seconds = time.perf_counter() - start
    real, computed = policy.positions
    return {
        **out, "update_seconds": seconds, "update_samples_per_s": cfg.ppo_epochs * n / max(seconds, 1e-9),
        "update_padding_share": 1 - real / max(computed, 1),  # of the top-block positions the update computed
    }  # fmt: skip


# ============================================================================================ the trainer
class PPOTrainer:
    """The loop: sample prompts -> roll out -> score -> update, with resumable checkpoints. ``monitor``: a second
    reward, only logged (``monitor_reward_mean``): the GT reward while IRL-RLHF climbs the learned one.
    ``kl_budget`` (nats per sequence): stop before ``total_steps`` once the run's final KL (the mean over the last
    fifth of its iterations so far, as Table 1 reports it) reaches it; it changes no iteration before the stop, so
    the stopped run is a prefix of the full one (IRL-RLHF at RLHF's KL: ``irl_rlhf.stop_at_kl``)."""

    def __init__(
        self, cfg: PPOConfig, model: Any, tokenizer: Any, reward_fn: RewardFn, prompts: Sequence[str],
        precision: Precision | None = None, monitor: RewardFn | None = None, kl_budget: float | None = None,
    ) -> None:  # fmt: skip
        if len(prompts) == 0:
            raise ValueError("PPO needs at least one training prompt; the prompt set is empty")
        self.cfg, self.tokenizer, self.reward_fn, self.prompts = cfg, tokenizer, reward_fn, list(prompts)
        self.monitor = monitor
        if kl_budget is not None and not (math.isfinite(kl_budget) and kl_budget > 0):
            raise ValueError(f"kl_budget must be a positive number of nats, got {kl_budget}")
        self.kl_budget = kl_budget
        self.precision = precision or Precision.default(next(model.parameters()).device)
        # identifies the initial policy (= the reference): a checkpoint of another model or tokenizer is never resumed
        self.init_fingerprint = model_fingerprint(model, tokenizer)
        torch.manual_seed(cfg.seed)  # the value head's initial weights depend on the seed only
        self.policy = HydraPolicy(model, cfg.num_layers_unfrozen, cfg.bucket_rows)
        self.optimizer, self.scheduler = make_optimizer(self.policy.parameters(), cfg)
        self.kl_ctl = kl_controller(cfg.init_kl_coef, cfg.target, cfg.horizon)
        self.running = RunningMoments()
        self.sampler = np.random.default_rng(cfg.seed)
        self.iteration, self.step = 0, 0
        self.log_rows: list[dict[str, float]] = []
        self.gen = cfg.generation_settings()

    # ------------------------------------------------------------------ one iteration
    def sample_prompts(self) -> list[str]:
        n = self.cfg.num_rollouts
        idx = self.sampler.choice(len(self.prompts), size=n, replace=len(self.prompts) < n)
        return [self.prompts[i] for i in idx]

    def make_rollouts(self) -> tuple[RolloutBatch, dict[str, float], list[str], list[str]]:
        """Sample, generate (seeded by (seed, iteration)), score with the reward and the reference."""
        prompts = self.sample_prompts()
        start = time.perf_counter()
        seed = self.cfg.seed * 1_000_003 + self.iteration * 1_009
        with self.precision.autocast():  # generation keeps the frozen bottom's output: the update starts from it
            generated = generate_ids(self.policy.model, self.tokenizer, prompts, self.gen, seed=seed, progress=False,
                                     hidden_layer=len(self.policy.bottom))  # fmt: skip
        conts = [c[0] for c in generated]
        gen_seconds = time.perf_counter() - start
        completions = self.tokenizer.batch_decode([c.response_ids for c in conts], skip_special_tokens=True)
        raw, monitored = score_completions(self.reward_fn, self.monitor, prompts, completions, self.iteration)
        scores = scale_scores(raw, self.cfg.scale_reward, self.cfg.cliprange_reward, self.running)
        batch, score_stats = score_rollouts(
            self.policy, conts, self.tokenizer.pad_token_id, scores, self.kl_ctl.value, self.cfg, self.precision
        )
        n_tokens = int(batch.response_mask.sum())
        stats = {
            "reward_raw_mean": float(raw.mean()),
            "reward_raw_std": float(raw.std()) if raw.numel() > 1 else 0.0,
            "reward_mean": float(scores.mean()),
            **({} if monitored is None else {"monitor_reward_mean": float(monitored.mean())}),
            **score_stats,
            "response_tokens": n_tokens,
            "mean_response_length": n_tokens / len(conts),
            "rollout_tokens_per_s": n_tokens / max(gen_seconds, 1e-9),
            "rollout_seconds": gen_seconds,
        }
        return batch, stats, prompts, completions

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        stats = ppo_update(self.policy, (self.optimizer, self.scheduler), self.precision, batch, self.cfg,
                           self.iteration, self.step)  # fmt: skip
        self.step += self.cfg.ppo_epochs * math.ceil(batch.input_ids.shape[0] / self.cfg.batch_size)
        return stats

    def train_iteration(self) -> dict[str, float]:
        batch, roll_stats, _, _ = self.make_rollouts()
        upd_stats = self.update(batch)
        self.kl_ctl.update_iteration(roll_stats["kl_trlx"], self.cfg.num_rollouts, self.cfg.batch_size)
        row = {"iteration": self.iteration, "step": self.step, **roll_stats, **upd_stats}
        seconds = roll_stats["rollout_seconds"] + upd_stats["update_seconds"]
        row["tokens_per_s"] = roll_stats["response_tokens"] / seconds
        self.log_rows.append(row)
        self.iteration += 1
        return row

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path: str | Path) -> None:
        """Everything the next iteration depends on, on the CPU (``ppo_checkpoint.save_trainer``)."""
        save_trainer(self, path)

    def load_checkpoint(self, path: str | Path) -> bool:
        """Restore a checkpoint of *this* configuration; False (start fresh) for another config's; a bad one raises
        and leaves the trainer as it was (``ppo_checkpoint.load_trainer``)."""
        return load_trainer(self, path)

    # ------------------------------------------------------------------ the loop
    def kl_budget_reached(self) -> bool:
        """Whether the run's final KL so far (``curves.last_fifth``, as Table 1's) has reached ``kl_budget``."""
        if self.kl_budget is None or not self.log_rows:
            return False
        return float(last_fifth(pd.DataFrame(self.log_rows))["kl"].mean()) >= self.kl_budget

    def train(self, checkpoint_dir: str | Path | None = None, stop_after: int | None = None) -> pd.DataFrame:
        """Run until ``total_steps`` optimizer steps or the ``kl_budget`` (or ``stop_after`` iterations, for tests of
        resumption)."""
        cfg = self.cfg
        ckpt = Path(checkpoint_dir) / "last.pt" if checkpoint_dir else None
        if ckpt is not None and ckpt.exists():
            self.load_checkpoint(ckpt)
        summary = self.policy.freeze_summary
        LOG.info("PPO: %d iterations x %d rollouts, %d optimizer steps; trainable %d / %d parameters",
                 cfg.iterations, cfg.num_rollouts, cfg.total_steps, summary["trainable_parameters"],
                 summary["total_parameters"])  # fmt: skip
        bar = tqdm(total=cfg.iterations, initial=self.iteration, desc="ppo", mininterval=5)
        done_here = 0
        while (
            self.iteration < cfg.iterations
            and not self.kl_budget_reached()
            and (stop_after is None or done_here < stop_after)
        ):
            row = self.train_iteration()
            done_here += 1
            bar.update(1)
            LOG.info("iter %(iteration)d step %(step)d reward %(reward_raw_mean).4f (scaled %(reward_mean).3f) "
                     "kl %(kl).3f kl_coef %(kl_coef).4f loss %(loss).4f pg %(policy_loss).4f vf %(value_loss).4f "
                     "entropy %(entropy).3f tokens/s %(tokens_per_s).1f", row)  # fmt: skip
            if ckpt is not None and (self.iteration % cfg.checkpoint_interval == 0 or self.iteration == cfg.iterations):
                self.save_checkpoint(ckpt)
        bar.close()
        if self.kl_budget_reached():
            LOG.info("KL budget %.3f reached after %d of %d iterations (final KL %.3f); stopping", self.kl_budget,
                     self.iteration, cfg.iterations, last_fifth(pd.DataFrame(self.log_rows))["kl"].mean())  # fmt: skip
        return pd.DataFrame(self.log_rows)
