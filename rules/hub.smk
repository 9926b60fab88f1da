rule fetch_hub_assets:
    """Download every hub id the config names (models, tokenizers, classifiers, data sets) into the Hugging Face cache,
    once, on the machine Snakemake runs on (a login node has network; compute nodes often do not). Every job that
    may open a hub id depends on the manifest and runs offline (HF_HUB_OFFLINE=1) from that cache."""
    output:
        manifest="results/hub/assets.json",
    params:
        assets=HUB_ASSETS,
    log:
        "logs/fetch_hub_assets.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/fetch_hub_assets.py"
