"""Seeding: every random number a stage draws comes from the seed its config names."""

from __future__ import annotations

import random

import numpy as np


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) and ask torch for deterministic kernels."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 - seeds libraries that still use the global RNG
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
