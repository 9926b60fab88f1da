"""Expected GPU hours per stage of the paper configs, from FLOP counts measured on the CPU.

    .venv/bin/python benchmarks/gpu_hours.py            # prints a markdown table; recorded in benchmarks/README.md

How the estimate is made:
1. Models of the paper's architectures are built from their configurations alone, randomly initialised (no download):
   Pythia-70M / Pythia-410M (``GPTNeoXConfig``) and roberta-base (``RobertaConfig``, the size of both paper
   classifiers, ``s-nlp/roberta_toxicity_classifier`` and ``facebook/roberta-hate-speech-dynabench-r4-target``).
2. ``torch.utils.flop_counter.FlopCounterMode`` counts, by running them on the CPU, the FLOPs of one unit of each kind
   of work the pipeline does, per token:
     * ``decode``: ``model.generate`` of 16 prompts x 64 prompt tokens x 32 new tokens (with KV cache), per new token;
     * ``forward``: a forward pass of the whole LM over 16 x 192 tokens (log-probs, reward-model scores), per token;
     * ``train_top``: forward through the whole LM + backward through the top ``rlhf.num_layers_unfrozen`` blocks and
       the head (the PPO update; our trainer caches the frozen bottom, so this over-counts slightly), per token;
     * ``train_full``: forward + backward through the whole LM (IRL with ``trainable_layers: -1``), per token;
     * ``classify``: a roberta-base classifier forward over 16 x 128 tokens, per token.
3. Each stage's token counts follow from the config (``stage_flops``; the jigsaw-long-2000 set has 2,000 texts, so
   400 held-out eval prompts; prompts are taken at ``rlhf.max_prompt_tokens`` tokens, an upper bound).
4. GPU hours = FLOPs / (peak x utilisation) on one A100 (bf16 dense peak 312 TFLOP/s), with utilisation 0.30 for
   passes over whole sequences (training, scoring) and 0.02 for token-by-token decoding. Decoding small models at
   batch <= 64 is bound by kernel launches rather than FLOPs, so its time is at least one latency floor per sequential
   decoding step: 0.3 ms per transformer block (about 15 kernels of ~20 us), i.e. 1.8 ms per step for Pythia-70M and
   7.2 ms for 410M; the larger of the two estimates is used. Treat the totals as planning figures (x0.5 - x2).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, RobertaConfig, RobertaForSequenceClassification

REPO = Path(__file__).resolve().parent.parent
PYTHIA = {  # the published Pythia architectures
    "70m": dict(hidden_size=512, num_hidden_layers=6, num_attention_heads=8, intermediate_size=2048),
    "410m": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}
PEAK = 312e12  # A100 bf16 dense FLOP/s
UTIL = {"dense": 0.30, "decode": 0.02}
BLOCK_STEP_SECONDS = 3e-4  # decoding latency floor per transformer block per step
N_TEXTS, EVAL_FRACTION = 2000, 0.2  # jaredjoss/jigsaw-long-2000


def count(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def per_token_flops(size: str, unfrozen: int, batch: int = 16) -> dict[str, float]:
    torch.manual_seed(0)
    lm = GPTNeoXForCausalLM(
        GPTNeoXConfig(vocab_size=50304, max_position_embeddings=2048, rotary_pct=0.25, **PYTHIA[size])
    ).eval()
    ids = torch.randint(0, 50000, (batch, 192))
    prompt = ids[:, :64]
    out: dict[str, float] = {}
    with torch.no_grad():
        out["decode"] = count(
            lambda: lm.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=32,
                min_new_tokens=32,
                do_sample=False,
                pad_token_id=0,
            )  # fmt: skip
        ) / (batch * 32)
        out["forward"] = count(lambda: lm(ids)) / ids.numel()
    blocks = lm.gpt_neox.layers
    for p in lm.parameters():
        p.requires_grad_(False)
    for p in [*blocks[len(blocks) - unfrozen :].parameters(), *lm.gpt_neox.final_layer_norm.parameters()]:
        p.requires_grad_(True)

    def step() -> None:
        lm(ids, labels=ids).loss.backward()

    out["train_top"] = count(step) / ids.numel()
    for p in lm.parameters():
        p.requires_grad_(True)
    out["train_full"] = count(step) / ids.numel()
    clf = RobertaForSequenceClassification(RobertaConfig(num_labels=2)).eval()  # roberta-base sizes by default
    cids = torch.randint(5, 50000, (batch, 128))
    with torch.no_grad():
        out["classify"] = count(lambda: clf(cids)) / cids.numel()
    return out


def stage_flops(cfg: dict, f: dict[str, float]) -> dict[str, dict[str, float]]:
    """{stage: {"dense": FLOPs, "decode": FLOPs}} for one config."""
    rl, demo, irl, ev = cfg["rlhf"], cfg["demonstrations"], cfg["irl"], cfg["evaluation"]
    p_tok, t_tok = rl.get("max_prompt_tokens", 64), rl["max_new_tokens"]
    n_eval = round(N_TEXTS * EVAL_FRACTION)
    n_train_texts = N_TEXTS - n_eval
    rollouts = rl["num_rollouts"]
    iterations = math.ceil(rl["total_steps"] / (rl["ppo_epochs"] * math.ceil(rollouts / rl["batch_size"])))
    seq = p_tok + t_tok

    def steps(n_prompts: int, batch: int, new_tokens: int) -> float:
        """Sequential decoding steps to complete ``n_prompts`` in batches."""
        return math.ceil(n_prompts / batch) * new_tokens

    def ppo(extra_reward_forward: bool) -> dict[str, float]:
        dense = (
            rollouts * seq * f["forward"] * 2  # policy + reference log-probs and values (bottom shared: upper bound)
            + rollouts * t_tok * f["classify"] * (0 if extra_reward_forward else 1)  # GT reward on completions
            + rollouts * seq * f["forward"] * (1 if extra_reward_forward else 0)  # learned reward model
            + rl["ppo_epochs"] * rollouts * seq * f["train_top"]
        )
        return {
            "dense": iterations * dense,
            "decode": iterations * rollouts * t_tok * f["decode"],
            "steps": iterations * steps(rollouts, rl["chunk_size"], t_tok),
        }

    n_demo = demo["n_train"] + (demo["n_eval"] or n_eval)
    pairs_train = round(demo["n_train"] * (1 - irl.get("validation_fraction", 0.2)))
    pairs_val = demo["n_train"] - pairs_train
    irl_len = min(irl["max_length"], seq)
    per_epoch = (2 * pairs_train * f["train_full"] + (2 * pairs_val + pairs_val + n_eval) * f["forward"]) * irl_len
    irl_job = irl["epochs"] * per_epoch + n_train_texts * irl_len * f["forward"]
    n_jobs = len(irl["objectives"]) * len(irl["seeds"])
    jig_tokens = n_eval * ev["jigsaw"]["max_new_tokens"]
    rtp_tokens = ev["rtp"]["n_prompts"] * ev["rtp"]["k"] * ev["rtp"]["max_new_tokens"]
    n_stages = len(ev["stages"])
    return {
        "rlhf": ppo(extra_reward_forward=False),
        "demonstrations": {
            "dense": 2 * n_demo * t_tok * f["classify"],
            "decode": 2 * n_demo * t_tok * f["decode"],
            "steps": 2 * steps(n_demo, demo["batch_size"], demo["max_new_tokens"]),
        },
        "irl_features": {"dense": (N_TEXTS + 2 * n_demo) * seq * f["classify"], "decode": 0.0, "steps": 0},
        f"irl_train ({n_jobs} jobs)": {"dense": n_jobs * irl_job, "decode": 0.0, "steps": 0},
        "irl_rlhf": ppo(extra_reward_forward=True),
        f"evaluate ({n_stages} stages)": {
            "dense": n_stages * 2 * (jig_tokens + rtp_tokens) * f["classify"],
            "decode": n_stages * (jig_tokens + rtp_tokens) * f["decode"],
            "steps": n_stages
            * (
                steps(n_eval, ev["jigsaw"]["batch_size"], ev["jigsaw"]["max_new_tokens"])
                + steps(ev["rtp"]["n_prompts"], ev["rtp"]["batch_size"], ev["rtp"]["max_new_tokens"])
            ),
        },
    }


def gpu_hours(work: dict[str, float], n_blocks: int) -> float:
    decode = max(work["decode"] / (PEAK * UTIL["decode"]), work["steps"] * n_blocks * BLOCK_STEP_SECONDS)
    return (work["dense"] / (PEAK * UTIL["dense"]) + decode) / 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["70m", "410m"])
    args = parser.parse_args()
    torch.set_num_threads(2)
    tables = {}
    for size in args.sizes:
        cfg = yaml.safe_load((REPO / "config" / f"paper-{size}.yaml").read_text())
        f = per_token_flops(size, cfg["rlhf"]["num_layers_unfrozen"])
        print(f"pythia-{size} FLOPs per token: " + ", ".join(f"{k} {v / 1e9:.3f} G" for k, v in f.items()))
        tables[size] = stage_flops(cfg, f)
    stages = list(next(iter(tables.values())))
    print("\n| stage | " + " | ".join(f"Pythia-{s}: TFLOP (dense + decode) | GPU h" for s in args.sizes) + " |")
    print("|---|" + "---|---|" * len(args.sizes))
    totals = dict.fromkeys(args.sizes, 0.0)
    for stage in stages:
        cells = []
        for s in args.sizes:
            fl = tables[s][stage]
            h = gpu_hours(fl, PYTHIA[s]["num_hidden_layers"])
            totals[s] += h
            cells.append(f"{fl['dense'] / 1e12:,.0f} + {fl['decode'] / 1e12:,.0f} | {h:.2g}")
        print(f"| {stage} | " + " | ".join(cells) + " |")
    print("| **total** | " + " | ".join(f" | **{totals[s]:.2g}**" for s in args.sizes) + " |")


if __name__ == "__main__":
    main()
