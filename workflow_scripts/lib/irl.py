"""Inverse RL (stage 5): learn a reward model from expert/non-expert demonstration pairs (Max-Margin IRL and kin).

Objectives on d = r(expert) - r(non-expert), selected by the job's ``objective``:
  * ``max_margin``    -- the paper's piecewise-linear loss: -d if d > 0 else -2d;
  * ``hinge``         -- max(0, margin - d);
  * ``bradley_terry`` -- -log sigmoid(d).
The same architecture trained on GT labels instead (``supervised``: -log sigmoid(+-r), sign from the GT label of a
train-split text, as many texts as IRL has training pairs) is the **supervised ceiling**: the most these features
allow, evaluated exactly like the IRL rewards.
Pair labels (``irl.pair_labels``, ``irl_data.pair_orientation``) say which side of each pair the loss prefers: the
expert's (the paper's), the side the expert's own policy prefers by its log-ratio, or (a diagnostic) the less toxic.
The reward model (``workflow_scripts.lib.reward_model``; ``irl.pooling``: last token or mean over the completion)
trains only its top ``trainable_layers`` blocks + head; the frozen bottom is computed once per text by
``irl_data.build_features`` and cached, so the many seed x objective jobs cost
seconds each on CPU. ``-1`` trains the whole backbone (the paper's setting, GPU). Decoupled weight decay (AdamW)
regularises the trained weights.

Metrics per epoch, never on training pairs (``workflow_scripts.lib.irl_metrics``): pairwise accuracy on a validation
split of the demonstrations, split by prompt so that no prompt has pairs on both sides (used for model selection;
tied pairs, identical expert and non-expert completions, are left out of training and of the accuracy and counted
apart), and, against the GT classifier (GT reward = -toxic logit;
toxic = ``toxicity.is_toxic``) on the held-out eval texts of the data set and, labelled as such, on the train-split
texts: accuracy and F1 at a threshold chosen on the validation demonstrations' texts, Pearson, Kendall, Spearman.
``train_irl`` writes ``results/irl/{objective}/seed{seed}/``: ``reward_model/``, ``metrics.parquet`` (per epoch) and
``rewards.parquet`` (per text and epoch, for CIs and seed-agreement analysis).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from workflow_scripts.lib.atomic_io import write_parquet
from workflow_scripts.lib.compute import ComputeConfig, describe_device
from workflow_scripts.lib.inputs import read_table
from workflow_scripts.lib.irl_data import PAIR_LABELS, FeatureStore, Pairs, Texts, pair_orientation, validation_pairs
from workflow_scripts.lib.irl_metrics import CEILING, choose_threshold, reward_metrics
from workflow_scripts.lib.lm import load_lm
from workflow_scripts.lib.provenance import provenance
from workflow_scripts.lib.reward_model import POOLINGS, RewardModel, save_reward_model
from workflow_scripts.lib.seeding import seed_everything

LOG = logging.getLogger("irl_llms.irl")
OBJECTIVES = ("max_margin", "hinge", "bradley_terry")


@dataclass
class IRLConfig:
    """One IRL job: the ``irl`` section's training settings (documented in the schema) + the job's objective/seed."""

    objective: str  # from the job (wildcard), one of irl.objectives
    seed: int  # from the job (wildcard), one of irl.seeds
    trainable_layers: int
    epochs: int
    learning_rate: float
    weight_decay: float
    batch_size: int
    max_grad_norm: float
    margin: float
    max_head_norm: float
    validation_fraction: float
    max_length: int
    pooling: str
    pair_labels: str

    def __post_init__(self) -> None:
        if self.objective not in (*OBJECTIVES, CEILING):
            raise ValueError(f"irl.objective must be one of {(*OBJECTIVES, CEILING)}, got {self.objective!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"irl.pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.pair_labels not in PAIR_LABELS:
            raise ValueError(f"irl.pair_labels must be one of {PAIR_LABELS}, got {self.pair_labels!r}")


# ============================================================================================ objectives
def irl_loss(d: torch.Tensor, objective: str, margin: float) -> torch.Tensor:
    """Mean loss over reward differences d = r(expert) - r(non-expert); every objective wants d large."""
    if objective == "max_margin":
        per_pair = torch.where(d > 0, -d, -2 * d)
    elif objective == "hinge":
        per_pair = F.relu(margin - d)
    elif objective == "bradley_terry":
        per_pair = F.softplus(-d)  # = -log sigmoid(d), numerically stable
    else:
        raise ValueError(f"unknown IRL objective {objective!r}")
    return per_pair.mean()


def supervised_loss(rewards: torch.Tensor, toxic: torch.Tensor) -> torch.Tensor:
    """The ceiling's loss: the reward as the logit of "not toxic", -log sigmoid(r) for clean texts and
    -log sigmoid(-r) for toxic ones."""
    sign = 1.0 - 2.0 * toxic.to(rewards.dtype)  # +1 clean, -1 toxic
    return F.softplus(-sign * rewards).mean()


# ============================================================================================ training
def evaluate_texts(
    model: RewardModel,
    data: tuple[Texts, np.ndarray, np.ndarray],
    name: str,
    threshold: float,
    cfg: IRLConfig,
    epoch: int,
    reward_rows: list[pd.DataFrame],
) -> dict[str, float]:
    """Score one text set, record its per-text rewards, and return its metrics prefixed with ``name``."""
    texts, gt_reward, gt_toxic = data
    rewards = texts.score_all(model)
    reward_rows.append(
        pd.DataFrame(
            {
                "objective": cfg.objective,
                "seed": cfg.seed,
                "epoch": epoch,
                "split": name,
                "text_index": np.arange(len(rewards)),
                "reward": rewards,
                "gt_reward": gt_reward,
                "gt_toxic": gt_toxic,
            }
        )  # fmt: skip
    )
    return {f"{name}_{k}": v for k, v in reward_metrics(rewards, gt_reward, gt_toxic, threshold).items()}


def train_irl(
    cfg: IRLConfig,
    backbone_dir: str | Path,
    features_path: str | Path,
    out_model: str | Path,
    out_metrics: str | Path,
    out_rewards: str | Path,
    compute: ComputeConfig | None = None,
    frozen_shard: str | Path | None = None,
    pair_log_ratio: str | Path | None = None,
) -> pd.DataFrame:
    """Train one (objective, seed) reward model; select the epoch by validation pair accuracy (pairs oriented by
    ``irl.pair_labels``; ``pair_log_ratio``: the pairs' log-ratios, for ``log_ratio`` labels); write artifacts."""
    seed_everything(cfg.seed)
    store = FeatureStore(features_path)
    if store.state["trainable_layers"] != cfg.trainable_layers or store.state["max_length"] != cfg.max_length:
        raise ValueError(f"{features_path} was built for another trainable_layers/max_length; rebuild it")
    roles = store.state["roles"]
    log_ratios = None if pair_log_ratio is None else read_table(
        pair_log_ratio, ("prompt_id", "expert_log_ratio", "non_expert_log_ratio"), "pair log-ratios"
    )  # fmt: skip
    sign = pair_orientation("expert" if cfg.objective == CEILING else cfg.pair_labels, store, log_ratios)
    pairs = Pairs.of(store, roles["expert"], roles["non_expert"])  # a pair's prompt computed once for both sides
    train_idx, val_idx, val_ties, val_texts = validation_pairs(store.state, cfg.validation_fraction)
    n_flipped, n_unlabelled = int((sign[train_idx] < 0).sum()), int((sign[train_idx] == 0).sum())
    train_idx, val_idx = train_idx[sign[train_idx] != 0], val_idx[sign[val_idx] != 0]
    if cfg.objective != CEILING and cfg.pair_labels != "expert":
        LOG.info("pair labels %s: %d of %d train pairs prefer the non-expert, %d no side (left out)",
                 cfg.pair_labels, n_flipped, len(train_idx) + n_unlabelled, n_unlabelled)  # fmt: skip
    val = Texts.of(store, val_texts)
    val_gt_reward, val_gt_toxic = store.gt(val_texts)
    evals = {name: (Texts.of(store, roles[name]), *store.gt(roles[name])) for name in ("heldout", "train_texts")}
    if cfg.objective == CEILING:  # as many labelled train-split texts as IRL has pairs, none a validation text
        pool = [t for t in roles["train_texts"] if t not in set(val_texts)]
        pick = np.sort(np.random.default_rng(0).permutation(len(pool))[: len(train_idx)])
        ceiling_texts = [pool[i] for i in pick]
        ceiling, ceiling_toxic = Texts.of(store, ceiling_texts), torch.tensor(store.gt(ceiling_texts)[1])
        train_idx = np.arange(len(ceiling_texts))
        LOG.info("supervised ceiling: %d labelled train-split texts (%d toxic)", len(pick), int(ceiling_toxic.sum()))

    lm, tokenizer, precision = load_lm(backbone_dir, compute)
    torch.manual_seed(cfg.seed)  # head initialisation and nothing else depends on the seed before training
    model = RewardModel(lm, tokenizer, cfg.trainable_layers, cfg.max_length, cfg.pooling, precision)
    params = model.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    rows: list[dict] = []
    reward_rows: list[pd.DataFrame] = []
    best: tuple[float, int, dict] | None = None
    val_sign = torch.tensor(sign[val_idx], dtype=torch.float64)
    for epoch in range(cfg.epochs + 1):  # epoch 0: the untrained model, as a baseline
        train_losses = []
        if epoch > 0:
            order = rng.permutation(train_idx)
            for b in range(0, len(order), cfg.batch_size):
                idx = order[b : b + cfg.batch_size]
                optimizer.zero_grad(set_to_none=True)
                if cfg.objective == CEILING:
                    loss = supervised_loss(ceiling.score(model, idx), ceiling_toxic[idx])
                else:  # d > 0: the preferred side scores higher
                    r_expert, r_non_expert = pairs.score(model, idx)
                    d = r_expert - r_non_expert
                    loss = irl_loss(d * torch.as_tensor(sign[idx], dtype=d.dtype, device=d.device), cfg.objective,
                                    cfg.margin)  # fmt: skip
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"IRL loss is {float(loss)} at epoch {epoch}")
                model.precision.backward_step(loss, optimizer, params, cfg.max_grad_norm)
                model.head.bound_(cfg.max_head_norm)
                train_losses.append(float(loss.detach()))
        val_expert, val_non_expert = pairs.score_all(model, val_idx)
        val_d = val_sign * torch.tensor(val_expert - val_non_expert)
        val_rewards = val.score_all(model)
        threshold = choose_threshold(val_rewards, val_gt_toxic)
        row = {
            "objective": cfg.objective,
            "seed": cfg.seed,
            "epoch": epoch,
            "train_loss": float(np.mean(train_losses)) if train_losses else float("nan"),
            "val_pair_accuracy": float((val_d > 0).float().mean()),  # untied, labelled pairs only
            "val_pair_ties": val_ties,
            "threshold": threshold,
        }
        val_metrics = reward_metrics(val_rewards, val_gt_reward, val_gt_toxic, threshold)
        if cfg.objective == CEILING:  # its own objective on the validation texts, selection by their accuracy
            row["val_loss"] = float(supervised_loss(torch.tensor(val_rewards), torch.tensor(val_gt_toxic)))
            key = (val_metrics["accuracy"], -row["val_loss"])
        else:
            row["val_loss"] = float(irl_loss(val_d, cfg.objective, cfg.margin))
            key = (row["val_pair_accuracy"], -row["val_loss"])
        row.update({f"val_{k}": v for k, v in val_metrics.items()})
        row.update(evaluate_texts(model, evals["heldout"], "heldout", threshold, cfg, epoch, reward_rows))
        rows.append(row)
        # model selection on validation only: pair accuracy (the ceiling: text accuracy), then the lower loss
        if epoch > 0 and (best is None or key > best[0]):
            state = {
                "head": {k: v.detach().clone() for k, v in model.head.state_dict().items()},
                "lm": {n: p.detach().clone() for n, p in lm.named_parameters() if p.requires_grad},
            }
            best = (key, epoch, state)
        LOG.info(
            "epoch %d loss %.4f val pair acc %.3f | held-out acc %.3f auc %.3f spearman %.3f",
            epoch,
            row["train_loss"],
            row["val_pair_accuracy"],
            row["heldout_accuracy"],
            row["heldout_auc"],
            row["heldout_spearman"],
        )
    assert best is not None, "epochs must be >= 1"
    model.head.load_state_dict(best[2]["head"])
    lm.load_state_dict(best[2]["lm"], strict=False)
    metrics = pd.DataFrame(rows)
    metrics["selected"] = metrics["epoch"] == best[1]
    # train-split texts: only for the selected model (they are many, and only reported, never used to choose)
    sel = metrics.index[metrics["selected"]][0]
    threshold = float(metrics.loc[sel, "threshold"])
    for k, v in evaluate_texts(
        model, evals["train_texts"], "train_texts", threshold, cfg, best[1], reward_rows
    ).items():
        metrics.loc[sel, k] = v
    record = provenance(
        f"irl/{cfg.objective}",
        asdict(cfg),
        cfg.seed,
        backbone=str(backbone_dir),
        selected_epoch=best[1],
        n_train_pairs=len(train_idx),  # the ceiling: labelled texts
        n_val_pairs=len(val_idx),
        n_val_ties=val_ties,
        n_train_pairs_flipped=n_flipped,  # pair_labels: pairs whose preferred side is the non-expert's
        n_train_pairs_unlabelled=n_unlabelled,
        selected_metrics=metrics[metrics["selected"]].iloc[0].to_dict(),
        compute=describe_device(precision.device, precision.name, compute.device if compute else None),
    )
    save_reward_model(model, backbone_dir, out_model, record, frozen_shard)
    write_parquet(metrics, out_metrics)
    write_parquet(pd.concat(reward_rows, ignore_index=True), out_rewards)
    return metrics
