rule prepare_data:
    """Split each text at its middle word into prompt / original_output; seeded, label-stratified 80/20 split;
    seeded order of the held-out RTP-style prompts."""
    input:
        texts=DATA_TEXTS,
        rtp=DATA_RTP,
    output:
        train="results/data/train.parquet",
        eval="results/data/eval.parquet",
        rtp="results/data/rtp_prompts.parquet",
    params:
        cfg=canonical(config["data"]),
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
