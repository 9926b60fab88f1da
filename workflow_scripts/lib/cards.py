"""Cards. Every model directory gets a ``README.md`` model card (``huggingface_hub.ModelCard``) built from its
provenance record: what the model is, where it came from, how it was trained, what it measured, how to load it, and
the warnings a reader needs (the SFT model is *more* toxic than its base model; every model here is a research
artifact trained on toxic text). The data directories get a short ``DatasetCard``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import DatasetCard, DatasetCardData, ModelCard, ModelCardData

WHAT = {
    "base": "the pipeline's base causal language model (stage 1), saved as a plain checkpoint",
    "sft": "the supervised fine-tuned (SFT) model (stage 1): the base model trained on the train split's texts, "
    "about half of them toxic",
    "rlhf": "the RLHF policy (stage 3): PPO from the SFT model against the ground-truth toxicity reward",
    "irl_rlhf": "the IRL-RLHF policy (stage 6): PPO from the SFT model against the reward recovered by inverse RL",
    "irl": "a reward model learned by inverse RL (stage 5) from expert (RLHF) vs non-expert demonstrations",
}
WARNING = (
    "**Content warning and intended use.** A research artifact of a reproduction of *Insights from the Inverse* "
    "(arXiv 2410.12491), trained and evaluated on toxic text. Not for deployment or for moderating real content."
)
SFT_WARNING = (
    "**This SFT model is more toxic than its base model**: it was fine-tuned on a half-toxic corpus so that RLHF has "
    "toxicity to remove (Table 1 of the pipeline's report measures both)."
)
LOADING = {
    "irl": 'from transformers import AutoModel, AutoTokenizer\n\nmodel = AutoModel.from_pretrained(".", '
    'trust_remote_code=True)\ntokenizer = AutoTokenizer.from_pretrained(".", trust_remote_code=True)\n'
    'rewards = model.score(["prompt + completion"], tokenizer, prompts=["prompt"])  # higher = less toxic\n'
    "# (prompts: needed when config.reward_pooling is mean, the completion's tokens; unused with last)",
    "lm": "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
    'model = AutoModelForCausalLM.from_pretrained(".")\ntokenizer = AutoTokenizer.from_pretrained(".")',
}
# what the record keeps beside the config that a reader wants to see as numbers
SUMMARY_KEYS = (
    "parameters", "vocab_size", "model_class", "imported_from", "base_model", "policy_init", "backbone", "reward",
    "iterations", "optimizer_steps", "reward_first", "reward_last_fifth", "kl_last_fifth", "kl_budget",
    "stopped_at_kl_budget", "selected_epoch",
    "n_train_pairs", "n_val_pairs", "n_val_ties", "selected_metrics", "trainable_parameters", "total_parameters",
    "loss_first", "loss_last", "compute", "git_revision",
)  # fmt: skip


def model_card(record: Mapping[str, Any]) -> ModelCard:
    """The card of a model directory, from its ``provenance.json`` record."""
    stage = str(record["stage"]).split("/")[0]
    kind = "irl" if stage == "irl" else "lm"
    title = f"{record['stage']} ({WHAT.get(stage, stage)})"
    data = ModelCardData(
        license="other",  # the base model's licence applies (SmolLM2 and Pythia: Apache-2.0)
        library_name="transformers",
        tags=["irl-for-llms", "toxicity", "rlhf" if kind == "lm" else "reward-model", "research"],
        pipeline_tag="text-generation" if kind == "lm" else "text-classification",
    )
    summary = {k: record[k] for k in SUMMARY_KEYS if k in record}
    warnings = [WARNING] + ([SFT_WARNING] if stage == "sft" else [])
    body = "\n\n".join(
        [
            f"# {title}",
            *warnings,
            "## Loading\n\n```python\n" + LOADING[kind] + "\n```",
            "## Training settings (the pipeline's config section)\n\n```yaml\n"
            + yaml.safe_dump(json.loads(json.dumps(record.get("config", {}))), sort_keys=True)
            + "```",
            "## Provenance and measurements\n\n```yaml\n"
            + yaml.safe_dump(json.loads(json.dumps(summary, default=str)), sort_keys=True)
            + "```\n\nLibrary versions and everything else: `provenance.json` in this directory. "
            "Licence: the base model's (SmolLM2-135M and Pythia: Apache-2.0); data: `resources/DATA.md` of the "
            "pipeline.",
        ]
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}\n")


def write_model_card(directory: str | Path, record: Mapping[str, Any]) -> None:
    model_card(record).save(Path(directory) / "README.md")


def write_dataset_card(path: str | Path, title: str, what: str, splits: Mapping[str, Any]) -> None:
    """A short card for a data directory (``results/data``, ``results/demonstrations``): what it is, its files
    with row counts and columns, and the content warning. ``splits`` maps a file name to its DataFrame."""
    data = DatasetCardData(license="other", tags=["irl-for-llms", "toxicity", "research"], language=["en"])
    files = "\n".join(
        f"| `{name}` | {len(frame)} | {', '.join(f'`{c}`' for c in frame.columns)} |" for name, frame in splits.items()
    )
    body = (
        f"# {title}\n\n{what}\n\n{WARNING}\n\n| file | rows | columns |\n|---|---|---|\n{files}\n\n"
        "Sources and licences of the texts: `resources/DATA.md` of the pipeline; how each file was made: the "
        "pipeline's README.\n"
    )
    DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}").save(Path(path))
