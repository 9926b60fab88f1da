"""The adapter every rule script runs through: the rule's log file, torch's thread count (the rule's threads, or
what a SLURM job was given), the device check of a model job, offline mode after ``fetch_hub_assets``, the
TensorBoard hook, and one logged line for a failure."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from workflow_scripts.lib.logs import LOG, setup_logging


def set_threads(n: int) -> None:
    """Use exactly ``n`` intra-op threads: results on CPU depend (slightly) on the thread count."""
    import torch

    torch.set_num_threads(max(1, int(n)))
    LOG.info("torch intra-op threads: %d", torch.get_num_threads())


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
