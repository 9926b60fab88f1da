"""Shared plumbing for every stage: seeding, threads, logging, atomic writes, input checks, provenance, and the
adapter every rule script runs through.

Nothing here knows about a particular stage. Stage code imports these helpers so that each concern (how an artifact
is written, how a run is seeded, what a provenance file holds) exists exactly once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from workflow_scripts.lib.paths import REPO_ROOT

LOG = logging.getLogger("irl_llms")
TRACKED_PACKAGES = ("torch", "transformers", "datasets", "numpy", "pandas", "scikit-learn", "snakemake", "gguf")


# --------------------------------------------------------------------------------------------- seeding / threads
def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) and ask torch for deterministic kernels."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 - seeds libraries that still use the global RNG
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def set_threads(n: int) -> None:
    """Use exactly ``n`` intra-op threads: results on CPU depend (slightly) on the thread count."""
    import torch

    torch.set_num_threads(max(1, int(n)))
    LOG.info("torch intra-op threads: %d", torch.get_num_threads())


# --------------------------------------------------------------------------------------------- logging
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


# --------------------------------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; move it into place only if the block succeeds.

    A crash, a kill or an exception therefore never leaves a half-written artifact at ``target``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp = tmp_root / target.name
    if is_dir:
        tmp.mkdir()
    try:
        yield tmp
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)


def write_json(obj: Any, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_parquet(df: Any, path: str | os.PathLike) -> None:
    """Write a pandas DataFrame atomically (pyarrow engine, no index)."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False, engine="pyarrow")


def write_csv(df: Any, path: str | os.PathLike, float_format: str = "%.4f") -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format=float_format)


def write_text(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


HTML_STYLE = (
    "body{font-family:sans-serif;max-width:75em;margin:1em auto;line-height:1.4}"
    "table{border-collapse:collapse;margin:0.5em 0 1.5em}th,td{border:1px solid #ccc;padding:2px 8px}"
    "td{font-variant-numeric:tabular-nums}th{background:#f3f3f3}"
)


def write_markdown_page(text: str, title: str, path: str | os.PathLike) -> None:
    """Markdown (with tables) as a standalone HTML page: what the Snakemake report shows inline (browsers only
    download the report's embedded plain-text and CSV files)."""
    import markdown

    body = markdown.markdown(text, extensions=["tables"])
    head = f"<meta charset='utf-8'><title>{title}</title><style>{HTML_STYLE}</style>"
    write_text(f"<!DOCTYPE html><html><head>{head}</head><body>{body}</body></html>\n", path)


# --------------------------------------------------------------------------------------------- provenance
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


# --------------------------------------------------------------------------------------------- input checks
def read_table(path: str | os.PathLike, columns: tuple[str, ...], what: str) -> Any:
    """Read a parquet (or ``.csv``) table, failing with the file and the problem named when columns are missing or it
    is empty."""
    import pandas as pd

    df = pd.read_csv(path) if str(path).endswith(".csv") else pd.read_parquet(path)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing} (has {list(df.columns)})")
    if df.empty:
        raise ValueError(f"{path}: no {what}")
    return df


def require_file(path: str | os.PathLike, what: str, hint: str = "") -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} not found: {p}" + (f" ({hint})" if hint else ""))
    return p


# --------------------------------------------------------------------------------------------- snakemake adapter
def snakemake_threads(smk: Any) -> int:
    """Threads for the job's torch: the rule's ``threads``, except in a SLURM job that asked for its CPUs.

    Such a job (``cpus_per_gpu`` or ``cpus_per_task`` among its resources, as profiles/slurm sets for every submitted
    rule, and ``SLURM_JOB_ID`` set) uses the CPUs SLURM gave it: the CPUs it may run on (``sched_getaffinity``: the
    job's cpuset where SLURM binds tasks), capped by the allocation (``SLURM_CPUS_PER_TASK``, else
    ``SLURM_CPUS_ON_NODE``) where it does not. A job without those resources keeps the rule's threads: that is local
    Snakemake inside an allocation (``sbatch --wrap 'snakemake --cores 16'``), which runs jobs side by side.
    """
    threads = int(getattr(smk, "threads", 1) or 1)
    job = os.environ.get("SLURM_JOB_ID")
    if job is None:
        return threads
    resources = getattr(smk, "resources", None)
    asked = {k: getattr(resources, k, None) for k in ("cpus_per_gpu", "cpus_per_task")}
    asked = {k: v for k, v in asked.items() if v}
    if not asked:
        LOG.info("SLURM job %s asked for no CPUs of its own: the rule's %d threads", job, threads)
        return threads
    usable = len(os.sched_getaffinity(0))
    source = next((k for k in ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE") if os.environ.get(k)), None)
    n = min(usable, int(os.environ[source])) if source else usable
    LOG.info(
        "SLURM job %s (%s): %d CPUs in its affinity mask, %s=%s -> torch threads %d (rule threads %d)",
        job, ", ".join(f"{k}={v}" for k, v in asked.items()), usable, source, os.environ.get(source or ""), n, threads,
    )  # fmt: skip
    return max(1, n)


def tensorboard_hook(smk: Any) -> Callable[[], None] | None:
    """With ``tensorboard: true`` (read from the config, not a param: a logging switch never reruns a job), a
    training rule's log is also written as TensorBoard event files after the job (``lib.curves``); the package is
    checked now, before any training."""
    if not smk.config.get("tensorboard"):
        return None
    from workflow_scripts.lib import curves

    if smk.rule not in curves.TRAINING_LOGS:
        return None
    curves.summary_writer()
    key, step, prefix = curves.TRAINING_LOGS[smk.rule]
    logdir = curves.job_logdir(smk.rule, smk.wildcards)

    def write() -> None:
        import pandas as pd

        n = curves.write_curves(pd.read_parquet(smk.output[key]), logdir, step, prefix)
        LOG.info("TensorBoard: %d scalars in %s", n, logdir)

    return write


def run_snakemake_job(smk: Any, fn: Callable[[Any], Any]) -> None:
    """Common adapter for ``script:`` rules: log to the rule's log file, fix threads, stop a model job whose device
    is missing before any work, go offline after ``fetch_hub_assets``, report errors once."""
    log_path = smk.log[0] if len(smk.log) else None
    setup_logging(log_path)
    set_threads(snakemake_threads(smk))
    compute = getattr(smk.params, "compute", None)
    if compute is not None:  # a model job: no usable device ends it here, in one logged line
        from workflow_scripts.lib.compute import check_job_device

        check_job_device(compute)
    if "hub" in smk.input.keys():  # hub assets were fetched into the cache: never touch the network from a job
        from workflow_scripts.lib.hub import go_offline

        go_offline()
        LOG.info("hub assets cached (%s): offline mode", smk.input.hub)
    try:
        curves = tensorboard_hook(smk)  # None unless tensorboard: true and a training rule
        fn(smk)
        if curves is not None:
            curves()
    except Exception:
        LOG.exception("job failed")
        raise
