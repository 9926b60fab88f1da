"""Model cards from provenance records (huggingface_hub.ModelCard): parseable metadata, the settings and numbers of
the record, the loading snippet of the directory's kind, and the SFT toxicity warning."""

from __future__ import annotations

from pathlib import Path

import yaml
from huggingface_hub import ModelCard

from workflow_scripts.lib.cards import SFT_WARNING, model_card, write_model_card


def record(stage: str, **extra) -> dict:
    return {"stage": stage, "config": {"learning_rate": 1e-4, "epochs": 2}, "seed": 0, "git_revision": "abc", **extra}


def test_sft_card_warns_and_carries_the_record(tmp_path: Path) -> None:
    write_model_card(tmp_path, record("sft", base_model="results/base/model", loss_first=4.9, loss_last=4.7))
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.license == "other" and "irl-for-llms" in card.data.tags
    assert SFT_WARNING in card.text and "Content warning" in card.text
    settings = yaml.safe_load(card.text.split("```yaml\n")[1].split("```")[0])
    assert settings == {"learning_rate": 1e-4, "epochs": 2}
    numbers = yaml.safe_load(card.text.split("```yaml\n")[2].split("```")[0])
    assert numbers["loss_last"] == 4.7 and numbers["base_model"] == "results/base/model"
    assert "AutoModelForCausalLM.from_pretrained" in card.text


def test_reward_model_card_has_its_own_loading_and_no_sft_warning() -> None:
    card = model_card(record("irl/max_margin", selected_epoch=3, n_train_pairs=240))
    assert "trust_remote_code=True" in card.text and "model.score(" in card.text
    assert SFT_WARNING not in card.text and "reward-model" in card.data.tags
    assert "selected_epoch: 3" in card.text


def test_dataset_card_lists_files_rows_and_columns(tmp_path: Path) -> None:
    import pandas as pd
    from huggingface_hub import DatasetCard

    from workflow_scripts.lib.cards import write_dataset_card

    frames = {"train.parquet": pd.DataFrame({"prompt": ["a", "b"], "chosen": ["x", "y"]})}
    write_dataset_card(tmp_path / "README.md", "Demonstrations", "Pairs of completions.", frames)
    card = DatasetCard.load(tmp_path / "README.md")
    assert "irl-for-llms" in card.data.tags and "Content warning" in card.text
    assert "| `train.parquet` | 2 | `prompt`, `chosen` |" in card.text
