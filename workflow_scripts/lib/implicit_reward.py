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
from workflow_scripts.lib.lm import load_lm, pad, position_ids_from_mask

LOG = logging.getLogger("irl_llms.implicit_reward")
SCORE_BATCH = 8  # texts per forward pass: its logits over the whole vocabulary are the job's largest tensor


@dataclass
class LogRatioConfig:
    """The settings of the log-ratio run (``irl.validation_fraction``; ``data.max_prompt_tokens`` from the rule)."""

    validation_fraction: float
    max_prompt_tokens: int


def completion_logprobs(
    model: torch.nn.Module, tokenizer: object, prompts: Sequence[str], completions: Sequence[str],
    max_prompt_tokens: int, precision: object,
) -> np.ndarray:  # fmt: skip
    """Per text, the sum over the completion's tokens of log p(token | prompt, earlier completion tokens). The prompt
    is cut from the left to ``max_prompt_tokens`` tokens, as for generation; prompt and completion are tokenised
    apart, as the completion was generated after the prompt's tokens. An empty completion sums to 0."""
    prompt_ids = encode_prompts(tokenizer, list(prompts), max_prompt_tokens)
    completion_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in completions]
    out = np.zeros(len(prompt_ids), dtype=np.float64)
    device = next(model.parameters()).device
    for start in range(0, len(prompt_ids), SCORE_BATCH):
        rows = range(start, min(start + SCORE_BATCH, len(prompt_ids)))
        ids, mask = pad([prompt_ids[i] + completion_ids[i] for i in rows], tokenizer.pad_token_id, "right")
        ids, mask = ids.to(device), mask.to(device)
        with torch.no_grad(), precision.autocast():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
        for row, i in enumerate(rows):
            p, c = len(prompt_ids[i]), len(completion_ids[i])
            if c:  # position p - 1 + t predicts completion token t (normalised there only: no vocabulary-wide copy)
                targets = torch.as_tensor(completion_ids[i], device=device)
                logprobs = torch.log_softmax(logits[row, p - 1 : p - 1 + c].float(), dim=-1)
                out[i] = float(logprobs.gather(-1, targets[:, None]).sum())
    return out


def log_ratio(
    expert: tuple, non_expert: tuple, prompts: Sequence[str], completions: Sequence[str], max_prompt_tokens: int
) -> np.ndarray:
    """``completion_logprobs`` under the expert minus under the non-expert; each a (model, tokenizer, precision)."""
    (m_e, tok_e, prec_e), (m_n, tok_n, prec_n) = expert, non_expert
    if tok_e.get_vocab() != tok_n.get_vocab():
        raise ValueError("expert and non-expert tokenizers differ: their log-ratio is undefined")
    return completion_logprobs(m_e, tok_e, prompts, completions, max_prompt_tokens, prec_e) - completion_logprobs(
        m_n, tok_n, prompts, completions, max_prompt_tokens, prec_n
    )


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
