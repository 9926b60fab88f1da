# Site checks of the SLURM executor (profiles/slurm), run once before the first sbatch. With any other executor this
# file does nothing.


def check_slurm_partitions():
    """With the SLURM executor, before the first sbatch: every partition a job names exists on this cluster."""
    plugin = workflow.executor_plugin
    if plugin is None or plugin.name != "slurm":
        return
    import subprocess

    try:
        sinfo = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError) as e:
        raise WorkflowError(f"executor slurm: `sinfo` cannot list the partitions ({e}); run Snakemake on a login node")
    available = set(sinfo.stdout.split())
    missing = {}
    for job in workflow.dag.needrun_jobs():
        partition = None if job.is_local else job.resources.get("slurm_partition")
        if partition is not None and str(partition) not in available:
            missing.setdefault(str(partition), set()).add(job.rule.name)
    if missing:
        names = "\n".join(f"  slurm_partition={p} (rules {', '.join(sorted(r))})" for p, r in sorted(missing.items()))
        raise WorkflowError(
            f"SLURM partition(s) not on this cluster:\n{names}\n  this cluster has: {', '.join(sorted(available))}\n"
            "  -> set your site's names in profiles/slurm/config.yaml (the &gpu_partition and &cpu_partition anchors)"
        )


onstart:
    check_slurm_partitions()
