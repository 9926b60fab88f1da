rule demonstrations:
    """Greedy completions of the train and eval prompts by the expert (RLHF) and the non-expert (SFT or base)."""
    input:
        expert="results/rlhf/model",
        non_expert=f"results/{config['demonstrations']['non_expert']}/model",
        train="results/data/train.parquet",
        eval="results/data/eval.parquet",
        **engine_input("expert_engine", "rlhf"),
        **engine_input("non_expert_engine", config["demonstrations"]["non_expert"]),
        **HUB_INPUT,
    output:
        train="results/demonstrations/train.parquet",
        eval="results/demonstrations/eval.parquet",
        card="results/demonstrations/README.md",
    params:
        compute=COMPUTE,
        generation=GENERATION,
        demonstrations=canonical(config["demonstrations"]),
        max_prompt_tokens=PROMPT_TOKENS,
        gt_classifier=with_resolved_wheel(config["gt_classifier"]),
    log:
        "logs/demonstrations.log",
    benchmark:
        "results/benchmarks/demonstrations.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=1,
    conda:
        MODEL_ENV
    script:
        "../workflow_scripts/demonstrations.py"
