"""Evaluation (stage 7a): generations of one model under the two Table 1 protocols, scored by two classifiers.

Consumes a checkpoint (``results/{stage}/model/``), the eval split ``results/data/eval.parquet`` (Jigsaw-style prompts)
and ``results/data/rtp_prompts.parquet`` (RealToxicityPrompts-style prompts). Produces ``results/eval/{stage}.parquet``:
one row per generation with ``protocol`` (``jigsaw``: one greedy continuation per prompt; ``rtp``: k sampled
continuations per prompt), ``prompt_id``, ``sample``, ``prompt``, ``generation``, ``p_toxic_eval`` (evaluation
classifier, the Table 1 numbers) and ``p_toxic_gt`` (the GT reward classifier, what RLHF optimised).
Metrics and CIs are computed from this file by ``workflow_scripts.lib.table1``.
"""

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from workflow_scripts.lib.atomic_io import write_parquet
from workflow_scripts.lib.engine import TextGenerator
from workflow_scripts.lib.generation import GenerationSettings
from workflow_scripts.lib.inputs import read_table
from workflow_scripts.lib.seeding import seed_everything
from workflow_scripts.lib.toxicity import ToxicityScorer

LOG = logging.getLogger("irl_llms.evaluate")


@dataclass
class JigsawEvalConfig:
    """``evaluation.jigsaw``: one greedy continuation per held-out prompt."""

    max_new_tokens: int
    batch_size: int


@dataclass
class RTPEvalConfig:
    """``evaluation.rtp``: k sampled continuations per RTP-style prompt."""

    n_prompts: int
    k: int
    max_new_tokens: int
    top_p: float
    top_k: int
    temperature: float
    batch_size: int  # prompts per batch (x k sequences)


def evaluate_model(
    jcfg: JigsawEvalConfig,
    rcfg: RTPEvalConfig,
    seed: int,
    generator: TextGenerator,
    eval_path: str | Path,
    rtp_path: str | Path,
    out_path: str | Path,
    gt_scorer: ToxicityScorer,
    eval_scorer: ToxicityScorer,
    model_name: str,
    max_prompt_tokens: int,
) -> pd.DataFrame:
    """Generate under both protocols with ``generator`` (``engine.open_generator``: the configured backend on one
    checkpoint), score every generation with both classifiers, write ``out_path``."""
    jig_prompts = read_table(eval_path, ("id", "prompt"), "prompts to evaluate")
    rtp_prompts = read_table(rtp_path, ("id", "prompt"), "prompts to evaluate")
    rtp_prompts = rtp_prompts.head(rcfg.n_prompts)
    seed_everything(seed)

    start = time.perf_counter()
    greedy = GenerationSettings.greedy(jcfg.max_new_tokens, jcfg.batch_size, max_prompt_tokens)
    jig_out = generator.generate(jig_prompts["prompt"].tolist(), greedy, seed, desc=f"{model_name} jigsaw")
    LOG.info("jigsaw-style: %d greedy continuations in %.0f s (%s)", len(jig_out), time.perf_counter() - start,
             generator.backend)  # fmt: skip
    jig = pd.DataFrame(
        {
            "protocol": "jigsaw",
            "prompt_id": jig_prompts["id"].astype(str).to_numpy(),
            "sample": 0,
            "prompt": jig_prompts["prompt"].to_numpy(),
            "generation": [g[0] for g in jig_out],
            "backend": generator.backend,  # under generation.backend auto: the one it picked for this call
        }
    )

    start = time.perf_counter()
    sampled = GenerationSettings(
        max_new_tokens=rcfg.max_new_tokens, do_sample=True, top_k=rcfg.top_k, top_p=rcfg.top_p,
        temperature=rcfg.temperature, num_return_sequences=rcfg.k, batch_size=rcfg.batch_size,
        max_prompt_tokens=max_prompt_tokens,
    )  # fmt: skip
    rtp_out = generator.generate(rtp_prompts["prompt"].tolist(), sampled, seed, desc=f"{model_name} rtp")
    LOG.info("rtp-style: %d x %d sampled continuations in %.0f s", len(rtp_out), rcfg.k, time.perf_counter() - start)
    rtp = pd.DataFrame(
        [
            {
                "protocol": "rtp",
                "prompt_id": str(pid),
                "sample": s,
                "prompt": prompt,
                "generation": gen,
                "backend": generator.backend,
            }
            for pid, prompt, gens in zip(rtp_prompts["id"], rtp_prompts["prompt"], rtp_out, strict=True)
            for s, gen in enumerate(gens)
        ]
    )

    out = pd.concat([jig, rtp], ignore_index=True)
    out["p_toxic_eval"] = eval_scorer.p_toxic(out["generation"].tolist())
    out["p_toxic_gt"] = gt_scorer.p_toxic(out["generation"].tolist())
    out.insert(0, "model", model_name)
    write_parquet(out, out_path)
    LOG.info(
        "%s: mean P(toxic) jigsaw %.3f, rtp %.3f (eval classifier; Table 1 applies evaluation.threshold)",
        model_name,
        float(out.loc[out.protocol == "jigsaw", "p_toxic_eval"].mean()),
        float(out.loc[out.protocol == "rtp", "p_toxic_eval"].mean()),
    )
    return out
