rule prepare_data:
    """Split each text at its middle word into prompt / original_output (or keep a data set's own split); seeded,
    label-stratified 80/20 split; seeded order of the held-out RTP-style prompts. Hub data sets are no inputs."""
    input:
        **DATA_INPUTS,
        **HUB_INPUT,
    output:
        train="results/data/train.parquet",
        eval="results/data/eval.parquet",
        rtp="results/data/rtp_prompts.parquet",
        card="results/data/README.md",
    params:
        data=canonical({k: v for k, v in config["data"].items() if k != "max_prompt_tokens"}),  # the jobs cut prompts
        gt_classifier=data_label_classifier(),
    log:
        "logs/prepare_data.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/prepare_data.py"
