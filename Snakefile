# Reproduction and extension of "Insights from the Inverse: Reconstructing LLM Training Goals Through Inverse RL"
# (arXiv 2410.12491). Thin on purpose: config + validation, the stage rule files, and the final targets.
# Where an artifact comes from: rules/<stage>.smk -> workflow_scripts/<rule>.py -> workflow_scripts/lib/.

import os

from snakemake.utils import min_version, validate

min_version("9.0")


# The repository's config.yaml, whatever the working directory (--directory): a --configfile is merged over it
# (lib/config.load_config builds the same config outside Snakemake).
configfile: os.path.join(workflow.basedir, "config.yaml")


validate(config, "config.schema.yaml")


# `snakemake --report reports/report.html`: this page, then every output marked with report() in the rules.
report: "reports/workflow.rst"


include: "rules/common.smk"
include: "rules/hub.smk"
include: "rules/data.smk"
include: "rules/base.smk"
include: "rules/sft.smk"
include: "rules/rlhf.smk"
include: "rules/demonstrations.smk"
include: "rules/engine.smk"
include: "rules/irl.smk"
include: "rules/irl_rlhf.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"
include: "rules/slurm.smk"


# Seconds-long table and figure jobs run in the main Snakemake process, never as cluster jobs; the hub download runs
# where Snakemake runs (a login node with network).
localrules:
    all,
    examples,
    fig_sft_loss,
    fetch_hub_assets,
    irl_report,
    table1,
    fig3_ppo_curves,
    fig4_table1,
    config_snapshot,


rule all:
    input:
        "reports/table1.csv",
        "reports/table1_differences.csv",
        "reports/table1_claims.csv",
        "reports/table1.md",
        "reports/table1.html",
        "results/demonstrations/train.parquet",
        "results/demonstrations/eval.parquet",
        "reports/irl_metrics.csv",
        "reports/irl_metrics.html",
        "reports/examples.html",
        "reports/figures/fig2_irl.png",
        "reports/figures/fig_sft_loss.png",
        "reports/figures/fig3_ppo_curves.png",
        "reports/figures/fig4_table1.png",
        "reports/figures/fig5_irl_heatmap.png",
        "reports/config_used.yaml",
        "reports/config_used.html",
    default_target: True
