"""Devices: a ``cuda`` job without CUDA stops first with one line, ``auto`` falls back to the CPU and says so, every
model job logs (and every model's provenance records) where it ran, and PPO resume checkpoints open on any device.

No GPU here and torch is never mocked: the CUDA-less error is what this CPU build of torch really raises, and the
resume tests build checkpoints whose tensors are in the states a GPU job leaves them in (the ``meta`` device stands
for a device the CPU RNG cannot be restored from).
"""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import PROMPTS, REPO, length_reward, ppo_job, tiny_cfg
from workflow_scripts.lib.compute import (
    ComputeConfig,
    DeviceUnavailable,
    check_job_device,
    cuda_unavailable_message,
    describe_device,
    format_device,
    pick_device,
)
from workflow_scripts.lib.lm import load_causal_lm, load_lm
from workflow_scripts.lib.ppo import PPOTrainer
from workflow_scripts.lib.ppo_checkpoint import check_loadable, cpu_rng_state, to_cpu

TIMING = ("rollout_seconds", "update_seconds", "rollout_tokens_per_s", "update_samples_per_s", "tokens_per_s")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


# ------------------------------------------------------------------------------------------------ picking a device
@no_cuda
def test_cuda_without_cuda_stops_with_one_line_naming_node_and_build() -> None:
    with pytest.raises(DeviceUnavailable) as err:
        pick_device("cuda")
    message = str(err.value)
    build = torch.version.cuda or "none"
    head = (
        f"compute.device=cuda but torch.cuda.is_available() is False on node {socket.gethostname()} "
        f"(torch {torch.__version__}, CUDA build: {build}): "
    )
    assert message.startswith(head) and "\n" not in message, message
    if torch.version.cuda is None:  # this machine: torch 2.13.0+cpu
        assert (
            message
            == head + "install a CUDA build of torch (conda: envs/pipeline-cuda.yaml) or set compute.device: cpu"
        )
    else:
        assert "run the job on a GPU node" in message


@no_cuda
def test_cuda_without_cuda_stops_before_any_file_is_read(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_model"  # reading it would raise FileNotFoundError
    for load in (
        lambda: load_causal_lm(missing, device="cuda"),
        lambda: load_lm(missing, ComputeConfig("cuda", "bf16")),
    ):
        with pytest.raises(DeviceUnavailable, match="compute.device=cuda"):
            load()


@no_cuda
def test_a_cuda_job_without_cuda_exits_with_one_logged_line(caplog: pytest.LogCaptureFixture) -> None:
    """``check_job_device`` is what a model job runs first (``job.run_snakemake_job``, before the stage's work)."""
    with caplog.at_level(logging.INFO, logger="irl_llms"), pytest.raises(SystemExit) as stop:
        check_job_device({"device": "cuda", "precision": "bf16"})
    assert stop.value.code == 1
    (record,) = caplog.records
    assert record.levelname == "ERROR" and record.exc_info is None  # the reason, not a traceback
    assert record.getMessage() == cuda_unavailable_message("cuda") and "\n" not in record.getMessage()
    assert check_job_device({"device": "cpu", "precision": "fp32"}) == torch.device("cpu")


@no_cuda
def test_auto_falls_back_to_the_cpu_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="irl_llms"):
        assert pick_device("auto") == torch.device("cpu")
    (line,) = [r.getMessage() for r in caplog.records if "auto" in r.getMessage()]
    assert line == (
        f"compute.device=auto: no CUDA device on node {socket.gethostname()} "
        f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); running on the CPU"
    )
    assert pick_device("cpu") == torch.device("cpu")


def test_describe_device_on_the_cpu() -> None:
    info = describe_device("cpu", "bf16", requested="auto")
    assert info == {
        "device": "cpu", "requested_device": "auto", "precision": "bf16", "compute_dtype": "bfloat16",
        "torch": torch.__version__, "cuda_build": torch.version.cuda, "gpu": None, "node": socket.gethostname(),
        "threads": torch.get_num_threads(),
    }  # fmt: skip
    assert json.loads(json.dumps(info)) == info  # goes into provenance.json as it is
    assert describe_device(torch.device("cpu"), "fp32")["compute_dtype"] == "float32"
    assert format_device(info) == (
        f"cpu ({torch.get_num_threads()} threads) [compute.device=auto], bf16 (computes in bfloat16), "
        f"torch {torch.__version__} (CUDA build: {torch.version.cuda or 'none'}), node {socket.gethostname()}"
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_describe_device_on_a_gpu() -> None:
    info = describe_device(pick_device("cuda"), "bf16", requested="cuda")
    assert info["gpu"] == torch.cuda.get_device_name(0) and info["cuda_build"] == torch.version.cuda
    assert info["gpu"] in format_device(info)


# ------------------------------------------------------------------------------------------------ logs and provenance
def test_every_opened_model_logs_where_it_runs(tiny_model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="irl_llms"):
        load_lm(tiny_model_dir, ComputeConfig("cpu", "bf16"))
    expected = format_device(describe_device("cpu", "bf16", requested="cpu"))
    assert f"{tiny_model_dir} on {expected}" in [r.getMessage() for r in caplog.records]


def test_ppo_and_sft_provenance_record_the_resolved_device(tiny_model_dir: Path, tmp_path: Path) -> None:
    from workflow_scripts.lib.config import from_config
    from workflow_scripts.lib.ppo_stage import run_ppo_job
    from workflow_scripts.lib.sft import SFTConfig, train_sft

    rlhf = {"total_steps": 4, "num_rollouts": 8, "chunk_size": 8, "ppo_epochs": 1, "batch_size": 4}
    rlhf |= {"num_layers_unfrozen": 1, "max_new_tokens": 4, "seed": 5}
    smk = ppo_job(rlhf, {"device": "auto", "precision": "bf16"}, tiny_model_dir, tmp_path / "rlhf")
    run_ppo_job(smk, PROMPTS, length_reward, {"kind": "length"}, monitor=length_reward)
    resolved = "cuda:0" if torch.cuda.is_available() else "cpu"
    expected = describe_device(resolved, "bf16", requested="auto")
    assert json.loads((tmp_path / "rlhf" / "model" / "provenance.json").read_text())["compute"] == expected

    texts = pd.read_parquet(REPO / "resources" / "jigsaw_style_texts.parquet")[["text"]].head(16)
    texts.to_parquet(tmp_path / "train.parquet")
    cfg = from_config(SFTConfig, "sft", {"num_layers_unfrozen": 1, "epochs": 1, "batch_size": 8, "max_length": 16})
    record = train_sft(cfg, tiny_model_dir, tmp_path / "train.parquet", tmp_path / "sft", tmp_path / "sft_log.parquet",
                       ComputeConfig("cpu", "fp32"))  # fmt: skip
    assert record["compute"] == describe_device("cpu", "fp32", requested="cpu")
    assert json.loads((tmp_path / "sft" / "provenance.json").read_text())["compute"] == record["compute"]


def test_irl_reward_model_provenance_records_the_resolved_device(
    tiny_model_dir: Path, gt_wheel: Path, tmp_path: Path
) -> None:
    from workflow_scripts.lib.config import from_config
    from workflow_scripts.lib.gt_classifier import GTToxicityClassifier
    from workflow_scripts.lib.irl import IRLConfig, train_irl
    from workflow_scripts.lib.irl_data import build_features
    from workflow_scripts.lib.text_data import split_at_middle_word

    texts = pd.read_parquet(REPO / "resources" / "jigsaw_style_texts.parquet")
    toxic, benign = texts[texts.label == 1]["text"].head(6).tolist(), texts[texts.label == 0]["text"].head(6).tolist()
    demos = pd.DataFrame({"prompt_id": [f"p{i}" for i in range(6)], "prompt": [f"Prompt {i}:" for i in range(6)],
                          "original_output": toxic,
                          "expert": benign, "non_expert": toxic})  # fmt: skip
    demos.to_parquet(tmp_path / "demos.parquet")
    split = pd.DataFrame(
        [split_at_middle_word(t) for t in toxic[:3] + benign[:3]], columns=["prompt", "original_output"]
    )
    split.assign(text=split["prompt"] + split["original_output"]).to_parquet(tmp_path / "texts.parquet")
    features = tmp_path / "features.pt"
    gt = GTToxicityClassifier.from_wheel(gt_wheel)
    texts_path = tmp_path / "texts.parquet"
    build_features(tiny_model_dir, tmp_path / "demos.parquet", texts_path, texts_path, gt, features, 1, 32)
    cfg = from_config(IRLConfig, "irl", {"trainable_layers": 1, "epochs": 1, "batch_size": 4, "max_length": 32},
                      objective="max_margin", seed=0)  # fmt: skip
    out = tmp_path / "irl"
    compute = ComputeConfig("cpu", "bf16")
    train_irl(cfg, tiny_model_dir, features, out / "rm", out / "metrics.parquet", out / "rewards.parquet", compute)
    record = json.loads((out / "rm" / "provenance.json").read_text())
    assert record["compute"] == describe_device("cpu", "bf16", requested="cpu")


# ------------------------------------------------------------------------------------------------ resume on any device
@pytest.fixture(scope="module")
def runs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An uninterrupted 4-iteration PPO run, and the resume checkpoint of the same run killed after 2 iterations."""
    tmp = tmp_path_factory.mktemp("resume")
    cfg = tiny_cfg(total_steps=16)
    model, tok = load_causal_lm(tiny_model_dir)
    straight = PPOTrainer(cfg, model, tok, length_reward, PROMPTS)
    log = straight.train(tmp / "straight")
    model_b, _ = load_causal_lm(tiny_model_dir)
    PPOTrainer(cfg, model_b, tok, length_reward, PROMPTS).train(tmp / "killed", stop_after=2)
    return {"cfg": cfg, "log": log, "state": straight.policy.trainable_state(), "ckpt": tmp / "killed" / "last.pt",
            "head": straight.policy.value_head.state_dict(), "tmp": tmp}  # fmt: skip


def fresh_trainer(tiny_model_dir: Path, runs: dict) -> PPOTrainer:
    model, tok = load_causal_lm(tiny_model_dir)
    return PPOTrainer(runs["cfg"], model, tok, length_reward, PROMPTS)


def assert_reproduces(trainer: PPOTrainer, runs: dict) -> None:
    """Train ``trainer`` (just resumed) to the end: the same weights, value head and log as the uninterrupted run."""
    log = trainer.train()
    assert trainer.step == 16
    state = trainer.policy.trainable_state()
    assert state.keys() == runs["state"].keys() and all(torch.equal(state[k], runs["state"][k]) for k in state)
    assert all(torch.equal(v, trainer.policy.value_head.state_dict()[k]) for k, v in runs["head"].items())
    pd.testing.assert_frame_equal(log.drop(columns=list(TIMING)), runs["log"].drop(columns=list(TIMING)))


def rewrite(runs: dict, name: str, change) -> Path:
    """A copy of the killed run's checkpoint with ``change(state)`` applied."""
    state = torch.load(runs["ckpt"], weights_only=False)
    change(state)
    path = runs["tmp"] / name
    torch.save(state, path)
    return path


def test_checkpoints_are_written_on_the_cpu(runs: dict) -> None:
    state = torch.load(runs["ckpt"], map_location=lambda storage, location: storage, weights_only=False)
    tensors = [v for v in _leaves(state) if isinstance(v, torch.Tensor)]
    assert tensors and all(t.device.type == "cpu" for t in tensors)
    nested = to_cpu({"a": [(torch.ones(2, requires_grad=True), 3)], "b": "text"})
    assert nested["a"][0][0].device.type == "cpu" and not nested["a"][0][0].requires_grad and nested["b"] == "text"


def _leaves(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _leaves(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _leaves(v)
    else:
        yield obj


def test_resume_never_maps_the_checkpoint_onto_the_policy_device(tiny_model_dir: Path, runs: dict) -> None:
    # The bug: load_checkpoint read the file with map_location=<the policy's device>. On a GPU that put the saved CPU
    # RNG state on the GPU and torch.set_rng_state rejected it, after the weights and optimizer were loaded: a job
    # killed at its wall time could never resume. The same happens with any device but the CPU:
    on_device = torch.load(runs["ckpt"], map_location=torch.device("meta"), weights_only=False)
    with pytest.raises(TypeError, match="RNG state must be a torch.ByteTensor"):
        torch.set_rng_state(on_device["torch_rng"])
    # the trainer reads the checkpoint on the CPU, whatever device its policy is on (here: one that holds no data, so
    # any tensor mapped there would fail to restore), and the resumed run is the uninterrupted one
    trainer = fresh_trainer(tiny_model_dir, runs)
    trainer.policy.device = torch.device("meta")
    assert trainer.load_checkpoint(runs["ckpt"]) and trainer.iteration == 2
    trainer.policy.device = next(trainer.policy.model.parameters()).device
    for group in trainer.optimizer.param_groups:  # every optimizer state tensor follows its parameter
        for p in group["params"]:
            for key, value in trainer.optimizer.state[p].items():
                device = torch.device("cpu") if key == "step" else p.device  # AdamW keeps ``step`` on the CPU
                assert value.device == device and (key == "step" or value.dtype == p.dtype), key
    assert_reproduces(trainer, runs)


def test_resume_from_state_in_other_dtypes_reproduces(tiny_model_dir: Path, runs: dict) -> None:
    """RNG state bytes as int64 and the optimizer moments in float64 (exact for fp32 values): load_state_dict and
    cpu_rng_state bring each to what its consumer needs, and the resumed run is still the uninterrupted one."""

    def widen(state: dict) -> None:
        state["torch_rng"] = state["torch_rng"].to(torch.int64)
        for entry in state["optimizer"]["state"].values():
            for key in ("exp_avg", "exp_avg_sq"):
                entry[key] = entry[key].to(torch.float64)

    trainer = fresh_trainer(tiny_model_dir, runs)
    assert trainer.load_checkpoint(rewrite(runs, "wide.pt", widen))
    moments = [s["exp_avg"] for s in trainer.optimizer.state.values()]
    assert moments and all(m.dtype == torch.float32 for m in moments)
    assert_reproduces(trainer, runs)


def _set(*keys, value):
    def change(state: dict) -> None:
        target = state
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value(target[keys[-1]]) if callable(value) else value

    return change


BAD = {
    "rng on a device without data": (_set("torch_rng", value=lambda t: t.to("meta")), "meta device"),
    "rng truncated": (_set("torch_rng", value=lambda t: t[:100]), "not a torch RNG state"),
    "rng not bytes": (_set("torch_rng", value=lambda t: t.to(torch.int64) + 300), "not a vector of bytes"),
    "value head shape": (_set("value_head", "net.2.weight", value=lambda t: t[:, :3]), "value head"),
    "model key missing": (lambda s: s["model"].popitem(), "missing keys"),
    "model dtype": (_set("model", value=lambda m: {k: v.half() for k, v in m.items()}), "expected torch.float32"),
    "optimizer moment on meta": (_set("optimizer", "state", 0, "exp_avg", value=lambda t: t.to("meta")), "meta"),
    "optimizer moment shape": (_set("optimizer", "state", 0, "exp_avg_sq", value=lambda t: t.flatten()[:1]), "shape"),
    "sampler state": (_set("sampler", "bit_generator", value="MT19937"), "MT19937|bit_generator|PCG64"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_checkpoint_raises_and_leaves_the_trainer_as_it_was(tiny_model_dir: Path, runs: dict, case: str) -> None:
    change, match = BAD[case]
    path = rewrite(runs, f"bad_{case.replace(' ', '_')}.pt", change)
    trainer = fresh_trainer(tiny_model_dir, runs)
    before = {
        "weights": trainer.policy.trainable_state(), "head": to_cpu(trainer.policy.value_head.state_dict()),
        "sampler": trainer.sampler.bit_generator.state, "rng": torch.get_rng_state(), "kl": trainer.kl_ctl.value,
    }  # fmt: skip
    with pytest.raises(ValueError, match=match):
        trainer.load_checkpoint(path)
    after = trainer.policy.trainable_state()
    assert all(torch.equal(before["weights"][k], after[k]) for k in after)
    assert all(torch.equal(v, trainer.policy.value_head.state_dict()[k]) for k, v in before["head"].items())
    assert trainer.optimizer.state_dict()["state"] == {} and trainer.iteration == trainer.step == 0
    assert trainer.sampler.bit_generator.state == before["sampler"] and trainer.kl_ctl.value == before["kl"]
    assert torch.equal(torch.get_rng_state(), before["rng"]) and trainer.log_rows == []
    assert trainer.load_checkpoint(runs["ckpt"]) and trainer.iteration == 2  # the good one still loads afterwards


def test_state_checks_by_hand() -> None:
    rng = torch.get_rng_state()
    assert (
        torch.equal(cpu_rng_state(rng.to(torch.int32), "rng"), rng) and cpu_rng_state(rng, "rng").dtype == torch.uint8
    )
    with pytest.raises(ValueError, match="not a vector of bytes"):
        cpu_rng_state(rng.float(), "rng")
    with pytest.raises(ValueError, match="expected a tensor"):
        cpu_rng_state(np.asarray(rng), "rng")
    check_loadable({"w": torch.zeros(2, 3)}, {"w": torch.ones(2, 3)}, "sd")
    with pytest.raises(ValueError, match=r"sd: missing keys \['w'\], unexpected keys \['v'\]"):
        check_loadable({"w": torch.zeros(2, 3)}, {"v": torch.ones(2, 3)}, "sd")
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(ValueError, match="parameter groups do not match"):
        check_loadable(opt, {"state": {}, "param_groups": []}, "opt")
