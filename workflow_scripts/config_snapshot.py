"""The validated configuration of a run (schema defaults filled in) as YAML: ``reports/config_used.yaml``, and the same
as an HTML page for the report's viewer (``reports/config_used.html``; browsers download embedded plain text).

Rerun whenever any config value changes (the whole config is the rule's params), so the report always shows the
configuration its numbers came from.
"""

import html
from typing import Any

import yaml

from workflow_scripts.common import atomic_path, run_snakemake_job


def config_page(text: str) -> str:
    head = "<meta charset='utf-8'><title>Configuration</title>"
    body = f"<h1>Configuration of this run</h1><pre>{html.escape(text)}</pre>"
    return f"<!DOCTYPE html><html><head>{head}</head><body>{body}</body></html>\n"


def _snakemake(smk: Any) -> None:
    text = yaml.safe_dump(dict(smk.params.config), sort_keys=False)
    with atomic_path(smk.output.config) as tmp:
        tmp.write_text(text)
    with atomic_path(smk.output.html) as tmp:
        tmp.write_text(config_page(text))


if __name__ == "__main__":
    run_snakemake_job(snakemake, _snakemake)  # type: ignore[name-defined]  # noqa: F821
