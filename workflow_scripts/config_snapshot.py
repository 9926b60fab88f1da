"""The validated configuration of a run (schema defaults filled in) as YAML: ``reports/config_used.yaml``.

Rerun whenever any config value changes (the whole config is the rule's params), so the report always shows the
configuration its numbers came from.
"""

from typing import Any

import yaml

from workflow_scripts.common import atomic_path, run_snakemake_job


def _snakemake(smk: Any) -> None:
    with atomic_path(smk.output.config) as tmp:
        tmp.write_text(yaml.safe_dump(dict(smk.params.config), sort_keys=False))


if __name__ == "__main__":
    run_snakemake_job(snakemake, _snakemake)  # type: ignore[name-defined]  # noqa: F821
