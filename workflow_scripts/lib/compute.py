"""Where and in which numerics a model job runs: ``compute.device`` and ``compute.precision`` of the config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


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
    """``compute`` of the config (``lm.load_lm`` opens a checkpoint with it)."""

    device: str
    precision: str

    @classmethod
    def default(cls) -> ComputeConfig:
        """The schema's defaults (for code called outside a rule)."""
        from workflow_scripts.lib.config import from_config

        return from_config(cls, "compute")
