"""Rule ``prepare_data``: the prompt data sets every later stage reads ->
``results/data/{train,eval,rtp_prompts}.parquet`` (``workflow_scripts.lib.data``). Local data sets arrive as inputs
resolved against the repository; hub ids only in the config."""

from typing import Any

from workflow_scripts.lib.config import from_config
from workflow_scripts.lib.data import DataConfig, prepare_data
from workflow_scripts.lib.job import run_snakemake_job
from workflow_scripts.lib.toxicity import load_scorer


def _snakemake(smk: Any) -> None:
    data = dict(smk.params.data)
    for key, name in (("texts", "texts"), ("rtp_prompts", "rtp")):
        if name in smk.input.keys():  # a local data set: the input, resolved against the repository (else a hub id)
            data[key] = str(smk.input[name])
    cfg = from_config(DataConfig, "data", data)
    prepare_data(
        cfg, smk.output.train, smk.output.eval, smk.output.rtp, lambda: load_scorer(smk.params.gt_classifier),
        smk.output.card,
    )  # fmt: skip


if __name__ == "__main__":
    run_snakemake_job(snakemake, _snakemake)  # type: ignore[name-defined]  # noqa: F821
