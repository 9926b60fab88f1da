"""Rule ``demonstrations``: greedy completions of the train and eval prompts by the expert (RLHF) and the non-expert
(SFT or base) -> ``results/demonstrations/{train,eval}.parquet`` (``workflow_scripts.lib.demonstrations``)."""

from typing import Any

from workflow_scripts.lib.cards import write_dataset_card
from workflow_scripts.lib.compute import ComputeConfig
from workflow_scripts.lib.config import from_config
from workflow_scripts.lib.demonstrations import DemoConfig, make_demonstrations
from workflow_scripts.lib.engine import EngineConfig, open_generator
from workflow_scripts.lib.job import run_snakemake_job
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

    frames = make_demonstrations(cfg, open_model, splits, load_scorer(smk.params.gt_classifier))
    write_dataset_card(
        smk.output.card, "Demonstrations of the IRL-for-LLMs pipeline",
        f"Completions of the same prompts by the expert (the RLHF model) and the non-expert ({cfg.non_expert}), one "
        "row per pair; also in the preference format (`prompt`, `chosen` = expert, `rejected` = non-expert). Train: "
        f"the greedy pair{' and ' + str(cfg.samples) + ' sampled pairs (' + cfg.pairing + ')' if cfg.samples else ''} "
        "per prompt; eval: the greedy pair.",
        {f"{name}.parquet": frame for name, frame in frames.items()},
    )  # fmt: skip


if __name__ == "__main__":
    run_snakemake_job(snakemake, _snakemake)  # type: ignore[name-defined]  # noqa: F821
