"""Hub loaders (paper configs) on local copies, and the one-line error for a hub id that cannot be reached offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from workflow_scripts.lib.hub import HubUnavailable, load_dataset_table
from workflow_scripts.lib.toxicity import load_scorer

TEXTS = ["you are a wonderful person", "shut up you idiot", "the weather is nice today", "a"]


def save_tiny_classifier(tokenizer_dir: Path, out: Path, labels: dict[int, str]) -> Path:
    """A tiny random GPT-NeoX sequence classifier saved with save_pretrained (the layout of a hub checkpoint)."""
    from transformers import AutoTokenizer, GPTNeoXConfig, GPTNeoXForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.pad_token = tokenizer.eos_token
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128, num_labels=len(labels), id2label=labels,
        label2id={v: k for k, v in labels.items()}, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    GPTNeoXForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def reference_logits(model_dir: Path, texts: list[str]) -> np.ndarray:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return np.stack([model(**tok(t, return_tensors="pt")).logits[0].numpy() for t in texts])


@pytest.mark.parametrize("labels,toxic", [({0: "neutral", 1: "toxic"}, "toxic"), ({0: "hate", 1: "nothate"}, "hate")])
def test_hf_classifier_scores_the_named_label(tiny_model_dir: Path, tmp_path: Path, labels, toxic) -> None:
    model_dir = save_tiny_classifier(tiny_model_dir, tmp_path / "clf", labels)
    scorer = load_scorer({"kind": "hf_classifier", "model": str(model_dir), "toxic_label": toxic, "batch_size": 3})
    z = reference_logits(model_dir, TEXTS)
    t = [k for k, v in labels.items() if v == toxic][0]
    expected_p = np.exp(z[:, t]) / np.exp(z).sum(axis=1)
    np.testing.assert_allclose(scorer.p_toxic(TEXTS), expected_p, atol=1e-5)  # batched + padded = one by one
    np.testing.assert_allclose(scorer.toxic_logit(TEXTS), z[:, t] - z[:, 1 - t], atol=1e-5)
    assert scorer.p_toxic([]).shape == (0,)


def test_hf_classifier_rejects_an_unknown_label(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = save_tiny_classifier(tiny_model_dir, tmp_path / "clf", {0: "nothate", 1: "hate"})
    with pytest.raises(ValueError, match=r"no label 'toxic'; its labels: \['hate', 'nothate'\]"):
        load_scorer({"kind": "hf_classifier", "model": str(model_dir)})


def one_line_hub_error(excinfo: pytest.ExceptionInfo, name: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and name in message and "offline mode" in message
    return message


@pytest.fixture()
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline mode as the README commands set it (the hub libraries read it when they make a request)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_unreachable_classifier_id_is_one_clear_line(offline: None) -> None:
    name = "s-nlp/roberta_toxicity_classifier"
    with pytest.raises(HubUnavailable) as err:
        load_scorer({"kind": "hf_classifier", "model": name})
    one_line_hub_error(err, name)


def test_unreachable_model_id_is_one_clear_line(offline: None) -> None:
    from workflow_scripts.lib.lm import load_causal_lm

    name = "EleutherAI/pythia-70m"
    with pytest.raises(HubUnavailable) as err:
        load_causal_lm(name)
    one_line_hub_error(err, name)


def test_dataset_from_local_copy_and_unreachable_id(tmp_path: Path, offline: None) -> None:
    frame = pd.DataFrame({"prompt": ["a b", "c d"], "original_output": ["e", "f"]})
    frame.to_parquet(tmp_path / "jigsaw.parquet")
    pd.testing.assert_frame_equal(load_dataset_table(tmp_path / "jigsaw.parquet"), frame)
    # a local directory laid out like a hub data set repository loads the same way
    (tmp_path / "repo" / "data").mkdir(parents=True)
    frame.to_parquet(tmp_path / "repo" / "data" / "train-00000-of-00001.parquet")
    pd.testing.assert_frame_equal(load_dataset_table(tmp_path / "repo"), frame)
    name = "jaredjoss/jigsaw-long-2000"
    with pytest.raises(HubUnavailable) as err:
        load_dataset_table(name)
    one_line_hub_error(err, name)


def test_paper_layout_data_sets_from_local_copies(tmp_path: Path, gt_wheel: Path) -> None:
    """jigsaw-long-2000's layout (prompt / original_output, no label) and RealToxicityPrompts' (struct prompt,
    challenging flag), as local copies, through the loader the paper configs use."""
    from workflow_scripts.lib.config import from_config
    from workflow_scripts.lib.data import DataConfig, prepare_data
    from workflow_scripts.lib.toxicity import GTBiLSTMScorer

    shipped = pd.read_parquet(Path(__file__).parent.parent / "resources" / "jigsaw_style_texts.parquet").head(40)
    words = shipped["text"].str.split()
    jigsaw = pd.DataFrame({"prompt": words.str[:4].str.join(" "), "original_output": words.str[4:].str.join(" ")})
    jigsaw.to_parquet(tmp_path / "jigsaw.parquet")
    rtp_dir = tmp_path / "rtp" / "data"
    rtp_dir.mkdir(parents=True)
    rtp = pd.DataFrame(
        {
            "prompt": [{"text": f"prompt number {i} says", "toxicity": 0.1} for i in range(6)],
            "challenging": [True, False, True, True, False, True],
        }
    )
    rtp.to_parquet(rtp_dir / "train-00000-of-00001.parquet")
    cfg = from_config(DataConfig, "data", {
        "texts": str(tmp_path / "jigsaw.parquet"), "rtp_prompts": str(tmp_path / "rtp"), "label_column": None,
        "prompt_column": "prompt", "continuation_column": "original_output", "rtp_prompt_column": "prompt.text",
        "rtp_challenging_only": True, "eval_fraction": 0.25,
    })  # fmt: skip
    out = {k: tmp_path / f"{k}.parquet" for k in ("train", "eval", "rtp")}
    scorer = GTBiLSTMScorer(str(gt_wheel))
    counts = prepare_data(cfg, out["train"], out["eval"], out["rtp"], label_scorer=lambda: scorer)
    both = pd.concat([pd.read_parquet(out["train"]), pd.read_parquet(out["eval"])])
    assert counts["train"] + counts["eval"] == len(both) == 40
    # the data set's own prompt / continuation split is kept, and labels are the GT classifier's
    by_prompt = both.set_index("prompt")
    for _, row in jigsaw.iterrows():
        assert by_prompt.loc[row["prompt"], "original_output"] == " " + row["original_output"]
    np.testing.assert_array_equal(both["label"], (scorer.p_toxic(both["text"].tolist()) >= 0.5).astype(int))
    prompts = pd.read_parquet(out["rtp"])["prompt"]
    assert sorted(prompts) == [f"prompt number {i} says" for i in (0, 2, 3, 5)]  # challenging rows only
    with pytest.raises(ValueError, match="no field 'txt'"):
        prepare_data(
            DataConfig(**{**cfg.__dict__, "rtp_prompt_column": "prompt.txt"}), out["train"], out["eval"], out["rtp"],
            label_scorer=lambda: scorer,
        )  # fmt: skip


def test_a_missing_local_checkpoint_is_not_blamed_on_the_hub(tmp_path: Path, offline: None) -> None:
    from workflow_scripts.lib.lm import load_causal_lm

    missing = tmp_path / "results" / "sft" / "model"
    with pytest.raises(FileNotFoundError, match=f"model checkpoint not found: {missing}"):
        load_causal_lm(missing)
