"""Rule ``convert_engine``: a checkpoint converted for CTranslate2 -> ``results/{model}/ctranslate2/``
(``workflow_scripts.lib.engine``)."""

from typing import Any

from workflow_scripts.lib.engine import convert_checkpoint
from workflow_scripts.lib.job import run_snakemake_job


def _snakemake(smk: Any) -> None:
    convert_checkpoint(smk.input.model, smk.output.engine)


if __name__ == "__main__":
    run_snakemake_job(snakemake, _snakemake)  # type: ignore[name-defined]  # noqa: F821
