"""Rule ``examples``: a report page of example generations (``workflow_scripts.lib.examples``) from
``results/eval/{stage}.parquet`` -> ``reports/examples.html``."""

from typing import Any

from workflow_scripts.lib.examples import write_examples
from workflow_scripts.lib.job import run_snakemake_job


def _snakemake(smk: Any) -> None:
    paths = dict(zip(smk.params.stages, smk.input.generations, strict=True))
    write_examples(paths, smk.output.page, smk.params.examples, smk.params.seed, tuple(smk.params.classifiers))


if __name__ == "__main__":
    run_snakemake_job(snakemake, _snakemake)  # type: ignore[name-defined]  # noqa: F821
