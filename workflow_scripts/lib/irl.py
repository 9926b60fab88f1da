"""Inverse RL (stage 5): learn a reward model from expert/non-expert demonstration pairs (Max-Margin IRL and kin).

Objectives on d = r(expert) - r(non-expert), selected by the job's ``objective``:
  * ``max_margin``    -- the paper's piecewise-linear loss: -d if d > 0 else -2d;
  * ``hinge``         -- max(0, margin - d);
  * ``bradley_terry`` -- -log sigmoid(d).
The same architecture trained on GT labels instead (``supervised``: -log sigmoid(+-r), sign from the GT label of a
train-split text, as many texts as IRL has training pairs) is the **supervised ceiling**: the most these features
allow, evaluated exactly like the IRL rewards.
The reward model (``workflow_scripts.lib.reward_model``) trains only its top ``trainable_layers`` blocks + head; the
frozen bottom is computed once per text by ``build_features`` and cached, so the many seed x objective jobs cost
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
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from workflow_scripts.lib.atomic_io import atomic_path, write_parquet
from workflow_scripts.lib.compute import ComputeConfig, describe_device
from workflow_scripts.lib.inputs import read_table
from workflow_scripts.lib.irl_metrics import CEILING, choose_threshold, reward_metrics
from workflow_scripts.lib.lm import load_lm
from workflow_scripts.lib.provenance import provenance
from workflow_scripts.lib.reward_model import POOLINGS, RewardModel, save_frozen_backbone, save_reward_model
from workflow_scripts.lib.seeding import seed_everything
from workflow_scripts.lib.toxicity import LABEL_THRESHOLD, ToxicityScorer, is_toxic

LOG = logging.getLogger("irl_llms.irl")
OBJECTIVES = ("max_margin", "hinge", "bradley_terry")
PAIR_LABELS = ("expert", "log_ratio", "gt")


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


# ============================================================================================ cached features
def demo_texts(demos: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Reward-model inputs of a demonstration pair: prompt + completion, for expert and non-expert."""
    return (demos["prompt"] + demos["expert"]).tolist(), (demos["prompt"] + demos["non_expert"]).tolist()


def text_parts(demos: pd.DataFrame, *splits: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """Every text IRL scores as (prompt, continuation): demonstration completions and source texts, and the data
    splits' texts (``text`` = ``prompt`` + ``original_output``)."""
    parts: dict[str, tuple[str, str]] = {}
    for column in ("expert", "non_expert", "original_output"):
        parts.update({p + c: (p, c) for p, c in zip(demos["prompt"], demos[column], strict=True)})
    for split in splits:
        parts.update({p + c: (p, c) for p, c in zip(split["prompt"], split["original_output"], strict=True)})
    return parts


def build_features(
    backbone_dir: str | Path,
    demos_path: str | Path,
    heldout_path: str | Path,
    train_texts_path: str | Path,
    gt_classifier: ToxicityScorer,
    out_path: str | Path,
    trainable_layers: int,
    max_length: int,
    compute: ComputeConfig | None = None,
    frozen_out: str | Path | None = None,
) -> None:
    """Frozen-bottom hidden states of every text IRL touches, plus each text's GT reward and label (computed once),
    and (``frozen_out``) the frozen backbone weights every reward model directory shares (``export_hf``).

    They depend only on the backbone and on ``trainable_layers``/``max_length`` (the irl settings that shape the
    bottom), so changing e.g. the learning rate never rebuilds them.
    """
    demos = read_table(
        demos_path, ("prompt_id", "prompt", "original_output", "expert", "non_expert"), "demonstration pairs"
    )
    expert, non_expert = demo_texts(demos)
    columns = ("text", "prompt", "original_output")
    heldout_df, train_df = (
        read_table(heldout_path, columns, "held-out texts"),
        read_table(train_texts_path, columns, "train texts"),
    )
    heldout, train_texts = heldout_df["text"].tolist(), train_df["text"].tolist()
    source = (demos["prompt"] + demos["original_output"]).tolist()  # the data-set text each pair was prompted from
    texts = sorted(set(expert) | set(non_expert) | set(source) | set(heldout) | set(train_texts))
    parts = text_parts(demos, heldout_df, train_df)
    missing = [t for t in texts if t not in parts]
    if missing:
        raise ValueError(f"{len(missing)} IRL text(s) are not prompt + continuation, e.g. {missing[0][:80]!r}")
    lm, tokenizer, precision = load_lm(backbone_dir, compute)
    model = RewardModel(lm, tokenizer, trainable_layers, max_length, "last", precision)  # the bottom only
    starts = model.completion_starts(texts, [len(parts[t][0]) for t in texts])
    hidden: list[torch.Tensor] = []
    for i in range(0, len(texts), 32):
        hidden.extend(h.cpu().clone() for h in model.bottom_hidden(model.encode(texts[i : i + 32])))
    lengths = torch.tensor([h.shape[0] for h in hidden])
    state = {
        "texts": texts,
        "offsets": torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)]),
        "hidden": torch.cat(hidden),
        "completion_start": torch.tensor(starts),  # each text's first completion token (mean pooling)
        "gt_reward": torch.tensor(-gt_classifier.toxic_logit(texts), dtype=torch.float64),  # paper: -(toxic logit)
        "gt_toxic": torch.tensor(is_toxic(gt_classifier.p_toxic(texts), LABEL_THRESHOLD)),
        "pair_prompt_ids": demos["prompt_id"].astype(str).tolist(),
        "roles": {
            "expert": expert,
            "non_expert": non_expert,
            "source": source,
            "heldout": heldout,
            "train_texts": train_texts,
        },
        "backbone": str(backbone_dir),
        "trainable_layers": trainable_layers,
        "max_length": max_length,
    }
    with atomic_path(out_path) as tmp:
        torch.save(state, tmp)
    if frozen_out is not None:
        save_frozen_backbone(model, frozen_out)
    LOG.info(
        "IRL features: %d texts, %d tokens, hidden %s", len(texts), int(lengths.sum()), tuple(state["hidden"].shape)
    )


class FeatureStore:
    def __init__(self, path: str | Path, mmap: bool = False) -> None:
        """``mmap``: map the file instead of reading it, for a reader that needs the texts and GT scores but few or
        none of the hidden states."""
        self.state = torch.load(path, weights_only=False, mmap=mmap)
        self.index = {t: i for i, t in enumerate(self.state["texts"])}

    def hidden(self, texts: Sequence[str]) -> list[torch.Tensor]:
        off, hid = self.state["offsets"], self.state["hidden"]
        return [hid[off[self.index[t]] : off[self.index[t] + 1]] for t in texts]

    def starts(self, texts: Sequence[str]) -> list[int]:
        """Each text's first completion token (``RewardModel.completion_starts``), for mean pooling."""
        if "completion_start" not in self.state:
            raise ValueError("these IRL features predate irl.pooling (no completion starts); rebuild them")
        return [int(self.state["completion_start"][self.index[t]]) for t in texts]

    def gt(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        idx = [self.index[t] for t in texts]
        return self.state["gt_reward"][idx].numpy(), self.state["gt_toxic"][idx].numpy()


# ============================================================================================ training
def validation_pairs(state: dict, validation_fraction: float) -> tuple[np.ndarray, np.ndarray, int, list[str]]:
    """The split every IRL run shares (whatever its seed): (train pair indices, validation pair indices, tied
    validation pairs left out, validation texts). Tied pairs (identical completions) carry no preference and are
    left out of both. The validation texts, on which a reward's toxicity threshold is chosen, are the data-set texts
    the validation pairs were prompted from: drawn like the held-out texts (complete comments, about half of them
    toxic), but from the training split, so the test texts stay unseen."""
    roles = state["roles"]
    tied = np.array([e == n for e, n in zip(roles["expert"], roles["non_expert"], strict=True)])
    train_idx, val_idx = split_pairs(state["pair_prompt_ids"], validation_fraction, seed=0)
    train_idx, val_ties = train_idx[~tied[train_idx]], int(tied[val_idx].sum())
    val_idx = val_idx[~tied[val_idx]]
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise ValueError("no untied demonstration pairs to train or validate on")
    return train_idx, val_idx, val_ties, list(dict.fromkeys(roles["source"][i] for i in val_idx))


def split_pairs(prompt_ids: Sequence[str], validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of demonstration pairs into (train, validation) indices *by prompt*: every pair of a prompt lands
    on the same side (several sampled pairs per prompt must not leak into validation). At least one prompt each."""
    prompts = np.unique(np.asarray(prompt_ids, dtype=str))
    if len(prompts) < 2:
        raise ValueError(f"need demonstration pairs of at least 2 prompts to hold some out, got {len(prompts)}")
    perm = np.random.default_rng(seed).permutation(prompts)
    n_val = min(len(prompts) - 1, max(1, round(validation_fraction * len(prompts))))
    is_val = np.isin(np.asarray(prompt_ids, dtype=str), perm[:n_val])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def pair_orientation(pair_labels: str, store: FeatureStore, pair_log_ratio: pd.DataFrame | None) -> np.ndarray:
    """Per demonstration pair, which side the IRL loss prefers (``irl.pair_labels``): +1 the expert's completion, -1
    the non-expert's, 0 neither (left out, like tied pairs).

    ``expert`` (the paper's): always +1. ``log_ratio``: the side with the higher implicit reward of the expert's
    policy (``workflow_scripts.lib.implicit_reward``; ``pair_log_ratio`` holds it per pair), i.e. the expert's own
    judgement of which completion it prefers, which denoises pairs where the sampled expert completion is the worse
    one. ``gt`` (a diagnostic, not IRL: it reads the GT classifier): the less toxic side, to measure what label noise
    costs."""
    roles = store.state["roles"]
    if pair_labels == "expert":
        return np.ones(len(roles["expert"]), dtype=np.int64)
    if pair_labels == "gt":
        diff = store.gt(roles["expert"])[0] - store.gt(roles["non_expert"])[0]
    elif pair_labels == "log_ratio":
        if pair_log_ratio is None:
            raise ValueError("irl.pair_labels = log_ratio needs the pairs' log-ratios (rule irl_log_ratio)")
        ids = pair_log_ratio["prompt_id"].astype(str).tolist()
        if ids != store.state["pair_prompt_ids"]:
            raise ValueError("the pairs' log-ratios are of other demonstration pairs than the IRL features; rerun")
        diff = (pair_log_ratio["expert_log_ratio"] - pair_log_ratio["non_expert_log_ratio"]).to_numpy()
    else:
        raise ValueError(f"irl.pair_labels must be one of {PAIR_LABELS}, got {pair_labels!r}")
    if not np.isfinite(diff).all():
        raise FloatingPointError(f"{int((~np.isfinite(diff)).sum())} pair label(s) are not finite ({pair_labels})")
    return np.sign(diff).astype(np.int64)


# texts per scoring pass over cached features (validation, held-out texts); a speed setting of this loop, not the
# training's irl.batch_size (pairs per step), and no config key
SCORE_BATCH = 64


@dataclass
class Texts:
    """Cached texts ready to score: frozen-bottom hidden states and completion starts (mean pooling)."""

    hidden: list[torch.Tensor]
    starts: list[int]

    @classmethod
    def of(cls, store: FeatureStore, texts: Sequence[str]) -> Texts:
        return cls(store.hidden(texts), store.starts(texts))

    def score(self, model: RewardModel, idx: Sequence[int] | np.ndarray) -> torch.Tensor:
        return model.score_hidden([self.hidden[i] for i in idx], [self.starts[i] for i in idx])

    def score_all(self, model: RewardModel, idx: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Rewards without gradients, ``SCORE_BATCH`` texts a pass (all texts, or those at ``idx``)."""
        idx = np.arange(len(self.hidden)) if idx is None else np.asarray(idx)
        with torch.no_grad():
            return torch.cat(
                [self.score(model, idx[i : i + SCORE_BATCH]).cpu() for i in range(0, len(idx), SCORE_BATCH)]
            ).numpy()


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
    expert, non_expert = Texts.of(store, roles["expert"]), Texts.of(store, roles["non_expert"])
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
                    d = expert.score(model, idx) - non_expert.score(model, idx)
                    loss = irl_loss(d * torch.as_tensor(sign[idx], dtype=d.dtype, device=d.device), cfg.objective,
                                    cfg.margin)  # fmt: skip
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"IRL loss is {float(loss)} at epoch {epoch}")
                model.precision.backward_step(loss, optimizer, params, cfg.max_grad_norm)
                model.head.bound_(cfg.max_head_norm)
                train_losses.append(float(loss.detach()))
        val_d = val_sign * torch.tensor(expert.score_all(model, val_idx) - non_expert.score_all(model, val_idx))
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
