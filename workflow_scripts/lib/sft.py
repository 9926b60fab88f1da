"""SFT (stage 1b): supervised fine-tuning of the base LM on the train split's texts (the policy's prompt domain).

Consumes ``results/base/model/`` and ``results/data/train.parquet`` (column ``text``); produces
``results/sft/model/`` (HF checkpoint + tokenizer + provenance.json with the final loss) and
``results/sft/train_log.parquet`` (one row per optimizer step).
With ``sft.source: import`` the stage instead copies an existing checkpoint (paper:
``lomahony/eleuther-pythia70m-hh-sft``) so every later stage sees the same directory layout.

Plain next-token cross-entropy, AdamW, linear warm-up/decay, gradient clipping, only the top ``num_layers_unfrozen``
blocks trainable (the frozen bottom runs without building a graph, so backward stops at the first trainable block).
The frozen bottom's output is computed once per text, in the first epoch, and reused by every later one
(``FrozenBottomCache``): the same loss up to float rounding, one bottom pass per text instead of one per epoch.
"""

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.nn.utils.rnn import pad_sequence
from tqdm.auto import tqdm

from workflow_scripts.lib.atomic_io import write_parquet
from workflow_scripts.lib.compute import ComputeConfig, Precision, describe_device, format_device
from workflow_scripts.lib.lm import (
    Backbone,
    freeze_bottom_layers,
    load_causal_lm,
    load_lm,
    pad,
    run_blocks,
    save_checkpoint_dir,
    split_backbone,
)
from workflow_scripts.lib.provenance import provenance
from workflow_scripts.lib.seeding import seed_everything

LOG = logging.getLogger("irl_llms.sft")


@dataclass
class SFTConfig:
    """The ``sft`` section (defaults and docs in config.schema.yaml)."""

    source: str  # train | import
    import_from: str
    num_layers_unfrozen: int
    learning_rate: float
    weight_decay: float
    warmup_ratio: float
    epochs: int
    batch_size: int
    max_length: int
    max_grad_norm: float
    max_texts: int | None
    log_every: int
    seed: int


def tokenize_texts(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids per text, truncated to ``max_length``; texts shorter than 2 tokens carry no next-token signal."""
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"][:max_length] for t in texts]
    kept = [x for x in ids if len(x) >= 2]
    if not kept:
        raise ValueError("SFT: no training text has at least 2 tokens")
    return kept


def collate(batch: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; labels are -100 on padding so it never contributes to the loss."""
    input_ids, attention = pad(batch, pad_id, "right")
    labels = input_ids.masked_fill(attention == 0, -100)
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


class FrozenBottomCache:
    """The frozen bottom's output for each training text, computed the first time the text is in a batch and reused
    in every later epoch: the bottom has no trainable parameter, so its output never changes (dropout aside; the
    models here have none). Each text's states are kept at its own length (about 15 MB per 100 texts of 64 tokens at
    SmolLM2's width, fp32) and a batch is right-padded with zeros, which only padding positions see: attention is
    causal and padding's labels are -100. The first epoch computes exactly what the full forward computes; later
    epochs differ from recomputing only by the rounding of a bottom pass over another batch composition."""

    def __init__(self, model: Any, backbone: Backbone) -> None:
        self.model = model
        self.bottom, self.top, self.norm = backbone.bottom, backbone.top, backbone.norm
        self.states: dict[int, torch.Tensor] = {}
        self.rows_computed = 0  # bottom passes, one per text when the cache works

    def loss(self, batch: dict[str, torch.Tensor], text_ids: Sequence[int]) -> torch.Tensor:
        """The model's own causal-LM loss on ``batch`` (rows = texts ``text_ids``), the bottom taken from the cache."""
        mask = batch["attention_mask"]
        lengths = mask.sum(1).tolist()
        missing = [row for row, i in enumerate(text_ids) if i not in self.states]
        if missing:
            with torch.no_grad():
                hidden = run_blocks(self.model, self.bottom, None, mask[missing], input_ids=batch["input_ids"][missing])
            for k, row in enumerate(missing):
                self.states[text_ids[row]] = hidden[k, : lengths[row]].clone()
            self.rows_computed += len(missing)
        hidden = pad_sequence([self.states[i] for i in text_ids], batch_first=True)  # collate's width, zeros
        out = run_blocks(self.model, self.top, self.norm, mask, hidden=hidden)
        logits = self.model.get_output_embeddings()(out)
        return self.model.loss_function(logits=logits, labels=batch["labels"], vocab_size=self.model.config.vocab_size)

    def megabytes(self) -> float:
        return sum(t.numel() * t.element_size() for t in self.states.values()) / 1e6


def train_sft(
    cfg: SFTConfig, base_dir: str | Path, train_path: str | Path, out_dir: str | Path, log_path: str | Path,
    compute: ComputeConfig | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Fine-tune (or import) and write the SFT checkpoint atomically; returns the provenance record."""
    compute = compute or ComputeConfig.default()
    seed_everything(cfg.seed)
    if cfg.source == "import":
        if not cfg.import_from:
            raise ValueError("sft.source is 'import' but sft.import_from is empty")
        model, tokenizer = load_causal_lm(cfg.import_from, compute.device)
        where = describe_device(model.device, "fp32")  # imported as is: no training, no autocast
        LOG.info("imported %s on %s", cfg.import_from, format_device(where))
        record = provenance("sft", asdict(cfg), cfg.seed, imported_from=cfg.import_from, compute=where)
        log = pd.DataFrame({"step": pd.Series(dtype="int64"), "loss": pd.Series(dtype="float64")})
    else:
        texts = pd.read_parquet(train_path)["text"].astype(str).tolist()
        if not texts:
            raise ValueError(f"SFT: {train_path} has no texts")
        if cfg.max_texts is not None:
            texts = texts[: cfg.max_texts]
        model, tokenizer, precision = load_lm(base_dir, compute)
        model, log, summary = _train(cfg, model, tokenizer, texts, precision)
        where = describe_device(precision.device, precision.name, compute.device)
        record = provenance("sft", asdict(cfg), cfg.seed, base_model=str(base_dir), compute=where, **summary)
    save_checkpoint_dir(out_dir, model, tokenizer, record)
    write_parquet(log, log_path)
    return record


def _train(
    cfg: SFTConfig, model: Any, tokenizer: Any, texts: list[str], precision: Precision | None = None,
    cache_bottom: bool = True,
) -> tuple[Any, pd.DataFrame, dict[str, Any]]:  # fmt: skip
    """The training loop; ``precision`` None: the schema's ``compute.precision`` on the model's device.
    ``cache_bottom`` False recomputes the frozen bottom every epoch (the tests' reference)."""
    device = next(model.parameters()).device
    precision = precision or Precision.default(device)
    freeze = freeze_bottom_layers(model, cfg.num_layers_unfrozen)
    LOG.info(
        "SFT on %d texts; trainable %d / %d parameters",
        len(texts),
        freeze["trainable_parameters"],
        freeze["total_parameters"],
    )
    data = tokenize_texts(tokenizer, texts, cfg.max_length)
    steps_per_epoch = math.ceil(len(data) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    warmup = int(cfg.warmup_ratio * total_steps)

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    backbone = split_backbone(model, cfg.num_layers_unfrozen)
    has_bottom = len(backbone.bottom) > 0
    cache = FrozenBottomCache(model, backbone) if cache_bottom and has_bottom else None
    rng = np.random.default_rng(cfg.seed)
    rows: list[dict[str, float]] = []
    model.train()
    step = 0
    start = time.perf_counter()
    bar = tqdm(total=total_steps, desc="sft", mininterval=5)
    for epoch in range(cfg.epochs):
        perm = rng.permutation(len(data))
        for b in range(steps_per_epoch):
            text_ids = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size].tolist()
            batch = collate([data[i] for i in text_ids], tokenizer.pad_token_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            optimizer.zero_grad(set_to_none=True)
            with precision.autocast():
                loss = (cache.loss(batch, text_ids) if cache is not None else model(**batch).loss).float()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"SFT loss is {loss.item()} at step {step}; stopping (nothing written)")
            grad_norm = precision.backward_step(loss, optimizer, params, cfg.max_grad_norm)
            scheduler.step()
            n_tokens = int(batch["attention_mask"].sum())
            rows.append(
                {
                    "step": step,
                    "epoch": epoch,
                    "loss": float(loss.detach()),
                    "grad_norm": float(grad_norm),
                    "lr": scheduler.get_last_lr()[0],
                    "tokens": n_tokens,
                }
            )
            if step % cfg.log_every == 0 or step == total_steps - 1:
                LOG.info(
                    "step %d/%d loss %.4f grad_norm %.3f tokens/s %.0f",
                    step,
                    total_steps,
                    float(loss.detach()),
                    float(grad_norm),
                    sum(r["tokens"] for r in rows) / (time.perf_counter() - start),
                )
            step += 1
            bar.update(1)
    bar.close()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    log = pd.DataFrame(rows)
    tail = log["loss"].tail(max(1, steps_per_epoch // 4))
    summary = {
        **freeze,
        "steps": total_steps,
        "final_loss": float(tail.mean()),
        "first_loss": float(log["loss"].iloc[0]),
        "train_texts": len(data),
        "seconds": time.perf_counter() - start,
        # frozen-bottom passes per text: 1 with the cache, one per epoch without
        "bottom_passes_per_text": cache.rows_computed / len(data) if cache is not None else has_bottom * cfg.epochs,
    }
    if cache is not None:
        LOG.info("frozen bottom computed once per text and cached: %.0f MB", cache.megabytes())
    LOG.info("SFT done: loss %.4f -> %.4f in %.0f s", summary["first_loss"], summary["final_loss"], summary["seconds"])
    return model, log, summary
