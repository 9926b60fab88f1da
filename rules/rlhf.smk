rule rlhf:
    """PPO from the SFT checkpoint against the GT toxicity reward, first seed of rlhf.seeds (the expert of the
    demonstrations); resumes from results/rlhf/checkpoints/ if killed."""
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
        rlhf=ppo_params(config["rlhf"], ppo_seeds("rlhf")[0]),
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


use rule rlhf as rlhf_seed with:
    """rule rlhf with another seed of rlhf.seeds: a replicate for Table 1, never an input of IRL."""
    output:
        model=directory("results/rlhf/seed{seed}/model"),
        log="results/rlhf/seed{seed}/train_log.parquet",
    params:
        rlhf=lambda w: ppo_params(config["rlhf"], int(w.seed)),
        checkpoint_dir=lambda w: f"results/rlhf/seed{w.seed}/checkpoints",
    log:
        "logs/rlhf/seed{seed}.log",
    benchmark:
        "results/benchmarks/rlhf_seed{seed}.tsv"
