"""Rule ``table1``: Table 1 with bootstrap CIs, the paired differences between stages, the paper's claims checked
against them and the paper's own numbers beside ours -> ``reports/table1{,_differences,_claims,_vs_paper}.csv``,
``reports/table1.md`` and ``reports/table1.html`` (``workflow_scripts.lib.table1``)."""

from typing import Any

from workflow_scripts.lib import table1
from workflow_scripts.lib.atomic_io import write_csv, write_text
from workflow_scripts.lib.job import run_snakemake_job
from workflow_scripts.lib.pages import write_markdown_page


def by_stage(stages: list[str], paths: list[str]) -> dict[str, list[str]]:
    """Each stage's files (one per training seed, the first seed first) from the rule's parallel lists."""
    out: dict[str, list[str]] = {}
    for stage, path in zip(stages, paths, strict=True):
        out.setdefault(stage, []).append(path)
    return out


def _snakemake(smk: Any) -> None:
    cfg = table1.TableConfig(**smk.params.table1)
    files, logs = by_stage(smk.params.runs, smk.input.generations), by_stage(smk.params.ppo_runs, smk.input.train_logs)
    paper = table1.read_paper_table(smk.input.paper)
    table, differences = table1.build_table1(files, cfg, logs), table1.build_differences(files, cfg)
    claims = table1.build_claims(differences, paper)
    write_csv(table, smk.output.table)
    write_csv(differences, smk.output.differences)
    write_csv(claims, smk.output.claims)
    write_csv(table1.versus_paper(table, paper), smk.output.vs_paper)
    text = table1.table1_markdown(table, differences, claims, paper, cfg)
    write_text(text, smk.output.markdown)
    write_markdown_page(text, f"Table 1: {cfg.model_name}", smk.output.html)


if __name__ == "__main__":
    run_snakemake_job(snakemake, _snakemake)  # type: ignore[name-defined]  # noqa: F821
