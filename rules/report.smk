# Figures drawn from artifacts (workflow_scripts/lib/figures.py) and the configuration snapshot of the HTML report.
# `snakemake --report reports/report.html` collects every output marked with report() into one page.

PPO_STAGES = ["rlhf", "irl_rlhf"]


rule fig3_ppo_curves:
    """Figure 3: PPO training curves, RLHF (solid) vs IRL-RLHF (dashed)."""
    input:
        logs=expand("results/{stage}/train_log.parquet", stage=PPO_STAGES),
    output:
        figure=report("reports/figures/fig3_ppo_curves.png", caption="../reports/fig3.rst", category="Figures"),
    params:
        stages=PPO_STAGES,
    log:
        "logs/figures/fig3_ppo_curves.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/fig3_ppo_curves.py"


rule fig4_table1:
    """Figure 4: Table 1 as bars with 95% CI whiskers, evaluation and GT classifier."""
    input:
        table="reports/table1.csv",
    output:
        figure=report("reports/figures/fig4_table1.png", caption="../reports/fig4.rst", category="Figures"),
    log:
        "logs/figures/fig4_table1.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/fig4_table1.py"


rule config_snapshot:
    """The validated configuration of this run (defaults filled in), as the report shows it."""
    output:
        config=report("reports/config_used.yaml", caption="../reports/config_used.rst", category="Configuration"),
        html=report("reports/config_used.html", caption="../reports/config_used.rst", category="Configuration"),
    params:
        config=canonical(config),
    log:
        "logs/config_snapshot.log",
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/config_snapshot.py"
