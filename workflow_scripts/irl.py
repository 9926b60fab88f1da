"""Stage 5, inverse RL: learn a reward model from expert/non-expert demonstration pairs (Max-Margin IRL and kin).

Reward model = causal-LM backbone + a linear head on the hidden state of the **last real token** of prompt+completion
(the original code scored only the last *character* of each string; not copied). The head sits behind a parameter-free
LayerNorm, so with the head's weight norm bounded (``max_head_norm``) the reward is bounded and the unbounded
max-margin objective cannot run away; decoupled weight decay (AdamW) regularises the rest.

Objectives on d = r(expert) - r(non-expert), selected by ``irl.objective``:
  * ``max_margin``    -- the paper's piecewise-linear loss: -d if d > 0 else -2d;
  * ``hinge``         -- max(0, margin - d);
  * ``bradley_terry`` -- -log sigmoid(d).

Only the top ``trainable_layers`` blocks (+ head) train; the frozen bottom is computed once per text and cached
(``workflow_scripts.irl_features``), so the many seed x objective jobs cost seconds each on CPU. ``-1`` trains the
whole backbone (the paper's setting, GPU).

Metrics per epoch, never on training pairs: pairwise accuracy on a validation split of the demonstrations (used for
model selection), and, against the GT classifier (GT reward = -toxic logit; toxic iff P >= 0.5) on the held-out eval
texts of the data set and, labelled as such, on the train-split texts: accuracy and F1 (toxic = positive) at a
threshold chosen on the validation demonstrations' texts, Pearson, Kendall and Spearman correlations.
Produces ``results/irl/{objective}/seed{seed}/``: ``reward_model/`` (loadable with ``load_reward_model``),
``metrics.parquet`` (per epoch) and ``rewards.parquet`` (per text and epoch, for CIs and seed-agreement analysis).
"""

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from scipy import stats
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from workflow_scripts.common import (
    atomic_path,
    dataclass_from_dict,
    provenance,
    run_snakemake_job,
    seed_everything,
    write_json,
    write_parquet,
)
from workflow_scripts.lm import ComputeConfig, Precision, final_norm, run_blocks, transformer_blocks
from workflow_scripts.rewards import check_reward_output

LOG = logging.getLogger("irl_llms.irl")
OBJECTIVES = ("max_margin", "hinge", "bradley_terry")


@dataclass
class IRLConfig:
    objective: str = "max_margin"
    init: str = "base"  # backbone initialisation: base (paper) | sft
    trainable_layers: int = 1  # top blocks trained (+ head); -1 = whole backbone
    epochs: int = 10
    learning_rate: float = 1e-4  # paper: Adam 1e-4
    weight_decay: float = 0.01
    batch_size: int = 8  # pairs per optimizer step
    max_grad_norm: float = 1.0
    margin: float = 1.0  # hinge only
    max_head_norm: float = 1.0  # bound on ||w|| of the linear head (keeps max-margin finite)
    validation_fraction: float = 0.2  # of the training demonstrations, for threshold and model selection
    max_length: int = 96
    seed: int = 0

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"irl.objective must be one of {OBJECTIVES}, got {self.objective!r}")


# ============================================================================================ objectives
def irl_loss(d: torch.Tensor, objective: str, margin: float = 1.0) -> torch.Tensor:
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


# ============================================================================================ the reward model
def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token per row, for left *or* right padding."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.long() * (positions + 1)).argmax(-1)


class RewardHead(torch.nn.Module):
    """Parameter-free LayerNorm then a linear map to a scalar; ``bound_`` projects ||w|| onto the allowed ball."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(hidden_size, elementwise_affine=False)
        self.linear = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.normal_(self.linear.weight, std=1.0 / hidden_size)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(pooled)).squeeze(-1)

    @torch.no_grad()
    def bound_(self, max_norm: float) -> None:
        norm = self.linear.weight.norm()
        if norm > max_norm:
            self.linear.weight.mul_(max_norm / norm)


class RewardModel(torch.nn.Module):
    """Backbone (a causal LM's transformer) split into a frozen bottom and trainable top, plus a reward head."""

    def __init__(
        self, lm: Any, tokenizer: Any, trainable_layers: int, max_length: int, precision: Precision | None = None
    ) -> None:
        super().__init__()
        self.lm, self.tokenizer, self.max_length = lm, tokenizer, max_length
        self.device = next(lm.parameters()).device
        self.precision = precision or Precision("fp32", self.device)
        blocks = transformer_blocks(lm)
        self.trainable_layers = len(blocks) if trainable_layers < 0 else trainable_layers
        if not 0 <= self.trainable_layers <= len(blocks):
            raise ValueError(f"trainable_layers={trainable_layers} but the backbone has {len(blocks)} blocks")
        cut = len(blocks) - self.trainable_layers
        self.bottom = torch.nn.ModuleList(blocks[:cut])
        self.top = torch.nn.ModuleList(blocks[cut:])
        self.norm = final_norm(lm)
        self.head = RewardHead(lm.config.hidden_size).to(self.device)
        for p in lm.parameters():
            p.requires_grad_(False)
        for mod in [self.top, self.norm] if self.trainable_layers else []:
            for p in mod.parameters():
                p.requires_grad_(True)
        lm.eval()

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"][-self.max_length :] for t in texts]
        return [x or [self.tokenizer.eos_token_id] for x in ids]

    def bottom_hidden(self, ids: list[list[int]]) -> list[torch.Tensor]:
        """Per text, the hidden states after the frozen bottom ([len, H], fp32, on the model's device); right padding,
        so no shifts."""
        input_ids, mask = right_pad(ids, self.tokenizer.pad_token_id)
        with torch.no_grad(), self.precision.autocast():
            h = run_blocks(self.lm, self.bottom, None, mask.to(self.device), input_ids=input_ids.to(self.device))
        return [h[i, : len(x)].float() for i, x in enumerate(ids)]

    def score_hidden(self, hidden: list[torch.Tensor]) -> torch.Tensor:
        """Rewards from bottom hidden states: run the top blocks and the head on the last real token."""
        width = max(h.shape[0] for h in hidden)
        batch = torch.zeros(len(hidden), width, hidden[0].shape[1], device=self.device)
        mask = torch.zeros(len(hidden), width, dtype=torch.long, device=self.device)
        for i, h in enumerate(hidden):
            batch[i, : h.shape[0]] = h
            mask[i, : h.shape[0]] = 1
        with self.precision.autocast():
            top = run_blocks(self.lm, self.top, self.norm, mask, hidden=batch)
            pooled = top[torch.arange(len(hidden), device=self.device), last_token_index(mask)]
            return self.head(pooled.float()).float()

    def score_texts(self, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for i in range(0, len(texts), batch_size):
                out.append(self.score_hidden(self.bottom_hidden(self.encode(texts[i : i + batch_size]))).cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


def right_pad(ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.tensor(x)
        mask[i, : len(x)] = 1
    return input_ids, mask


# ============================================================================================ save / load
def save_reward_model(model: RewardModel, backbone_dir: str | Path, out_dir: str | Path, record: dict) -> None:
    """Head + trained top blocks (safetensors), tokenizer, and a pointer to the frozen backbone checkpoint."""
    top_names = {n for n, p in model.lm.named_parameters() if p.requires_grad}
    trained = {n: p.detach().cpu().contiguous() for n, p in model.lm.named_parameters() if n in top_names}
    with atomic_path(out_dir, is_dir=True) as tmp:
        save_file({k: v.cpu().contiguous() for k, v in model.head.state_dict().items()}, tmp / "head.safetensors")
        if trained:
            save_file(trained, tmp / "backbone_trained.safetensors")
        model.tokenizer.save_pretrained(tmp)
        backbone_rel = os.path.relpath(Path(backbone_dir).resolve(), Path(out_dir).resolve())
        write_json(
            {"backbone": backbone_rel, "trainable_layers": model.trainable_layers, "max_length": model.max_length},
            tmp / "reward_config.json",
        )
        write_json(record, tmp / "provenance.json")


class LearnedReward:
    """``rewards(prompts, completions) -> tensor``: the learned reward on prompt + completion, for PPO.

    Scores are cached per unique text, so repeated prompts/completions (common in RL) are scored once.
    """

    def __init__(self, model: RewardModel, batch_size: int = 32) -> None:
        self.model, self.batch_size = model, batch_size
        self._cache: dict[str, float] = {}

    def score(self, texts: Sequence[str]) -> np.ndarray:
        todo = sorted({t for t in texts if t not in self._cache})
        if todo:
            for t, r in zip(todo, self.model.score_texts(todo, self.batch_size).tolist(), strict=True):
                self._cache[t] = r
        return np.array([self._cache[t] for t in texts], dtype=np.float64)

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        scores = self.score([p + c for p, c in zip(prompts, completions, strict=True)])
        return check_reward_output(scores, len(prompts), "learned reward")


def load_reward_model(path: str | Path, batch_size: int = 32, compute: ComputeConfig | None = None) -> LearnedReward:
    """Open ``results/irl/{objective}/seed{seed}/reward_model/`` as a reward callable."""
    path = Path(path)
    cfg_file = path / "reward_config.json"
    if not cfg_file.exists():
        raise FileNotFoundError(f"{path} is not a reward model directory (no reward_config.json)")
    cfg = json.loads(cfg_file.read_text())
    backbone = (path / cfg["backbone"]).resolve()
    lm, tokenizer, precision = (compute or ComputeConfig()).load_lm(backbone)
    model = RewardModel(lm, tokenizer, cfg["trainable_layers"], cfg["max_length"], precision)
    if (path / "backbone_trained.safetensors").exists():
        result = lm.load_state_dict(
            load_file(path / "backbone_trained.safetensors", device=str(model.device)), strict=False
        )
        if result.unexpected_keys:
            raise ValueError(
                f"{path}: trained weights do not fit the backbone {backbone}: {result.unexpected_keys[:3]}"
            )
    model.head.load_state_dict(load_file(path / "head.safetensors", device=str(model.device)))
    model.eval()
    return LearnedReward(model, batch_size)


# ============================================================================================ metrics
def choose_threshold(rewards: np.ndarray, toxic: np.ndarray) -> float:
    """Reward threshold below which a text is called toxic, maximising balanced accuracy on *validation* texts.

    Higher reward = less toxic. Candidates are midpoints between sorted rewards (and the extremes).
    """
    rewards, toxic = np.asarray(rewards, dtype=np.float64), np.asarray(toxic).astype(bool)
    if rewards.size == 0:
        raise ValueError("cannot choose a threshold on an empty validation set")
    r = np.sort(np.unique(rewards))
    candidates = np.concatenate([[r[0] - 1e-6], (r[:-1] + r[1:]) / 2, [r[-1] + 1e-6]])
    if toxic.all() or not toxic.any():
        LOG.warning("validation texts are all of one GT class; threshold falls back to the median reward")
        return float(np.median(rewards))
    scores = [balanced_accuracy_score(toxic, rewards < c) for c in candidates]
    return float(candidates[int(np.argmax(scores))])


def reward_metrics(rewards: np.ndarray, gt_reward: np.ndarray, gt_toxic: np.ndarray, threshold: float) -> dict:
    """Accuracy/F1 (toxic = positive) of ``reward < threshold`` and correlations with the GT reward."""
    pred_toxic = np.asarray(rewards) < threshold
    const = np.ptp(rewards) == 0
    return {
        "accuracy": float(accuracy_score(gt_toxic, pred_toxic)),
        "f1": float(f1_score(gt_toxic, pred_toxic, zero_division=0.0)),
        "pearson": float("nan") if const else float(stats.pearsonr(rewards, gt_reward)[0]),
        "kendall": float("nan") if const else float(stats.kendalltau(rewards, gt_reward)[0]),
        "spearman": float("nan") if const else float(stats.spearmanr(rewards, gt_reward)[0]),
    }


# ============================================================================================ cached features
def demo_texts(demos: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Reward-model inputs of a demonstration pair: prompt + completion, for expert and non-expert."""
    return (demos["prompt"] + demos["expert"]).tolist(), (demos["prompt"] + demos["non_expert"]).tolist()


def build_features(
    cfg: IRLConfig,
    backbone_dir: str | Path,
    demos_path: str | Path,
    heldout_path: str | Path,
    train_texts_path: str | Path,
    gt_classifier: Any,
    out_path: str | Path,
    compute: ComputeConfig | None = None,
) -> None:
    """Frozen-bottom hidden states of every text IRL touches, plus each text's GT reward and label (computed once)."""
    seed_everything(cfg.seed)
    demos = pd.read_parquet(demos_path)
    if demos.empty:
        raise ValueError(f"{demos_path}: no demonstration pairs")
    expert, non_expert = demo_texts(demos)
    heldout = pd.read_parquet(heldout_path)["text"].tolist()
    train_texts = pd.read_parquet(train_texts_path)["text"].tolist()
    source = (demos["prompt"] + demos["original_output"]).tolist()  # the data-set text each pair was prompted from
    texts = sorted(set(expert) | set(non_expert) | set(source) | set(heldout) | set(train_texts))
    lm, tokenizer, precision = (compute or ComputeConfig()).load_lm(backbone_dir)
    model = RewardModel(lm, tokenizer, cfg.trainable_layers, cfg.max_length, precision)
    hidden: list[torch.Tensor] = []
    for i in range(0, len(texts), 32):
        hidden.extend(h.cpu().clone() for h in model.bottom_hidden(model.encode(texts[i : i + 32])))
    lengths = torch.tensor([h.shape[0] for h in hidden])
    state = {
        "texts": texts,
        "offsets": torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)]),
        "hidden": torch.cat(hidden),
        "gt_reward": torch.tensor(-gt_classifier.toxic_logit(texts), dtype=torch.float64),  # paper: -(toxic logit)
        "gt_toxic": torch.tensor(gt_classifier.p_toxic(texts) >= 0.5),
        "roles": {
            "expert": expert,
            "non_expert": non_expert,
            "source": source,
            "heldout": heldout,
            "train_texts": train_texts,
        },
        "backbone": str(backbone_dir),
        "trainable_layers": cfg.trainable_layers,
        "max_length": cfg.max_length,
    }
    with atomic_path(out_path) as tmp:
        torch.save(state, tmp)
    LOG.info(
        "IRL features: %d texts, %d tokens, hidden %s", len(texts), int(lengths.sum()), tuple(state["hidden"].shape)
    )


class FeatureStore:
    def __init__(self, path: str | Path) -> None:
        self.state = torch.load(path, weights_only=False)
        self.index = {t: i for i, t in enumerate(self.state["texts"])}

    def hidden(self, texts: Sequence[str]) -> list[torch.Tensor]:
        off, hid = self.state["offsets"], self.state["hidden"]
        return [hid[off[self.index[t]] : off[self.index[t] + 1]] for t in texts]

    def gt(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        idx = [self.index[t] for t in texts]
        return self.state["gt_reward"][idx].numpy(), self.state["gt_toxic"][idx].numpy()


# ============================================================================================ training
def split_pairs(n: int, validation_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of demonstration pairs into (train, validation) indices; at least one of each."""
    if n < 2:
        raise ValueError(f"need at least 2 demonstration pairs to hold some out for validation, got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = min(n - 1, max(1, round(validation_fraction * n)))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def score_in_batches(model: RewardModel, hidden: list[torch.Tensor], batch_size: int = 64) -> np.ndarray:
    with torch.no_grad():
        return torch.cat(
            [model.score_hidden(hidden[i : i + batch_size]).cpu() for i in range(0, len(hidden), batch_size)]
        ).numpy()


def evaluate_texts(
    model: RewardModel,
    data: tuple[list[torch.Tensor], np.ndarray, np.ndarray],
    name: str,
    threshold: float,
    cfg: IRLConfig,
    epoch: int,
    reward_rows: list[pd.DataFrame],
) -> dict[str, float]:
    """Score one text set, record its per-text rewards, and return its metrics prefixed with ``name``."""
    hidden, gt_reward, gt_toxic = data
    rewards = score_in_batches(model, hidden)
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
) -> pd.DataFrame:
    """Train one (objective, seed) reward model; select the epoch by validation pair accuracy; write artifacts."""
    seed_everything(cfg.seed)
    store = FeatureStore(features_path)
    if store.state["trainable_layers"] != cfg.trainable_layers or store.state["max_length"] != cfg.max_length:
        raise ValueError(f"{features_path} was built for another trainable_layers/max_length; rebuild it")
    roles = store.state["roles"]
    expert_h, non_expert_h = store.hidden(roles["expert"]), store.hidden(roles["non_expert"])
    train_idx, val_idx = split_pairs(len(expert_h), cfg.validation_fraction, seed=0)  # same split for every seed
    # threshold texts: the data-set texts the validation pairs were prompted from -- drawn like the held-out texts
    # (complete comments, about half of them toxic), but from the training split, so the test texts stay unseen
    val_texts = [roles["source"][i] for i in val_idx]
    val_hidden = store.hidden(val_texts)
    val_gt_reward, val_gt_toxic = store.gt(val_texts)
    evals = {name: (store.hidden(roles[name]), *store.gt(roles[name])) for name in ("heldout", "train_texts")}

    lm, tokenizer, precision = (compute or ComputeConfig()).load_lm(backbone_dir)
    torch.manual_seed(cfg.seed)  # head initialisation and nothing else depends on the seed before training
    model = RewardModel(lm, tokenizer, cfg.trainable_layers, cfg.max_length, precision)
    params = model.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    rows: list[dict] = []
    reward_rows: list[pd.DataFrame] = []
    best: tuple[float, int, dict] | None = None
    for epoch in range(cfg.epochs + 1):  # epoch 0: the untrained model, as a baseline
        train_losses = []
        if epoch > 0:
            order = rng.permutation(train_idx)
            for b in range(0, len(order), cfg.batch_size):
                idx = order[b : b + cfg.batch_size]
                optimizer.zero_grad(set_to_none=True)
                d = model.score_hidden([expert_h[i] for i in idx]) - model.score_hidden([non_expert_h[i] for i in idx])
                loss = irl_loss(d, cfg.objective, cfg.margin)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"IRL loss is {float(loss)} at epoch {epoch}")
                model.precision.backward_step(loss, optimizer, params, cfg.max_grad_norm)
                model.head.bound_(cfg.max_head_norm)
                train_losses.append(float(loss.detach()))
        r_exp = score_in_batches(model, [expert_h[i] for i in val_idx])
        r_non = score_in_batches(model, [non_expert_h[i] for i in val_idx])
        val_d = torch.tensor(r_exp - r_non)
        val_rewards = score_in_batches(model, val_hidden)
        threshold = choose_threshold(val_rewards, val_gt_toxic)
        row = {
            "objective": cfg.objective,
            "seed": cfg.seed,
            "epoch": epoch,
            "train_loss": float(np.mean(train_losses)) if train_losses else float("nan"),
            "val_loss": float(irl_loss(val_d, cfg.objective, cfg.margin)),
            "val_pair_accuracy": float((val_d > 0).float().mean()),
            "threshold": threshold,
        }
        val_metrics = reward_metrics(val_rewards, val_gt_reward, val_gt_toxic, threshold)
        row.update({f"val_{k}": v for k, v in val_metrics.items()})
        row.update(evaluate_texts(model, evals["heldout"], "heldout", threshold, cfg, epoch, reward_rows))
        rows.append(row)
        # model selection on validation only: pair accuracy, ties broken by the lower validation loss
        key = (row["val_pair_accuracy"], -row["val_loss"])
        if epoch > 0 and (best is None or key > best[0]):
            state = {
                "head": {k: v.detach().clone() for k, v in model.head.state_dict().items()},
                "lm": {n: p.detach().clone() for n, p in lm.named_parameters() if p.requires_grad},
            }
            best = (key, epoch, state)
        LOG.info(
            "epoch %d loss %.4f val pair acc %.3f | held-out acc %.3f f1 %.3f spearman %.3f",
            epoch,
            row["train_loss"],
            row["val_pair_accuracy"],
            row["heldout_accuracy"],
            row["heldout_f1"],
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
        n_train_pairs=len(train_idx),
        n_val_pairs=len(val_idx),
        selected_metrics=metrics[metrics["selected"]].iloc[0].to_dict(),
    )
    save_reward_model(model, backbone_dir, out_model, record)
    write_parquet(metrics, out_metrics)
    write_parquet(pd.concat(reward_rows, ignore_index=True), out_rewards)
    return metrics


def _snakemake_features(smk: Any) -> None:
    from workflow_scripts.toxicity import load_scorer

    cfg = dataclass_from_dict(IRLConfig, smk.params.cfg)
    gt = load_scorer(smk.params.gt_classifier)
    build_features(
        cfg, smk.input.backbone, smk.input.demos, smk.input.heldout, smk.input.train_texts, gt, smk.output.features,
        dataclass_from_dict(ComputeConfig, smk.params.compute),
    )  # fmt: skip


def _snakemake_train(smk: Any) -> None:
    cfg = dataclass_from_dict(
        IRLConfig, {**smk.params.cfg, "objective": smk.wildcards.objective, "seed": int(smk.wildcards.seed)}
    )
    train_irl(
        cfg, smk.input.backbone, smk.input.features, smk.output.model, smk.output.metrics, smk.output.rewards,
        dataclass_from_dict(ComputeConfig, smk.params.compute),
    )  # fmt: skip


if __name__ == "__main__":
    job = snakemake  # type: ignore[name-defined]  # noqa: F821
    run_snakemake_job(job, _snakemake_features if job.rule == "irl_features" else _snakemake_train)
