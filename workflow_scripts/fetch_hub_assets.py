"""Rule ``fetch_hub_assets``: every hub id of the config downloaded into the Hugging Face cache ->
``results/hub/assets.json`` (what was fetched: kind, id, revision, snapshot path or rows). ``lib.hub.fetch_assets``."""

import logging
from typing import Any

from workflow_scripts.lib.atomic_io import write_json
from workflow_scripts.lib.hub import fetch_assets
from workflow_scripts.lib.job import run_snakemake_job

LOG = logging.getLogger("irl_llms.fetch_hub_assets")


def _snakemake(smk: Any) -> None:
    manifest = fetch_assets(list(smk.params.assets))
    for entry in manifest:
        LOG.info("cached %s %s (%s)", entry["kind"], entry["name"], entry["key"])
    write_json(manifest, smk.output.manifest)


if __name__ == "__main__":
    run_snakemake_job(snakemake, _snakemake)  # type: ignore[name-defined]  # noqa: F821
