"""Where and in which numerics a model job runs: ``compute.device`` and ``compute.precision`` of the config.

* ``pick_device`` resolves ``compute.device``: ``cuda`` without a usable GPU raises ``DeviceUnavailable`` with one line
  naming the node and the torch build; ``auto`` falls back to the CPU and says so in the log.
* ``describe_device`` is what a model job logs and writes into ``provenance.json`` about where it ran.
* ``Precision``: fp32, or bf16/fp16 mixed precision, on any device.

(The PPO resume checkpoint's state, which opens on any device, is ``lib/ppo_checkpoint.py``.)
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

LOG = logging.getLogger("irl_llms.compute")


# ============================================================================================ devices
class DeviceUnavailable(RuntimeError):
    """The configured device cannot be used on this node; the message is one line: what, where, which build, what to
    do."""


def torch_build() -> str:
    """``torch 2.13.0+cpu, CUDA build: none`` (or the CUDA version torch was built with)."""
    return f"torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}"


def cuda_unavailable_message(preference: str, key: str = "compute.device") -> str:
    """Why ``preference`` (a CUDA device) cannot be used here, and the fix, in one line."""
    if torch.version.cuda is None:
        fix = "install a CUDA build of torch (conda: envs/pipeline-cuda.yaml) or set compute.device: cpu"
    else:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        shown = "" if visible is None else f", CUDA_VISIBLE_DEVICES={visible!r}"
        fix = f"no GPU visible{shown}: run the job on a GPU node (check nvidia-smi) or set compute.device: cpu"
    return (
        f"{key}={preference} but torch.cuda.is_available() is False on node {socket.gethostname()} "
        f"({torch_build()}): {fix}"
    )


def resolve_device(preference: str, key: str = "compute.device") -> torch.device:
    """``auto`` is CUDA when present, else the CPU; ``cpu``/``cuda`` force one (``cuda`` without a usable GPU raises
    ``DeviceUnavailable``). Logs nothing: :func:`pick_device` is the resolution a job logs."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable(cuda_unavailable_message(preference, key))
    return device


def pick_device(preference: str, key: str = "compute.device") -> torch.device:
    """:func:`resolve_device`, logging an ``auto`` fallback to the CPU (once per job: the model loader calls this)."""
    device = resolve_device(preference, key)
    if preference == "auto" and device.type == "cpu":
        LOG.info(
            "%s=auto: no CUDA device on node %s (%s); running on the CPU", key, socket.gethostname(), torch_build()
        )
    return device


def check_job_device(compute: Mapping[str, Any]) -> torch.device:
    """First step of a model job (``params.compute``): resolve ``compute.device`` before any work. Without a usable GPU
    for ``cuda`` the job exits (status 1) after logging the one-line reason, no traceback; an ``auto`` fallback is
    logged once, by the model loader (:func:`pick_device`)."""
    try:
        return resolve_device(compute["device"])
    except DeviceUnavailable as err:
        LOG.error("%s", err)
        raise SystemExit(1) from None


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def describe_device(device: str | torch.device, precision: str, requested: str | None = None) -> dict[str, Any]:
    """Where and how a model job ran, for its log and ``provenance.json``: the resolved device (and the requested
    ``compute.device``), the precision and the dtype its forward passes compute in (weights and optimizer state stay
    fp32), the torch version and CUDA build, the GPU (on CUDA), the node and the CPU thread count."""
    device = torch.device(device)
    info: dict[str, Any] = {
        "device": str(device),
        "requested_device": requested,
        "precision": precision,
        "compute_dtype": str(PRECISIONS[precision]).removeprefix("torch."),
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "gpu": None,
        "node": socket.gethostname(),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        info.update(
            gpu=torch.cuda.get_device_name(index),
            gpu_capability=f"{props.major}.{props.minor}",
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cudnn=torch.backends.cudnn.version(),
        )
    return info


def format_device(info: Mapping[str, Any]) -> str:
    """``describe_device`` as one log line."""
    where = f"{info['device']} ({info['gpu']})" if info["gpu"] else f"{info['device']} ({info['threads']} threads)"
    asked = f" [compute.device={info['requested_device']}]" if info["requested_device"] else ""
    return (
        f"{where}{asked}, {info['precision']} (computes in {info['compute_dtype']}), torch {info['torch']} "
        f"(CUDA build: {info['cuda_build'] or 'none'}), node {info['node']}"
    )


# ============================================================================================ numerics
class Precision:
    """Numerics of a job on one device: ``fp32`` (plain), or ``bf16``/``fp16`` mixed precision.

    Mixed precision = autocast for forward passes with fp32 master weights and optimizer state; ``fp16`` adds dynamic
    loss scaling (``GradScaler``). The same code runs on CPU and CUDA (CPU autocast supports both half types), so every
    path is exercised by the CPU tests. With ``fp32`` every method is a no-op wrapper around the plain step.
    """

    def __init__(self, name: str, device: str | torch.device) -> None:
        if name not in PRECISIONS:
            raise ValueError(f"unknown precision {name!r} (expected one of {sorted(PRECISIONS)})")
        self.name, self.device = name, torch.device(device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=name == "fp16")

    @classmethod
    def for_model(cls, name: str, model: torch.nn.Module) -> Precision:
        return cls(name, next(model.parameters()).device)

    @classmethod
    def default(cls, device: str | torch.device) -> Precision:
        """The schema's ``compute.precision`` on ``device``, for code called outside a job (no precision given)."""
        return cls(ComputeConfig.default().precision, device)

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
