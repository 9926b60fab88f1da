rule irl_rlhf:
    """PPO from the SFT checkpoint against the reward recovered by IRL (chosen on validation pairs unless the config
    names a seed); the same trainer, reward scaling and resume checkpoints as rule rlhf."""
    input:
        sft="results/sft/model",
        train="results/data/train.parquet",
        metrics=irl_rlhf_runs("results/irl/{objective}/seed{seed}/metrics.parquet"),
        reward_models=irl_rlhf_runs("results/irl/{objective}/seed{seed}/reward_model"),
        rlhf_logs=irl_rlhf_kl_logs(),  # RLHF's final KL, the budget of irl_rlhf.stop_at_kl: rlhf
        **HUB_INPUT,
    output:
        model=directory("results/irl_rlhf/model"),
        log="results/irl_rlhf/train_log.parquet",
    params:
        compute=COMPUTE,
        max_prompt_tokens=PROMPT_TOKENS,
        rlhf=irl_rlhf_ppo_params(ppo_seeds("irl_rlhf")[0]),
        irl_rlhf=irl_rlhf_reward_params(),
        stop_at_kl=config["irl_rlhf"]["stop_at_kl"],
        reward_text=config["rlhf"]["reward_text"],  # the GT reward, logged beside the learned one
        gt_classifier=with_resolved_wheel(config["gt_classifier"]),
        checkpoint_dir="results/irl_rlhf/checkpoints",
    log:
        "logs/irl_rlhf.log",
    benchmark:
        "results/benchmarks/irl_rlhf.tsv"
    threads: 2
    resources:
        mem_mb=10000,
        runtime=120,
        gpu=1,
    conda:
        MODEL_ENV
    script:
        "../workflow_scripts/irl_rlhf.py"


use rule irl_rlhf as irl_rlhf_seed with:
    """rule irl_rlhf with another seed of its PPO seeds (same learned reward): a replicate for Table 1."""
    output:
        model=directory("results/irl_rlhf/seed{seed}/model"),
        log="results/irl_rlhf/seed{seed}/train_log.parquet",
    params:
        rlhf=lambda w: irl_rlhf_ppo_params(int(w.seed)),
        checkpoint_dir=lambda w: f"results/irl_rlhf/seed{w.seed}/checkpoints",
    log:
        "logs/irl_rlhf/seed{seed}.log",
    benchmark:
        "results/benchmarks/irl_rlhf_seed{seed}.tsv"
