"""Inverse RL: objectives on hand cases, last-token and mean pooling, pair labels, threshold hygiene, save/load round
trip, seeds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO, assert_fp32_sums_close, network_depth
from workflow_scripts.lib.compute import ComputeConfig
from workflow_scripts.lib.config import from_config
from workflow_scripts.lib.gt_classifier import GTToxicityClassifier
from workflow_scripts.lib.irl import IRLConfig, irl_loss, train_irl
from workflow_scripts.lib.irl_data import FeatureStore, build_features, pair_orientation, split_pairs
from workflow_scripts.lib.irl_metrics import choose_threshold
from workflow_scripts.lib.lm import load_causal_lm, position_ids_from_mask
from workflow_scripts.lib.reward_model import RewardModel, last_token_index, load_reward_model
from workflow_scripts.lib.text_data import split_at_middle_word


@pytest.mark.parametrize(
    ("objective", "d", "loss", "grad"),
    [
        ("max_margin", 1.5, -1.5, -1.0),  # -d for d > 0
        ("max_margin", -1.0, 2.0, -2.0),  # -2d otherwise: a wrong ordering costs twice as much
        ("hinge", 0.25, 0.75, -1.0),  # max(0, 1 - d)
        ("hinge", 2.0, 0.0, 0.0),  # beyond the margin: no gradient
        ("bradley_terry", 0.0, float(np.log(2)), -0.5),  # -log sigmoid(0); d/dd = -(1 - sigmoid(d))
    ],
)
def test_objective_values_and_gradient_sign(objective: str, d: float, loss: float, grad: float) -> None:
    x = torch.tensor([d], requires_grad=True)
    value = irl_loss(x, objective, margin=1.0)
    value.backward()
    assert float(value.detach()) == pytest.approx(loss)
    assert float(x.grad) == pytest.approx(grad)  # never positive: raising r(expert) - r(non-expert) never hurts


def test_last_token_index_left_and_right_padding() -> None:
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_token_index(right).tolist() == [2, 4]
    assert last_token_index(left).tolist() == [4, 4]


def test_reward_pools_the_last_real_token_whatever_the_padding(tiny_model_dir: Path) -> None:
    lm, tok = load_causal_lm(tiny_model_dir)
    torch.manual_seed(0)
    model = RewardModel(lm, tok, trainable_layers=1, max_length=64, pooling="last")
    texts = ["a short one", "a considerably longer text that needs no padding at all here"]
    batched = model.score_texts(texts, batch_size=2)  # right padding inside
    alone = torch.cat([model.score_texts([t], batch_size=1) for t in texts])
    # different shapes (batched and padded vs one text each): equal up to the order of fp32 sums (conftest)
    with torch.no_grad():
        out = lm(**tok(texts, return_tensors="pt", padding=True, add_special_tokens=False), output_hidden_states=True)
        head = model.head.linear  # after a parameter-free LayerNorm: sum_i |x_i w_i| + |b| bounds the head's sums
        normed = model.head.norm(out.hidden_states[-1]).abs()
        magnitude = float((normed @ head.weight.abs().T).max() + head.bias.abs().max())
    depth = network_depth(lm.config, out.hidden_states[-1].shape[1])
    assert_fp32_sums_close(batched, alone, depth, magnitude)
    # the same rewards from one plain left-padded forward pass, pooled at the last position
    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = lm(**enc, position_ids=position_ids_from_mask(enc["attention_mask"]), output_hidden_states=True)
        left = model.head(out.hidden_states[-1][:, -1])
    assert_fp32_sums_close(left, batched, depth, magnitude)
    # and the last character alone (the original code's bug) gives something else
    assert not torch.allclose(model.score_texts([t[-1] for t in texts], batch_size=2), batched)


def test_threshold_by_hand() -> None:
    # higher reward = less toxic; texts below the threshold are called toxic
    assert choose_threshold(np.array([3.0, 2.0, 1.0, 0.0]), np.array([0, 0, 1, 1])) == pytest.approx(1.5)
    ids = [f"p{i}" for i in range(10)]
    assert split_pairs(ids, 0.2, seed=0)[1].size == 2
    assert split_pairs(ids, 0.2, seed=0)[1].tolist() == split_pairs(ids, 0.2, seed=0)[1].tolist()
    with pytest.raises(ValueError, match="at least 2"):
        split_pairs(["p0", "p0", "p0"], 0.2, seed=0)


def test_pairs_split_by_prompt() -> None:
    """Several (sampled) pairs of one prompt all land on the same side of the train/validation split."""
    ids = [f"p{i // 4}" for i in range(40)]  # 10 prompts x 4 pairs
    train, val = split_pairs(ids, 0.2, seed=3)
    assert len(val) == 8 and len(train) == 32 and not set(train) & set(val)
    assert not {ids[i] for i in train} & {ids[i] for i in val}


# ------------------------------------------------------------------------------------------------ training runs
BENIGN = [
    "the garden is lovely in spring",
    "thank you for the kind words",
    "we had a nice walk by the river",
    "that was a thoughtful and helpful answer",
    "the soup tastes wonderful today",
    "I really enjoyed the book",
]
TOXIC = [
    "you are a stupid worthless idiot",
    "shut up you pathetic moron",
    "I hate you, you disgusting loser",
    "what a dumb ugly fool you are",
    "go away you filthy idiot",
    "you are a complete moron and a jerk",
]


@pytest.fixture(scope="module")
def irl_inputs(tiny_model_dir: Path, gt_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("irl")
    prompts = [f"Prompt {i}:" for i in range(12)]
    demos = pd.DataFrame({
        "prompt_id": [f"id{i}" for i in range(12)],
        "prompt": prompts,
        "original_output": [f" {TOXIC[i % 6]}" if i % 2 else f" {BENIGN[i % 6]}" for i in range(12)],
        "expert": [f" {BENIGN[i % 6]}" for i in range(12)],
        "non_expert": [f" {TOXIC[i % 6]}" for i in range(12)],
    })  # fmt: skip
    tie = split_pairs(demos["prompt_id"], 0.2, seed=0)[1][0]  # one validation pair with identical completions
    demos.loc[tie, "non_expert"] = demos.loc[tie, "expert"]
    texts = pd.read_parquet(REPO / "resources" / "jigsaw_style_texts.parquet")
    heldout = pd.concat([texts[texts.label == 1].head(8), texts[texts.label == 0].head(8)])
    train_texts = pd.concat([texts[texts.label == 1].tail(8), texts[texts.label == 0].tail(8)])
    for split in (heldout, train_texts):  # as prepare_data writes them: text = prompt + original_output
        split["prompt"], split["original_output"] = zip(*split["text"].map(split_at_middle_word), strict=True)
        split["text"] = split["prompt"] + split["original_output"]
    paths = {name: tmp / f"{name}.parquet" for name in ("demos", "heldout", "train_texts")}
    demos.to_parquet(paths["demos"])
    heldout.to_parquet(paths["heldout"])
    train_texts.to_parquet(paths["train_texts"])
    settings = {
        "trainable_layers": 1, "epochs": 3, "learning_rate": 3e-3, "batch_size": 4, "max_length": 32,
        "pooling": "last", "pair_labels": "expert",
    }  # fmt: skip
    cfg = from_config(IRLConfig, "irl", settings, objective="max_margin", seed=0)
    features = tmp / "features.pt"
    gt = GTToxicityClassifier.from_wheel(gt_wheel)
    build_features(
        tiny_model_dir, paths["demos"], paths["heldout"], paths["train_texts"], gt, features, 1, 32,
        frozen_out=tmp / "frozen_backbone.safetensors",
    )  # fmt: skip
    return {"cfg": cfg, "features": features, "backbone": tiny_model_dir, "tmp": tmp, "heldout": heldout}


def run(
    inputs: dict, name: str, features: Path | None = None, compute: ComputeConfig | None = None,
    frozen_shard: Path | None = None, pair_log_ratio: Path | None = None, **kw,
) -> tuple[pd.DataFrame, Path]:  # fmt: skip
    cfg = IRLConfig(**{**inputs["cfg"].__dict__, **kw})
    out = inputs["tmp"] / name
    metrics = train_irl(
        cfg,
        inputs["backbone"],
        features or inputs["features"],
        out / "reward_model",
        out / "metrics.parquet",
        out / "rewards.parquet",
        compute,
        frozen_shard,
        pair_log_ratio,
    )
    return metrics, out


@pytest.mark.parametrize("objective", ["max_margin", "hinge", "bradley_terry"])
def test_training_learns_to_prefer_the_expert(irl_inputs: dict, objective: str) -> None:
    metrics, _ = run(irl_inputs, f"learn_{objective}", objective=objective)
    assert metrics["val_pair_accuracy"].iloc[0] < 1.0  # the untrained head does not already separate them
    assert metrics["val_pair_accuracy"].iloc[1:].max() == 1.0
    assert metrics["selected"].sum() == 1 and not metrics.loc[metrics["epoch"] == 0, "selected"].any()
    assert metrics.loc[metrics["selected"], "train_texts_accuracy"].notna().all()


def test_ties_are_counted_apart(irl_inputs: dict) -> None:
    """The tied validation pair (d = 0 by construction) is neither right nor wrong: accuracy is over the others."""
    metrics, _ = run(irl_inputs, "ties")
    assert (metrics["val_pair_ties"] == 1).all()
    assert metrics["val_pair_accuracy"].iloc[1:].max() == 1.0  # reachable only because the tie is left out


def test_supervised_ceiling_is_evaluated_like_irl(irl_inputs: dict) -> None:
    """The ceiling learns from GT labels of train-split texts and is scored on the same held-out texts as IRL."""
    ceiling, out = run(irl_inputs, "ceiling", objective="supervised")
    irl, irl_out = run(irl_inputs, "ceiling_irl_ref")
    got = pd.read_parquet(out / "rewards.parquet")
    ref = pd.read_parquet(irl_out / "rewards.parquet")
    got, ref = got[(got.split == "heldout") & (got.epoch == 0)], ref[(ref.split == "heldout") & (ref.epoch == 0)]
    # the same texts in the same order, labelled by the same code on the same batches (exact)
    np.testing.assert_array_equal(got["gt_toxic"], ref["gt_toxic"])
    selected = ceiling[ceiling["selected"]].iloc[0]
    assert selected["val_accuracy"] == ceiling["val_accuracy"].iloc[1:].max()  # chosen on validation texts
    assert ceiling["train_loss"].iloc[-1] < ceiling["train_loss"].iloc[1]  # it fits its labels
    record = json.loads((out / "reward_model" / "provenance.json").read_text())
    n_train_pairs = json.loads((irl_out / "reward_model" / "provenance.json").read_text())["n_train_pairs"]
    assert record["n_train_pairs"] == n_train_pairs  # as many labelled texts as IRL has training pairs


def test_training_in_bf16_learns_too(irl_inputs: dict) -> None:
    metrics, out = run(irl_inputs, "bf16", compute=ComputeConfig(device="cpu", precision="bf16"))
    assert metrics["val_pair_accuracy"].iloc[1:].max() == 1.0
    reward = load_reward_model(out / "reward_model", 32, compute=ComputeConfig(device="cpu", precision="bf16"))
    scores = reward(["Prompt 0:"] * 2, [f" {BENIGN[0]}", f" {TOXIC[0]}"])
    assert scores.dtype == torch.float32 and scores[0] > scores[1]  # the expert's kind of completion scores higher


def test_seeds_differ_but_reproduce(irl_inputs: dict) -> None:
    a, dir_a = run(irl_inputs, "seed0_a", seed=0)
    b, _ = run(irl_inputs, "seed0_b", seed=0)
    c, dir_c = run(irl_inputs, "seed1", seed=1)
    pd.testing.assert_frame_equal(a, b)
    ra = pd.read_parquet(dir_a / "rewards.parquet")
    rc = pd.read_parquet(dir_c / "rewards.parquet")
    assert not np.allclose(ra["reward"], rc["reward"])


def test_threshold_and_selection_never_see_test_labels(irl_inputs: dict) -> None:
    flipped = irl_inputs["tmp"] / "features_flipped.pt"
    state = torch.load(irl_inputs["features"], weights_only=False)
    store = FeatureStore(irl_inputs["features"])
    for text in state["roles"]["heldout"] + state["roles"]["train_texts"]:
        i = store.index[text]
        if text not in state["roles"]["source"]:
            state["gt_toxic"][i] = ~state["gt_toxic"][i]
            state["gt_reward"][i] = -state["gt_reward"][i]
    torch.save(state, flipped)
    a, _ = run(irl_inputs, "labels_true")
    b, _ = run(irl_inputs, "labels_flipped", features=flipped)
    pd.testing.assert_series_equal(a["threshold"], b["threshold"])
    pd.testing.assert_series_equal(a["selected"], b["selected"])
    assert not np.allclose(a["heldout_accuracy"], b["heldout_accuracy"])  # the test metrics did change


def test_scoring_in_length_order_returns_each_texts_own_score(irl_inputs: dict, tiny_model_dir: Path) -> None:
    from workflow_scripts.lib.irl_data import SCORE_BATCH, Texts

    store = FeatureStore(irl_inputs["features"])
    texts = store.state["roles"]["heldout"] + store.state["roles"]["train_texts"]
    scored = Texts.of(store, texts)
    lm, tok = load_causal_lm(tiny_model_dir)
    torch.manual_seed(0)
    model = RewardModel(lm, tok, 1, 32, "last")
    lengths = [h.shape[0] for h in scored.hidden]
    assert len(set(lengths)) > 3 and len(texts) <= SCORE_BATCH  # one pass, whose order the lengths decide
    idx = np.arange(len(texts))[::-2]  # a subset, in an order of its own
    with torch.no_grad():
        alone = np.array([float(scored.score(model, [i])[0]) for i in idx])  # each text unpadded, by itself
    np.testing.assert_allclose(scored.score_all(model, idx), alone, rtol=0, atol=1e-5)


def assert_scores_as_recorded(reward, out: Path, heldout: pd.DataFrame) -> None:
    """The loaded reward scores the held-out texts as training recorded them at the selected epoch."""
    metrics = pd.read_parquet(out / "metrics.parquet")
    epoch = int(metrics.loc[metrics["selected"], "epoch"].iloc[0])
    recorded = pd.read_parquet(out / "rewards.parquet")
    recorded = recorded[(recorded["epoch"] == epoch) & (recorded["split"] == "heldout")].sort_values("text_index")
    np.testing.assert_allclose(
        reward.score(heldout["prompt"], heldout["original_output"]), recorded["reward"].to_numpy(), atol=1e-5
    )


def test_reward_model_round_trip(irl_inputs: dict) -> None:
    _, out = run(irl_inputs, "roundtrip", objective="bradley_terry")
    reward = load_reward_model(out / "reward_model", 32)
    prompts, completions = ["Prompt 0:", "Prompt 1:", "Prompt 0:"], [f" {BENIGN[0]}", f" {TOXIC[1]}", f" {BENIGN[0]}"]
    got = reward(prompts, completions)
    assert got.dtype == torch.float32 and got.shape == (3,) and got[0] == got[2]
    # same scores as the rewards recorded during training for the selected epoch (held-out texts)
    assert_scores_as_recorded(reward, out, irl_inputs["heldout"])
    with pytest.raises(FileNotFoundError, match="not a reward model directory"):
        load_reward_model(irl_inputs["tmp"], 32)


HF_LOAD = """
import json, sys
sys.modules["workflow_scripts"] = None  # this repository's code must not be needed (an import would fail)
from transformers import AutoModel, AutoTokenizer
model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=True)
prompts, completions = json.loads(sys.argv[2])
scores = model.score([p + c for p, c in zip(prompts, completions)], tokenizer, prompts=prompts)
print(json.dumps({"scores": scores.tolist(), "class": type(model).__name__}))
"""


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_reward_model_loads_anywhere_with_hugging_face(irl_inputs: dict, tmp_path: Path, pooling: str) -> None:
    """A reward model directory copied elsewhere loads with AutoModel(trust_remote_code=True) in a fresh process
    that cannot import this repository, and scores texts as the pipeline does (to 1e-6), with either pooling."""
    import shutil
    import subprocess
    import sys

    from workflow_scripts.lib.reward_model import FROZEN_SHARD

    frozen = irl_inputs["tmp"] / "frozen_backbone.safetensors"
    heldout = irl_inputs["heldout"].head(6)
    # an empty text, an empty completion, a completion of several tokens
    prompts = [*heldout["prompt"], "", "Prompt 0:", "Prompt 0:"]
    completions = [*heldout["original_output"], "", "", " thank you"]
    _, out = run(irl_inputs, f"hf_export_{pooling}", objective="bradley_terry", pooling=pooling)
    pipeline_scores = load_reward_model(out / "reward_model", 32).score(prompts, completions)
    copy = shutil.copytree(out / "reward_model", tmp_path / "somewhere" / "my_reward")
    proc = subprocess.run(
        [sys.executable, "-c", HF_LOAD, str(copy), json.dumps([prompts, completions])],
        cwd=tmp_path, capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = [line for line in proc.stdout.splitlines() if line.startswith('{"scores"')]
    assert result, proc.stdout[-2000:] + proc.stderr[-2000:]
    got = json.loads(result[-1])
    assert got["class"] == "IRLRewardModel"
    np.testing.assert_allclose(got["scores"], pipeline_scores, atol=1e-6, rtol=0)
    if pooling == "mean":
        return
    # the frozen shard is shared by hard link when irl_features wrote one; a mismatched shard is refused
    assert frozen.exists()
    linked, _ = run(irl_inputs, "hf_linked", frozen_shard=frozen)
    assert (irl_inputs["tmp"] / "hf_linked" / "reward_model" / FROZEN_SHARD).stat().st_ino == frozen.stat().st_ino


# ------------------------------------------------------------------------------------------------ pooling
def test_completion_starts_follow_the_prompt_and_the_left_cut(tiny_model_dir: Path) -> None:
    lm, tok = load_causal_lm(tiny_model_dir)
    model = RewardModel(lm, tok, trainable_layers=1, max_length=64, pooling="mean")
    prompt, completion = "the garden is", " lovely in spring"
    (start,) = model.completion_starts([prompt + completion], [len(prompt)])
    ids = model.encode([prompt + completion])[0]
    assert 0 < start < len(ids)
    assert tok.decode(ids[:start]) == prompt and tok.decode(ids[start:]) == completion
    # cut from the left to 4 tokens: the completion keeps its tokens, the start moves with the cut
    short = RewardModel(lm, tok, trainable_layers=1, max_length=4, pooling="mean")
    (cut_start,) = short.completion_starts([prompt + completion], [len(prompt)])
    assert cut_start == max(0, start - (len(ids) - 4))
    # an empty completion starts past the last token; a whole text without prompt at 0
    assert model.completion_starts([prompt, prompt], [len(prompt), 0]) == [len(model.encode([prompt])[0]), 0]


def test_mean_pooling_equals_the_mean_over_the_completion_by_hand(tiny_model_dir: Path) -> None:
    """Mean pooling = the head on the average of the final hidden states (a plain forward pass of the LM) over the
    completion's tokens; with an empty completion it falls back to the last token, i.e. to last pooling."""
    lm, tok = load_causal_lm(tiny_model_dir)
    torch.manual_seed(0)
    model = RewardModel(lm, tok, trainable_layers=1, max_length=64, pooling="mean")
    prompts, completions = ["the garden is", "you are a"], [" lovely in spring today", " stupid"]
    texts = [p + c for p, c in zip(prompts, completions, strict=True)]
    got = model.score_texts(texts, batch_size=2, prompt_chars=[len(p) for p in prompts])
    starts = model.completion_starts(texts, [len(p) for p in prompts])
    expected, magnitude, depth = [], 0.0, 0
    for text, start in zip(texts, starts, strict=True):
        with torch.no_grad():
            hidden = lm(**tok([text], return_tensors="pt", add_special_tokens=False), output_hidden_states=True)
            final = hidden.hidden_states[-1][0]
            expected.append(model.head(final[start:].mean(0, keepdim=True))[0])
            normed = model.head.norm(final).abs()
            magnitude = max(magnitude, float((normed @ model.head.linear.weight.abs().T).max()))
        depth = max(depth, network_depth(lm.config, final.shape[0]) + final.shape[0])  # + the mean's sum
    assert_fp32_sums_close(got, torch.stack(expected), depth, magnitude + float(model.head.linear.bias.detach().abs()))
    last = RewardModel(lm, tok, trainable_layers=1, max_length=64, pooling="last")
    last.head.load_state_dict(model.head.state_dict())
    assert not torch.allclose(got, last.score_texts(texts, batch_size=2))  # the pooling matters
    empty = model.score_texts([prompts[0]], batch_size=1, prompt_chars=[len(prompts[0])])
    assert torch.equal(empty, last.score_texts([prompts[0]], batch_size=1))  # same blocks, same shapes
    with pytest.raises(ValueError, match="prompt length"):
        model.score_texts(texts, batch_size=2)


def test_mean_pooling_trains_and_round_trips(irl_inputs: dict) -> None:
    metrics, out = run(irl_inputs, "mean_pooling", pooling="mean")
    assert metrics["val_pair_accuracy"].iloc[1:].max() == 1.0
    reward = load_reward_model(out / "reward_model", 32)
    assert reward.model.pooling == "mean"
    assert_scores_as_recorded(reward, out, irl_inputs["heldout"])
    # the same text split elsewhere is another (prompt, completion): scored (and cached) apart. A short text, so the
    # prompt survives the left cut to max_length (every held-out text is longer: both splits would pool the same tokens)
    prompt, completion = "Prompt 1:", " you are lovely in spring"
    assert reward.model.completion_starts([prompt + completion], [len(prompt)])[0] > 0
    assert reward.score([prompt], [completion])[0] != reward.score([""], [prompt + completion])[0]


# ------------------------------------------------------------------------------------------------ pair labels
def test_pair_orientation_by_hand(irl_inputs: dict) -> None:
    store = FeatureStore(irl_inputs["features"])
    roles, n = store.state["roles"], len(store.state["roles"]["expert"])
    assert (pair_orientation("expert", store, None) == 1).all()
    gt_diff = store.gt(roles["expert"])[0] - store.gt(roles["non_expert"])[0]
    np.testing.assert_array_equal(pair_orientation("gt", store, None), np.sign(gt_diff))
    lr = pd.DataFrame({"prompt_id": store.state["pair_prompt_ids"], "expert_log_ratio": np.arange(n) - 5.0,
                       "non_expert_log_ratio": np.zeros(n)})  # fmt: skip
    np.testing.assert_array_equal(pair_orientation("log_ratio", store, lr), np.sign(np.arange(n) - 5.0))
    with pytest.raises(ValueError, match="other demonstration pairs"):
        pair_orientation("log_ratio", store, lr.iloc[::-1])
    with pytest.raises(ValueError, match="needs the pairs' log-ratios"):
        pair_orientation("log_ratio", store, None)
    with pytest.raises(FloatingPointError, match="not finite"):
        pair_orientation("log_ratio", store, lr.assign(expert_log_ratio=np.nan))


def test_pair_labels_orient_training(irl_inputs: dict, tmp_path: Path) -> None:
    """log_ratio labels that agree with the expert everywhere train exactly the paper's model (the same
    computation); labels that prefer the non-expert everywhere train a reward that ranks the other way."""
    store = FeatureStore(irl_inputs["features"])
    n = len(store.state["pair_prompt_ids"])
    agree, disagree = tmp_path / "agree.parquet", tmp_path / "disagree.parquet"
    base = pd.DataFrame({"prompt_id": store.state["pair_prompt_ids"], "non_expert_log_ratio": np.zeros(n)})
    base.assign(expert_log_ratio=1.0).to_parquet(agree)
    base.assign(expert_log_ratio=-1.0).to_parquet(disagree)
    paper, paper_out = run(irl_inputs, "labels_expert")
    same, same_out = run(irl_inputs, "labels_agree", pair_log_ratio=agree, pair_labels="log_ratio")
    flipped, flipped_out = run(irl_inputs, "labels_disagree", pair_log_ratio=disagree, pair_labels="log_ratio")
    pd.testing.assert_frame_equal(
        pd.read_parquet(paper_out / "rewards.parquet"), pd.read_parquet(same_out / "rewards.parquet")
    )
    assert flipped["val_pair_accuracy"].iloc[1:].max() == 1.0  # it learns the labels it was given
    record = json.loads((flipped_out / "reward_model" / "provenance.json").read_text())
    assert record["n_train_pairs_flipped"] == record["n_train_pairs"] > 0
    reward = load_reward_model(flipped_out / "reward_model", 32)
    scores = reward(["Prompt 0:"] * 2, [f" {BENIGN[0]}", f" {TOXIC[0]}"])
    assert scores[0] < scores[1]  # the non-expert's kind of completion now scores higher
