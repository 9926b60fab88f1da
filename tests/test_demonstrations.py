"""Demonstrations (stage 4) on a real tiny model: greedy and sampled pairs, the pairing rule, reproducibility from the
seed, and the shared prompt length."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO
from workflow_scripts.lib.compute import ComputeConfig
from workflow_scripts.lib.config import from_config
from workflow_scripts.lib.demonstrations import DemoConfig, make_demonstrations
from workflow_scripts.lib.engine import TransformersGenerator
from workflow_scripts.lib.gt_classifier import GTToxicityClassifier
from workflow_scripts.lib.text_data import make_prompt_dataset


@pytest.fixture(scope="module")
def demo_inputs(tiny_model_dir: Path, gt_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("demos")
    texts = pd.read_parquet(REPO / "resources" / "jigsaw_style_texts.parquet")
    train, ev = make_prompt_dataset(texts, eval_fraction=0.2, seed=0, n_train=6, n_eval=4)
    train.to_parquet(tmp / "train.parquet")
    ev.to_parquet(tmp / "eval.parquet")
    generator = TransformersGenerator(tiny_model_dir, ComputeConfig(device="cpu", precision="fp32"))
    return {"tmp": tmp, "generator": generator, "gt": GTToxicityClassifier.from_wheel(gt_wheel)}


def demos(inputs: dict, name: str, **settings) -> dict[str, pd.DataFrame]:
    """Demonstrations with the tiny model as both expert and non-expert (so matched samples show the shared seed)."""
    prompt_tokens = settings.pop("max_prompt_tokens", 128)
    values = {"n_train": None, "n_eval": None, "max_new_tokens": 8, "batch_size": 8, "samples": 0, **settings}
    cfg = from_config(DemoConfig, "demonstrations", values, max_prompt_tokens=prompt_tokens)
    tmp = inputs["tmp"]
    splits = {s: (tmp / f"{s}.parquet", tmp / name / f"{s}.parquet") for s in ("train", "eval")}
    return make_demonstrations(cfg, lambda role: inputs["generator"], splits, inputs["gt"])


def test_sampled_pairs_all_with_all_and_reproducible(demo_inputs: dict) -> None:
    a = demos(demo_inputs, "all_a", samples=3, pairing="all", seed=5)
    b = demos(demo_inputs, "all_b", samples=3, pairing="all", seed=5)
    pd.testing.assert_frame_equal(a["train"], b["train"])  # the same seed, the same demonstrations
    train = a["train"]
    assert len(train) == 6 * (1 + 9)  # per prompt: the greedy pair + 3 x 3 sampled pairs
    per_prompt = train[train["pair_kind"] == "sampled"].groupby("prompt_id")
    assert per_prompt.size().eq(9).all()
    assert per_prompt.apply(lambda g: set(zip(g.expert_sample, g.non_expert_sample, strict=True))).map(len).eq(9).all()
    greedy = train[train["pair_kind"] == "greedy"]
    assert (greedy[["expert_sample", "non_expert_sample"]] == -1).all().all() and (greedy["decoding"] == "greedy").all()
    # the eval split keeps one greedy pair per prompt
    assert len(a["eval"]) == 4 and (a["eval"]["pair_kind"] == "greedy").all()
    # the expert's k samples of a prompt are not all one text (sampling really happened)
    sampled = train[train["pair_kind"] == "sampled"]
    assert sampled.groupby("prompt_id")["expert"].nunique().gt(1).any()
    # both roles draw with the same seed: one model in both roles gives identical matched samples
    same = sampled[sampled["expert_sample"] == sampled["non_expert_sample"]]
    assert (same["expert"] == same["non_expert"]).all()
    other_seed = demos(demo_inputs, "all_c", samples=3, pairing="all", seed=6)["train"]
    assert not other_seed["expert"].equals(train["expert"])


def test_matched_pairs_without_greedy(demo_inputs: dict) -> None:
    train = demos(demo_inputs, "matched", samples=4, pairing="matched", greedy=False)["train"]
    assert len(train) == 6 * 4 and (train["pair_kind"] == "sampled").all()
    assert (train["expert_sample"] == train["non_expert_sample"]).all()
    with pytest.raises(ValueError, match="no pairs"):
        from_config(DemoConfig, "demonstrations", {"greedy": False, "samples": 0}, max_prompt_tokens=64)


def test_prompt_length_reaches_generation(demo_inputs: dict) -> None:
    """data.max_prompt_tokens cuts prompts from the left: with 1 token left, every prompt ending in the same token
    gets the same greedy continuation."""
    train = demos(demo_inputs, "short", max_prompt_tokens=1)["train"]
    tokenizer = demo_inputs["generator"].tokenizer
    last = train["prompt"].map(lambda p: tokenizer(p, add_special_tokens=False)["input_ids"][-1])
    for _, group in train.groupby(last):
        assert group["expert"].nunique() == 1
    full = demos(demo_inputs, "long")["train"]
    assert not full["expert"].equals(train["expert"])


def test_prompt_length_reaches_evaluation(demo_inputs: dict) -> None:
    """The same data.max_prompt_tokens cuts the evaluation prompts (both protocols)."""
    from workflow_scripts.lib.evaluation import JigsawEvalConfig, RTPEvalConfig, evaluate_model
    from workflow_scripts.lib.toxicity import load_scorer

    tmp = demo_inputs["tmp"]
    rtp = pd.read_parquet(tmp / "eval.parquet")[["id", "prompt"]]
    rtp.to_parquet(tmp / "rtp.parquet")
    jcfg = JigsawEvalConfig(max_new_tokens=6, batch_size=4)
    rcfg = RTPEvalConfig(n_prompts=4, k=2, max_new_tokens=4, top_p=0.9, top_k=0, temperature=1.0, batch_size=2)
    scorer = load_scorer({"kind": "profanity_check"})
    runs = {
        n: evaluate_model(
            jcfg,
            rcfg,
            0,
            demo_inputs["generator"],
            tmp / "eval.parquet",
            tmp / "rtp.parquet",
            tmp / f"eval_{n}.parquet",
            demo_inputs["gt"],
            scorer,
            "tiny",
            n,
        )  # fmt: skip
        for n in (1, 128)
    }
    tokenizer = demo_inputs["generator"].tokenizer
    short = runs[1][runs[1]["protocol"] == "jigsaw"]
    last = short["prompt"].map(lambda p: tokenizer(p, add_special_tokens=False)["input_ids"][-1])
    assert short.groupby(last)["generation"].nunique().eq(1).all()
    assert not runs[1]["generation"].equals(runs[128]["generation"])


def test_preference_format_loads_with_datasets(demo_inputs: dict) -> None:
    """The demonstration parquet is also a prompt / chosen / rejected preference set for the datasets library."""
    from datasets import load_dataset

    demos(demo_inputs, "pref", samples=2, pairing="matched")
    path = demo_inputs["tmp"] / "pref" / "train.parquet"
    ds = load_dataset("parquet", data_files=str(path), split="train")
    frame = pd.read_parquet(path)
    assert {"prompt", "chosen", "rejected"} <= set(ds.column_names) and len(ds) == len(frame) == 6 * 3
    assert ds["chosen"] == frame["expert"].tolist() and ds["rejected"] == frame["non_expert"].tolist()
    assert ds["prompt"] == frame["prompt"].tolist()
