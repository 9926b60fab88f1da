"""The benchmarks read their settings through the pipeline's loader (``lib.config.load_config``): defaults come from
the config, a renamed or moved key fails loudly, and the stage's own cross-key checks reject a bad command line.
No training: only argument parsing and FLOP counting on meta tensors (shapes, no arithmetic)."""

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from unittest import mock

import pytest
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from conftest import REPO
from workflow_scripts.lib.config import ConfigError, load_config, ppo_problems

BENCHMARKS = REPO / "benchmarks"
PAPER_70M = REPO / "config" / "paper-70m.yaml"
TINY_ARCH = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)


def load_script(name: str) -> ModuleType:
    """A benchmark script as a module (its siblings ``machine``/``config_options`` resolve from benchmarks/); the
    environment it sets at import (offline hub flags) is restored afterwards."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.append(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    with mock.patch.dict(os.environ):
        spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu_hours() -> ModuleType:
    return load_script("gpu_hours")


@pytest.fixture(scope="module")
def ppo_vs_trl() -> ModuleType:
    return load_script("ppo_vs_trl")


def configfile(tmp_path: Path, name: str, values: dict, base: Path | None = None) -> Path:
    """``values`` merged over ``base`` (a configfile) section by section, written to ``tmp_path/name``."""
    config = yaml.safe_load(base.read_text()) if base else {}
    for section, sub in values.items():
        config[section] = {**config.get(section, {}), **sub} if isinstance(sub, dict) else sub
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


# ============================================================================================ gpu_hours.py
def test_gpu_hours_upper_bound_is_the_configs_prompt_cap(gpu_hours: ModuleType, tmp_path: Path) -> None:
    paper = load_config(PAPER_70M)
    capped = load_config(configfile(tmp_path, "cap.yaml", {"data": {"max_prompt_tokens": 200}}, base=PAPER_70M))
    bound = gpu_hours.upper_bound_prompts(capped)
    assert (bound["texts"], bound["rtp"]) == (200, 200)
    assert "data.max_prompt_tokens" in bound["source"]
    at_cap = gpu_hours.estimate(capped, bound)
    at_paper_cap = gpu_hours.estimate(paper, gpu_hours.upper_bound_prompts(paper))  # 896
    assert at_paper_cap["prompt"]["texts"] == paper["data"]["max_prompt_tokens"] == 896
    for stage in ("rlhf", "demonstrations", "irl_rlhf", "evaluate"):  # every stage that reads prompts
        assert at_cap["stages"][stage]["dense"] < at_paper_cap["stages"][stage]["dense"]
    # the cap reaches the FLOPs only as the prompt length: the same computation at a given 200 tokens
    given = gpu_hours.estimate(paper, gpu_hours.given_prompts(paper, 200))
    assert given["stages"] == at_cap["stages"]


def test_gpu_hours_prices_rtp_prompts_at_their_measured_length(gpu_hours: ModuleType) -> None:
    """The shipped real RTP prompts are single sentences: their measured mean is far below the cap, the data set's
    prompts stay at the cap, and only the stage that reads RTP prompts (evaluate) costs less than the upper bound."""
    paper = load_config(PAPER_70M)
    measured = gpu_hours.shipped_rtp_prompts(paper)
    assert 5 < measured["rtp"] < 60 and measured["texts"] == paper["data"]["max_prompt_tokens"]
    assert "313 RTP challenging prompts" in measured["source"]
    at_measured = gpu_hours.estimate(paper, measured)["stages"]
    at_bound = gpu_hours.estimate(paper, gpu_hours.upper_bound_prompts(paper))["stages"]
    assert at_measured["evaluate"]["dense"] < at_bound["evaluate"]["dense"]
    assert {k: v for k, v in at_measured.items() if k != "evaluate"} == {
        k: v for k, v in at_bound.items() if k != "evaluate"
    }


def test_gpu_hours_fails_loudly_on_a_moved_key(gpu_hours: ModuleType, tmp_path: Path) -> None:
    """The key the script used to read (``rlhf.max_prompt_tokens``, now ``data.max_prompt_tokens``) is an error."""
    stale = configfile(tmp_path, "stale.yaml", {"rlhf": {"max_prompt_tokens": 64}}, base=PAPER_70M)
    with pytest.raises(ConfigError, match=r"rlhf.*'max_prompt_tokens' was unexpected"):
        gpu_hours.main(["--configs", str(stale)])


def test_gpu_hours_decode_count_equals_every_step_and_generate(gpu_hours: ModuleType) -> None:
    """The two-step extrapolation of the decode FLOPs equals counting every cached step, and prefill + decode equal
    the FLOPs of ``model.generate`` itself on the CPU (eager attention). FLOP counts are integers far below 2**53,
    so the float sums are exact: equality, not a tolerance."""
    flops = gpu_hours.SequenceFlops(TINY_ARCH)
    for p, t in [(5, 2), (7, 9), (30, 17)]:
        assert flops.generate(p, t) == flops.generate(p, t, every_step=True)
    torch.manual_seed(0)
    cpu = GPTNeoXForCausalLM(
        GPTNeoXConfig(vocab_size=50304, rotary_pct=0.25, attn_implementation="eager", **TINY_ARCH)
    ).eval()
    ids = torch.randint(0, 50000, (1, 7))
    with FlopCounterMode(display=False) as counter:
        cpu.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=9, min_new_tokens=9, do_sample=False,
                     pad_token_id=0)  # fmt: skip
    assert sum(flops.generate(7, 9)) == counter.get_total_flops()


def test_gpu_hours_measured_prompts_are_cut_at_the_cap(
    gpu_hours: ModuleType, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Measured lengths: the config's own prompts, tokenised and cut as the pipeline cuts them."""
    cfg = load_config()  # the shipped data files; texts split at their middle word
    measured = gpu_hours.measured_prompts(cfg, str(tiny_model_dir))
    assert measured["source"].startswith("measured")
    assert 4 < measured["texts"] <= cfg["data"]["max_prompt_tokens"]
    assert 4 < measured["rtp"] <= cfg["data"]["max_prompt_tokens"]
    cut = load_config(configfile(tmp_path, "cut.yaml", {"data": {"max_prompt_tokens": 4}}))
    at_cut = gpu_hours.measured_prompts(cut, str(tiny_model_dir))
    assert at_cut["texts"] <= 4 and at_cut["rtp"] <= 4


# ============================================================================================ ppo_vs_trl.py
def test_ppo_vs_trl_defaults_come_from_the_config(ppo_vs_trl: ModuleType, tmp_path: Path) -> None:
    default = load_config()
    args = ppo_vs_trl.parse_args([])
    assert args.num_rollouts == default["rlhf"]["num_rollouts"]
    assert args.kl_coef == default["rlhf"]["init_kl_coef"]
    assert args.max_prompt_tokens == default["data"]["max_prompt_tokens"]

    changed = configfile(
        tmp_path,
        "ppo.yaml",
        {"rlhf": {"num_rollouts": 48, "batch_size": 8, "ppo_epochs": 3}, "data": {"max_prompt_tokens": 77}},
    )
    args = ppo_vs_trl.parse_args(["--config", str(changed)])
    assert (args.num_rollouts, args.batch_size, args.ppo_epochs, args.max_prompt_tokens) == (48, 8, 3, 77)
    assert (args.ppo.num_rollouts, args.ppo.batch_size, args.ppo.max_prompt_tokens) == (48, 8, 77)
    assert args.ppo.chunk_size == 48  # the comparison's fix: all rollouts in one generate call
    args = ppo_vs_trl.parse_args(["--config", str(changed), "--num-rollouts", "16"])  # the command line wins
    assert (args.num_rollouts, args.ppo.num_rollouts, args.batch_size) == (16, 16, 8)


def test_ppo_vs_trl_help_names_the_config_keys(ppo_vs_trl: ModuleType, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        ppo_vs_trl.parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    rlhf = load_config()["rlhf"]
    assert f"default: rlhf.num_rollouts = {rlhf['num_rollouts']}" in out
    assert f"default: rlhf.init_kl_coef = {rlhf['init_kl_coef']}" in out


def test_ppo_vs_trl_rejects_rollouts_not_a_multiple_of_the_batch(
    ppo_vs_trl: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    batch = load_config()["rlhf"]["batch_size"]
    with pytest.raises(SystemExit):
        ppo_vs_trl.parse_args(["--num-rollouts", str(batch + 1)])
    (expected,) = ppo_problems({"num_rollouts": batch + 1, "batch_size": batch}, "rlhf")
    assert expected in capsys.readouterr().err
    bad = configfile(tmp_path, "bad.yaml", {"rlhf": {"num_rollouts": 30, "batch_size": 16}})
    with pytest.raises(ConfigError, match=r"rlhf.num_rollouts \(30\) must be a multiple of rlhf.batch_size \(16\)"):
        ppo_vs_trl.parse_args(["--config", str(bad)])


# ============================================================================================ generation.py
def test_generation_benchmark_defaults_come_from_the_evaluation_config(tmp_path: Path) -> None:
    generation = load_script("generation")
    default = load_config()
    args = generation.parse_args([])
    assert (args.n_rtp, args.k, args.greedy_tokens) == (
        default["evaluation"]["rtp"]["n_prompts"], default["evaluation"]["rtp"]["k"],
        default["evaluation"]["jigsaw"]["max_new_tokens"],
    )  # fmt: skip
    changed = configfile(tmp_path, "eval.yaml", {"evaluation": {"rtp": {"k": 3, "top_p": 0.5}}})
    args = generation.parse_args(["--config", str(changed)])
    assert (args.k, args.top_p, args.max_prompt_tokens) == (3, 0.5, default["data"]["max_prompt_tokens"])
