"""Where and in which numerics a model job runs: ``compute.device`` and ``compute.precision`` of the config.

* ``pick_device`` resolves ``compute.device``: ``cuda`` without a usable GPU raises ``DeviceUnavailable`` with one line
  naming the node and the torch build; ``auto`` falls back to the CPU and says so in the log.
* ``describe_device`` is what a model job logs and writes into ``provenance.json`` about where it ran.
* ``Precision``: fp32, or bf16/fp16 mixed precision, on any device.
* Resume state that opens on any device: written and read on the CPU, checked whole before anything is restored
  (``to_cpu``, ``check_loadable``, ``cpu_rng_state``, ``restored``).
"""

from __future__ import annotations

import copy
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

LOG = logging.getLogger("irl_llms.compute")
T = TypeVar("T")


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


def pick_device(preference: str = "auto", key: str = "compute.device") -> torch.device:
    """``auto`` uses CUDA when present, else the CPU (logged); ``cpu``/``cuda`` force one (``cuda`` without a usable
    GPU raises ``DeviceUnavailable``)."""
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        LOG.info(
            "%s=auto: no CUDA device on node %s (%s); running on the CPU", key, socket.gethostname(), torch_build()
        )
        return torch.device("cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable(cuda_unavailable_message(preference, key))
    return device


def check_job_device(compute: Mapping[str, Any]) -> torch.device:
    """First step of a model job (``params.compute``): resolve ``compute.device`` before any work. Without a usable GPU
    for ``cuda`` the job exits (status 1) after logging the one-line reason, no traceback; ``auto`` logs its fallback.
    """
    try:
        return pick_device(compute["device"])
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


# ============================================================================================ resume state
# A resume checkpoint (``PPOTrainer.save_checkpoint``) is written with every tensor on the CPU and read on the CPU
# (``torch.load(map_location="cpu")``), so it opens on any node whatever device wrote it; ``load_state_dict`` then
# places each tensor on its parameter's device, while the torch RNG state stays the CPU ByteTensor
# ``torch.set_rng_state`` requires. Everything is checked before the trainer changes, so a bad checkpoint raises and
# never leaves it half restored.
def to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor (inside dicts, lists, tuples) detached on the CPU; CPU tensors are returned as they
    are (no copy)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, Mapping):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def restored(obj: T, saved: Any) -> T:
    """A deep copy of ``obj`` with ``saved`` restored into it (``load_state_dict``, or the bit-generator state of a
    numpy ``Generator``): an unusable state raises here and leaves ``obj`` as it was."""
    out = copy.deepcopy(obj)
    if isinstance(out, np.random.Generator):
        out.bit_generator.state = saved
    else:
        out.load_state_dict(saved)
    return out


def check_loadable(target: Mapping[str, torch.Tensor] | torch.optim.Optimizer, saved: Any, what: str) -> None:
    """Raise ``ValueError`` unless ``saved`` restores ``target`` exactly, on whatever device ``target`` lives.

    A state dict (``target`` = the live one): the same names, shapes and dtypes, and real data (not ``meta``). An
    optimizer state: the same parameter groups, and every per-parameter tensor real and of its parameter's shape
    (torch checks only the group sizes; ``load_state_dict`` casts the tensors to their parameter's device and dtype,
    ``step`` stays on the CPU)."""
    if isinstance(target, torch.optim.Optimizer):
        _check_optimizer_state(target, saved, what)
        return
    if not isinstance(saved, Mapping):
        raise ValueError(f"{what}: expected a state dict, got {type(saved).__name__}")
    missing, unexpected = sorted(set(target) - set(saved)), sorted(set(saved) - set(target))
    if missing or unexpected:
        raise ValueError(f"{what}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
    for name, ref in target.items():
        value = _check_data(saved[name], f"{what}[{name!r}]")
        if value.shape != ref.shape or value.dtype != ref.dtype:
            raise ValueError(
                f"{what}[{name!r}]: {value.dtype} {tuple(value.shape)}, expected {ref.dtype} {tuple(ref.shape)}"
            )


def _check_data(value: Any, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{what}: expected a tensor, got {type(value).__name__}")
    if value.is_meta:
        raise ValueError(f"{what}: a tensor on the meta device (it holds no data)")
    return value


def _check_optimizer_state(optimizer: torch.optim.Optimizer, saved: Any, what: str) -> None:
    if not isinstance(saved, Mapping) or not {"state", "param_groups"} <= set(saved):
        raise ValueError(f"{what}: not an optimizer state dict")
    groups, mine = saved["param_groups"], optimizer.param_groups
    if len(groups) != len(mine) or any(len(g["params"]) != len(m["params"]) for g, m in zip(groups, mine, strict=True)):
        raise ValueError(f"{what}: its parameter groups do not match the optimizer's")
    params = {i: p for g, m in zip(groups, mine, strict=True) for i, p in zip(g["params"], m["params"], strict=True)}
    for index, entry in saved["state"].items():
        if index not in params:
            raise ValueError(f"{what}: state for unknown parameter {index!r}")
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                _check_data(value, f"{what}[{index}][{key!r}]")
                if value.dim() > 0 and value.shape != params[index].shape:
                    raise ValueError(
                        f"{what}[{index}][{key!r}]: shape {tuple(value.shape)}, parameter {tuple(params[index].shape)}"
                    )


INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def cpu_rng_state(saved: Any, what: str) -> torch.Tensor:
    """The torch (CPU generator) RNG state ``saved`` as the CPU ByteTensor ``torch.set_rng_state`` requires, whatever
    device ``torch.load`` put it on and in any integer dtype holding the same bytes; checked on a scratch generator, so
    an unusable state raises ``ValueError`` here and the global RNG is never touched."""
    state = _check_data(saved, what).detach().cpu()
    as_bytes = state.to(torch.uint8)
    if state.dim() != 1 or state.dtype not in INTEGER_DTYPES or not torch.equal(as_bytes.to(state.dtype), state):
        raise ValueError(f"{what}: not a vector of bytes ({state.dtype} {tuple(state.shape)})")
    try:
        torch.Generator().set_state(as_bytes)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{what}: not a torch RNG state ({err})") from err
    return as_bytes
