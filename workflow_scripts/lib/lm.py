"""Causal LMs: opening and writing checkpoints, tokenizer conventions, the tensor layout, layer splits.

A checkpoint directory in this pipeline is always a plain ``save_pretrained`` folder (safetensors weights, config,
tokenizer) plus ``provenance.json``: ``load_causal_lm``/``load_lm`` are the one way stages open it and
``save_checkpoint_dir`` the one way they write it. This module also owns the tensor layout every stage shares:
``pad`` (left padding for generation, right padding for training), the architecture attribute table, and
``split_backbone`` (the frozen bottom / trainable top split of PPO, SFT and the IRL reward model).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from workflow_scripts.lib.atomic_io import atomic_path, write_json
from workflow_scripts.lib.cards import write_model_card
from workflow_scripts.lib.compute import ComputeConfig, Precision, describe_device, format_device, pick_device
from workflow_scripts.lib.hub import from_hub
from workflow_scripts.lib.paths import is_local

LOG = logging.getLogger("irl_llms.lm")


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Left padding for batched generation and a pad token (falling back to EOS).

    Because pad may equal EOS, never build masks from ``input_ids == pad_token_id``: use attention masks.
    """
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("tokenizer has neither a pad nor an EOS token; cannot batch")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def stop_token_ids(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel | None = None) -> list[int]:
    """Every id that ends a document: the tokenizer's EOS, the model's configured EOS, and ``<|endoftext|>``."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if model is not None:
        eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        eos = eos if eos is not None else model.config.eos_token_id
        if isinstance(eos, int):
            ids.add(eos)
        elif eos:
            ids.update(int(i) for i in eos)
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>") if "<|endoftext|>" in tokenizer.get_vocab() else None
    if eot is not None:
        ids.add(int(eot))
    return sorted(ids)


def load_causal_lm(
    path: str | os.PathLike, device: str | None = None, dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Open a pipeline checkpoint (or any HF id/path) as (model in eval mode, prepared tokenizer) on ``device``, a
    ``compute.device`` value (None: the schema's default, for code called outside a job).

    The device is resolved first: a ``cuda`` request on a node without a usable GPU stops before any file is read."""
    target = pick_device(device or ComputeConfig.default().device)
    p = Path(path)
    if is_local(p) and not p.exists():
        raise FileNotFoundError(f"model checkpoint not found: {p}")
    if p.exists() and not (p / "config.json").exists():
        raise FileNotFoundError(f"{p} is not a model checkpoint (no config.json)")
    tokenizer = prepare_tokenizer(from_hub(lambda: AutoTokenizer.from_pretrained(str(path)), "tokenizer", path))
    model = from_hub(lambda: AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype), "causal LM", path)
    model.to(target)
    model.eval()
    check_tokenizer_matches(model, tokenizer, str(path))
    return model, tokenizer


def load_lm(
    path: str | os.PathLike, compute: ComputeConfig | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, Precision]:
    """``load_causal_lm`` on the configured device (fp32 weights) and the configured ``Precision``; logs where the
    model runs (``compute.describe_device``: resolved device, precision, torch build, GPU, node)."""
    compute = compute or ComputeConfig.default()
    model, tokenizer = load_causal_lm(path, device=compute.device)
    precision = Precision.for_model(compute.precision, model)
    LOG.info("%s on %s", path, format_device(describe_device(precision.device, precision.name, compute.device)))
    return model, tokenizer, precision


def save_checkpoint_dir(
    out_dir: str | os.PathLike,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    record: Mapping[str, Any],
    extra_tensors: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
) -> None:
    """Write a checkpoint directory atomically: weights (safetensors), config, tokenizer, ``provenance.json``, a model
    card (``README.md``) and optional extra tensor files (``{"value_head.safetensors": state_dict}``)."""
    with atomic_path(out_dir, is_dir=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for name, tensors in (extra_tensors or {}).items():
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp / name)
        write_json(dict(record), tmp / "provenance.json")
        write_model_card(tmp, record)


def check_tokenizer_matches(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, where: str = "") -> None:
    """Fail loudly when a tokenizer produces ids the model has no embedding for (the classic wrong-tokenizer bug)."""
    n_emb = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > n_emb:
        raise ValueError(
            f"tokenizer/model mismatch{' in ' + where if where else ''}: tokenizer has {len(tokenizer)} tokens "
            f"but the model's embedding has {n_emb} rows"
        )


# --------------------------------------------------------------------------------------------- the tensor layout
# Where decoder-only architectures keep their blocks and final norm (Llama/SmolLM2, GPT-NeoX/Pythia, GPT-2).
ARCH_ATTRS = {
    "blocks": ("layers", "h", "blocks"),
    "norm": ("norm", "final_layer_norm", "ln_f"),
}


def _arch_attr(model: PreTrainedModel, part: str) -> str | None:
    """The attribute of ``model.base_model`` holding ``part`` (``blocks`` or ``norm``), or None."""
    kind = torch.nn.ModuleList if part == "blocks" else torch.nn.Module
    return next((a for a in ARCH_ATTRS[part] if isinstance(getattr(model.base_model, a, None), kind)), None)


def transformer_blocks(model: PreTrainedModel) -> torch.nn.ModuleList:
    """The transformer blocks of a decoder-only model."""
    attr = _arch_attr(model, "blocks")
    if attr is None:
        raise ValueError(f"cannot find the transformer blocks of {type(model).__name__}")
    return getattr(model.base_model, attr)


def final_norm(model: PreTrainedModel) -> torch.nn.Module | None:
    attr = _arch_attr(model, "norm")
    return None if attr is None else getattr(model.base_model, attr)


@dataclass
class Backbone:
    """A model's blocks split into a bottom (frozen, run once and cached) and a top (trained), plus the final norm."""

    bottom: torch.nn.ModuleList
    top: torch.nn.ModuleList
    norm: torch.nn.Module | None


def split_backbone(model: PreTrainedModel, n_top: int) -> Backbone:
    """The top ``n_top`` blocks and the rest; ``-1`` puts every block on top."""
    blocks = transformer_blocks(model)
    n_top = len(blocks) if n_top < 0 else n_top
    if n_top > len(blocks):
        raise ValueError(f"{n_top} top blocks requested but the model has only {len(blocks)} blocks")
    cut = len(blocks) - n_top
    return Backbone(torch.nn.ModuleList(blocks[:cut]), torch.nn.ModuleList(blocks[cut:]), final_norm(model))


def pad(rows: Sequence[Sequence[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Id lists padded to one width on the ``left`` (generation: every row ends at the last column) or the ``right``
    (training: positions start at 0); returns (input_ids, attention_mask). Masks come from lengths, never from
    ``pad_id`` (which may equal EOS)."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    width = max((len(r) for r in rows), default=0)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for row, ids in enumerate(rows):
        if ids:
            cols = slice(width - len(ids), width) if side == "left" else slice(0, len(ids))
            input_ids[row, cols] = torch.as_tensor(list(ids), dtype=torch.long)
            attention[row, cols] = 1
    return input_ids, attention


def freeze_bottom_layers(model: PreTrainedModel, num_layers_unfrozen: int) -> dict[str, Any]:
    """Make only the top ``num_layers_unfrozen`` blocks (+ final norm, + an *untied* output head) trainable.

    ``-1`` trains everything. With a tied output layer (SmolLM2) the head *is* the input embedding; training it would
    push gradients through every block, so a tied head stays frozen (it is shared with the frozen embedding).
    Returns a summary (trainable / total parameter counts) for logs and provenance.
    """
    params = list(model.parameters())
    if num_layers_unfrozen < 0:
        for p in params:
            p.requires_grad_(True)
    else:
        for p in params:
            p.requires_grad_(False)
        backbone = split_backbone(model, num_layers_unfrozen)
        trainable: list[torch.nn.Module] = list(backbone.top)
        if backbone.norm is not None and num_layers_unfrozen > 0:
            trainable.append(backbone.norm)
        head = model.get_output_embeddings()
        if head is not None and head.weight is not model.get_input_embeddings().weight:
            trainable.append(head)
        for mod in trainable:
            for p in mod.parameters():
                p.requires_grad_(True)
    n_train = sum(p.numel() for p in params if p.requires_grad)
    n_total = sum(p.numel() for p in params)
    return {"trainable_parameters": n_train, "total_parameters": n_total, "num_layers_unfrozen": num_layers_unfrozen}


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that ignore left padding (what ``generate`` uses), so scores match the sampling distribution."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def run_blocks(
    model: PreTrainedModel,
    blocks: torch.nn.ModuleList,
    norm: torch.nn.Module | None,
    attention_mask: torch.Tensor,
    input_ids: torch.Tensor | None = None,
    hidden: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run a contiguous range of transformer blocks of ``model`` (optionally followed by a final norm).

    Start either from token ids (embedding first) or from the hidden states a previous range returned. This is how a
    frozen bottom is computed once and cached while only the top blocks are re-run (trlx's "hydra" trick); ``blocks``
    may also be a frozen copy of the top (the reference model's branch). Supports models whose embedding output is the
    first block's input unchanged (Llama, GPT-NeoX/Pythia; *not* GPT-2's learned position embeddings):
    ``tests/test_ppo.py`` checks that bottom + top equals the full forward. ``attention_mask`` is the usual [batch,
    len] padding mask (positions then follow from it), or a custom [batch, 1, len, len] mask with explicit
    ``position_ids`` (``lib.prefix_pack``).
    """
    if (input_ids is None) == (hidden is None):
        raise ValueError("pass exactly one of input_ids or hidden")
    if attention_mask.ndim == 4 and position_ids is None:
        raise ValueError("a 4D attention mask needs explicit position_ids")
    base = model.base_model
    block_attr, norm_attr = _arch_attr(model, "blocks"), _arch_attr(model, "norm")
    if block_attr is None or norm_attr is None:
        raise ValueError(f"cannot split {type(model).__name__} into blocks and a final norm")
    old_blocks, old_norm = getattr(base, block_attr), getattr(base, norm_attr)
    setattr(base, block_attr, blocks)
    setattr(base, norm_attr, norm if norm is not None else torch.nn.Identity())
    try:
        out = base(
            input_ids=input_ids,
            inputs_embeds=hidden,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask) if position_ids is None else position_ids,
            use_cache=False,
        )
    finally:
        setattr(base, block_attr, old_blocks)
        setattr(base, norm_attr, old_norm)
    return out.last_hidden_state


def model_fingerprint(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> str:
    """Hash of the weights, config and vocabulary: identifies exactly which checkpoint (and tokenizer) a run used."""
    h = hashlib.sha1()
    h.update(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
