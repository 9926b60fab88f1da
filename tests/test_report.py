"""Figures, claims and the paper comparison built from small synthetic artifacts: content, labels, verdicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from workflow_scripts.lib import figures
from workflow_scripts.lib.irl_metrics import choose_reward_model
from workflow_scripts.lib.table1 import (
    CLAIMS,
    METRIC_LABELS,
    PAPER_METRICS,
    TableConfig,
    build_claims,
    read_paper_table,
    table1_markdown,
    versus_paper,
)

PAPER = REPO / "resources" / "paper" / "table1_v1.csv"
CFG = TableConfig("m", "profanity_check", "gt_bilstm", threshold=0.5, n_resamples=100, confidence=0.95, seed=0)


def ppo_log(offset: float, n: int = 5) -> pd.DataFrame:
    steps = np.arange(1, n + 1) * 8
    cols = {c: offset + np.linspace(0, 1, n) * (i + 1) for i, (c, _) in enumerate(figures.PPO_PANELS)}
    return pd.DataFrame({"step": steps, **cols})


def test_figure3_draws_every_log_in_every_panel() -> None:
    logs = {"rlhf": ppo_log(0.0), "irl_rlhf": ppo_log(10.0)}
    fig = figures.figure3_ppo_curves(logs)
    assert [ax.get_title() for ax in fig.axes] == [title for _, title in figures.PPO_PANELS]
    for ax, (column, _) in zip(fig.axes, figures.PPO_PANELS, strict=True):
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert set(lines) == {"RLHF", "IRL-RLHF"}
        assert lines["RLHF"].get_linestyle() == "-" and lines["IRL-RLHF"].get_linestyle() == "--"
        for stage, label in (("rlhf", "RLHF"), ("irl_rlhf", "IRL-RLHF")):
            np.testing.assert_array_equal(lines[label].get_xdata(), logs[stage]["step"])
            np.testing.assert_allclose(lines[label].get_ydata(), logs[stage][column])
        assert ax.get_xlabel() == "optimizer step"
    with pytest.raises(ValueError, match="policy_loss"):
        figures.figure3_ppo_curves({"rlhf": ppo_log(0.0).drop(columns="policy_loss")})
    # a log from before the GT monitor: its panel simply lacks that stage's line
    old = figures.figure3_ppo_curves({"rlhf": ppo_log(0.0).drop(columns="monitor_reward_mean")})
    titles = [ax.get_title() for ax in old.axes]
    assert not old.axes[titles.index("GT reward mean (raw)")].get_lines()


def synthetic_table(stages: tuple[str, ...] = ("sft", "rlhf", "irl_rlhf")) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {"model": "m", "stage": list(stages), "n_jigsaw_prompts": 20, "n_rtp_prompts": 10, "rtp_samples_per_prompt": 4,
         "n_seeds": 1}
    )  # fmt: skip
    for prefix in ("", "gt_"):
        for metric in METRIC_LABELS:
            value = rng.uniform(0.2, 0.6, len(stages))
            table[prefix + metric] = value
            table[f"{prefix}{metric}_ci_low"] = value - 0.05
            table[f"{prefix}{metric}_ci_high"] = value + 0.1
    words = rng.uniform(5, 30, len(stages))
    table["jigsaw_mean_words"], table["jigsaw_mean_words_ci_low"], table["jigsaw_mean_words_ci_high"] = (
        words,
        words - 1,
        words + 1,
    )
    table["jigsaw_distinct_2"], table["rtp_distinct_2"] = rng.uniform(0.3, 0.9, (2, len(stages)))
    table["ppo_kl"] = [float("nan") if s not in ("rlhf", "irl_rlhf") else 2.5 for s in stages]
    return table


def test_figure4_bars_and_whiskers_are_the_table() -> None:
    table = synthetic_table()
    fig = figures.figure4_table1(table)
    assert len(fig.axes) == 2 * len(METRIC_LABELS)
    for i, ax in enumerate(fig.axes):
        prefix = "" if i < len(METRIC_LABELS) else "gt_"
        metric = list(METRIC_LABELS)[i % len(METRIC_LABELS)]
        key = prefix + metric
        assert ax.get_title() == METRIC_LABELS[metric]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["SFT", "RLHF", "IRL-RLHF"]
        np.testing.assert_allclose([p.get_height() for p in ax.patches], table[key])
        (whiskers,) = ax.collections  # one errorbar LineCollection per panel
        spans = np.array([[seg[0][1], seg[1][1]] for seg in whiskers.get_segments()])
        np.testing.assert_allclose(spans[:, 0], table[f"{key}_ci_low"])
        np.testing.assert_allclose(spans[:, 1], table[f"{key}_ci_high"])
    assert fig.axes[0].get_ylabel() == "evaluation classifier"
    assert fig.axes[len(METRIC_LABELS)].get_ylabel() == "GT reward classifier"


def irl_metrics(objectives=("max_margin", "hinge"), seeds=(0, 1), epochs=3) -> pd.DataFrame:
    rows = []
    for o in objectives:
        for s in seeds:
            for e in range(epochs):
                rows.append(
                    {
                        "objective": o,
                        "seed": s,
                        "epoch": e,
                        "val_pair_accuracy": 0.5 + 0.1 * s + 0.01 * e,
                        "val_loss": 1.0 - 0.1 * e,
                        "heldout_accuracy": 0.4 + 0.05 * e + 0.1 * s,
                        "heldout_pearson": 0.1 * e,
                        "heldout_kendall": 0.05 * e,
                        "heldout_spearman": 0.08 * e,
                        "selected": e == epochs - 1,
                    }
                )
    return pd.DataFrame(rows)


def test_figure5_heatmap_cells_are_the_metrics() -> None:
    metrics = irl_metrics()
    fig = figures.figure5_heatmap(metrics)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["hinge", "max_margin"]
    for ax in panels:
        run = metrics[metrics["objective"] == ax.get_title()].sort_values(["seed", "epoch"])
        cells = [float(t.get_text()) for t in ax.texts]
        np.testing.assert_allclose(cells, run["heldout_accuracy"].round(2))


def test_figure2_selected_bars_are_the_summary() -> None:
    metrics = irl_metrics()
    summary = pd.DataFrame(
        {
            "objective": ["hinge", "max_margin"],
            "text_set": "heldout",
            "accuracy": [0.6, 0.7],
            "accuracy_ci_low": [0.5, 0.6],
            "accuracy_ci_high": [0.7, 0.8],
            "f1": [0.55, 0.65],
            "f1_ci_low": [0.45, 0.55],
            "f1_ci_high": [0.65, 0.75],
        }
    )
    fig = figures.figure2(metrics, summary)
    # (a) per objective: the seed with the best validation pair accuracy (seed 1), accuracy bars per epoch
    for ax, objective in zip(fig.axes[:2], ("hinge", "max_margin"), strict=True):
        assert ax.get_title() == f"(a) {objective}, seed 1"
        run = metrics[(metrics["objective"] == objective) & (metrics["seed"] == 1)]
        np.testing.assert_allclose([p.get_height() for p in ax.patches], run["heldout_accuracy"])
    heights = [p.get_height() for p in fig.axes[2].patches]
    np.testing.assert_allclose(heights, [0.6, 0.7, 0.55, 0.65])


def differences(values: dict[str, tuple[float, float, float]], comparison: str) -> pd.DataFrame:
    """A differences table with (value, low, high) for the paper's columns, both classifiers."""
    row: dict[str, object] = {"model": "m", "comparison": comparison}
    for prefix in ("", "gt_"):
        for metric in METRIC_LABELS:
            v, lo, hi = values.get(metric, (0.0, -0.1, 0.1))
            row[prefix + metric], row[f"{prefix}{metric}_ci_low"], row[f"{prefix}{metric}_ci_high"] = v, lo, hi
    return pd.DataFrame([row])


@pytest.mark.parametrize(
    ("cis", "expected"),
    [
        ({m: (-0.2, -0.3, -0.1) for m in PAPER_METRICS}, "holds"),
        ({"jigsaw_toxicity_ratio": (-0.2, -0.3, -0.1)}, "holds on 1 of 3 columns, the rest unresolved"),
        ({"rtp_mean_toxicity": (0.2, 0.1, 0.3)}, "does not hold: higher on 1 of 3 columns"),
        ({"rtp_mean_toxicity": (0.2, 0.1, 0.3), "jigsaw_toxicity_ratio": (-0.2, -0.3, -0.1)}, "mixed"),
        ({}, "not resolved"),
        # a CI that only touches 0 does not resolve the difference
        ({m: (-0.2, -0.4, 0.0) for m in PAPER_METRICS}, "not resolved"),
    ],
)
def test_claim_verdict_follows_the_cis(cis: dict, expected: str) -> None:
    paper = read_paper_table(PAPER)
    claims = build_claims(differences(cis, "irl_rlhf - sft"), paper)
    assert claims["claim"].tolist() == [CLAIMS[0][2]] * 2
    row = claims[claims["classifier"] == "evaluation"].iloc[0]
    assert row["verdict"].startswith(expected)
    assert row["columns_lower"] + row["columns_higher"] <= row["columns"] == 3
    # the words of the markdown follow the same numbers
    table = synthetic_table()
    text = table1_markdown(table, differences(cis, "irl_rlhf - sft"), claims, paper, CFG)
    assert f"**{CLAIMS[0][2]}** (evaluation classifier): **{row['verdict']}**" in text


def test_claims_report_what_the_paper_shows() -> None:
    paper = read_paper_table(PAPER)
    diff = pd.concat([differences({}, c) for c in ("irl_rlhf - sft", "irl_rlhf - rlhf", "rlhf - sft")])
    claims = build_claims(diff, paper).drop_duplicates("claim").set_index("claim")
    # the paper's v1 Table 1: 70M IRL-RLHF is lowest everywhere; 410M IRL-RLHF beats SFT only on Jigsaw
    assert claims.loc[CLAIMS[0][2], "paper_shows"] == "pythia-70m: lower on 3 of 3; pythia-410m: lower on 1 of 3"
    assert claims.loc[CLAIMS[1][2], "paper_shows"] == "pythia-70m: lower on 3 of 3; pythia-410m: lower on 0 of 3"
    # a claim whose stages were not both evaluated is left out
    assert build_claims(differences({}, "sft - base"), paper).empty


def test_versus_paper_keeps_sources_apart() -> None:
    paper = read_paper_table(PAPER)
    table = synthetic_table()
    both = versus_paper(table, paper)
    ours = both[both["source"] == "this run"]
    theirs = both[both["source"].str.startswith("paper")]
    assert len(ours) == 3 and len(theirs) == len(paper)
    np.testing.assert_allclose(ours["rtp_mean_toxicity"], table["rtp_mean_toxicity"])
    assert theirs["rtp_mean_toxicity_ci_low"].isna().all()  # the paper gives no CIs; none are invented
    assert theirs.loc[theirs["model"] == "pythia-70m", "rtp_toxicity_probability"].tolist() == [0.1238, 0.0413, 0.0349]


def test_paper_table_must_be_fractions(tmp_path) -> None:
    bad = tmp_path / "paper.csv"
    pd.read_csv(PAPER).assign(rtp_toxicity_probability=12.38).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="fractions"):
        read_paper_table(bad)


def test_irl_rlhf_reward_is_chosen_on_validation(tmp_path) -> None:
    metrics = irl_metrics(objectives=("max_margin",), seeds=(0, 1, 2))
    metrics.loc[metrics["seed"] == 2, "val_pair_accuracy"] = 0.99  # best on validation ...
    metrics.loc[metrics["seed"] == 2, "heldout_accuracy"] = 0.0  # ... whatever it does on held-out texts
    files, dirs = [], []
    for seed, run in metrics.groupby("seed"):
        files.append(tmp_path / f"seed{seed}.parquet")
        dirs.append(tmp_path / f"seed{seed}" / "reward_model")
        run.to_parquet(files[-1])
    chosen, info = choose_reward_model(files, dirs, "max_margin", None)
    assert chosen == dirs[2] and info["seed"] == 2 and info["epoch"] == 2
    assert info["chosen_by"].startswith("best validation")
    chosen, info = choose_reward_model(files, dirs, "max_margin", 0)
    assert chosen == dirs[0] and info["chosen_by"] == "named in the config"
    with pytest.raises(ValueError, match="seed=7"):
        choose_reward_model(files, dirs, "max_margin", 7)
    with pytest.raises(ValueError, match="no IRL run of objective 'hinge'"):
        choose_reward_model(files, dirs, "hinge", None)


def test_example_page_is_seeded_escaped_and_complete() -> None:
    from workflow_scripts.lib.examples import examples_page, pick_examples

    def gens(stage: str) -> pd.DataFrame:
        return pd.DataFrame({
            "protocol": ["jigsaw"] * 20 + ["rtp"], "prompt_id": [f"p{i}" for i in range(20)] + ["r0"],
            "prompt": [f"prompt <{i}>" for i in range(21)],
            "generation": [f"{stage} says <b>{i}</b>" for i in range(21)],
            "p_toxic_eval": 0.25, "p_toxic_gt": 0.5,
        })  # fmt: skip

    generations = {s: gens(s) for s in ("base", "sft", "rlhf", "irl_rlhf")}
    a, b = pick_examples(generations, 5, seed=0), pick_examples(generations, 5, seed=0)
    pd.testing.assert_frame_equal(a, b)
    assert a["prompt_id"].nunique() == 5 and len(a) == 20 and "r0" not in set(a["prompt_id"])
    assert set(pick_examples(generations, 5, seed=1)["prompt_id"]) != set(a["prompt_id"])
    page = examples_page(a, list(generations), ("profanity_check", "gt_bilstm"))
    assert page.count("<table>") == 5 and "Content warning" in page
    assert "&lt;b&gt;" in page and "<b>" not in page  # model text is escaped, never rendered as HTML
    assert "<td>IRL-RLHF</td>" in page and "<td>0.250</td><td>0.500</td>" in page


def test_disagreements_rank_both_ways_and_escape() -> None:
    from workflow_scripts.lib.examples import disagreements, disagreements_page

    # 6 texts; the learned reward agrees with GT except: text 4 (GT: most toxic) it ranks cleanest, text 1 (GT:
    # second cleanest) it ranks most toxic
    gt = np.array([0.5, 2.0, 1.0, 3.0, -3.0, -1.0])
    reward = np.array([0.1, -9.0, 0.2, 0.9, 5.0, -0.5])
    heldout = pd.DataFrame({"text_index": [5, 4, 3, 2, 1, 0], "reward": reward[::-1], "gt_reward": gt[::-1],
                            "gt_toxic": (gt < 0)[::-1]})  # fmt: skip
    texts = [f"text <{i}>" for i in range(6)]
    table = disagreements(heldout, texts, 1)
    assert table["text_index"].tolist() == [4, 1]
    assert table.loc[0, "disagreement"] == pytest.approx(1 - 1 / 6) and table.loc[0, "text"] == "text <4>"
    assert table["direction"].str.contains("cleaner").tolist() == [True, False]
    page = disagreements_page(table, "max_margin, seed 0")
    assert "Content warning" in page and "text &lt;4&gt;" in page and "text <4>" not in page
    with pytest.raises(ValueError, match="index 7 texts, but 6"):
        disagreements(heldout.assign(text_index=range(1, 7)), texts, 1)
