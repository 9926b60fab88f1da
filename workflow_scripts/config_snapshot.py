"""The validated configuration of a run (schema defaults filled in) as YAML: ``reports/config_used.yaml``, and the same
as an HTML page for the report's viewer (``reports/config_used.html``; browsers download embedded plain text).

Rerun whenever any config value changes (the whole config is the rule's params), so the report always shows the
configuration its numbers came from.
"""

from typing import Any

import yaml

from workflow_scripts.lib.atomic_io import write_text
from workflow_scripts.lib.job import run_snakemake_job
from workflow_scripts.lib.pages import write_markdown_page


def _snakemake(smk: Any) -> None:
    text = yaml.safe_dump(dict(smk.params.config), sort_keys=False)
    write_text(text, smk.output.config)
    as_code = "\n".join("    " + line for line in text.splitlines())  # an indented block: <pre><code>, escaped
    write_markdown_page(f"# Configuration of this run\n\n{as_code}\n", "Configuration", smk.output.html)


if __name__ == "__main__":
    run_snakemake_job(snakemake, _snakemake)  # type: ignore[name-defined]  # noqa: F821
