"""Hub loaders (paper configs) on local copies, and the one-line error for a hub id that cannot be reached offline."""

from __future__ import annotations

import re
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
    spec = {"kind": "hf_classifier", "model": str(model_dir), "toxic_label": toxic, "batch_size": 3, "max_length": 512}
    scorer = load_scorer(spec)
    z = reference_logits(model_dir, TEXTS)
    t = [k for k, v in labels.items() if v == toxic][0]
    expected_p = np.exp(z[:, t]) / np.exp(z).sum(axis=1)
    np.testing.assert_allclose(scorer.p_toxic(TEXTS), expected_p, atol=1e-5)  # batched + padded = one by one
    np.testing.assert_allclose(scorer.toxic_logit(TEXTS), z[:, t] - z[:, 1 - t], atol=1e-5)
    assert scorer.p_toxic([]).shape == (0,)


def test_hf_classifier_rejects_an_unknown_label(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = save_tiny_classifier(tiny_model_dir, tmp_path / "clf", {0: "nothate", 1: "hate"})
    with pytest.raises(ValueError, match=r"no label 'toxic'; its labels: \['hate', 'nothate'\]"):
        load_scorer({"kind": "hf_classifier", "model": str(model_dir), "toxic_label": "toxic", "batch_size": 3,
                     "max_length": 512})  # fmt: skip


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
        load_scorer(
            {"kind": "hf_classifier", "model": name, "toxic_label": "toxic", "batch_size": 3, "max_length": 512}
        )
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
    pd.testing.assert_frame_equal(load_dataset_table(tmp_path / "jigsaw.parquet", "train"), frame)
    # a local directory laid out like a hub data set repository loads the same way
    (tmp_path / "repo" / "data").mkdir(parents=True)
    frame.to_parquet(tmp_path / "repo" / "data" / "train-00000-of-00001.parquet")
    pd.testing.assert_frame_equal(load_dataset_table(tmp_path / "repo", "train"), frame)
    name = "jaredjoss/jigsaw-long-2000"
    with pytest.raises(HubUnavailable) as err:
        load_dataset_table(name, "train")
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
    # prepare_data scored the texts in other batches than this call: P(toxic) may differ in the last bits, so a text
    # within fp32 rounding of the 0.5 cut could fall either way (none does here; the test says so if one ever does)
    p = scorer.p_toxic(both["text"].tolist())
    clear = np.abs(p - 0.5) > 1e-5
    assert clear.all(), f"texts at the threshold: {both['text'][~clear].tolist()}"
    np.testing.assert_array_equal(both["label"], (p >= 0.5).astype(int))
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


# ------------------------------------------------------------------------ hub assets fetched once, jobs offline
def merged_config(path: Path) -> dict:
    """A config file as Snakemake sees it: over config.yaml, defaults filled in."""
    import yaml

    from workflow_scripts.lib.config import fill_defaults

    repo = Path(__file__).parent.parent
    base = yaml.safe_load((repo / "config.yaml").read_text())
    return fill_defaults({**base, **yaml.safe_load(path.read_text())})


def test_hub_assets_lists_every_hub_id_of_a_config_once() -> None:
    from workflow_scripts.lib.hub import hub_assets

    repo = Path(__file__).parent.parent
    assert hub_assets(merged_config(repo / "config.yaml")) == []  # the default run names none
    assets = hub_assets(merged_config(repo / "config" / "paper-70m.yaml"))
    assert [(a["kind"], a["name"], a["key"]) for a in assets] == [
        ("model", "EleutherAI/pythia-70m", "base_model.name_or_path"),
        ("model", "lomahony/eleuther-pythia70m-hh-sft", "sft.import_from"),
        ("model", "s-nlp/roberta_toxicity_classifier", "gt_classifier.model"),
        ("model", "facebook/roberta-hate-speech-dynabench-r4-target", "evaluation.classifier.model"),
        ("dataset", "jaredjoss/jigsaw-long-2000", "data.texts"),
        ("dataset", "allenai/real-toxicity-prompts", "data.rtp_prompts"),
    ]


def hub_cache_with(model_dir: Path, cache: Path, repo_id: str, commit: str = "0123456789abcdef") -> None:
    """A Hugging Face cache (HF_HUB_CACHE) holding ``model_dir`` as the snapshot of ``repo_id`` at ``main``: what
    ``fetch_hub_assets`` leaves behind on a shared file system."""
    import shutil

    repo = cache / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


FETCH_THEN_LOAD = """
import json, sys
from workflow_scripts.lib.hub import HubUnavailable, fetch_assets, go_offline
from workflow_scripts.lib.lm import load_causal_lm
asset = {"kind": "model", "name": sys.argv[1], "revision": None, "split": None, "key": "sft.import_from"}
try:
    manifest = fetch_assets([asset])
except HubUnavailable as err:
    print(json.dumps({"error": str(err)}))
    raise SystemExit(0)
go_offline()
model, _ = load_causal_lm(sys.argv[1])
print(json.dumps({"snapshot": manifest[0]["snapshot"], "params": sum(p.numel() for p in model.parameters()),
                  "first": float(next(model.parameters()).detach().flatten()[0])}))
"""


def test_fetched_model_loads_offline_by_its_hub_id(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Offline (no network at all), from a cache that holds the model: fetch finds it, the job loads it by id."""
    import json
    import os
    import subprocess
    import sys

    from workflow_scripts.lib.lm import load_causal_lm

    hub_cache_with(tiny_model_dir, tmp_path / "hub", "test-org/tiny-lm")
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}

    def run(repo_id: str) -> dict:
        proc = subprocess.run([sys.executable, "-c", FETCH_THEN_LOAD, repo_id], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    got = run("test-org/tiny-lm")
    assert Path(got["snapshot"]) == tmp_path / "hub" / "models--test-org--tiny-lm" / "snapshots" / "0123456789abcdef"
    local, _ = load_causal_lm(tiny_model_dir)
    assert got["params"] == sum(p.numel() for p in local.parameters())
    assert got["first"] == float(next(local.parameters()).detach().flatten()[0])
    missing = run("test-org/not-fetched")["error"]
    assert "\n" not in missing and "test-org/not-fetched" in missing and "sft.import_from" in missing


def test_paper_jobs_wait_for_the_hub_download(tmp_path: Path) -> None:
    """With hub ids in the config, every job that may open one takes the manifest as an input (a dry run)."""
    from conftest import snakemake

    repo = Path(__file__).parent.parent
    out = snakemake(tmp_path, "-n", configfile=repo / "config" / "paper-70m.yaml").stdout
    # irl_rlhf: it logs the GT reward of its rollouts; *_seed: the PPO stages' other seeds (the paper configs: three)
    needs = {"prepare_data", "base_model", "sft", "rlhf", "demonstrations", "irl_features", "irl_rlhf", "evaluate"}
    needs |= {"rlhf_seed", "irl_rlhf_seed"}
    waiting = set()
    for block in out.split("\n\n"):
        rule = re.search(r"^\s*(?:local)?rule (\w+):", block, re.M)
        if rule and "results/hub/assets.json" in block.split("output:")[0]:
            waiting.add(rule.group(1))
    assert waiting == needs
    assert re.search(r"^\s*(local)?rule fetch_hub_assets:", out, re.M)
