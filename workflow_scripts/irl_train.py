"""Rule ``irl_train``: one reward model per (objective, seed) from the cached features ->
``results/irl/{objective}/seed{seed}/{reward_model/,metrics.parquet,rewards.parquet}`` (``lib.irl.train_irl``)."""

from typing import Any

from workflow_scripts.lib.compute import ComputeConfig
from workflow_scripts.lib.config import from_config
from workflow_scripts.lib.irl import IRLConfig, train_irl
from workflow_scripts.lib.job import run_snakemake_job


def _snakemake(smk: Any) -> None:
    cfg = from_config(IRLConfig, "irl", smk.params.irl, objective=smk.wildcards.objective, seed=int(smk.wildcards.seed))
    train_irl(
        cfg, smk.input.backbone, smk.input.features, smk.output.model, smk.output.metrics, smk.output.rewards,
        from_config(ComputeConfig, "compute", smk.params.compute), smk.input.frozen,
        smk.input.get("pair_log_ratio"),
    )  # fmt: skip


if __name__ == "__main__":
    run_snakemake_job(snakemake, _snakemake)  # type: ignore[name-defined]  # noqa: F821
