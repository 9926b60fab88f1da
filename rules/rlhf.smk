rule rlhf:
    """PPO from the SFT checkpoint against the GT toxicity reward; resumes from results/rlhf/checkpoints/ if killed."""
    input:
        sft="results/sft/model",
        train="results/data/train.parquet",
        **HUB_INPUT,
    output:
        model=directory("results/rlhf/model"),
        log="results/rlhf/train_log.parquet",
    params:
        compute=COMPUTE,
        max_prompt_tokens=PROMPT_TOKENS,
        rlhf=ppo_params(config["rlhf"]),
        reward_text=config["rlhf"]["reward_text"],
        gt_classifier=with_resolved_wheel(config["gt_classifier"]),
        checkpoint_dir="results/rlhf/checkpoints",
    log:
        "logs/rlhf.log",
    benchmark:
        "results/benchmarks/rlhf.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=1,
    conda:
        MODEL_ENV
    script:
        "../workflow_scripts/rlhf.py"
