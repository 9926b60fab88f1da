"""Device and numerics (compute.device / compute.precision): every mixed-precision path runs on the CPU too."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import PROMPTS, length_reward, tiny_cfg
from workflow_scripts.lib.compute import ComputeConfig, DeviceUnavailable, Precision
from workflow_scripts.lib.config import from_config
from workflow_scripts.lib.lm import load_causal_lm, load_lm
from workflow_scripts.lib.ppo import PPOTrainer


def test_fp32_step_is_the_plain_step() -> None:
    torch.manual_seed(0)
    a = torch.nn.Linear(4, 1)
    b = torch.nn.Linear(4, 1)
    b.load_state_dict(a.state_dict())
    x, y = torch.randn(8, 4), torch.randn(8, 1)
    opt_a, opt_b = torch.optim.AdamW(a.parameters(), lr=0.1), torch.optim.AdamW(b.parameters(), lr=0.1)
    for _ in range(3):
        loss = ((a(x) - y) ** 2).mean()
        loss.backward()
        norm_a = float(torch.nn.utils.clip_grad_norm_(list(a.parameters()), 0.5))
        opt_a.step()
        opt_a.zero_grad()
        with Precision("fp32", "cpu").autocast():
            loss_b = ((b(x) - y) ** 2).mean()
        norm_b = Precision("fp32", "cpu").backward_step(loss_b, opt_b, list(b.parameters()), 0.5)
        opt_b.zero_grad()
        assert norm_a == norm_b
    # exact: fp32 "autocast" must be the plain computation itself, op for op
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_unknown_precision_and_missing_cuda_are_named(tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        Precision("fp8", "cpu")
    if not torch.cuda.is_available():  # the whole message: tests/test_devices.py
        with pytest.raises(DeviceUnavailable, match=r"compute.device=cuda but torch.cuda.is_available\(\) is False"):
            load_lm(tiny_model_dir, ComputeConfig(device="cuda", precision="fp32"))


@pytest.mark.parametrize("name", ["bf16", "fp16"])
def test_ppo_iteration_in_mixed_precision(tiny_model_dir: Path, name: str) -> None:
    model, tok, precision = load_lm(tiny_model_dir, ComputeConfig(device="cpu", precision=name))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = PPOTrainer(tiny_cfg(), model, tok, length_reward, PROMPTS, precision)
    batch, _, _, _ = trainer.make_rollouts()
    # the rollout's log-probs were computed in half precision: close to, but not the same as, an fp32 recomputation
    with torch.no_grad():
        _, logprobs32, _ = trainer.policy.forward(dataclasses.replace(batch, bottom_hidden=batch.bottom_hidden.float()))
    mask = batch.response_mask.bool()
    assert 0 < (batch.logprobs[mask] - logprobs32[mask]).abs().max() < 0.1
    log = trainer.train()  # 2 iterations, 8 optimizer steps
    assert log[["loss", "policy_loss", "value_loss"]].abs().lt(1e6).all().all()
    # an infinite gradient norm only comes from an fp16 overflow (that step is skipped and the loss scale lowered)
    assert log["grad_norm"].abs().lt(1e6).all() or (name == "fp16" and precision.scaler.get_scale() < 2.0**16)
    # master weights stay fp32, and exactly the trainable top moved
    assert all(p.dtype == torch.float32 for p in model.parameters())
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    top = ("gpt_neox.layers.2.", "gpt_neox.final_layer_norm", "lm_head")
    assert moved and all(n.startswith(top) for n in moved), moved


def test_sft_in_bf16_trains_fp32_weights(tiny_model_dir: Path) -> None:
    from workflow_scripts.lib.sft import SFTConfig, _train

    model, tok = load_causal_lm(tiny_model_dir)
    texts = pd.read_parquet(Path(__file__).parent.parent / "resources" / "jigsaw_style_texts.parquet")["text"]
    settings = {"num_layers_unfrozen": 1, "learning_rate": 3e-3, "epochs": 2, "batch_size": 8, "max_length": 32}
    cfg = from_config(SFTConfig, "sft", settings)
    _, log, summary = _train(cfg, model, tok, texts.head(48).tolist(), Precision("bf16", "cpu"))
    assert log["loss"].notna().all() and summary["final_loss"] < summary["first_loss"]
    assert all(p.dtype == torch.float32 for p in model.parameters())
