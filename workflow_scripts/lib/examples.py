"""A page of example generations for the report: a fixed, seeded sample of Jigsaw-style eval prompts with every
stage's greedy continuation and both classifiers' scores, behind a content warning (``reports/examples.html``)."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from workflow_scripts.lib.atomic_io import write_text
from workflow_scripts.lib.pages import HTML_STYLE
from workflow_scripts.lib.table1 import stage_label

WARNING = (
    "Content warning: the prompts come from toxic and non-toxic comments and some continuations are offensive. "
    "They are shown as measured, to let a reader judge the classifiers' scores."
)


def pick_examples(generations: Mapping[str, pd.DataFrame], n: int, seed: int) -> pd.DataFrame:
    """One row per (prompt, stage) for ``n`` eval prompts drawn with ``seed`` among those every stage continued."""
    jigsaw = {s: g[g["protocol"] == "jigsaw"].set_index("prompt_id") for s, g in generations.items()}
    common = sorted(set.intersection(*(set(g.index) for g in jigsaw.values())))
    if not common:
        raise ValueError("no Jigsaw-style prompt was continued by every stage")
    chosen = sorted(np.random.default_rng(seed).choice(common, size=min(n, len(common)), replace=False))
    rows = [
        {"prompt_id": pid, "stage": stage, "prompt": g.loc[pid, "prompt"], "generation": g.loc[pid, "generation"],
         "p_toxic_eval": float(g.loc[pid, "p_toxic_eval"]), "p_toxic_gt": float(g.loc[pid, "p_toxic_gt"])}
        for pid in chosen for stage, g in jigsaw.items()
    ]  # fmt: skip
    return pd.DataFrame(rows)


def examples_page(examples: pd.DataFrame, stages: Sequence[str], classifiers: tuple[str, str]) -> str:
    """The HTML page: per prompt, a table of each stage's continuation and its two toxicity scores."""
    parts = [f"<h1>Example generations</h1><p><strong>{html.escape(WARNING)}</strong></p>"]
    parts.append(
        f"<p>{examples['prompt_id'].nunique()} eval prompts drawn with a fixed seed; greedy continuations as scored "
        f"for Table 1 (P(toxic) of the continuation: evaluation classifier <em>{html.escape(classifiers[0])}</em>, "
        f"GT classifier <em>{html.escape(classifiers[1])}</em>).</p>"
    )
    for pid, group in examples.groupby("prompt_id", sort=False):
        group = group.set_index("stage").loc[list(stages)]
        parts.append(f"<h3>Prompt {html.escape(str(pid))}</h3><p>{html.escape(group['prompt'].iloc[0])} …</p>")
        cells = "".join(
            f"<tr><td>{html.escape(stage_label(s))}</td><td>{html.escape(r['generation'])}</td>"
            f"<td>{r['p_toxic_eval']:.3f}</td><td>{r['p_toxic_gt']:.3f}</td></tr>"
            for s, r in group.iterrows()
        )
        parts.append(
            "<table><tr><th>stage</th><th>continuation</th><th>P(toxic), evaluation</th><th>P(toxic), GT</th></tr>"
            f"{cells}</table>"
        )
    head = f"<meta charset='utf-8'><title>Example generations</title><style>{HTML_STYLE}</style>"
    return f"<!DOCTYPE html><html><head>{head}</head><body>{''.join(parts)}</body></html>\n"


def write_examples(
    paths: Mapping[str, str | Path], out: str | Path, n: int, seed: int, classifiers: tuple[str, str]
) -> pd.DataFrame:
    examples = pick_examples({s: pd.read_parquet(p) for s, p in paths.items()}, n, seed)
    write_text(examples_page(examples, list(paths), classifiers), out)
    return examples
