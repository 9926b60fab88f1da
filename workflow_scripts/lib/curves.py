"""Training curves as TensorBoard event files (``tensorboard: true``, off by default): after a training job has
written its log, every numeric column becomes a scalar series under ``logs/tensorboard/<job>/``, stepped by the
log's step column. Read with ``tensorboard --logdir logs/tensorboard``. The logs themselves (parquet) stay the
source of the report's figures; this is a view for the ecosystem's common viewer."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

# rule -> (output holding its per-step log, the step column, the series prefix)
TRAINING_LOGS = {
    "sft": ("log", "step", "sft"),
    "rlhf": ("log", "iteration", "ppo"),
    "irl_rlhf": ("log", "iteration", "ppo"),
    "irl_train": ("metrics", "epoch", "irl"),
}
LOGDIR = Path("logs") / "tensorboard"


def summary_writer() -> Any:
    """torch's SummaryWriter class, or a clear error naming the switch and the install command."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise ImportError(
            "tensorboard: true needs the tensorboard package: .venv/bin/pip install -e '.[tensorboard]'"
        ) from err
    return SummaryWriter


def write_curves(log: pd.DataFrame, logdir: str | Path, step: str, prefix: str) -> int:
    """Every finite numeric value of ``log`` as ``<prefix>/<column>`` at ``log[step]``; returns how many."""
    writer_class = summary_writer()
    columns = [c for c in log.select_dtypes("number").columns if c != step]
    n = 0
    writer = writer_class(str(logdir))
    try:
        for _, row in log.iterrows():
            for column in columns:
                value = float(row[column])
                if math.isfinite(value):
                    writer.add_scalar(f"{prefix}/{column}", value, int(row[step]))
                    n += 1
    finally:
        writer.close()
    return n


def job_logdir(rule: str, wildcards: Any) -> Path:
    name = rule if rule != "irl_train" else f"irl/{wildcards.objective}_seed{wildcards.seed}"
    return LOGDIR / name


def last_fifth(log: pd.DataFrame) -> pd.DataFrame:
    """The last fifth of a PPO train log's iterations (at least one): where its end-of-training numbers average."""
    return log.sort_values("iteration").tail(max(1, len(log) // 5))
