"""Shared prompt states against one pass per text, one after the other in one process: the frozen-bottom IRL
features and one IRL training epoch (forward + backward over every training pair, as ``irl_train`` does).

Run from the repository root on an idle machine, after a default run (see ``benchmarks/README.md``)::

    .venv/bin/python benchmarks/prefix_sharing.py --run . --out results/benchmarks/prefix_sharing.json

Features: every text of ``results/irl/features.pt`` from its token ids, through the frozen bottom of the IRL
backbone, packed by prompt (``irl_data.packed_bottom``) and one text a row (length-sorted batches of 32, what
the rule did before). Epoch: the features' ``trainable_layers``, 8 pairs a step, the max-margin loss, over the run's
training pairs (no optimizer step: both variants see the same weights), scored as ``Pairs.score`` (a pair's prompt
once) and side by side (``Texts.score`` per side); ``--threads`` as the rule (IRL jobs: 1). Reported: seconds per
variant, positions computed, the largest difference of the features (float rounding), the machine and its fp32
matmul rate before and after.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from machine import describe_machine, matmul_gflops, warn_if_busy  # (benchmarks/machine.py)

from workflow_scripts.lib.generation import length_sorted_batches
from workflow_scripts.lib.irl import irl_loss
from workflow_scripts.lib.irl_data import FEATURE_BATCH, FeatureStore, Pairs, Texts, packed_bottom, validation_pairs
from workflow_scripts.lib.lm import load_lm
from workflow_scripts.lib.prefix_pack import group_batches, group_by_key, packed_length
from workflow_scripts.lib.reward_model import RewardModel


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default=".", help="a finished default run's directory")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the epoch (the IRL jobs use 1)")
    ap.add_argument("--feature-threads", type=int, default=2, help="torch threads for the features (the rule: 2)")
    ap.add_argument("--feature-prompts", type=int, default=250, help="features of the texts of the first N prompts")
    ap.add_argument("--repeats", type=int, default=3, help="alternating runs of each variant; the minimum counts")
    ap.add_argument("--out", default="results/benchmarks/prefix_sharing.json")
    return ap.parse_args()


def alternate(variants: dict[str, Callable[[], object]], repeats: int) -> dict[str, dict[str, Any]]:
    """Seconds of each variant, run in turn ``repeats`` times (a machine whose speed drifts hits both alike)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: {"seconds_min": min(t), "seconds": t} for name, t in times.items()}


def main() -> None:
    args = parse_args()
    warn_if_busy()
    run = Path(args.run)
    store = FeatureStore(run / "results/irl/features.pt")
    st = store.state
    lm, tok, precision = load_lm(st["backbone"] if Path(st["backbone"]).is_absolute() else run / st["backbone"])
    model = RewardModel(lm, tok, st["trainable_layers"], st["max_length"], "last", precision)
    texts = st["texts"]
    prompt = prompt_of(run, texts)
    keep = set(sorted(set(prompt))[: args.feature_prompts])
    sel = [i for i, p in enumerate(prompt) if p in keep]
    ids = model.encode([texts[i] for i in sel])  # what the features hold (``input_ids``); older features lack them
    prompts = [prompt[i] for i in sel]
    groups = group_by_key(prompts)  # as packed_bottom groups them
    computed = {
        "features packed by prompt": sum(len(b) * max(packed_length([ids[i] for i in groups[g]]) for g in b)
                                         for b in group_batches(ids, groups, FEATURE_BATCH)),
        "features one text a row": sum(len(b) * max(len(ids[j]) for j in b) for b in length_sorted_batches(ids, 32)),
    }  # fmt: skip

    def one_text_a_row() -> list[torch.Tensor]:
        out: list[torch.Tensor] = [torch.empty(0)] * len(ids)
        for batch in length_sorted_batches(ids, 32):
            for j, h in zip(batch, model.bottom_hidden([ids[j] for j in batch]), strict=True):
                out[j] = h
        return out

    torch.set_num_threads(args.feature_threads)
    gflops_before = matmul_gflops()
    rows = alternate({"features packed by prompt": lambda: packed_bottom(model, ids, prompts),
                      "features one text a row": one_text_a_row}, args.repeats)  # fmt: skip
    for name, n in computed.items():
        rows[name].update(texts=len(ids), real_positions=sum(map(len, ids)), computed_positions=n)
    rows["features packed by prompt"]["max_difference"] = max(
        float((a - b).abs().max()) for a, b in zip(packed_bottom(model, ids, prompts)[0], one_text_a_row(), strict=True)
    )

    torch.set_num_threads(args.threads)
    roles = st["roles"]
    encoded = dict(zip(roles["expert"] + roles["non_expert"], model.encode(roles["expert"] + roles["non_expert"]),
                       strict=True))  # fmt: skip
    pairs = Pairs(Texts.of(store, roles["expert"]), Texts.of(store, roles["non_expert"]),
                  ([encoded[t] for t in roles["expert"]], [encoded[t] for t in roles["non_expert"]]))  # fmt: skip
    order = np.random.default_rng(0).permutation(validation_pairs(st, 0.2)[0])

    def epoch(score: Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor]]) -> float:
        total = 0.0
        for b in range(0, len(order), 8):
            model.zero_grad(set_to_none=True)
            r_e, r_n = score(order[b : b + 8])
            loss = irl_loss(r_e - r_n, "max_margin", 1.0)
            loss.backward()
            total += float(loss.detach())
        return total

    rows.update(alternate({
        "IRL epoch, a pair's prompt once": lambda: epoch(lambda idx: pairs.score(model, idx)),
        "IRL epoch, each side alone": lambda: epoch(lambda idx: (pairs.expert.score(model, idx),
                                                                 pairs.non_expert.score(model, idx))),
    }, args.repeats))  # fmt: skip
    rows["IRL epoch, a pair's prompt once"]["pairs"] = len(order)
    threads = {"features": args.feature_threads, "irl": args.threads}
    result = {"machine": describe_machine(), "matmul_gflops_before": gflops_before,
              "matmul_gflops_after": matmul_gflops(), "threads": threads, "rows": rows}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(result, indent=2, default=str))


def prompt_of(run: Path, texts: list[str]) -> list[str]:
    import pandas as pd

    from workflow_scripts.lib.irl_data import text_parts

    demos = pd.read_parquet(run / "results/demonstrations/train.parquet")
    parts = text_parts(demos, pd.read_parquet(run / "results/data/eval.parquet"),
                       pd.read_parquet(run / "results/data/train.parquet"))  # fmt: skip
    return [parts[t][0] for t in texts]


if __name__ == "__main__":
    main()
