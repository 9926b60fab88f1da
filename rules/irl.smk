rule irl_features:
    """Frozen-bottom hidden states (and GT scores) of every text IRL touches, computed once for all seeds/objectives."""
    input:
        backbone=f"results/{config['irl']['init']}/model",
        demos="results/demonstrations/train.parquet",
        heldout="results/data/eval.parquet",
        train_texts="results/data/train.parquet",
        **HUB_INPUT,
    output:
        features="results/irl/features.pt",
        frozen="results/irl/frozen_backbone.safetensors",
    params:
        compute=COMPUTE,
        irl=irl_features_params(),
        gt_classifier=with_resolved_wheel(config["gt_classifier"]),
    log:
        "logs/irl/features.log",
    benchmark:
        "results/benchmarks/irl_features.tsv"
    threads: 2
    resources:
        mem_mb=6000,
        runtime=30,
        gpu=1,
    conda:
        MODEL_ENV
    script:
        "../workflow_scripts/irl_features.py"


rule irl_train:
    """One reward model per objective and seed (the seeds are the non-identifiability study); runs in parallel.
    Objective ``supervised`` is the ceiling: the same model trained on GT labels (irl.ceiling)."""
    input:
        unpack(irl_train_inputs),
        backbone=f"results/{config['irl']['init']}/model",
        features="results/irl/features.pt",
        frozen="results/irl/frozen_backbone.safetensors",
    output:
        model=directory("results/irl/{objective}/seed{seed}/reward_model"),
        metrics="results/irl/{objective}/seed{seed}/metrics.parquet",
        rewards="results/irl/{objective}/seed{seed}/rewards.parquet",
    params:
        compute=COMPUTE,
        irl=irl_train_params(),
    log:
        "logs/irl/{objective}_seed{seed}.log",
    benchmark:
        "results/benchmarks/irl_{objective}_seed{seed}.tsv"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=30,
        gpu=1,
    conda:
        MODEL_ENV
    script:
        "../workflow_scripts/irl_train.py"


rule irl_log_ratio:
    """The policy's implicit reward, no training: the expert's summed log-ratio to the non-expert over a completion,
    scored on the IRL texts like a learned reward (irl.log_ratio), and on every demonstration pair (what
    irl.pair_labels: log_ratio orients the pairs by)."""
    input:
        features="results/irl/features.pt",
        demos="results/demonstrations/train.parquet",
        heldout="results/data/eval.parquet",
        train_texts="results/data/train.parquet",
        expert="results/rlhf/model",
        non_expert=f"results/{config['demonstrations']['non_expert']}/model",
    output:
        metrics="results/irl/log_ratio/seed0/metrics.parquet",
        rewards="results/irl/log_ratio/seed0/rewards.parquet",
        pairs="results/irl/log_ratio/pairs.parquet",
    params:
        compute=COMPUTE,
        validation_fraction=config["irl"]["validation_fraction"],
        max_prompt_tokens=PROMPT_TOKENS,
    log:
        "logs/irl/log_ratio.log",
    benchmark:
        "results/benchmarks/irl_log_ratio.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=1,
    conda:
        MODEL_ENV
    script:
        "../workflow_scripts/irl_log_ratio.py"


rule irl_report:
    """IRL metrics across objectives and seeds, seed agreement, Figures 2 and 5."""
    input:
        metrics=irl_report_runs("results/irl/{objective}/seed{seed}/metrics.parquet"),
        rewards=irl_report_runs("results/irl/{objective}/seed{seed}/rewards.parquet"),
        paper=PAPER_IRL_RUNS,
        heldout_texts="results/data/eval.parquet",
    output:
        summary=report_item("reports/irl_metrics.csv", "irl_metrics", "IRL", "Metrics", "IRL metrics"),
        long="reports/irl_metrics_long.csv",
        paper_protocol=report_item(
            "reports/irl_paper_protocol.csv", "irl_paper_protocol", "IRL", "The paper's protocol", "paper's protocol"
        ),
        agreement=report_item(
            "reports/irl_seed_agreement.csv", "irl_seed_agreement", "IRL", "Seeds", "seed agreement"
        ),
        html=report_item("reports/irl_metrics.html", "irl_metrics", "IRL", "Metrics", "IRL metrics, readable"),
        fig2=report_item("reports/figures/fig2_irl.png", "fig2", "Figures", "IRL", "Figure 2"),
        fig5=report_item("reports/figures/fig5_irl_heatmap.png", "fig5", "Figures", "IRL", "Figure 5"),
        disagreements="reports/irl_disagreements.csv",
        disagreements_html=report_item(
            "reports/irl_disagreements.html", "irl_disagreements", "IRL", "What it learned", "disagreements"
        ),
        fig2_svg="reports/figures/fig2_irl.svg",
        fig5_svg="reports/figures/fig5_irl_heatmap.svg",
    params:
        bootstrap=canonical(config["irl"]["bootstrap"]),
        chosen_objective=config["irl_rlhf"]["objective"],
        n_disagreements=config["evaluation"]["examples"],
    log:
        "logs/irl/report.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/irl_report.py"
