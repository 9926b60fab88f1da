"""Rule ``rlhf`` (stage 3): PPO from the SFT checkpoint against the ground-truth toxicity reward
(P_toxic(prompt + reference continuation) - P_toxic(prompt + completion) under the GT classifier, or the two
continuations alone with ``rlhf.reward_text: continuation``) -> ``results/rlhf/model/`` and
``results/rlhf/train_log.parquet`` (``workflow_scripts.lib.ppo_stage``, ``workflow_scripts.lib.ppo``)."""

from typing import Any

from workflow_scripts.lib.inputs import read_table
from workflow_scripts.lib.job import run_snakemake_job
from workflow_scripts.lib.ppo_stage import run_ppo_job
from workflow_scripts.lib.rewards import GTToxicityReward
from workflow_scripts.lib.toxicity import load_scorer


def _snakemake(smk: Any) -> None:
    data = read_table(smk.input.train, ("prompt", "original_output"), "training prompts")
    prompts = data["prompt"].tolist()
    reward = GTToxicityReward.from_pairs(
        load_scorer(smk.params.gt_classifier), prompts, data["original_output"].tolist(), smk.params.reward_text
    )
    description = {"kind": "gt_toxicity", "classifier": smk.params.gt_classifier, "text": smk.params.reward_text}
    run_ppo_job(smk, prompts, reward, description, monitor=reward)  # the GT reward, logged like IRL-RLHF's


if __name__ == "__main__":
    run_snakemake_job(snakemake, _snakemake)  # type: ignore[name-defined]  # noqa: F821
