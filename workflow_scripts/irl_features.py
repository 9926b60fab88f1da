"""Rule ``irl_features``: the frozen-bottom hidden states (and GT scores) of every text IRL touches, computed once for
all objective x seed jobs -> ``results/irl/features.pt``, and the frozen backbone weights the reward model directories
share -> ``results/irl/frozen_backbone.safetensors`` (``workflow_scripts.lib.irl_data.build_features``)."""

from typing import Any

from workflow_scripts.lib.compute import ComputeConfig
from workflow_scripts.lib.config import from_config
from workflow_scripts.lib.irl_data import build_features
from workflow_scripts.lib.job import run_snakemake_job
from workflow_scripts.lib.toxicity import load_scorer


def _snakemake(smk: Any) -> None:
    irl = smk.params.irl
    build_features(
        smk.input.backbone, smk.input.demos, smk.input.heldout, smk.input.train_texts,
        load_scorer(smk.params.gt_classifier), smk.output.features, irl["trainable_layers"], irl["max_length"],
        from_config(ComputeConfig, "compute", smk.params.compute), smk.output.frozen,
    )  # fmt: skip


if __name__ == "__main__":
    run_snakemake_job(snakemake, _snakemake)  # type: ignore[name-defined]  # noqa: F821
