"""Rule ``evaluate``: one model stage under the two Table 1 protocols (greedy Jigsaw-style, sampled RTP-style),
scored by the evaluation classifier and the GT reward classifier -> ``results/eval/{model}.parquet``
(``workflow_scripts.lib.evaluation``)."""

from typing import Any

from workflow_scripts.lib.compute import ComputeConfig
from workflow_scripts.lib.config import from_config
from workflow_scripts.lib.engine import EngineConfig, open_generator
from workflow_scripts.lib.evaluation import JigsawEvalConfig, RTPEvalConfig, evaluate_model
from workflow_scripts.lib.job import run_snakemake_job
from workflow_scripts.lib.toxicity import load_scorer


def _snakemake(smk: Any) -> None:
    ev = smk.params.evaluation
    jigsaw = from_config(JigsawEvalConfig, "evaluation.jigsaw", ev["jigsaw"])
    rtp = from_config(RTPEvalConfig, "evaluation.rtp", ev["rtp"])
    gt_scorer, eval_scorer = load_scorer(smk.params.gt_classifier), load_scorer(ev["classifier"])
    generator = open_generator(
        from_config(EngineConfig, "generation", smk.params.generation), smk.input.model,
        smk.input.get("engine"), from_config(ComputeConfig, "compute", smk.params.compute),
    )  # fmt: skip
    evaluate_model(
        jigsaw, rtp, ev["seed"], generator, smk.input.eval, smk.input.rtp, smk.output.generations,
        gt_scorer, eval_scorer, smk.wildcards.model, smk.params.max_prompt_tokens,
    )  # fmt: skip


if __name__ == "__main__":
    run_snakemake_job(snakemake, _snakemake)  # type: ignore[name-defined]  # noqa: F821
