"""The learned reward model of the IRL stage: causal-LM backbone + a linear head on the pooled top hidden state.

Pooling (``irl.pooling``): ``last`` (the paper's) reads the **last real token**; ``mean`` averages the completion's
tokens (every token whose characters end after the prompt's; the last token when the completion is empty), so a
reward sees every token the policy chose, and nothing of the prompt, whose states are identical within a pair.

The original code scored only the last *character* of each string; not copied. The head sits behind a parameter-free
LayerNorm, so with the head's weight norm bounded (``max_head_norm``) the reward is bounded and the unbounded
max-margin objective cannot run away.

Only the top ``trainable_layers`` blocks (+ head) train; ``bottom_hidden`` runs the frozen bottom once per text so
training can cache it (``workflow_scripts.lib.irl``). ``save_reward_model`` / ``load_reward_model`` write and open
``results/irl/{objective}/seed{seed}/reward_model/``; ``LearnedReward`` is the ``rewards(prompts, completions)``
callable PPO optimises in the IRL-RLHF stage.

Every reward model directory is also a self-contained Hugging Face model (``export_hf``): ``config.json`` naming the
standalone ``modeling_irl_reward.py`` it carries (``AutoModel.from_pretrained(dir, trust_remote_code=True)``), the
tokenizer, and the full weights in two shards: the frozen backbone (identical for every reward model of a run, so
``irl_features`` writes it once and each directory hard-links it) and the trained top blocks + head.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.nn.utils.rnn import pad_sequence

from workflow_scripts.lib import modeling_irl_reward
from workflow_scripts.lib.atomic_io import atomic_path, write_json
from workflow_scripts.lib.cards import write_model_card
from workflow_scripts.lib.compute import ComputeConfig, Precision
from workflow_scripts.lib.lm import load_lm, pad, run_blocks, split_backbone
from workflow_scripts.lib.prefix_pack import PrefixPack, run_packed
from workflow_scripts.lib.rewards import check_reward_output

POOLINGS = ("last", "mean")


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token per row, for left *or* right padding."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.long() * (positions + 1)).argmax(-1)


def mean_pooling_weights(attention_mask: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """[batch, len] weights summing to 1 per row (right padding): spread evenly over the real tokens from ``starts``
    (each completion's first token) on; all on the last real token where that span is empty."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    span = ((positions >= starts[:, None]) & attention_mask.bool()).float()
    last = torch.nn.functional.one_hot(last_token_index(attention_mask), attention_mask.shape[1]).float()
    span = torch.where(span.sum(-1, keepdim=True) > 0, span, last)
    return span / span.sum(-1, keepdim=True)


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
        self, lm: Any, tokenizer: Any, trainable_layers: int, max_length: int, pooling: str,
        precision: Precision | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.lm, self.tokenizer, self.max_length, self.pooling = lm, tokenizer, max_length, pooling
        self.device = next(lm.parameters()).device
        self.precision = precision or Precision.default(self.device)
        backbone = split_backbone(lm, trainable_layers)
        self.trainable_layers = len(backbone.top)
        self.bottom, self.top, self.norm = backbone.bottom, backbone.top, backbone.norm
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

    def completion_starts(self, texts: Sequence[str], prompt_chars: Sequence[int]) -> list[int]:
        """Per text (prompt + completion, the prompt ``prompt_chars`` characters long), the index in ``encode``'s
        tokens of the completion's first token: the first token whose characters end after the prompt (a token
        spanning the boundary counts as completion), shifted by the left cut to ``max_length``; the token count when
        the completion is empty."""
        starts = []
        for text, n in zip(texts, prompt_chars, strict=True):
            offsets = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            first = next((i for i, (_, end) in enumerate(offsets) if end > n), len(offsets))
            starts.append(max(0, first - max(0, len(offsets) - self.max_length)))
        return starts

    def bottom_hidden(self, ids: list[list[int]]) -> list[torch.Tensor]:
        """Per text, the hidden states after the frozen bottom ([len, H], fp32, on the model's device); right padding,
        so no shifts."""
        input_ids, mask = pad(ids, self.tokenizer.pad_token_id, "right")
        with torch.no_grad(), self.precision.autocast():
            h = run_blocks(self.lm, self.bottom, None, mask.to(self.device), input_ids=input_ids.to(self.device))
        return [h[i, : len(x)].float() for i, x in enumerate(ids)]

    def bottom_hidden_packed(self, ids: list[list[int]], pack: PrefixPack) -> list[torch.Tensor]:
        """``bottom_hidden`` with the texts packed by ``pack`` (``lib.prefix_pack``): a common token prefix of a
        group (the prompt of a pair) computed once; the same states up to float rounding."""
        with torch.no_grad(), self.precision.autocast():
            states = run_packed(self.lm, self.bottom, None, pack, input_ids=ids)
        return [h.float() for h in states]

    def score_hidden(
        self, hidden: list[torch.Tensor], starts: Sequence[int] | None = None, pack: PrefixPack | None = None
    ) -> torch.Tensor:
        """Rewards from bottom hidden states: run the top blocks, pool (``last`` token, or ``mean_pooling_weights``
        from ``starts``, each text's completion start) and apply the head. ``pack``: the texts packed so that a
        group's common prefix (a pair's prompt) runs through the top once, its gradient flowing to both texts
        (``lib.prefix_pack``); the same rewards and gradients up to float rounding."""
        lengths = torch.tensor([h.shape[0] for h in hidden], device=self.device)
        mask = (torch.arange(int(lengths.max()), device=self.device) < lengths[:, None]).long()
        if self.pooling == "mean" and starts is None:
            raise ValueError("mean pooling needs each text's completion start")
        with self.precision.autocast():
            if pack is None:
                batch = pad_sequence([h.to(self.device) for h in hidden], batch_first=True)  # right padding, zeros
                top = run_blocks(self.lm, self.top, self.norm, mask, hidden=batch)
            else:
                states = run_packed(self.lm, self.top, self.norm, pack, hidden=[h.to(self.device) for h in hidden])
                top = pad_sequence(states, batch_first=True)
            if self.pooling == "last":
                pooled = top[torch.arange(len(hidden), device=self.device), last_token_index(mask)]
            else:
                weights = mean_pooling_weights(mask, torch.as_tensor(list(starts), device=self.device))
                pooled = (top.float() * weights[..., None]).sum(1)
            return self.head(pooled.float()).float()

    def score_texts(
        self, texts: Sequence[str], batch_size: int, prompt_chars: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Rewards of whole texts; ``prompt_chars`` (each text's prompt length in characters) is needed for mean
        pooling."""
        if self.pooling == "mean" and prompt_chars is None:
            raise ValueError("mean pooling scores prompt + completion: give each text's prompt length")
        out = []
        with torch.no_grad():
            for i in range(0, len(texts), batch_size):
                chunk = texts[i : i + batch_size]
                starts = None if prompt_chars is None else self.completion_starts(chunk, prompt_chars[i:][:batch_size])
                out.append(self.score_hidden(self.bottom_hidden(self.encode(chunk)), starts).cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


# ============================================================================================ save / load
FROZEN_SHARD, TRAINED_SHARD = "model-frozen.safetensors", "model-trained.safetensors"


def hf_weights(model: RewardModel) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(frozen, trained) weights under ``IRLRewardModel``'s names: the backbone's (``backbone.*``) split by whether
    they train, and the head's (``head.*``) with the trained ones."""
    base = model.lm.base_model
    trainable = {n for n, p in base.named_parameters() if p.requires_grad}
    frozen: dict[str, torch.Tensor] = {}
    trained: dict[str, torch.Tensor] = {}
    for name, tensor in base.state_dict().items():
        (trained if name in trainable else frozen)[f"backbone.{name}"] = tensor.detach().float().cpu().contiguous()
    for name, tensor in model.head.linear.state_dict().items():
        trained[f"head.{name}"] = tensor.detach().float().cpu().contiguous()
    return frozen, trained


def save_frozen_backbone(model: RewardModel, path: str | Path) -> None:
    """The frozen shard every reward model of this backbone and ``trainable_layers`` shares (rule irl_features)."""
    with atomic_path(path) as tmp:
        save_file(hf_weights(model)[0], tmp)


def export_hf(model: RewardModel, out: Path, frozen_shard: str | Path | None = None) -> None:
    """Write ``out`` as a Hugging Face model: config (with ``auto_map``), the modeling file, sharded weights. The
    frozen shard is hard-linked from ``frozen_shard`` when given (checked to hold exactly the frozen names), else
    written."""
    frozen, trained = hf_weights(model)
    if frozen_shard is None:
        save_file(frozen, out / FROZEN_SHARD)
    else:
        with safe_open(str(frozen_shard), "pt") as f:
            if set(f.keys()) != set(frozen):
                raise ValueError(f"{frozen_shard} does not hold this reward model's frozen weights; rebuild it")
        try:
            os.link(frozen_shard, out / FROZEN_SHARD)
        except OSError:  # another file system: a copy
            shutil.copyfile(frozen_shard, out / FROZEN_SHARD)
    save_file(trained, out / TRAINED_SHARD)
    weight_map = {**dict.fromkeys(frozen, FROZEN_SHARD), **dict.fromkeys(trained, TRAINED_SHARD)}
    size = sum(t.numel() * t.element_size() for t in [*frozen.values(), *trained.values()])
    write_json({"metadata": {"total_size": size}, "weight_map": weight_map}, out / "model.safetensors.index.json")
    config = modeling_irl_reward.IRLRewardConfig(
        backbone=model.lm.config.to_dict(), max_text_tokens=model.max_length, reward_pooling=model.pooling,
        auto_map={"AutoConfig": "modeling_irl_reward.IRLRewardConfig",
                  "AutoModel": "modeling_irl_reward.IRLRewardModel"},
    )  # fmt: skip
    config.save_pretrained(out)
    shutil.copyfile(modeling_irl_reward.__file__, out / "modeling_irl_reward.py")


def save_reward_model(
    model: RewardModel, backbone_dir: str | Path, out_dir: str | Path, record: dict,
    frozen_shard: str | Path | None = None,
) -> None:  # fmt: skip
    """Head + trained top blocks (safetensors), tokenizer, and a pointer to the frozen backbone checkpoint (what
    the pipeline loads), plus the same model as a self-contained Hugging Face directory (``export_hf``)."""
    trained = {n: p.detach().cpu().contiguous() for n, p in model.lm.named_parameters() if p.requires_grad}
    with atomic_path(out_dir, is_dir=True) as tmp:
        save_file({k: v.cpu().contiguous() for k, v in model.head.state_dict().items()}, tmp / "head.safetensors")
        if trained:
            save_file(trained, tmp / "backbone_trained.safetensors")
        model.tokenizer.save_pretrained(tmp)
        backbone_rel = os.path.relpath(Path(backbone_dir).resolve(), Path(out_dir).resolve())
        write_json(
            {
                "backbone": backbone_rel,
                "trainable_layers": model.trainable_layers,
                "max_length": model.max_length,
                "pooling": model.pooling,
            },
            tmp / "reward_config.json",
        )
        write_json(record, tmp / "provenance.json")
        export_hf(model, tmp, frozen_shard)
        write_model_card(tmp, record)


class LearnedReward:
    """``rewards(prompts, completions) -> tensor``: the learned reward on prompt + completion, for PPO.

    Scores are cached per unique (prompt, completion), so repeats (common in RL) are scored once, ``batch_size``
    (``irl_rlhf.batch_size``) texts per forward pass.
    """

    def __init__(self, model: RewardModel, batch_size: int) -> None:
        self.model, self.batch_size = model, batch_size
        self._cache: dict[tuple[str, str], float] = {}

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        pairs = list(zip(prompts, completions, strict=True))
        todo = sorted({pc for pc in pairs if pc not in self._cache})
        if todo:
            texts, prompt_chars = [p + c for p, c in todo], [len(p) for p, _ in todo]
            for pc, r in zip(todo, self.model.score_texts(texts, self.batch_size, prompt_chars).tolist(), strict=True):
                self._cache[pc] = r
        return np.array([self._cache[pc] for pc in pairs], dtype=np.float64)

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        return check_reward_output(self.score(prompts, completions), len(prompts), "learned reward")


def load_reward_model(path: str | Path, batch_size: int, compute: ComputeConfig | None = None) -> LearnedReward:
    """Open ``results/irl/{objective}/seed{seed}/reward_model/`` as a reward callable scoring ``batch_size`` texts
    per forward pass (``irl_rlhf.batch_size``)."""
    path = Path(path)
    cfg_file = path / "reward_config.json"
    if not cfg_file.exists():
        raise FileNotFoundError(f"{path} is not a reward model directory (no reward_config.json)")
    cfg = json.loads(cfg_file.read_text())
    if "pooling" not in cfg:
        raise ValueError(f"{cfg_file} predates irl.pooling (no 'pooling' key); retrain it (rerun irl_train)")
    backbone = (path / cfg["backbone"]).resolve()
    lm, tokenizer, precision = load_lm(backbone, compute)
    model = RewardModel(lm, tokenizer, cfg["trainable_layers"], cfg["max_length"], cfg["pooling"], precision)
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
