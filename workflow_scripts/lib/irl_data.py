"""The data IRL trains and is scored on: the frozen-bottom hidden states of every text, cached once
(``build_features`` -> ``results/irl/features.pt``, read back by ``FeatureStore``), the train/validation split of the
demonstration pairs shared by every run (``validation_pairs``), and which side of each pair the loss prefers
(``pair_orientation``, ``irl.pair_labels``). Training itself is ``workflow_scripts.lib.irl``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from workflow_scripts.lib.atomic_io import atomic_path
from workflow_scripts.lib.compute import ComputeConfig
from workflow_scripts.lib.generation import length_sorted_batches
from workflow_scripts.lib.inputs import read_table
from workflow_scripts.lib.lm import load_lm
from workflow_scripts.lib.prefix_pack import group_batches, group_by_key, pack_prefixes
from workflow_scripts.lib.reward_model import RewardModel, save_frozen_backbone
from workflow_scripts.lib.toxicity import LABEL_THRESHOLD, ToxicityScorer, is_toxic

LOG = logging.getLogger("irl_llms.irl")
PAIR_LABELS = ("expert", "log_ratio", "gt")


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
    ids = model.encode(texts)
    hidden, shared = packed_bottom(model, ids, [parts[t][0] for t in texts])
    lengths = torch.tensor([h.shape[0] for h in hidden])
    state = {
        "texts": texts,
        "offsets": torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)]),
        "hidden": torch.cat(hidden),
        "input_ids": torch.tensor([t for x in ids for t in x], dtype=torch.long),  # aligned with hidden's rows
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
    LOG.info("IRL features: %d texts, %d tokens (%d computed: a prompt's tokens once for all its texts), hidden %s",
             len(texts), int(lengths.sum()), int(lengths.sum()) - shared, tuple(state["hidden"].shape))  # fmt: skip


FEATURE_BATCH = 32  # packed rows (one per prompt) per frozen-bottom pass


def packed_bottom(model: RewardModel, ids: list[list[int]], prompts: Sequence[str]) -> tuple[list[torch.Tensor], int]:
    """Frozen-bottom hidden states of every text (on the CPU), the texts of one prompt packed into one row so that
    their common token prefix is computed once (``lib.prefix_pack``); rows of similar length batched together.
    Returns the states and how many positions the packing saved."""
    groups = group_by_key(prompts)
    hidden: list[torch.Tensor | None] = [None] * len(ids)
    shared = 0
    for batch in group_batches(ids, groups, FEATURE_BATCH):
        members = [i for b in batch for i in groups[b]]
        local = {i: j for j, i in enumerate(members)}
        pack = pack_prefixes([ids[i] for i in members], [[local[i] for i in groups[b]] for b in batch])
        shared += pack.shared_positions()
        states = model.bottom_hidden_packed([ids[i] for i in members], pack)
        for i, h in zip(members, states, strict=True):
            hidden[i] = h.cpu()  # unpacked by gathering: its own storage, no view of the batch
    assert all(h is not None for h in hidden)
    return hidden, shared  # type: ignore[return-value]


class FeatureStore:
    def __init__(self, path: str | Path, mmap: bool = False) -> None:
        """``mmap``: map the file instead of reading it, for a reader that needs the texts and GT scores but few or
        none of the hidden states."""
        self.state = torch.load(path, weights_only=False, mmap=mmap)
        self.index = {t: i for i, t in enumerate(self.state["texts"])}

    def hidden(self, texts: Sequence[str]) -> list[torch.Tensor]:
        off, hid = self.state["offsets"], self.state["hidden"]
        return [hid[off[self.index[t]] : off[self.index[t] + 1]] for t in texts]

    def ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's token ids (the rows of its hidden states), to find the prefix a pair's texts share."""
        if "input_ids" not in self.state:
            raise ValueError(
                "these IRL features predate shared prompt states (no token ids): rebuild them with "
                "`snakemake --forcerun irl_features`"
            )
        off, ids = self.state["offsets"], self.state["input_ids"]
        return [ids[off[self.index[t]] : off[self.index[t] + 1]].tolist() for t in texts]

    def starts(self, texts: Sequence[str]) -> list[int]:
        """Each text's first completion token (``RewardModel.completion_starts``), for mean pooling."""
        if "completion_start" not in self.state:
            raise ValueError("these IRL features predate irl.pooling (no completion starts); rebuild them")
        return [int(self.state["completion_start"][self.index[t]]) for t in texts]

    def gt(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        idx = [self.index[t] for t in texts]
        return self.state["gt_reward"][idx].numpy(), self.state["gt_toxic"][idx].numpy()


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

    def take(self, idx: Sequence[int] | np.ndarray) -> tuple[list[torch.Tensor], list[int]]:
        return [self.hidden[i] for i in idx], [self.starts[i] for i in idx]

    def score(self, model: RewardModel, idx: Sequence[int] | np.ndarray) -> torch.Tensor:
        return model.score_hidden(*self.take(idx))

    def score_all(self, model: RewardModel, idx: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Rewards without gradients (all texts, or those at ``idx``, in that order), ``SCORE_BATCH`` texts of
        similar length a pass: the held-out texts' lengths vary 1-96 tokens, and batches in text order computed 2.7x
        their real positions (1.6x sorted; each text's score equals its own unpadded pass up to float rounding)."""
        idx = np.arange(len(self.hidden)) if idx is None else np.asarray(idx)
        out = np.empty(len(idx), dtype=np.float32)
        with torch.no_grad():
            for batch in length_sorted_batches([self.hidden[i] for i in idx], SCORE_BATCH):  # positions into idx
                out[batch] = self.score(model, idx[batch]).cpu().numpy()
        return out


@dataclass
class Pairs:
    """Demonstration pairs scored together: the expert's and the non-expert's text of a pair start with the same
    prompt tokens, whose top-block states are computed once for both (``lib.prefix_pack``; gradients flow to both
    sides). Rewards equal scoring each side on its own up to float rounding."""

    expert: Texts
    non_expert: Texts
    ids: tuple[list[list[int]], list[list[int]]]

    @classmethod
    def of(cls, store: FeatureStore, expert: Sequence[str], non_expert: Sequence[str]) -> Pairs:
        return cls(Texts.of(store, expert), Texts.of(store, non_expert), (store.ids(expert), store.ids(non_expert)))

    def score(self, model: RewardModel, idx: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(expert rewards, non-expert rewards) of the pairs at ``idx``."""
        (h_e, s_e), (h_n, s_n) = self.expert.take(idx), self.non_expert.take(idx)
        n = len(h_e)
        pack = pack_prefixes([self.ids[0][i] for i in idx] + [self.ids[1][i] for i in idx],
                             [[j, n + j] for j in range(n)])  # fmt: skip
        r = model.score_hidden(h_e + h_n, s_e + s_n, pack)
        return r[:n], r[n:]

    def score_all(self, model: RewardModel, idx: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``score`` without gradients, ``SCORE_BATCH`` texts (half as many pairs) of similar length a pass."""
        idx = np.asarray(idx)
        out = np.empty((2, len(idx)), dtype=np.float32)
        seqs = [self.ids[0][i] for i in idx] + [self.ids[1][i] for i in idx]
        with torch.no_grad():
            for batch in group_batches(seqs, [[j, len(idx) + j] for j in range(len(idx))], SCORE_BATCH // 2):
                e, n = self.score(model, idx[batch])
                out[0, batch], out[1, batch] = e.cpu().numpy(), n.cpu().numpy()
        return out[0], out[1]
