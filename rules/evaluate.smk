rule evaluate:
    """Table 1 protocols for one model stage: greedy Jigsaw-style and sampled RTP-style continuations, scored by the
    evaluation classifier and by the GT reward classifier."""
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
        generations=expand("results/eval/{model}.parquet", model=EVAL_STAGES),
        paper=PAPER_TABLE1,
    output:
        table=report("reports/table1.csv", caption="../reports/table1.rst", category="Table 1"),
        differences=report(
            "reports/table1_differences.csv", caption="../reports/table1_differences.rst", category="Table 1"
        ),
        claims=report("reports/table1_claims.csv", caption="../reports/table1_claims.rst", category="Table 1"),
        vs_paper=report("reports/table1_vs_paper.csv", caption="../reports/table1_vs_paper.rst", category="Table 1"),
        markdown="reports/table1.md",
        html=report("reports/table1.html", caption="../reports/table1_html.rst", category="Table 1"),
    params:
        stages=EVAL_STAGES,
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
