"""Rule ``sft``: supervised fine-tuning of the base LM on the train split's texts (or the import of an SFT checkpoint)
-> ``results/sft/model/`` and ``results/sft/train_log.parquet`` (``workflow_scripts.lib.sft``)."""

from typing import Any

from workflow_scripts.lib.compute import ComputeConfig
from workflow_scripts.lib.config import from_config
from workflow_scripts.lib.job import run_snakemake_job
from workflow_scripts.lib.sft import SFTConfig, train_sft


def _snakemake(smk: Any) -> None:
    cfg = from_config(SFTConfig, "sft", smk.params.sft)
    compute = from_config(ComputeConfig, "compute", smk.params.compute)
    train_sft(cfg, smk.input.base, smk.input.train, smk.output.model, smk.output.log, compute)


if __name__ == "__main__":
    run_snakemake_job(snakemake, _snakemake)  # type: ignore[name-defined]  # noqa: F821
