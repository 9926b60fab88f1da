"""Generation throughput of each backend and batch size against ``generate`` at batch 32, in one process.

Run from the repository root on an idle machine (see ``benchmarks/README.md``)::

    .venv/bin/python benchmarks/generation.py --model results/sft/model --out results/benchmarks/generation.json

Workloads (the default run's two evaluation protocols, same model, prompts and settings for every backend):

* greedy: the Jigsaw-style eval prompts (``--greedy-prompts``), ``--greedy-tokens`` new tokens each;
* sampled: the first ``--n-rtp`` RTP-style prompts x ``--k`` continuations, ``--sampled-tokens`` new tokens,
  nucleus ``--top-p`` (batch sizes count prompts; each prompt brings k sequences).

Their settings (lengths, k, sampling, the prompt cut, the seed) default to the config's ``evaluation.jigsaw``,
``evaluation.rtp``, ``evaluation.seed`` and ``data.max_prompt_tokens``: ``config.yaml`` with any ``--config`` files
merged over it, read by the pipeline's ``load_config`` (``--help`` names each key and value).

Backends:

* ``generate (stock)``: ``model.generate(do_sample=True, top_p=...)``, transformers' own sampler (sorts the
  vocabulary every step, draws with ``torch.multinomial``): what the pipeline sampled with before. Greedy decoding
  is the same call as ``transformers``, so it is only run for sampling;
* ``transformers``: ``lib.generation.generate`` (greedy ``generate``; sampling through ``NucleusSampler``; the k
  samples of a prompt share its prefill, ``generation.shared_prefill``);
* ``unshared``: the same with the prefill computed once per sample (what the pipeline did before 2026-12-07);
* ``ctranslate2``: ``lib.engine.CT2Generator`` on a conversion of ``--model`` (converted here, timed, unless
  ``--engine`` names one).

Reported per (backend, workload, batch): seconds, generated tokens (up to and including each stop token), tokens/s,
speed-up over the reference (what the evaluation ran before: ``transformers`` greedy at batch 32, the stock sampler at
8 prompts x k), and efficiency = tokens/s x 2 x parameters / the fp32 2048^2 matmul rate of this process (before and
after, median). Greedy outputs of every backend and batch are compared with the reference token for token; each
difference is explained or not by the logits at its first differing step (tied within ``--tie-tolerance``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from config_options import CONFIG_HELP, add_config_option, load_config_option  # (benchmarks/)
from machine import describe_machine, matmul_gflops, warn_if_busy  # noqa: E402  (benchmarks/machine.py)

from workflow_scripts.lib.compute import ComputeConfig  # noqa: E402
from workflow_scripts.lib.engine import CT2Generator, TransformersGenerator, convert_checkpoint  # noqa: E402
from workflow_scripts.lib.generation import (  # noqa: E402
    Continuation,
    GenerationSettings,
    cut_at_stop,
    encode_prompts,
    generate_ids,
    length_sorted_batches,
)
from workflow_scripts.lib.lm import pad, stop_token_ids  # noqa: E402

Run = Callable[[Sequence[str], GenerationSettings], list[list[Continuation]]]


@torch.inference_mode()
def stock_generate(
    hf: TransformersGenerator, prompts: Sequence[str], s: GenerationSettings
) -> list[list[Continuation]]:
    """The pre-change sampling path: transformers' warpers and ``torch.multinomial`` inside ``generate``."""
    enc = encode_prompts(hf.tokenizer, prompts, s.max_prompt_tokens)
    stop = stop_token_ids(hf.tokenizer, hf.model)
    out: list[list[Continuation]] = [[] for _ in prompts]
    for b, idx in enumerate(length_sorted_batches(enc, s.batch_size)):
        ids, attn = pad([enc[i] for i in idx], hf.tokenizer.pad_token_id, "left")
        torch.manual_seed(b)
        seqs = hf.model.generate(input_ids=ids, attention_mask=attn, do_sample=True, top_k=s.top_k, top_p=s.top_p,
                                 temperature=s.temperature, num_return_sequences=s.num_return_sequences,
                                 max_new_tokens=s.max_new_tokens, eos_token_id=stop,
                                 pad_token_id=hf.tokenizer.pad_token_id)  # fmt: skip
        new = seqs[:, ids.shape[1] :].tolist()
        for r, i in enumerate(j for j in idx for _ in range(s.num_return_sequences)):
            out[i].append(Continuation(enc[i], cut_at_stop(new[r], set(stop))))
    return out


def first_difference_gap(hf: TransformersGenerator, a: Continuation, b: Continuation) -> float:
    """|logit(a's token) - logit(b's token)| under the model at the first step where the two continuations differ."""
    d = next(t for t, (x, y) in enumerate(zip(a.response_ids + [-1], b.response_ids + [-1], strict=False)) if x != y)
    with torch.no_grad():
        logits = hf.model(input_ids=torch.tensor([a.prompt_ids + a.response_ids[:d]])).logits[0, -1]
    ta = a.response_ids[d] if d < len(a.response_ids) else int(logits.argmax())
    tb = b.response_ids[d] if d < len(b.response_ids) else int(logits.argmax())
    return float((logits[ta] - logits[tb]).abs())


def timed(run: Run, prompts: Sequence[str], s: GenerationSettings) -> tuple[list[list[Continuation]], float, int]:
    start = time.perf_counter()
    out = run(prompts, s)
    seconds = time.perf_counter() - start
    return out, seconds, sum(len(c.response_ids) for per in out for c in per)


# Options that are evaluation settings: (flag, config key, type, help); defaults from the loaded config.
CONFIG_OPTIONS = [
    ("--n-rtp", "evaluation.rtp.n_prompts", int, "RTP-style prompts (sampled workload)"),
    ("--k", "evaluation.rtp.k", int, "continuations per RTP-style prompt"),
    ("--greedy-tokens", "evaluation.jigsaw.max_new_tokens", int, "new tokens per greedy continuation"),
    ("--sampled-tokens", "evaluation.rtp.max_new_tokens", int, "new tokens per sampled continuation"),
    ("--top-p", "evaluation.rtp.top_p", float, ""),
    ("--top-k", "evaluation.rtp.top_k", int, ""),
    ("--temperature", "evaluation.rtp.temperature", float, ""),
    ("--max-prompt-tokens", "data.max_prompt_tokens", int, "prompts cut to their last N tokens"),
    ("--seed", "evaluation.seed", int, "sampling seed (per batch: seed + batch index)"),
]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    _, config = load_config_option(argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", nargs="+", default=[], metavar="CONFIGFILE", help=CONFIG_HELP)
    ap.add_argument("--model", default="results/sft/model")
    ap.add_argument("--engine", default=None, help="a convert_engine output of --model (default: convert here)")
    ap.add_argument("--greedy-prompts", default="results/data/eval.parquet")
    ap.add_argument("--rtp-prompts", default="results/data/rtp_prompts.parquet")
    for flag, key, type_, help_ in CONFIG_OPTIONS:
        add_config_option(ap, config, flag, key, type_, help_)
    ap.add_argument("--greedy-batches", type=int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument("--sampled-batches", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--backends", nargs="+", default=["stock", "transformers", "ctranslate2"])
    ap.add_argument("--greedy-reference-batch", type=int, default=32, help="the evaluation's jigsaw batch before")
    ap.add_argument("--sampled-reference-batch", type=int, default=8, help="the evaluation's rtp batch before")
    ap.add_argument("--tie-tolerance", type=float, default=1e-5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="results/benchmarks/generation.json")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    warn_if_busy()
    gflops_before = matmul_gflops()
    hf = TransformersGenerator(args.model, ComputeConfig("cpu", "fp32"))
    n_params = sum(p.numel() for p in hf.model.parameters())
    greedy_prompts = pd.read_parquet(args.greedy_prompts)["prompt"].tolist()
    rtp_prompts = pd.read_parquet(args.rtp_prompts)["prompt"].tolist()[: args.n_rtp]
    runs: dict[str, Run] = {
        "stock": lambda p, s: stock_generate(hf, p, s),
        "transformers": lambda p, s: generate_ids(hf.model, hf.tokenizer, p, s, args.seed, progress=False),
        "unshared": lambda p, s: generate_ids(
            hf.model, hf.tokenizer, p, s, args.seed, progress=False, share_prefill=False
        ),
    }
    conversion_seconds = None
    if "ctranslate2" in args.backends:
        engine_dir = args.engine
        if engine_dir is None:
            engine_dir = Path(tempfile.mkdtemp()) / "ctranslate2"
            start = time.perf_counter()
            convert_checkpoint(args.model, engine_dir)
            conversion_seconds = time.perf_counter() - start
        ct = CT2Generator(engine_dir, torch.device("cpu"), "fp32")
        ct.open()  # loading is not generation: open before timing (a sampled call reopens it, seeded, inside)
        runs["ctranslate2"] = lambda p, s: ct.generate_ids(p, s, args.seed)

    rows, reference = [], {}
    workloads = [("greedy", greedy_prompts, args.greedy_batches), ("sampled", rtp_prompts, args.sampled_batches)]
    for workload, prompts, batches in workloads:
        for backend in [b for b in args.backends if not (b in ("stock", "unshared") and workload == "greedy")]:
            for bs in batches:
                s = GenerationSettings.greedy(args.greedy_tokens, bs, args.max_prompt_tokens)
                if workload == "sampled":
                    s = GenerationSettings(max_new_tokens=args.sampled_tokens, do_sample=True, top_k=args.top_k,
                                           top_p=args.top_p, temperature=args.temperature,
                                           num_return_sequences=args.k, batch_size=bs,
                                           max_prompt_tokens=args.max_prompt_tokens)  # fmt: skip
                out, seconds, tokens = timed(runs[backend], prompts, s)
                row = {"workload": workload, "backend": backend, "batch": bs, "seconds": seconds, "tokens": tokens,
                       "tokens_per_s": tokens / seconds}  # fmt: skip
                ref_backend = "stock" if workload == "sampled" and "stock" in args.backends else "transformers"
                ref_batch = args.greedy_reference_batch if workload == "greedy" else args.sampled_reference_batch
                if backend == ref_backend and bs == ref_batch:
                    reference[workload] = (row["tokens_per_s"], out)
                if workload == "greedy" and workload in reference:
                    ref_out = reference[workload][1]
                    diffs = [(a[0], b[0]) for a, b in zip(out, ref_out, strict=True) if a[0] != b[0]]
                    gaps = [first_difference_gap(hf, a, b) for a, b in diffs]
                    row.update(identical=len(out) - len(diffs), compared=len(out),
                               explained_by_ties=sum(g <= args.tie_tolerance for g in gaps),
                               max_gap=max(gaps, default=0.0))  # fmt: skip
                rows.append(row)
                print(json.dumps(row), flush=True)
    gflops_after = matmul_gflops()
    rate = (gflops_before + gflops_after) / 2
    for row in rows:
        ref = reference.get(row["workload"], (float("nan"), None))[0]
        row["speedup"] = row["tokens_per_s"] / ref
        row["efficiency"] = row["tokens_per_s"] * 2 * n_params / (rate * 1e9)
    result = {
        "machine": describe_machine(), "matmul_gflops_before": gflops_before, "matmul_gflops_after": gflops_after,
        "parameters": n_params, "ctranslate2_conversion_seconds": conversion_seconds, "args": vars(args), "rows": rows,
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    print(f"\n{result['machine']}\nfp32 2048^2 matmul: {gflops_before:.0f} / {gflops_after:.0f} GFLOP/s (before/after)")
    print("| workload | backend | batch | tokens/s | x ref | efficiency | greedy identical (ties) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        same = f"{r['identical']}/{r['compared']} ({r['explained_by_ties']})" if "identical" in r else ""
        print(f"| {r['workload']} | {r['backend']} | {r['batch']} | {r['tokens_per_s']:.0f} | {r['speedup']:.2f} "
              f"| {r['efficiency']:.0%} | {same} |")  # fmt: skip
    return result


if __name__ == "__main__":
    main()
