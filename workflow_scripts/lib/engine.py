"""Generation for frozen checkpoints (evaluation, demonstrations): one interface, two backends (``generation.backend``).

* ``transformers``: ``model.generate`` through ``lib.generation``, the reference path;
* ``ctranslate2``: CTranslate2's generator on a converted copy of the checkpoint. The rule ``convert_engine`` writes
  that copy once per checkpoint (``results/{model}/ctranslate2/``: weights as stored, the tokenizer, ``engine.json``)
  and checks its logits against the checkpoint's before the directory appears.
* ``auto`` (the default): sampled work always on ``transformers`` (the seeded draws the protocol documents, whatever
  the machine); greedy work on whichever of the two a short measurement on this machine found faster
  (``AutoGenerator``). The measurement is cached under ``results/engine/auto/`` per machine, model shape and batch,
  and a conversion made for it under ``results/engine/ctranslate2/`` per checkpoint: caches, never job inputs, so a
  different choice reruns nothing (greedy outputs are the same either way).

Both take the same prompts (cut to ``max_prompt_tokens``), the same length-sorted batches and stop tokens. CTranslate2
filters like transformers' logits processors (temperature, then top-k, then top-p keeping the token that crosses p;
``top_k: 0`` = no top-k), so sampled continuations come from the same per-step distribution through another random
stream (``tests/test_engine.py`` checks the distributions); greedy continuations are token-identical in fp32 except
where two logits tie within float rounding (``benchmarks/generation.py`` counts them on every eval prompt).
Known difference: on an exact tie at the k-th logit transformers keeps every tied token, CTranslate2 exactly k.

On a GPU the engine runs there when the installed CTranslate2 sees one (and supports the precision); otherwise the
job logs one line and generates with ``transformers`` on the job's device: a backend is never swapped silently, and
the device itself is checked as for every model job (``compute.pick_device``).
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from workflow_scripts.lib.atomic_io import atomic_path, write_json
from workflow_scripts.lib.compute import ComputeConfig, pick_device
from workflow_scripts.lib.generation import (
    Continuation,
    GenerationSettings,
    cut_at_stop,
    decode_continuations,
    encode_prompts,
    generate,
    generate_ids,
    length_sorted_batches,
)
from workflow_scripts.lib.lm import load_causal_lm, load_lm, model_fingerprint, prepare_tokenizer, stop_token_ids

LOG = logging.getLogger("irl_llms.engine")

BACKENDS = ("auto", "ctranslate2", "transformers")
AUTO_CACHE = Path("results") / "engine"  # relative to the workflow's working directory, as every job path
AUTO_PROBE_PROMPTS = 64  # prompts (of the job's own) and new tokens the measurement generates with each backend
AUTO_PROBE_TOKENS = 12
COMPUTE_TYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
ENGINE_FILE = "engine.json"
PROBE_TEXT = "The converted model must give the same next-token logits as the checkpoint it came from."
PROBE_TOLERANCE = 1e-3  # max |logit difference| on the probe (fp32 conversions differ by ~1e-5)


@dataclass
class EngineConfig:
    """The ``generation`` section (defaults and docs in config.schema.yaml)."""

    backend: str

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"generation.backend must be one of {BACKENDS}, got {self.backend!r}")


class TextGenerator(Protocol):
    backend: str
    source: str  # the checkpoint the continuations come from

    def generate(
        self, prompts: Sequence[str], settings: GenerationSettings, seed: int, desc: str = "generate"
    ) -> list[list[str]]: ...


# ============================================================================================ conversion
def probe_difference(model: Any, tokenizer: Any, engine: Any) -> float:
    """Max |logit difference| between the checkpoint and a CTranslate2 generator over every position of the probe."""
    ids = tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        ref = model(input_ids=torch.tensor([ids], device=model.device)).logits[0].float().cpu().numpy()
    got = np.asarray(engine.forward_batch([tokenizer.convert_ids_to_tokens(ids)]))[0]  # a float32 engine on the CPU
    return float(np.abs(ref - got).max())


def transformers_converter(model_dir: str | Path) -> Any:
    """CTranslate2's converter for a transformers checkpoint, with the two names transformers 5 renamed that its
    GPT-NeoX (Pythia) loader still reads: ``config.rotary_pct`` (now ``rope_parameters["partial_rotary_factor"]``) and
    the output layer ``embed_out`` (now the model's output embeddings); a tokenizer without an unknown token gets
    EOS's name for it. The logit probe checks the result."""
    from ctranslate2.converters import TransformersConverter

    class Converter(TransformersConverter):
        def load_model(self, model_class: Any, path: str, **kwargs: Any) -> Any:
            model = super().load_model(model_class, path, **kwargs)
            config = model.config
            if config.model_type == "gpt_neox" and not hasattr(config, "rotary_pct"):
                config.rotary_pct = (getattr(config, "rope_parameters", None) or {}).get("partial_rotary_factor", 1.0)
            if config.model_type == "gpt_neox" and not hasattr(model, "embed_out"):
                model.embed_out = model.get_output_embeddings()
            return model

        def load_tokenizer(self, tokenizer_class: Any, path: str, **kwargs: Any) -> Any:
            tokenizer = super().load_tokenizer(tokenizer_class, path, **kwargs)
            if tokenizer.unk_token is None:  # CTranslate2 needs a name for it; generation never emits it
                tokenizer.unk_token = tokenizer.eos_token
            return tokenizer

    return Converter(str(model_dir))


def convert_checkpoint(model_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Convert a checkpoint for CTranslate2 into ``out_dir`` (atomically): ``model.bin`` with the weights as stored
    (no quantization), the prepared tokenizer in ``tokenizer/``, and ``engine.json`` recording the source
    checkpoint's fingerprint, its stop tokens and the probe difference. Raises before anything appears when the
    converted model's logits differ from the checkpoint's by more than ``PROBE_TOLERANCE``."""
    import ctranslate2

    model, tokenizer = load_causal_lm(model_dir, device="cpu")
    with atomic_path(out_dir, is_dir=True) as tmp:
        transformers_converter(model_dir).convert(str(tmp), quantization=None, force=True)
        tokenizer.save_pretrained(tmp / "tokenizer")
        engine = ctranslate2.Generator(str(tmp), device="cpu", compute_type="float32")
        diff = probe_difference(model, tokenizer, engine)
        del engine
        if not diff <= PROBE_TOLERANCE:
            raise ValueError(
                f"CTranslate2 conversion of {model_dir} is not faithful: logits differ by {diff:.3g} "
                f"(> {PROBE_TOLERANCE}) on the probe text; use generation.backend: transformers"
            )
        record = {
            "source": str(model_dir),
            "source_fingerprint": model_fingerprint(model, tokenizer),
            "stop_token_ids": stop_token_ids(tokenizer, model),
            "probe_max_abs_logit_difference": diff,
            "ctranslate2": ctranslate2.__version__,
        }
        write_json(record, tmp / ENGINE_FILE)
    LOG.info("converted %s -> %s (probe logits differ by %.2g)", model_dir, out_dir, diff)
    return record


# ============================================================================================ the two backends
class TransformersGenerator:
    """The reference path: ``model.generate`` (``lib.generation``) on the job's device and precision."""

    backend = "transformers"

    def __init__(self, model_dir: str | Path, compute: ComputeConfig) -> None:
        self.source = str(model_dir)
        self.model, self.tokenizer, self.precision = load_lm(model_dir, compute)

    def generate(
        self, prompts: Sequence[str], settings: GenerationSettings, seed: int, desc: str = "generate"
    ) -> list[list[str]]:
        with self.precision.autocast():
            return generate(self.model, self.tokenizer, prompts, settings, seed=seed, desc=desc)


class CT2Generator:
    """CTranslate2 on a ``convert_checkpoint`` directory. Sampling is seeded by opening a fresh engine after
    ``ctranslate2.set_random_seed(seed)`` (its sampler is seeded on first use), so a sampled call depends only on its
    seed, prompts and settings, never on what ran before."""

    backend = "ctranslate2"

    def __init__(self, engine_dir: str | Path, device: torch.device, precision: str) -> None:
        self.dir = Path(engine_dir)
        record = json.loads((self.dir / ENGINE_FILE).read_text())
        self.source, self.stop_ids = record["source"], [int(i) for i in record["stop_token_ids"]]
        self.tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(str(self.dir / "tokenizer")))
        self.start_token = json.loads((self.dir / "config.json").read_text()).get("bos_token")
        self.options = {
            "device": device.type, "device_index": device.index or 0, "compute_type": COMPUTE_TYPES[precision],
            "intra_threads": torch.get_num_threads() if device.type == "cpu" else 0,
        }  # fmt: skip
        self.engine: Any = None

    def open(self, seed: int | None = None) -> None:
        import ctranslate2

        self.engine = None  # release the previous engine (and its threads) first
        if seed is not None:
            ctranslate2.set_random_seed(seed)
        self.engine = ctranslate2.Generator(str(self.dir), **self.options)

    def decoding_options(self, settings: GenerationSettings) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "max_length": settings.max_new_tokens,  # new tokens only (the prompt is not counted)
            "end_token": self.stop_ids,
            "return_end_token": True,  # keep the stop token, as transformers does
        }
        if settings.do_sample:
            kw.update(sampling_topk=settings.top_k, sampling_topp=settings.top_p,
                      sampling_temperature=settings.temperature)  # fmt: skip
        else:
            kw.update(sampling_topk=1)  # argmax
        return kw

    def run_batch(self, batch: list[list[int]], kw: dict[str, Any]) -> list[list[int]]:
        """New token ids for each prompt. A one-token prompt cannot share a call with longer ones (CTranslate2 then
        echoes the prompts), so those go in a call of their own with ``include_prompt_in_result``, whose results start
        with the prompt token unless it is the model's start (BOS) token."""
        out: list[list[int]] = [[] for _ in batch]
        single = [j for j, ids in enumerate(batch) if len(ids) == 1]
        longer = [j for j, ids in enumerate(batch) if len(ids) > 1]
        for rows, with_prompt in ((single, True), (longer, False)):
            if not rows:
                continue
            tokens = [self.tokenizer.convert_ids_to_tokens(batch[j]) for j in rows]
            results = self.engine.generate_batch(tokens, include_prompt_in_result=with_prompt, **kw)
            for j, tok, res in zip(rows, tokens, results, strict=True):
                echoed = with_prompt and tok[0] != self.start_token
                out[j] = list(res.sequences_ids[0][1:] if echoed else res.sequences_ids[0])
        return out

    def generate_ids(
        self, prompts: Sequence[str], settings: GenerationSettings, seed: int, desc: str = "generate"
    ) -> list[list[Continuation]]:
        encoded = encode_prompts(self.tokenizer, prompts, settings.max_prompt_tokens)
        if settings.do_sample or self.engine is None:
            self.open(seed)
        kw, k, stop = self.decoding_options(settings), settings.num_return_sequences, set(self.stop_ids)
        results: list[list[Continuation]] = [[] for _ in prompts]
        for idx in tqdm(length_sorted_batches(encoded, settings.batch_size), desc=desc, mininterval=5):
            rows = [i for i in idx for _ in range(k)]  # k continuations per prompt, in order
            for i, new in zip(rows, self.run_batch([encoded[i] for i in rows], kw), strict=True):
                results[i].append(Continuation(encoded[i], cut_at_stop(new, stop)))
        return results

    def generate(
        self, prompts: Sequence[str], settings: GenerationSettings, seed: int, desc: str = "generate"
    ) -> list[list[str]]:
        return decode_continuations(self.tokenizer, self.generate_ids(prompts, settings, seed, desc))


def ctranslate2_runs_on(device: torch.device, precision: str) -> str | None:
    """None when CTranslate2 can generate on ``device`` in ``precision``, else why not."""
    import ctranslate2

    if device.type == "cuda" and ctranslate2.get_cuda_device_count() == 0:
        return f"the installed CTranslate2 {ctranslate2.__version__} sees no CUDA device"
    supported = ctranslate2.get_supported_compute_types(device.type, device.index or 0)
    if COMPUTE_TYPES[precision] not in supported:
        return f"CTranslate2 has no {COMPUTE_TYPES[precision]} on {device} (it has {sorted(supported)})"
    return None


# ============================================================================================ auto
def machine_key(model: Any, device: torch.device, precision: str, batch_size: int) -> dict[str, Any]:
    """What the faster greedy backend depends on: the processor (model name and torch's vector capability) or GPU,
    threads, precision, library versions, the model's shape and the batch size."""
    import ctranslate2

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    c = model.config
    return {
        "device": device.type, "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": cpu, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
        "precision": precision, "torch": torch.__version__, "ctranslate2": ctranslate2.__version__,
        "model": [c.model_type, c.hidden_size, c.num_hidden_layers, c.vocab_size], "batch_size": batch_size,
    }  # fmt: skip


class AutoGenerator:
    """``generation.backend: auto``. Sampled calls: ``transformers``. Greedy calls: the backend recorded for this
    machine in ``results/engine/auto/<key>.json``; on first use, both generate the job's first
    ``AUTO_PROBE_PROMPTS`` prompts (``AUTO_PROBE_TOKENS`` new tokens, after a warm-up call each) and the faster one
    is recorded, CTranslate2 only when its tokens equal ``generate``'s on every probe prompt. Each call's choice and
    its measurement go to the job's log and to ``choices``; ``backend`` names the last call's, which the outputs
    record per row."""

    def __init__(self, model_dir: str | Path, compute: ComputeConfig, cache: str | Path = AUTO_CACHE) -> None:
        self.hf = TransformersGenerator(model_dir, compute)
        self.source, self.cache, self.precision_name = self.hf.source, Path(cache), compute.precision
        self.device = pick_device(compute.device)
        self.backend = "auto"  # until a call picks one: then "auto: <backend>" for the last call
        self.choices: list[dict[str, Any]] = []
        self.ct2: CT2Generator | None = None

    def engine(self) -> CT2Generator:
        """This checkpoint converted for CTranslate2, from the cache (converted into it on first use)."""
        if self.ct2 is None:
            out = self.cache / "ctranslate2" / model_fingerprint(self.hf.model, self.hf.tokenizer)
            if not (out / ENGINE_FILE).exists():
                convert_checkpoint(self.source, out)
            self.ct2 = CT2Generator(out, self.device, self.precision_name)
        return self.ct2

    def measure(self, prompts: Sequence[str], settings: GenerationSettings) -> dict[str, Any]:
        """Tokens/s of both backends on the probe, and whether their tokens agree."""
        probe = list(prompts[:AUTO_PROBE_PROMPTS])
        s = GenerationSettings.greedy(min(settings.max_new_tokens, AUTO_PROBE_TOKENS), settings.batch_size,
                                      settings.max_prompt_tokens)  # fmt: skip
        warm = GenerationSettings.greedy(2, settings.batch_size, settings.max_prompt_tokens)
        runs: dict[str, Any] = {
            "transformers": lambda p, g: generate_ids(self.hf.model, self.hf.tokenizer, p, g, seed=0, progress=False),
            "ctranslate2": lambda p, g: self.engine().generate_ids(p, g, seed=0),
        }
        rates, tokens = {}, {}
        for name, run in runs.items():
            with self.hf.precision.autocast():
                run(probe[:2], warm)
                start = time.perf_counter()
                out = run(probe, s)
                seconds = time.perf_counter() - start
            tokens[name] = [c[0].response_ids for c in out]
            rates[name] = sum(len(t) for t in tokens[name]) / max(seconds, 1e-9)
        identical = sum(a == b for a, b in zip(tokens["transformers"], tokens["ctranslate2"], strict=True))
        faster = max(rates, key=rates.get)  # type: ignore[arg-type]
        choice = faster if identical == len(probe) else "transformers"
        return {"tokens_per_s": rates, "identical": f"{identical}/{len(probe)}", "choice": choice,
                "probe": {"prompts": len(probe), "max_new_tokens": s.max_new_tokens}}  # fmt: skip

    def greedy_backend(self, prompts: Sequence[str], settings: GenerationSettings) -> dict[str, Any]:
        """The recorded choice for this machine (measured and recorded first if there is none)."""
        why_not = ctranslate2_runs_on(self.device, self.precision_name)
        if why_not is not None:
            return {"choice": "transformers", "why": why_not}
        key = machine_key(self.hf.model, self.device, self.precision_name, settings.batch_size)
        path = self.cache / "auto" / f"{hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]}.json"
        if path.exists():
            record = json.loads(path.read_text())
            if record.get("choice") in ("transformers", "ctranslate2"):
                return {**record, "cached": str(path)}
            LOG.warning("generation.backend=auto: %s holds no valid choice; measuring again", path)
        record = {"machine": key, **self.measure(prompts, settings)}
        write_json(record, path)
        return {**record, "measured_now": str(path)}

    def generate(
        self, prompts: Sequence[str], settings: GenerationSettings, seed: int, desc: str = "generate"
    ) -> list[list[str]]:
        if settings.do_sample:
            decision: dict[str, Any] = {"choice": "transformers", "why": "sampled work stays on transformers"}
        else:
            decision = self.greedy_backend(prompts, settings)
        self.backend = f"auto: {decision['choice']}"
        self.choices.append({"call": desc, **decision})
        LOG.info("generation.backend=auto, %s (%s): %s", desc, "sampled" if settings.do_sample else "greedy",
                 json.dumps(decision, sort_keys=True))  # fmt: skip
        if decision["choice"] == "ctranslate2":
            return self.engine().generate(prompts, settings, seed, desc)
        self.release_engine()
        return self.hf.generate(prompts, settings, seed, desc)

    def release_engine(self) -> None:
        """Drop the CTranslate2 engine (its weights and its thread pool) before ``transformers`` generates: left
        loaded after the probe, it slowed the greedy call that followed by 24% (``benchmarks/run_tail.py``)."""
        if self.ct2 is not None:
            self.ct2.engine = None
            self.ct2 = None
            gc.collect()


def open_generator(
    cfg: EngineConfig, model_dir: str | Path, engine_dir: str | Path | None, compute: ComputeConfig
) -> TextGenerator:
    """The configured backend for one checkpoint (``engine_dir``: its ``convert_engine`` output)."""
    if cfg.backend == "transformers":
        return TransformersGenerator(model_dir, compute)
    if cfg.backend == "auto":
        return AutoGenerator(model_dir, compute)
    device = pick_device(compute.device)
    why_not = ctranslate2_runs_on(device, compute.precision)
    if why_not is not None:
        LOG.warning("generation.backend=ctranslate2: %s; generating with transformers instead", why_not)
        return TransformersGenerator(model_dir, compute)
    if engine_dir is None:
        raise ValueError(f"generation.backend=ctranslate2 needs the converted checkpoint of {model_dir}")
    LOG.info("generating with CTranslate2 from %s on %s (%s)", engine_dir, device, COMPUTE_TYPES[compute.precision])
    return CT2Generator(engine_dir, device, compute.precision)
