"""Rule ``irl_log_ratio``: the policy's implicit reward (the expert's summed log-ratio to the non-expert), scored on
the IRL texts like a learned reward -> ``results/irl/log_ratio/seed0/{metrics,rewards}.parquet``, and
both completions' log-ratios of every demonstration pair -> ``results/irl/log_ratio/pairs.parquet``
(``workflow_scripts.lib.implicit_reward``)."""

from typing import Any

from workflow_scripts.lib.compute import ComputeConfig
from workflow_scripts.lib.config import from_config
from workflow_scripts.lib.implicit_reward import LogRatioConfig, run_log_ratio
from workflow_scripts.lib.job import run_snakemake_job


def _snakemake(smk: Any) -> None:
    cfg = from_config(
        LogRatioConfig, "irl", {"validation_fraction": smk.params.validation_fraction},
        max_prompt_tokens=smk.params.max_prompt_tokens,
    )  # fmt: skip
    run_log_ratio(
        cfg, smk.input.features, smk.input.demos, smk.input.heldout, smk.input.train_texts, smk.input.expert,
        smk.input.non_expert, smk.output.metrics, smk.output.rewards,
        from_config(ComputeConfig, "compute", smk.params.compute), smk.output.pairs,
    )  # fmt: skip


if __name__ == "__main__":
    run_snakemake_job(snakemake, _snakemake)  # type: ignore[name-defined]  # noqa: F821
