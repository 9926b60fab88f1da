"""Rule ``demonstrations``: greedy completions of the train and eval prompts by the expert (RLHF) and the non-expert
(SFT or base) -> ``results/demonstrations/{train,eval}.parquet`` (``workflow_scripts.lib.demonstrations``)."""

from typing import Any

from workflow_scripts.lib.common import run_snakemake_job
from workflow_scripts.lib.compute import ComputeConfig
from workflow_scripts.lib.config import from_config
from workflow_scripts.lib.demonstrations import DemoConfig, make_demonstrations
from workflow_scripts.lib.engine import EngineConfig, open_generator
from workflow_scripts.lib.toxicity import load_scorer


def _snakemake(smk: Any) -> None:
    cfg = from_config(
        DemoConfig, "demonstrations", smk.params.demonstrations, max_prompt_tokens=smk.params.max_prompt_tokens
    )
    splits = {"train": (smk.input.train, smk.output.train), "eval": (smk.input.eval, smk.output.eval)}
    compute = from_config(ComputeConfig, "compute", smk.params.compute)
    engine = from_config(EngineConfig, "generation", smk.params.generation)

    def open_model(role: str) -> Any:  # the expert or non-expert checkpoint on the configured backend
        return open_generator(engine, smk.input[role], smk.input.get(f"{role}_engine"), compute)

    make_demonstrations(cfg, open_model, splits, load_scorer(smk.params.gt_classifier))


if __name__ == "__main__":
    run_snakemake_job(snakemake, _snakemake)  # type: ignore[name-defined]  # noqa: F821
