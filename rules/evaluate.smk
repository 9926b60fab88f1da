rule evaluate:
    """Table 1 protocols for one model stage (or another seed of a PPO stage, model=rlhf/seed1): greedy Jigsaw-style
    and sampled RTP-style continuations, scored by the evaluation classifier and by the GT reward classifier."""
    input:
        model="results/{model}/model",
        eval="results/data/eval.parquet",
        rtp="results/data/rtp_prompts.parquet",
        **engine_input("engine", "{model}"),
        **HUB_INPUT,
    output:
        generations="results/eval/{model}.parquet",
    params:
        compute=COMPUTE,
        generation=GENERATION,
        evaluation=evaluate_params(),
        max_prompt_tokens=PROMPT_TOKENS,
        gt_classifier=with_resolved_wheel(config["gt_classifier"]),
    log:
        "logs/evaluate/{model}.log",
    benchmark:
        "results/benchmarks/evaluate_{model}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=1,
    conda:
        MODEL_ENV
    script:
        "../workflow_scripts/evaluate.py"


rule table1:
    """Table 1: one row per evaluated stage, paper columns with 95% bootstrap CIs; paired differences; the paper's
    claims checked against them; the paper's own numbers beside ours."""
    input:
        generations=[path for _, _, path in EVAL_RUNS],
        train_logs=[path for _, _, path in PPO_LOG_RUNS],
        paper=PAPER_TABLE1,
    output:
        table=report_item("reports/table1.csv", "table1", "Table 1", "Table 1", "Table 1 with CIs"),
        differences=report_item(
            "reports/table1_differences.csv", "table1_differences", "Table 1", "Comparisons", "paired differences"
        ),
        claims=report_item("reports/table1_claims.csv", "table1_claims", "Table 1", "Comparisons", "the paper's claims"),
        vs_paper=report_item("reports/table1_vs_paper.csv", "table1_vs_paper", "Table 1", "Comparisons", "vs the paper"),
        markdown="reports/table1.md",
        html=report_item("reports/table1.html", "table1_html", "Table 1", "Table 1", "Table 1, readable"),
    params:
        runs=[stage for stage, _, _ in EVAL_RUNS],  # the stage of each generations file (several per seeded stage)
        ppo_runs=[stage for stage, _, _ in PPO_LOG_RUNS],
        table1=table1_params(),
    log:
        "logs/table1.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/table1.py"
