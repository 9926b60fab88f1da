"""Rule ``fig_sft_loss``: the SFT training loss curve from ``results/sft/train_log.parquet`` ->
``reports/figures/fig_sft_loss.{png,svg}`` (``workflow_scripts.lib.figures``)."""

from typing import Any

import pandas as pd

from workflow_scripts.lib import figures
from workflow_scripts.lib.job import run_snakemake_job


def _snakemake(smk: Any) -> None:
    log = pd.read_parquet(smk.input.log)
    figures.save_figure(figures.figure_sft_loss(log), smk.output.figure, smk.output.svg)


if __name__ == "__main__":
    run_snakemake_job(snakemake, _snakemake)  # type: ignore[name-defined]  # noqa: F821
