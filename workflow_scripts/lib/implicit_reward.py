"""The policy's implicit reward: an IRL method that needs no training.

Under KL-regularised RL the optimal policy satisfies r(x, y) = beta * log pi_RLHF(y|x) / pi_ref(y|x) + c(x) (Rafailov
et al. 2023, eq. 5). The expert (RLHF) and the model it was regularised towards are both artifacts of this pipeline,
so their log-ratio summed over a completion's tokens is a reward recovered from the expert's behaviour alone:

    log_ratio(x, y) = sum_t [log pi_expert(y_t | x, y_<t) - log pi_non_expert(y_t | x, y_<t)]

Consumes the IRL features (the texts of every role, their GT scores and the validation split every IRL run uses),
the demonstration pairs and the data splits (each text as prompt + continuation), and the two checkpoints. Produces
``results/irl/log_ratio/seed0/{metrics,rewards}.parquet`` in the format of a trained run (one epoch, 0, selected), so
``irl_report`` scores it exactly as the learned rewards: prompt given, continuation scored, the threshold chosen on
the validation texts, metrics and CIs on the held-out texts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from workflow_scripts.lib.atomic_io import write_parquet
from workflow_scripts.lib.compute import ComputeConfig
from workflow_scripts.lib.generation import encode_prompts
from workflow_scripts.lib.inputs import read_table
from workflow_scripts.lib.irl_data import FeatureStore, text_parts, validation_pairs
from workflow_scripts.lib.irl_metrics import IMPLICIT, TEXT_SETS, choose_threshold, reward_metrics
from workflow_scripts.lib.lm import final_norm, load_lm, pad, run_blocks, transformer_blocks

LOG = logging.getLogger("irl_llms.implicit_reward")
SCORE_BATCH = 32  # texts per pass (logits are taken at the completion's positions only)


@dataclass
class LogRatioConfig:
    """The settings of the log-ratio run (``irl.validation_fraction``; ``data.max_prompt_tokens`` from the rule)."""

    validation_fraction: float
    max_prompt_tokens: int


def shared_bottom(a: torch.nn.Module, b: torch.nn.Module) -> int:
    """How many leading transformer blocks two models share exactly (weights equal, input embedding equal): PPO trains
    only the top ``num_layers_unfrozen`` blocks, so RLHF and its SFT reference share the rest. 0 when the embeddings
    or the architectures differ."""
    keys = ("hidden_size", "num_hidden_layers", "rope_theta", "rope_scaling", "rotary_pct", "_attn_implementation")
    if type(a) is not type(b) or any(getattr(a.config, k, None) != getattr(b.config, k, None) for k in keys):
        return 0
    if not torch.equal(a.get_input_embeddings().weight, b.get_input_embeddings().weight):
        return 0
    shared = 0
    for x, y in zip(transformer_blocks(a), transformer_blocks(b), strict=True):
        sx, sy = x.state_dict(), y.state_dict()
        if sx.keys() != sy.keys() or any(not torch.equal(sx[k], sy[k]) for k in sx):
            break
        shared += 1
    return shared


def _completion_logprob_sums(
    model: torch.nn.Module, hidden: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, targets: torch.Tensor,
    n_texts: int,
) -> torch.Tensor:  # fmt: skip
    """Per text (row) of a batch, the summed log-probability of its completion tokens, from the final hidden states:
    the output layer is applied at the predicting positions (``rows``, ``cols``) only."""
    logits = model.get_output_embeddings()(hidden[rows, cols]).float()
    logprobs = torch.log_softmax(logits, dim=-1).gather(-1, targets[:, None])[:, 0].double()
    return torch.zeros(n_texts, dtype=torch.float64, device=logits.device).index_add_(0, rows, logprobs)


def log_ratio(
    expert: tuple, non_expert: tuple, prompts: Sequence[str], completions: Sequence[str], max_prompt_tokens: int
) -> np.ndarray:
    """Per text, the sum over the completion's tokens of log p(token | prompt, earlier completion tokens) under the
    expert minus the same under the non-expert; each a (model, tokenizer, precision). The prompt is cut from the left
    to ``max_prompt_tokens`` tokens, as for generation; prompt and completion are tokenised apart, as the completion
    was generated after the prompt's tokens. An empty completion scores 0.

    One pass per batch of length-sorted texts: the blocks the two models share (``shared_bottom``: RLHF's frozen
    bottom) run once, then each model's own top blocks and norm, and the output layer only where a completion token
    is predicted (``tests/test_implicit_reward.py`` checks it against each model's full forward)."""
    (m_e, tok_e, prec_e), (m_n, tok_n, prec_n) = expert, non_expert
    if tok_e.get_vocab() != tok_n.get_vocab():
        raise ValueError("expert and non-expert tokenizers differ: their log-ratio is undefined")
    if prec_e.name != prec_n.name:
        raise ValueError(f"expert and non-expert run at different precisions ({prec_e.name}, {prec_n.name})")
    n_shared = shared_bottom(m_e, m_n)
    prompt_ids = encode_prompts(tok_e, list(prompts), max_prompt_tokens)
    completion_ids = [tok_e(c, add_special_tokens=False)["input_ids"] for c in completions]
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]) + len(completion_ids[i]))
    out = np.zeros(len(prompt_ids), dtype=np.float64)
    device = next(m_e.parameters()).device
    for start in range(0, len(order), SCORE_BATCH):
        batch = order[start : start + SCORE_BATCH]
        ids, mask = pad([prompt_ids[i] + completion_ids[i] for i in batch], tok_e.pad_token_id, "right")
        ids, mask = ids.to(device), mask.to(device)
        # position p - 1 + t predicts completion token t of a text whose prompt has p tokens
        where = [(row, len(prompt_ids[i]) - 1 + t, tok) for row, i in enumerate(batch)
                 for t, tok in enumerate(completion_ids[i])]  # fmt: skip
        if not where:
            continue  # only empty completions: each sums to 0
        rows, cols, targets = (torch.as_tensor(v, device=device) for v in zip(*where, strict=True))
        with torch.no_grad(), prec_e.autocast():
            start_from = {"input_ids": ids}
            if n_shared:
                bottom = transformer_blocks(m_e)[:n_shared]
                start_from = {"hidden": run_blocks(m_e, bottom, None, mask, input_ids=ids)}
            sums = [
                _completion_logprob_sums(
                    m, run_blocks(m, transformer_blocks(m)[n_shared:], final_norm(m), mask, **start_from),
                    rows, cols, targets, len(batch),
                )
                for m in (m_e, m_n)
            ]  # fmt: skip
        out[batch] = (sums[0] - sums[1]).cpu().numpy()
    return out


def run_log_ratio(
    cfg: LogRatioConfig, features_path: str | Path, demos_path: str | Path, heldout_path: str | Path,
    train_texts_path: str | Path, expert_dir: str | Path, non_expert_dir: str | Path, out_metrics: str | Path,
    out_rewards: str | Path, compute: ComputeConfig, out_pairs: str | Path,
) -> pd.DataFrame:  # fmt: skip
    """Score every text role with the expert's log-ratio and write one run's metrics and rewards (see the module),
    and ``out_pairs``: both completions' log-ratios for every demonstration pair, in the features' pair order (what
    ``irl.pair_labels: log_ratio`` orients the pairs by)."""
    store = FeatureStore(features_path, mmap=True)  # the roles and GT scores; no hidden state is read
    roles = store.state["roles"]
    _, val_idx, val_ties, val_texts = validation_pairs(store.state, cfg.validation_fraction)
    columns = ("prompt", "original_output")
    parts = text_parts(
        read_table(demos_path, ("prompt", "original_output", "expert", "non_expert"), "demonstration pairs"),
        read_table(heldout_path, columns, "held-out texts"), read_table(train_texts_path, columns, "train texts"),
    )  # fmt: skip
    wanted = {
        "expert": roles["expert"],
        "non_expert": roles["non_expert"],
        "val": val_texts,
        **{name: roles[name] for name in TEXT_SETS},
    }
    missing = sorted({t for texts in wanted.values() for t in texts if t not in parts})
    if missing:
        raise ValueError(f"{len(missing)} IRL text(s) have no prompt/continuation split, e.g. {missing[0][:80]!r}")
    expert, non_expert = load_lm(expert_dir, compute), load_lm(non_expert_dir, compute)
    unique = sorted({t for texts in wanted.values() for t in texts})
    scores = log_ratio(expert, non_expert, [parts[t][0] for t in unique], [parts[t][1] for t in unique],
                       cfg.max_prompt_tokens)  # fmt: skip
    if not np.isfinite(scores).all():
        raise FloatingPointError(f"log-ratio is not finite for {int((~np.isfinite(scores)).sum())} text(s)")
    by_text = dict(zip(unique, scores, strict=True))
    score = {name: np.array([by_text[t] for t in texts]) for name, texts in wanted.items()}
    val_gt_reward, val_gt_toxic = store.gt(val_texts)
    threshold = choose_threshold(score["val"], val_gt_toxic)
    row = {
        "objective": IMPLICIT, "seed": 0, "epoch": 0, "train_loss": float("nan"),
        "val_pair_accuracy": float((score["expert"][val_idx] > score["non_expert"][val_idx]).mean()),
        "val_pair_ties": val_ties, "threshold": threshold, "val_loss": float("nan"),
        **{f"val_{k}": v for k, v in reward_metrics(score["val"], val_gt_reward, val_gt_toxic, threshold).items()},
    }  # fmt: skip
    rewards = []
    for name in TEXT_SETS:
        gt_reward, gt_toxic = store.gt(roles[name])
        row.update({f"{name}_{k}": v for k, v in reward_metrics(score[name], gt_reward, gt_toxic, threshold).items()})
        rewards.append(pd.DataFrame({
            "objective": IMPLICIT, "seed": 0, "epoch": 0, "split": name, "text_index": np.arange(len(gt_reward)),
            "reward": score[name], "gt_reward": gt_reward, "gt_toxic": gt_toxic,
        }))  # fmt: skip
    metrics = pd.DataFrame([{**row, "selected": True}])
    pairs = pd.DataFrame({"prompt_id": store.state["pair_prompt_ids"], "expert_log_ratio": score["expert"],
                          "non_expert_log_ratio": score["non_expert"]})  # fmt: skip
    write_parquet(pairs, out_pairs)
    write_parquet(pd.concat(rewards, ignore_index=True), out_rewards)
    write_parquet(metrics, out_metrics)
    LOG.info(
        "log-ratio: val pair acc %.3f | held-out acc %.3f auc %.3f spearman %.3f (%d texts scored by two models)",
        row["val_pair_accuracy"], row["heldout_accuracy"], row["heldout_auc"], row["heldout_spearman"], len(unique),
    )  # fmt: skip
    LOG.info("pairs: the expert's completion has the higher log-ratio in %d of %d", int((pairs["expert_log_ratio"] >
             pairs["non_expert_log_ratio"]).sum()), len(pairs))  # fmt: skip
    return metrics
