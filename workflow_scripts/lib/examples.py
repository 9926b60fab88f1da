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


# ============================================================================================ what the reward learned
def disagreements(heldout: pd.DataFrame, texts: Sequence[str], n: int) -> pd.DataFrame:
    """The held-out texts on which a learned reward and the GT classifier disagree most, each way.

    ``heldout``: one run's per-text rewards on the held-out texts (``text_index``, ``reward``, ``gt_reward``,
    ``gt_toxic``; GT reward = -toxic logit, higher = cleaner for both), ``texts`` the held-out texts in
    ``text_index`` order. Disagreement = the text's percentile under the learned reward minus its percentile under
    the GT reward: the ``n`` largest (``learned reward calls it cleaner``) and the ``n`` smallest (``... more
    toxic``)."""
    if len(heldout) == 0:
        raise ValueError("no held-out rewards to compare with the GT classifier")
    if heldout["text_index"].max() >= len(texts):
        raise ValueError(f"held-out rewards index {heldout['text_index'].max() + 1} texts, but {len(texts)} were given")
    frame = heldout.sort_values("text_index").reset_index(drop=True)
    frame["reward_percentile"] = frame["reward"].rank(pct=True)
    frame["gt_percentile"] = frame["gt_reward"].rank(pct=True)
    frame["disagreement"] = frame["reward_percentile"] - frame["gt_percentile"]
    frame["text"] = [texts[i] for i in frame["text_index"]]
    ordered = frame.sort_values(["disagreement", "text_index"], ascending=[False, True])
    cleaner = ordered.head(n).assign(direction="learned reward calls it cleaner than GT")
    toxic = ordered.iloc[::-1].head(n).assign(direction="learned reward calls it more toxic than GT")
    columns = ["direction", "text_index", "text", "reward", "reward_percentile", "gt_reward", "gt_percentile",
               "gt_toxic", "disagreement"]  # fmt: skip
    return pd.concat([cleaner, toxic], ignore_index=True)[columns]


def disagreements_page(table: pd.DataFrame, run: str) -> str:
    """The HTML page of ``disagreements`` for the named ``run``, behind the content warning, every text escaped."""
    parts = [
        "<h1>What the learned reward learned: where it and the GT classifier disagree most</h1>",
        f"<p><strong>{html.escape(WARNING)}</strong></p>",
        f"<p>Reward model: {html.escape(run)}. Held-out eval texts (never seen by IRL), ranked by the learned reward "
        "and by the GT reward (-toxic logit; higher = cleaner for both); disagreement = percentile under the learned "
        "reward minus percentile under GT.</p>",
    ]
    for direction, group in table.groupby("direction", sort=False):
        cells = "".join(
            f"<tr><td>{html.escape(r['text'])}</td><td>{r['reward']:.3f} ({r['reward_percentile']:.0%})</td>"
            f"<td>{r['gt_reward']:.3f} ({r['gt_percentile']:.0%})</td><td>{'toxic' if r['gt_toxic'] else 'clean'}"
            "</td></tr>"
            for _, r in group.iterrows()
        )
        parts.append(
            f"<h2>{html.escape(str(direction))}</h2><table><tr><th>text</th><th>learned reward (percentile)</th>"
            f"<th>GT reward (percentile)</th><th>GT label</th></tr>{cells}</table>"
        )
    head = f"<meta charset='utf-8'><title>What the learned reward learned</title><style>{HTML_STYLE}</style>"
    return f"<!DOCTYPE html><html><head>{head}</head><body>{''.join(parts)}</body></html>\n"
