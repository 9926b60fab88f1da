"""Provenance: what a checkpoint or table needs to be traced back (stage, config slice, seed, git revision, library
versions)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from typing import Any

from workflow_scripts.lib.paths import REPO_ROOT

TRACKED_PACKAGES = ("torch", "transformers", "datasets", "numpy", "pandas", "scikit-learn", "snakemake", "gguf")


def git_revision() -> str:
    """The repository's HEAD commit (with ``-dirty`` when the tree has changes), or ``unknown``."""
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def library_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def provenance(stage: str, config_slice: Mapping[str, Any], seed: int | None, **extra: Any) -> dict[str, Any]:
    """What a result needs to be traced back: stage, config used, seed, git revision, library versions."""
    return {
        "stage": stage,
        "config": dict(config_slice),
        "seed": seed,
        "git_revision": git_revision(),
        "library_versions": library_versions(),
        **extra,
    }
