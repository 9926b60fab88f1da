# Figures drawn from artifacts (workflow_scripts/lib/figures.py) and the configuration snapshot of the HTML report.
# `snakemake --report reports/report.html` collects every output marked with report() into one page.

rule fig3_ppo_curves:
    """Figure 3: PPO training curves, RLHF (solid) vs IRL-RLHF (dashed)."""
    input:
        logs=expand("results/{stage}/train_log.parquet", stage=PPO_STAGES),
    output:
        figure=report_item("reports/figures/fig3_ppo_curves.png", "fig3", "Figures", "PPO", "Figure 3"),
        svg="reports/figures/fig3_ppo_curves.svg",
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
        figure=report_item("reports/figures/fig4_table1.png", "fig4", "Figures", "Table 1", "Figure 4"),
        svg="reports/figures/fig4_table1.svg",
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
        config=report_item("reports/config_used.yaml", "config_used", "Configuration", "This run", "configuration"),
        html=report_item(
            "reports/config_used.html", "config_used", "Configuration", "This run", "configuration, readable"
        ),
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


rule examples:
    """A page of example generations: a seeded sample of eval prompts with every stage's continuation and scores."""
    input:
        generations=expand("results/eval/{model}.parquet", model=EVAL_STAGES),
    output:
        page=report_item("reports/examples.html", "examples", "Examples", "Generations", "example generations"),
    params:
        stages=EVAL_STAGES,
        examples=config["evaluation"]["examples"],
        seed=config["evaluation"]["seed"],
        classifiers=[config["evaluation"]["classifier"]["kind"], config["gt_classifier"]["kind"]],
    log:
        "logs/figures/examples.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/examples.py"


rule fig_sft_loss:
    """The SFT loss curve (per optimizer step and its running mean)."""
    input:
        log="results/sft/train_log.parquet",
    output:
        figure=report_item("reports/figures/fig_sft_loss.png", "fig_sft_loss", "Figures", "SFT", "SFT loss"),
        svg="reports/figures/fig_sft_loss.svg",
    log:
        "logs/figures/fig_sft_loss.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/fig_sft_loss.py"
