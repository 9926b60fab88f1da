"""Logging of a job: one logger for the pipeline's code (``irl_llms`` and its children), to stderr and to the rule's
``log:`` file."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

LOG = logging.getLogger("irl_llms")


def setup_logging(log_path: str | os.PathLike | None = None, level: int = logging.INFO) -> logging.Logger:
    """Log to stderr and, when given, to ``log_path`` (Snakemake's ``log:`` file)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers, force=True
    )
    return LOG
