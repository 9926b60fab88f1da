"""The PPO resume checkpoint (``PPOTrainer.save_checkpoint`` / ``load_checkpoint`` in ``lib/ppo.py``: ``save_trainer``,
``load_trainer``), made to open on any device and checked whole before anything is restored: ``to_cpu``,
``check_loadable``, ``cpu_rng_state``, ``restored``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from workflow_scripts.lib.atomic_io import atomic_path

LOG = logging.getLogger("irl_llms.ppo")
T = TypeVar("T")


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


def save_trainer(trainer: Any, path: str | Path) -> None:
    """Write the resume checkpoint of ``trainer`` (a ``PPOTrainer``): everything its next iteration depends on:
    fingerprints (what may resume), weights, optimizer, schedule, loss scaler, KL coefficient, running moments, prompt
    sampler, torch RNG, and the log so far; on the CPU."""
    state = {
        "fingerprint": trainer.cfg.fingerprint(), "init_fingerprint": trainer.init_fingerprint,
        "precision": trainer.precision.name, "scaler": trainer.precision.scaler.state_dict(),
        "iteration": trainer.iteration, "step": trainer.step, "kl_coef": trainer.kl_ctl.value,
        "model": trainer.policy.trainable_state(), "value_head": trainer.policy.value_head.state_dict(),
        "optimizer": trainer.optimizer.state_dict(), "scheduler": trainer.scheduler.state_dict(),
        "running": (trainer.running.mean, trainer.running.var, trainer.running.count),
        "sampler": trainer.sampler.bit_generator.state, "torch_rng": torch.get_rng_state(),
        "log_rows": trainer.log_rows,
    }  # fmt: skip
    with atomic_path(path) as tmp:
        torch.save(to_cpu(state), tmp)


def load_trainer(trainer: Any, path: str | Path) -> bool:
    """Restore into ``trainer`` (a ``PPOTrainer``) a checkpoint of its own configuration; False (start fresh) for
    another config's. Read on the CPU and checked whole before anything changes: a bad one raises and leaves the
    trainer as it was."""
    state = torch.load(path, map_location="cpu", weights_only=False)  # load_state_dict places tensors on devices
    mismatch = {
        "fingerprint": (trainer.cfg.fingerprint(), "is from a different PPO config"),
        "init_fingerprint": (trainer.init_fingerprint, "started from another policy/tokenizer"),
        "precision": (trainer.precision.name, f"was trained in {state['precision']}, not {trainer.precision.name}"),
    }
    for key, (expected, why) in mismatch.items():
        if state[key] != expected:
            LOG.warning("checkpoint %s %s; starting from scratch", path, why)
            return False
    check_loadable(trainer.policy.trainable_state(), state["model"], f"{path}: model")
    check_loadable(trainer.policy.value_head.state_dict(), state["value_head"], f"{path}: value head")
    check_loadable(trainer.optimizer, state["optimizer"], f"{path}: optimizer")
    rng = cpu_rng_state(state["torch_rng"], f"{path}: torch_rng")  # a CPU ByteTensor, wherever it was loaded
    sampler, scaler = restored(trainer.sampler, state["sampler"]), restored(trainer.precision.scaler, state["scaler"])
    it, step, kl, (mean, var, n), rows = (state[k] for k in "iteration step kl_coef running log_rows".split())
    trainer.policy.model.load_state_dict(state["model"], strict=False)
    trainer.policy.value_head.load_state_dict(state["value_head"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.precision.scaler, trainer.kl_ctl.value, trainer.sampler = scaler, kl, sampler
    trainer.running.mean, trainer.running.var, trainer.running.count = mean, var, n
    torch.set_rng_state(rng)
    trainer.iteration, trainer.step, trainer.log_rows = it, step, list(rows)
    LOG.info("resumed from %s at iteration %d (step %d)", path, trainer.iteration, trainer.step)
    return True
