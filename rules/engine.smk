rule convert_engine:
    """A checkpoint converted for CTranslate2 (generation.backend: ctranslate2): weights as stored, its tokenizer and
    engine.json; the converted model's logits are checked against the checkpoint's before the directory appears.
    An artifact like any other: converted once per checkpoint, again only when the checkpoint changes."""
    input:
        model="results/{model}/model",
    output:
        engine=directory("results/{model}/ctranslate2"),
    log:
        "logs/convert_engine/{model}.log",
    benchmark:
        "results/benchmarks/convert_engine_{model}.tsv"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=15,
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/convert_engine.py"
