"""Causal-LM helpers shared by every model stage: loading a checkpoint, tokenizer conventions, layer freezing.

A checkpoint directory in this pipeline is always a plain ``save_pretrained`` folder (safetensors weights, config,
tokenizer) plus ``provenance.json``; ``load_causal_lm`` is the one way stages open it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from workflow_scripts.hub import from_hub, is_local


def pick_device(preference: str = "auto") -> torch.device:
    """``auto`` uses CUDA when present, else CPU; ``cpu``/``cuda`` force one."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch.cuda.is_available() is False")
    return torch.device(preference)


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """Numerics of a job on one device: ``fp32`` (plain), or ``bf16``/``fp16`` mixed precision.

    Mixed precision = autocast for forward passes with fp32 master weights and optimizer state; ``fp16`` adds dynamic
    loss scaling (``GradScaler``). The same code runs on CPU and CUDA (CPU autocast supports both half types), so every
    path is exercised by the CPU tests. With ``fp32`` every method is a no-op wrapper around the plain step.
    """

    def __init__(self, name: str = "fp32", device: str | torch.device = "cpu") -> None:
        if name not in PRECISIONS:
            raise ValueError(f"unknown precision {name!r} (expected one of {sorted(PRECISIONS)})")
        self.name, self.device = name, torch.device(device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=name == "fp16")

    @classmethod
    def for_model(cls, name: str, model: torch.nn.Module) -> Precision:
        return cls(name, next(model.parameters()).device)

    def autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=PRECISIONS[self.name], enabled=self.name != "fp32")

    def backward_step(
        self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], max_norm: float
    ) -> float:
        """backward, gradient clipping (on unscaled gradients), optimizer step; returns the gradient norm."""
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        self.scaler.step(optimizer)  # skipped by the scaler when fp16 gradients overflowed
        self.scaler.update()
        return float(norm)


@dataclass
class ComputeConfig:
    """``compute`` of the config: where and in which numerics a model job runs."""

    device: str = "auto"  # auto = CUDA when present, else CPU
    precision: str = "fp32"  # fp32 | bf16 | fp16 (mixed precision, see Precision)

    def load_lm(self, path: str | os.PathLike) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, Precision]:
        """``load_causal_lm`` on this device (fp32 weights) and the matching ``Precision``."""
        model, tokenizer = load_causal_lm(path, device=self.device)
        return model, tokenizer, Precision.for_model(self.precision, model)


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
    path: str | os.PathLike, device: str = "auto", dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Open a pipeline checkpoint (or any HF id/path) as (model in eval mode, prepared tokenizer)."""
    p = Path(path)
    if is_local(p) and not p.exists():
        raise FileNotFoundError(f"model checkpoint not found: {p}")
    if p.exists() and not (p / "config.json").exists():
        raise FileNotFoundError(f"{p} is not a model checkpoint (no config.json)")
    tokenizer = prepare_tokenizer(from_hub(lambda: AutoTokenizer.from_pretrained(str(path)), "tokenizer", path))
    model = from_hub(lambda: AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype), "causal LM", path)
    model.to(pick_device(device))
    model.eval()
    check_tokenizer_matches(model, tokenizer, str(path))
    return model, tokenizer


def check_tokenizer_matches(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, where: str = "") -> None:
    """Fail loudly when a tokenizer produces ids the model has no embedding for (the classic wrong-tokenizer bug)."""
    n_emb = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > n_emb:
        raise ValueError(
            f"tokenizer/model mismatch{' in ' + where if where else ''}: tokenizer has {len(tokenizer)} tokens "
            f"but the model's embedding has {n_emb} rows"
        )


def transformer_blocks(model: PreTrainedModel) -> torch.nn.ModuleList:
    """The transformer blocks of a decoder-only model (Llama ``model.layers``, GPT-NeoX ``layers``, GPT-2 ``h``)."""
    base = model.base_model
    for attr in ("layers", "h", "blocks"):
        blocks = getattr(base, attr, None)
        if isinstance(blocks, torch.nn.ModuleList):
            return blocks
    raise ValueError(f"cannot find the transformer blocks of {type(model).__name__}")


def final_norm(model: PreTrainedModel) -> torch.nn.Module | None:
    base = model.base_model
    for attr in ("norm", "final_layer_norm", "ln_f"):
        mod = getattr(base, attr, None)
        if isinstance(mod, torch.nn.Module):
            return mod
    return None


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
        blocks = transformer_blocks(model)
        if num_layers_unfrozen > len(blocks):
            raise ValueError(f"num_layers_unfrozen={num_layers_unfrozen} but the model has only {len(blocks)} blocks")
        trainable: list[torch.nn.Module] = (
            list(blocks[len(blocks) - num_layers_unfrozen :]) if num_layers_unfrozen else []
        )
        norm = final_norm(model)
        if norm is not None and num_layers_unfrozen > 0:
            trainable.append(norm)
        head = model.get_output_embeddings()
        if head is not None and head.weight is not model.get_input_embeddings().weight:
            trainable.append(head)
        for mod in trainable:
            for p in mod.parameters():
                p.requires_grad_(True)
    n_train = sum(p.numel() for p in params if p.requires_grad)
    n_total = sum(p.numel() for p in params)
    return {"trainable_parameters": n_train, "total_parameters": n_total, "num_layers_unfrozen": num_layers_unfrozen}


def _block_and_norm_attrs(model: PreTrainedModel) -> tuple[str, str]:
    base = model.base_model
    block_attr = next(a for a in ("layers", "h", "blocks") if isinstance(getattr(base, a, None), torch.nn.ModuleList))
    norm_attr = next(
        a for a in ("norm", "final_layer_norm", "ln_f") if isinstance(getattr(base, a, None), torch.nn.Module)
    )
    return block_attr, norm_attr


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
) -> torch.Tensor:
    """Run a contiguous range of transformer blocks of ``model`` (optionally followed by a final norm).

    Start either from token ids (embedding first) or from the hidden states a previous range returned. This is how a
    frozen bottom is computed once and cached while only the top blocks are re-run (trlx's "hydra" trick); ``blocks``
    may also be a frozen copy of the top (the reference model's branch). Supports models whose embedding output is the
    first block's input unchanged (Llama, GPT-NeoX/Pythia; *not* GPT-2's learned position embeddings):
    ``tests/test_ppo.py`` checks that bottom + top equals the full forward.
    """
    if (input_ids is None) == (hidden is None):
        raise ValueError("pass exactly one of input_ids or hidden")
    base = model.base_model
    block_attr, norm_attr = _block_and_norm_attrs(model)
    old_blocks, old_norm = getattr(base, block_attr), getattr(base, norm_attr)
    setattr(base, block_attr, blocks)
    setattr(base, norm_attr, norm if norm is not None else torch.nn.Identity())
    try:
        out = base(
            input_ids=input_ids,
            inputs_embeds=hidden,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            use_cache=False,
        )
    finally:
        setattr(base, block_attr, old_blocks)
        setattr(base, norm_attr, old_norm)
    return out.last_hidden_state


def model_fingerprint(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> str:
    """Hash of the weights, config and vocabulary: identifies exactly which checkpoint (and tokenizer) a run used."""
    import hashlib
    import json

    h = hashlib.sha1()
    h.update(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
