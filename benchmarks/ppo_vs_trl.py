"""Throughput benchmark: our PPO trainer (``workflow_scripts/lib/ppo.py``) vs TRL's closest trainer, in one process.

Run from the repository root (see ``benchmarks/README.md``)::

    .venv/bin/python benchmarks/ppo_vs_trl.py --model results/sft/model --prompts results/data/train.parquet

What runs
---------
One configuration (model, prompts, rollouts per iteration, minibatch size, PPO epochs, generation length and sampling
settings, reward callable, fp32 on CPU, ``--threads`` torch threads, the same trainable layers) goes through

(a) ``PPOTrainer`` from ``workflow_scripts/lib/ppo.py``: ``1 + --iterations`` calls of ``train_iteration()``;
(b) ``trl.RLOOTrainer`` (trl 1.16.0): ``trainer.train()`` for the same number of iterations, where one iteration is
    one generation batch of ``--num-rollouts`` completions followed by ``--ppo-epochs`` passes over it in minibatches
    of ``--batch-size`` (TRL: ``generation_batch_size``, ``num_iterations``, ``per_device_train_batch_size``).

Settings: the options that are pipeline settings (``--num-rollouts``, ``--batch-size``, ``--ppo-epochs``,
``--max-new-tokens``, ``--num-layers-unfrozen``, ``--max-prompt-tokens``, ``--top-k/-p``, ``--temperature``,
``--learning-rate``, ``--kl-coef``, ``--cliprange``, ``--seed``) default to their config keys (``rlhf.*``,
``data.max_prompt_tokens``) in ``config.yaml`` with any ``--config`` files merged over it, read by the pipeline's
``load_config`` (``--help`` names each key and value). Our trainer gets the stage's own ``PPOConfig``, built by
``from_config`` from that ``rlhf`` section with the options over it, so the stage's cross-key checks (e.g.
``num_rollouts`` a multiple of ``batch_size``) reject a bad command line with the pipeline's message. Fixed for the
comparison: all rollouts in one ``generate`` call, a fixed KL coefficient and a constant learning rate (as TRL).

Both get the same reward object: ``1 - P_toxic(completion)`` under the GT BiLSTM toxicity classifier
(``--gt-wheel``), wrapped for TRL as a reward function ``(prompts, completions, **kw) -> list[float]``.

trl 1.16.0 ships no PPO trainer: ``PPOTrainer`` is gone from ``trl`` and ``trl.experimental`` has no ``ppo`` module
(checked in the 1.16.0 wheel). ``RLOOTrainer`` is the closest: on-policy sampling with ``model.generate``, a frozen
reference model for a KL penalty, and several clipped-ratio (PPO-style) passes over each generation batch.

Trainable layers: TRL has no layer-freezing option, but its HF Trainer optimises only ``requires_grad`` parameters,
so ``workflow_scripts.lib.lm.freeze_bottom_layers`` is applied to TRL's model too and both train exactly the same
parameters (checked: the count in TRL's optimizer is printed in the mismatch list). For an all-layers comparison pass
``--num-layers-unfrozen <number of blocks>`` (30 for SmolLM2-135M).

trl is not a pipeline dependency (extra ``bench`` in pyproject.toml); install it beside the pins with
``.venv/bin/pip install --no-deps trl==1.16.0`` (all its requirements are already pinned; ``pip check`` stays clean).

The first iteration of each trainer is a warm-up and is dropped; the printed numbers are medians over the remaining
``--iterations`` iterations.

Metrics (same definition for both trainers)
-------------------------------------------
* rollout tokens/s: generated tokens (up to and including the first stop token of each completion) / seconds spent
  producing them. Ours: ``rollout_seconds`` of ``make_rollouts`` = ``generate_ids`` (tokenise, left-pad, ``generate``,
  cut at the stop token). TRL: time inside ``_tokenize_prompts`` + ``_generate_single_turn`` (tokenise, pad,
  ``generate``, mask after EOS). Neither includes the reward, the log-prob/reference passes or decoding.
* update samples/s: ``ppo_epochs * num_rollouts / update seconds`` (each pass over a sample counts once).
  Ours: ``update_seconds`` of ``PPOTrainer.update`` (all minibatch forward/backward/clip/optimizer steps).
  TRL: sum over the iteration's optimizer steps of the Trainer's ``on_step_begin`` -> ``on_step_end`` window, minus
  the time inside ``_generate_and_score_completions`` (the rollout phase, which runs inside the first step).
* iteration seconds (informative): wall time of a whole iteration, rollout phase included.

FLOP/s of our update phase vs a plain matmul
--------------------------------------------
The reference is ``torch.mm`` of two fp32 ``--matmul-size``-square matrices (``2 n^3`` FLOPs), timed
``--matmul-repeats`` times before and after the trainers in this process with the same thread count (median).

FLOPs of one update phase of ours (matmul FLOPs only; each fwd multiply-add = 2 FLOPs, backward = 2x forward when
both the weight gradient and the input gradient are needed, 1x forward when only the input gradient is)::

    F = E * [ 6 * N_top        * T_seq      # trainable top blocks + final norm: fwd 2 + bwd (weight 2 + input 2)
            + c_head * V * H   * T_resp     # output layer on every response position: 6 if it trains (untied),
                                            #   4 if frozen (tied to the embedding): fwd 2 + input-grad bwd 2
            + 6 * N_vhead      * T_resp     # value head H -> 2H -> 1 (trains)
            + 12 * L_top * d_attn * B * S^2 # attention scores QK^T and probs@V: fwd 4*S^2*d_attn per layer per
          ]                                 #   sequence, x3 for fwd + bwd

with E = ppo_epochs; B = rollouts per iteration; S = padded sequence width of the iteration's rollout batch (prompt
width + response width); T_seq = B * S; T_resp = B * response width. An upper bound: the head runs on generated tokens
only and each minibatch drops the columns that are padding in all its rows; N_top = parameters of the top
``num_layers_unfrozen`` blocks + final norm; V x H = output-layer matrix; N_vhead = value-head parameters; L_top =
number of top blocks; d_attn = num_attention_heads * head_dim. The frozen bottom costs nothing in the update (its output
is cached at rollout time). Not counted: element-wise work (norms, activations, softmax over V, the loss), the optimizer
step (~10 FLOPs per trainable parameter per step), embedding lookups. Slight over-count: the lowest trainable block does
not need the gradient w.r.t. its input. achieved FLOP/s = F / update_seconds; share = achieved / matmul FLOP/s.

Mismatches that could not be removed (also printed and written to the JSON)
---------------------------------------------------------------------------
1. Algorithm: RLOO, not PPO. TRL has no value head, no value loss and no GAE; its clipped ratio is per sequence
   (summed log-probs), ours per token. Ours also trains the value head (H -> 2H -> 1, included in the FLOPs).
2. Prompts per iteration: RLOO needs >= 2 completions per prompt, so TRL samples ``num_rollouts / num_generations``
   prompts x ``--trl-num-generations`` (default 2) completions; ours samples ``num_rollouts`` prompts (with
   replacement), one completion each. The number of rollouts and the generate batch (all rollouts in one
   ``generate`` call) are equal; the sampled prompts/completions, hence lengths, differ (both are printed).
3. Frozen bottom: ours runs the frozen bottom blocks once per rollout batch and re-runs only the top blocks in each
   minibatch; TRL runs the whole model forward (bottom without a graph) in every minibatch of every epoch. The trainable
   parameter set is identical (``freeze_bottom_layers`` is applied to TRL's model; the HF Trainer's optimizer takes
   only ``requires_grad`` parameters). This is the design difference being measured, not removed.
4. Reference model: ours shares the bottom and keeps a copy of the top blocks; TRL loads a second full model. Only the
   rollout phase (iteration seconds) is affected.
5. Output layer in the update: ours materialises ``[minibatch, response width, V]`` logits for every response
   position (padding after EOS included); TRL's fused LM head projects only non-padding completion tokens, in tiles,
   and also computes the entropy.
6. Losses/rewards: ours: per-token KL penalty (fixed ``init_kl_coef``), running-std reward scaling, whitened GAE
   advantages; TRL: sequence KL (``beta`` = the same coefficient) subtracted from the reward, leave-one-out baseline.
   Cheap next to the model passes.
7. Optimizer: both ``torch.optim.AdamW`` (non-fused; TRL's ``optim="adamw_torch"``), betas (0.9, 0.95), eps 1e-8,
   lr ``--learning-rate`` constant, grad-norm clip 1.0; TRL exempts biases/norms from weight decay, ours does not.
8. Minibatch order: ours reshuffles every epoch, TRL shuffles once per generation batch (same work).
9. Modes: ours keeps the model in eval mode; TRL trains in train mode with ``disable_dropout=True`` (same compute).
   Ours passes mask-derived position ids in the update forward, TRL none (numerics only).
10. Timing scopes: TRL's update window also contains its per-step metric gathering (``.item()`` syncs) and the HF
    Trainer's step bookkeeping; ours contains only ``PPOTrainer.update``.
11. Tokenisation: TRL tokenises prompts with ``add_special_tokens=True`` (reported if that adds tokens for this
    tokenizer); both receive the same prompt strings, pre-cut to the last ``--max-prompt-tokens`` tokens. TRL's stop
    tokens are set to ours (``model.generation_config.eos_token_id``).
12. ``torch.use_deterministic_algorithms`` is not enabled here (the pipeline's PPO stage enables it).
13. The runs are sequential (ours, then TRL), so background load on the machine affects them at different times.
"""

from __future__ import annotations

import os

# No network: the model and tokenizer are local; TRL would otherwise send a telemetry ping.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import asdict, fields  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from config_options import CONFIG_HELP, add_config_option, load_config_option  # noqa: E402  (benchmarks/)
from machine import time_matmul  # noqa: E402  (benchmarks/machine.py)

from workflow_scripts.lib.config import from_config  # noqa: E402
from workflow_scripts.lib.generation import encode_prompts  # noqa: E402
from workflow_scripts.lib.lm import (  # noqa: E402
    final_norm,
    freeze_bottom_layers,
    load_causal_lm,
    prepare_tokenizer,
    stop_token_ids,
    transformer_blocks,
)
from workflow_scripts.lib.ppo import PPOTrainer  # noqa: E402
from workflow_scripts.lib.ppo_config import PPOConfig  # noqa: E402
from workflow_scripts.lib.toxicity import load_scorer  # noqa: E402

STATIC_MISMATCHES = [
    "algorithm: TRL 1.16.0 has no PPO trainer; RLOOTrainer is used (no value head / value loss / GAE; sequence-level "
    "clipped ratio). Ours also trains a value head.",
    "prompts per iteration: TRL samples num_rollouts/num_generations prompts x num_generations completions (RLOO needs "
    ">= 2); ours num_rollouts prompts x 1 completion. Same rollouts per iteration and generate batch size.",
    "frozen bottom: ours computes it once per rollout batch and re-runs only the top blocks per minibatch; TRL runs "
    "the full model forward in every minibatch (same trainable parameters).",
    "reference model: ours shares the frozen bottom + copy of the top; TRL loads a second full model (rollout phase).",
    "output layer in the update: ours projects generated tokens only (no padding) to full logits; TRL's fused LM "
    "head projects only non-padding completion tokens, in tiles, and also computes the entropy.",
    "losses: per-token KL + GAE + value loss (ours) vs sequence KL in reward + leave-one-out baseline (TRL).",
    "optimizer: both torch.optim.AdamW non-fused, betas (0.9, 0.95), constant lr, clip 1.0; TRL exempts bias/norm "
    "parameters from weight decay.",
    "minibatch order: ours reshuffles each epoch, TRL once per generation batch.",
    "modes: ours eval mode, TRL train mode with dropout disabled; ours passes mask-derived position ids, TRL none.",
    "timing scope: TRL's update window includes its per-step metric gathering and HF Trainer step bookkeeping.",
    "torch deterministic algorithms not enabled (the pipeline's PPO stage enables them).",
    "runs are sequential (ours first, then TRL): background load affects them at different times.",
]


# ============================================================================================ shared pieces
class NonToxicityReward:
    """``1 - P_toxic(completion)`` under the GT BiLSTM classifier: cheap, deterministic, no references needed."""

    def __init__(self, wheel: str) -> None:
        self.scorer = load_scorer({"kind": "gt_bilstm", "wheel": wheel})

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:
        return torch.as_tensor(1.0 - self.scorer.p_toxic(list(completions)), dtype=torch.float32)


def load_prompt_texts(path: str | Path, tokenizer: Any, max_prompt_tokens: int) -> list[str]:
    """The ``prompt`` column, each cut to its last ``max_prompt_tokens`` tokens (as text), so both trainers get the
    same strings (TRL has no prompt-length cut of its own)."""
    df = pd.read_parquet(path)
    if "prompt" not in df.columns:
        raise ValueError(f"{path}: no 'prompt' column (columns: {list(df.columns)})")
    texts = [str(p) for p in df["prompt"].tolist() if isinstance(p, str) and p.strip()]
    if not texts:
        raise ValueError(f"{path}: no non-empty prompts")
    ids = encode_prompts(tokenizer, texts, max_prompt_tokens)
    return [tokenizer.decode(row, skip_special_tokens=False) for row in ids]


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


# ============================================================================================ (a) ours
def update_flops(model: Any, trainer: PPOTrainer, shape: dict[str, int], ppo_epochs: int) -> dict[str, float]:
    """Matmul FLOPs of one ``PPOTrainer.update`` (formula in the module docstring)."""
    cfg = model.config
    hidden = cfg.hidden_size
    n_heads = cfg.num_attention_heads
    d_attn = n_heads * (getattr(cfg, "head_dim", None) or hidden // n_heads)
    head = model.get_output_embeddings()
    vocab = head.weight.shape[0]
    head_trains = head.weight.requires_grad
    norm = final_norm(model)
    n_top = sum(p.numel() for p in trainer.policy.top.parameters())
    n_top += sum(p.numel() for p in norm.parameters()) if norm is not None else 0
    n_vhead = sum(p.numel() for p in trainer.policy.value_head.parameters())
    rows, seq, resp = shape["rows"], shape["seq_width"], shape["response_width"]
    t_seq, t_resp = rows * seq, rows * resp
    parts = {
        "top_blocks": 6.0 * n_top * t_seq,
        "output_layer": (6.0 if head_trains else 4.0) * vocab * hidden * t_resp,
        "value_head": 6.0 * n_vhead * t_resp,
        "attention_scores": 12.0 * len(trainer.policy.top) * d_attn * rows * seq**2,
    }
    out = {k: ppo_epochs * v for k, v in parts.items()}
    out["total"] = sum(out.values())
    return out


def run_ours(args: argparse.Namespace, prompts: list[str], reward: NonToxicityReward) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    model, tokenizer = load_causal_lm(args.model, device="cpu", dtype=torch.float32)
    cfg = args.ppo
    trainer = PPOTrainer(cfg, model, tokenizer, reward, prompts)
    shapes: list[dict[str, int]] = []
    original_update = trainer.update

    def update_recording_shapes(batch: Any) -> dict[str, float]:
        shapes.append(
            {
                "rows": int(batch.input_ids.shape[0]),
                "seq_width": int(batch.input_ids.shape[1]),
                "prompt_width": int(batch.prompt_width),
                "response_width": int(batch.response_mask.shape[1]),
            }
        )
        return original_update(batch)

    trainer.update = update_recording_shapes  # type: ignore[method-assign]
    iters = []
    for i in range(1 + args.iterations):
        start = time.perf_counter()
        row = trainer.train_iteration()
        wall = time.perf_counter() - start
        flops = update_flops(model, trainer, shapes[-1], cfg.ppo_epochs)
        iters.append(
            {
                "warmup": i == 0,
                "rollout_tokens": int(row["response_tokens"]),
                "rollout_seconds": float(row["rollout_seconds"]),
                "rollout_tokens_per_s": float(row["rollout_tokens_per_s"]),
                "update_seconds": float(row["update_seconds"]),
                "update_samples_per_s": float(row["update_samples_per_s"]),
                "iteration_seconds": wall,
                "rollout_phase_seconds": wall - float(row["update_seconds"]),
                "mean_response_length": float(row["mean_response_length"]),
                **shapes[-1],
                "update_flops": flops,
                "update_flop_per_s": flops["total"] / float(row["update_seconds"]),
                "reward_raw_mean": float(row["reward_raw_mean"]),
            }
        )
        print(
            f"  ours iter {i}{' (warm-up)' if i == 0 else ''}: rollout {row['rollout_tokens_per_s']:.1f} tok/s, "
            f"update {row['update_samples_per_s']:.2f} samples/s, iteration {wall:.2f} s",
            flush=True,
        )
    n_blocks = len(transformer_blocks(model))
    summary = {
        "trainer": "workflow_scripts.lib.ppo.PPOTrainer",
        "trainable_parameters_model": trainer.policy.freeze_summary["trainable_parameters"],
        "trainable_parameters_value_head": sum(p.numel() for p in trainer.policy.value_head.parameters()),
        "total_parameters": trainer.policy.freeze_summary["total_parameters"],
        "num_blocks": n_blocks,
        "output_layer_trains": bool(model.get_output_embeddings().weight.requires_grad),
        "value_head_hidden": 2 * model.config.hidden_size,
        "iterations": iters,
    }
    del trainer, model
    gc.collect()
    return summary


# ============================================================================================ (b) TRL
def run_trl(args: argparse.Namespace, prompts: list[str], reward: NonToxicityReward) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from trl import RLOOConfig, RLOOTrainer

    torch.manual_seed(args.seed)
    model, tokenizer = load_causal_lm(args.model, device="cpu", dtype=torch.float32)
    stop_ids = stop_token_ids(tokenizer, model)
    model.generation_config.eos_token_id = stop_ids  # TRL stops at every id ours stops at
    freeze = freeze_bottom_layers(model, args.num_layers_unfrozen)
    steps_per_iteration = args.ppo_epochs * (args.num_rollouts // args.batch_size)
    n_iter = 1 + args.iterations

    rec: dict[str, list[float]] = {"gen_seconds": [], "gen_tokens": [], "phase_seconds": [], "step_seconds": []}

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            rec["step_seconds"].append(time.perf_counter() - self.t0)

    def trl_reward(prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
        return reward(prompts, completions).tolist()

    trl_reward.__name__ = "non_toxicity"

    with tempfile.TemporaryDirectory(prefix="trl_bench_") as out_dir:
        config = RLOOConfig(
            output_dir=out_dir,
            use_cpu=True,
            bf16=False,
            fp16=False,
            activation_checkpointing=False,  # TRL's default is True; ours does not checkpoint
            per_device_train_batch_size=args.batch_size,
            gradient_accumulation_steps=1,
            generation_batch_size=args.num_rollouts,
            num_generations=args.trl_num_generations,
            num_iterations=args.ppo_epochs,
            max_completion_length=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            repetition_penalty=1.0,
            beta=args.kl_coef,
            epsilon=args.cliprange,
            learning_rate=args.learning_rate,
            lr_scheduler_type="constant",
            warmup_steps=0,
            optim="adamw_torch",
            adam_beta1=0.9,
            adam_beta2=0.95,
            adam_epsilon=1e-8,
            weight_decay=args.ppo.weight_decay,  # the same as ours
            max_grad_norm=args.ppo.max_grad_norm,
            max_steps=n_iter * steps_per_iteration,
            logging_strategy="no",
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            disable_tqdm=True,
            disable_dropout=True,
            dataloader_num_workers=0,
            seed=args.seed,
        )
        trainer = RLOOTrainer(
            model=model,
            reward_funcs=trl_reward,
            args=config,
            train_dataset=Dataset.from_dict({"prompt": prompts}),
            processing_class=tokenizer,
            callbacks=[StepTimer()],
        )
        trainer.remove_callback(PrinterCallback)  # no end-of-training metrics dump
        # --- instrumentation (instance attributes shadow the methods; TRL's code is unchanged)
        tokenize, generate_turn, gen_and_score = (
            trainer._tokenize_prompts,
            trainer._generate_single_turn,
            trainer._generate_and_score_completions,
        )
        pending = {"seconds": 0.0}

        def timed_tokenize(prompts_: list) -> Any:
            start = time.perf_counter()
            out = tokenize(prompts_)
            pending["seconds"] += time.perf_counter() - start
            return out

        def timed_generate(prompt_ids: Any, images: Any, multimodal_fields: Any) -> Any:
            start = time.perf_counter()
            completion_ids = generate_turn(prompt_ids, images, multimodal_fields)
            rec["gen_seconds"].append(pending["seconds"] + time.perf_counter() - start)
            rec["gen_tokens"].append(sum(len(c) for c in completion_ids))
            pending["seconds"] = 0.0
            return completion_ids

        def timed_gen_and_score(inputs: Any) -> Any:
            start = time.perf_counter()
            out = gen_and_score(inputs)
            rec["phase_seconds"].append(time.perf_counter() - start)
            return out

        trainer._tokenize_prompts = timed_tokenize  # type: ignore[method-assign]
        trainer._generate_single_turn = timed_generate  # type: ignore[method-assign]
        trainer._generate_and_score_completions = timed_gen_and_score  # type: ignore[method-assign]

        trainer.train()
        checkpointing = bool(getattr(model, "is_activation_checkpointing", False))
        opt_params = sum(p.numel() for g in trainer.optimizer.param_groups for p in g["params"])
        adds_special = len(tokenizer("a")["input_ids"]) != len(tokenizer("a", add_special_tokens=False)["input_ids"])

    if len(rec["phase_seconds"]) != n_iter or len(rec["step_seconds"]) != n_iter * steps_per_iteration:
        raise RuntimeError(
            f"TRL ran {len(rec['phase_seconds'])} generation batches and {len(rec['step_seconds'])} steps; expected "
            f"{n_iter} and {n_iter * steps_per_iteration}"
        )
    iters = []
    for i in range(n_iter):
        wall = sum(rec["step_seconds"][i * steps_per_iteration : (i + 1) * steps_per_iteration])
        upd = wall - rec["phase_seconds"][i]
        iters.append(
            {
                "warmup": i == 0,
                "rollout_tokens": int(rec["gen_tokens"][i]),
                "rollout_seconds": rec["gen_seconds"][i],
                "rollout_tokens_per_s": rec["gen_tokens"][i] / rec["gen_seconds"][i],
                "update_seconds": upd,
                "update_samples_per_s": args.ppo_epochs * args.num_rollouts / upd,
                "iteration_seconds": wall,
                "rollout_phase_seconds": rec["phase_seconds"][i],
                "mean_response_length": rec["gen_tokens"][i] / args.num_rollouts,
            }
        )
        it = iters[-1]
        print(
            f"  TRL  iter {i}{' (warm-up)' if i == 0 else ''}: rollout {it['rollout_tokens_per_s']:.1f} tok/s, "
            f"update {it['update_samples_per_s']:.2f} samples/s, iteration {wall:.2f} s",
            flush=True,
        )
    summary = {
        "trainer": "trl.RLOOTrainer",
        "trainable_parameters_model": freeze["trainable_parameters"],
        "optimizer_parameters": int(opt_params),
        "total_parameters": freeze["total_parameters"],
        "stop_token_ids": stop_ids,
        "prompt_tokenisation_adds_special_tokens": bool(adds_special),
        "num_generations": args.trl_num_generations,
        "activation_checkpointing": checkpointing,
        "iterations": iters,
    }
    del trainer, model
    gc.collect()
    return summary


# ============================================================================================ main
def medians(run: dict[str, Any]) -> dict[str, float]:
    measured = [it for it in run["iterations"] if not it["warmup"]]
    keys = [
        "rollout_tokens_per_s",
        "update_samples_per_s",
        "iteration_seconds",
        "rollout_phase_seconds",
        "update_seconds",
        "mean_response_length",
    ]
    out = {k: median([it[k] for it in measured]) for k in keys}
    if measured and "update_flop_per_s" in measured[0]:
        out["update_flop_per_s"] = median([it["update_flop_per_s"] for it in measured])
        out["update_flops_per_iteration"] = median([it["update_flops"]["total"] for it in measured])
    return out


# Options that are pipeline settings: (flag, config key, type, help); defaults from the loaded config.
CONFIG_OPTIONS = [
    ("--num-rollouts", "rlhf.num_rollouts", int, "rollouts per iteration (TRL: generation_batch_size)"),
    ("--batch-size", "rlhf.batch_size", int, "minibatch size of the updates"),
    ("--ppo-epochs", "rlhf.ppo_epochs", int, "passes over each rollout batch (TRL: num_iterations)"),
    ("--max-new-tokens", "rlhf.max_new_tokens", int, "generation length"),
    ("--num-layers-unfrozen", "rlhf.num_layers_unfrozen", int, "trainable top blocks, the same for both trainers"),
    ("--max-prompt-tokens", "data.max_prompt_tokens", int, "prompts cut to their last N tokens"),
    ("--top-k", "rlhf.top_k", int, ""),
    ("--top-p", "rlhf.top_p", float, ""),
    ("--temperature", "rlhf.temperature", float, ""),
    ("--learning-rate", "rlhf.learning_rate", float, "constant for both (TRL: learning_rate)"),
    ("--kl-coef", "rlhf.init_kl_coef", float, "ours: init_kl_coef, fixed; TRL: beta"),
    ("--cliprange", "rlhf.cliprange", float, "ours: cliprange; TRL: epsilon"),
    ("--seed", "rlhf.seeds.0", int, ""),
]
PPO_FIELDS = {f.name for f in fields(PPOConfig)}


def ppo_settings(args: argparse.Namespace, rlhf: dict[str, Any]) -> PPOConfig:
    """Our trainer's settings: the loaded config's ``rlhf`` section with the command line over it, and what the
    comparison fixes: all rollouts in one ``generate`` call (as TRL), a fixed KL coefficient and a constant learning
    rate (TRL has neither an adaptive KL nor, here, a schedule), no end and no checkpoints. Built by the stage's own
    ``from_config``, so the stage's checks run (``num_rollouts`` a multiple of ``batch_size``, ...)."""
    values = {k: v for k, v in rlhf.items() if k in PPO_FIELDS}
    values.update(
        num_rollouts=args.num_rollouts, batch_size=args.batch_size, ppo_epochs=args.ppo_epochs,
        max_new_tokens=args.max_new_tokens, num_layers_unfrozen=args.num_layers_unfrozen, top_k=args.top_k,
        top_p=args.top_p, temperature=args.temperature, learning_rate=args.learning_rate, init_kl_coef=args.kl_coef,
        cliprange=args.cliprange,
        chunk_size=args.num_rollouts, target=None, scheduler={**rlhf["scheduler"], "name": "constant"},
        total_steps=10**9, checkpoint_interval=10**9,
    )  # fmt: skip
    return from_config(PPOConfig, "rlhf", values, max_prompt_tokens=args.max_prompt_tokens, seed=args.seed)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    _, config = load_config_option(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", nargs="+", default=[], metavar="CONFIGFILE", help=CONFIG_HELP)
    p.add_argument("--model", default="results/sft/model", help="HF checkpoint directory (default: %(default)s)")
    p.add_argument("--prompts", default="results/data/train.parquet", help="parquet with a 'prompt' column")
    p.add_argument("--iterations", type=int, default=5, help="measured iterations after 1 warm-up (default: 5)")
    for flag, key, type_, help_ in CONFIG_OPTIONS:
        add_config_option(p, config, flag, key, type_, help_)
    p.add_argument("--trl-num-generations", type=int, default=2, help="RLOO completions per prompt (>= 2)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default: 2)")
    p.add_argument("--matmul-size", type=int, default=2048)
    p.add_argument("--matmul-repeats", type=int, default=5)
    add_config_option(p, config, "--gt-wheel", "gt_classifier.wheel", str, "toxic_comment_classifier wheel (reward)")
    p.add_argument("--out", default="results/benchmarks/ppo_vs_trl.json", help="JSON with every number")
    args = p.parse_args(argv)
    try:
        args.ppo = ppo_settings(args, config["rlhf"])
    except ValueError as err:  # the library's message, naming the keys
        p.error(str(err))
    if args.num_rollouts % args.trl_num_generations or args.trl_num_generations < 2:
        p.error("--trl-num-generations must be >= 2 and divide --num-rollouts")
    if args.iterations < 1:
        p.error("--iterations must be >= 1")
    return args


def fmt(x: float) -> str:
    if x != x:  # NaN
        return "n/a"
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*is deprecated and will be removed in v6.*", category=FutureWarning)
    print(f"torch threads: {torch.get_num_threads()}; model {args.model}; prompts {args.prompts}", flush=True)
    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        print(
            f"WARNING: 1-minute load average is {load_before[0]:.2f} before starting: other processes compete for "
            "the cores and the numbers will be noisy (run on an idle machine)",
            flush=True,
        )

    from transformers import AutoTokenizer

    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(args.model))
    prompts = load_prompt_texts(args.prompts, tokenizer, args.max_prompt_tokens)
    reward = NonToxicityReward(args.gt_wheel)
    reward(["warm-up"], ["warm-up"])  # the classifier's first call loads lazily

    mm_before = time_matmul(args.matmul_size, args.matmul_repeats)
    print("(a) ours: workflow_scripts.lib.ppo.PPOTrainer", flush=True)
    ours = run_ours(args, prompts, reward)
    print("(b) TRL: trl.RLOOTrainer", flush=True)
    trl_run = run_trl(args, prompts, reward)
    mm_after = time_matmul(args.matmul_size, args.matmul_repeats)
    mm_flops = 2.0 * args.matmul_size**3 / median(mm_before + mm_after)

    m_ours, m_trl = medians(ours), medians(trl_run)
    share = m_ours["update_flop_per_s"] / mm_flops
    mismatches = list(STATIC_MISMATCHES)
    if trl_run["activation_checkpointing"]:
        mismatches.append("TRL's model ended up with activation checkpointing enabled (recomputes the forward).")
    if trl_run["prompt_tokenisation_adds_special_tokens"]:
        mismatches.append("TRL's prompt tokenisation adds special tokens (e.g. BOS) that ours does not add.")
    if trl_run["optimizer_parameters"] != ours["trainable_parameters_model"]:
        mismatches.append(
            f"TRL optimises {trl_run['optimizer_parameters']:,} parameters, ours {ours['trainable_parameters_model']:,}"
            f" (+ {ours['trainable_parameters_value_head']:,} value head)."
        )
    else:
        mismatches.append(
            f"ours additionally trains the value head ({ours['trainable_parameters_value_head']:,} parameters); "
            f"both optimise the same {ours['trainable_parameters_model']:,} model parameters."
        )
    mismatches.append(
        f"generated length differs by sampling: mean response length ours {m_ours['mean_response_length']:.1f}, "
        f"TRL {m_trl['mean_response_length']:.1f} tokens (max {args.max_new_tokens})."
    )

    lines = [
        ("rollout tokens/s", m_ours["rollout_tokens_per_s"], m_trl["rollout_tokens_per_s"]),
        ("update samples/s", m_ours["update_samples_per_s"], m_trl["update_samples_per_s"]),
        ("iteration seconds", m_ours["iteration_seconds"], m_trl["iteration_seconds"]),
        ("  rollout phase s", m_ours["rollout_phase_seconds"], m_trl["rollout_phase_seconds"]),
        ("  update phase s", m_ours["update_seconds"], m_trl["update_seconds"]),
        ("mean response tokens", m_ours["mean_response_length"], m_trl["mean_response_length"]),
    ]
    result = {
        "config": {**{k: v for k, v in vars(args).items() if k != "ppo"}, "ppo": asdict(args.ppo)},
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": metadata.version("transformers"),
            "trl": metadata.version("trl"),
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "matmul": {
            "size": args.matmul_size,
            "seconds_before": mm_before,
            "seconds_after": mm_after,
            "flop_per_s": mm_flops,
        },
        "ours": {**ours, "medians": m_ours, "update_flop_share_of_matmul": share},
        "trl": {**trl_run, "medians": m_trl},
        "ratios_ours_over_trl": {name.strip(): ratio(a, b) for name, a, b in lines},
        "mismatches": mismatches,
        "flops_formula": (
            "E*[6*N_top*B*S + c_head*V*H*B*R + 6*N_vhead*B*R + 12*L_top*d_attn*B*S^2], c_head = 6 if the output "
            "layer trains else 4 (see benchmarks/ppo_vs_trl.py docstring)"
        ),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))  # written before printing: a closed stdout loses nothing
    n_blocks = ours["num_blocks"]
    print()
    print(
        f"PPO throughput, medians of {args.iterations} iterations after 1 warm-up; {args.num_rollouts} rollouts/iter, "
        f"minibatch {args.batch_size}, {args.ppo_epochs} epochs, {args.max_new_tokens} new tokens, "
        f"{args.num_layers_unfrozen}/{n_blocks} blocks trainable, fp32 CPU, {args.threads} threads"
    )
    print(f"{'':24s}{'ours (PPO)':>14s}{'TRL (RLOO)':>14s}{'ours/TRL':>10s}")
    for name, a, b in lines:
        print(f"{name:24s}{fmt(a):>14s}{fmt(b):>14s}{fmt(ratio(a, b)):>10s}")
    print(
        f"\nours, update phase: {m_ours['update_flops_per_iteration'] / 1e9:.3g} GFLOP/iteration, achieved "
        f"{m_ours['update_flop_per_s'] / 1e9:.3g} GFLOP/s = {100 * share:.1f}% of fp32 matmul "
        f"{args.matmul_size}x{args.matmul_size} ({mm_flops / 1e9:.3g} GFLOP/s)"
    )
    print("\nmismatches between the two runs:")
    for m in mismatches:
        print(f"  - {m}")

    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
