rule sft:
    """Supervised fine-tuning of the base LM on the train split's texts (or import of an SFT checkpoint)."""
    input:
        base="results/base/model",
        train="results/data/train.parquet",
        **HUB_INPUT,
    output:
        model=directory("results/sft/model"),
        log="results/sft/train_log.parquet",
    params:
        compute=COMPUTE,
        sft=canonical(config["sft"]),
    log:
        "logs/sft.log",
    benchmark:
        "results/benchmarks/sft.tsv"
    threads: 2
    resources:
        mem_mb=6000,
        runtime=60,
        gpu=1,
    conda:
        MODEL_ENV
    script:
        "../workflow_scripts/sft.py"
