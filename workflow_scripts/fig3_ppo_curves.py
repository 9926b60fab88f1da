"""Rule ``fig3_ppo_curves``: Figure 3, the PPO training curves of RLHF (solid) and IRL-RLHF (dashed) ->
``reports/figures/fig3_ppo_curves.png`` (``workflow_scripts.lib.figures``)."""

from typing import Any

from workflow_scripts.lib import figures
from workflow_scripts.lib.inputs import read_table
from workflow_scripts.lib.job import run_snakemake_job


def _snakemake(smk: Any) -> None:
    logs = {
        stage: read_table(path, ("step",), f"{stage} PPO log")
        for stage, path in zip(smk.params.stages, smk.input.logs, strict=True)
    }
    figures.save_figure(figures.figure3_ppo_curves(logs), smk.output.figure, smk.output.svg)


if __name__ == "__main__":
    run_snakemake_job(snakemake, _snakemake)  # type: ignore[name-defined]  # noqa: F821
