"""Rule ``fig4_table1``: Figure 4, Table 1 as bars with CI whiskers for the evaluation and the GT classifier ->
``reports/figures/fig4_table1.png`` (``workflow_scripts.lib.figures``)."""

from typing import Any

import pandas as pd

from workflow_scripts.lib import figures
from workflow_scripts.lib.job import run_snakemake_job


def _snakemake(smk: Any) -> None:
    figures.save_figure(figures.figure4_table1(pd.read_csv(smk.input.table)), smk.output.figure, smk.output.svg)


if __name__ == "__main__":
    run_snakemake_job(snakemake, _snakemake)  # type: ignore[name-defined]  # noqa: F821
