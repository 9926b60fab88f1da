"""IRL metrics on small synthetic reward tables, each against a direct computation: the AUC, the paired gap to the
supervised ceiling with its bootstrap CI, and the paper's protocol (threshold 0, all texts, best run)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from workflow_scripts.lib.irl_metrics import (
    CEILING,
    METRICS,
    PAPER_RUN_COLUMNS,
    metric_draws,
    paired_gaps,
    paper_protocol,
    paper_protocol_table,
    reward_metrics,
)


def test_auc_is_the_share_of_toxic_non_toxic_pairs_ranked_right() -> None:
    rewards = np.array([-2.0, -1.0, 0.5, 1.0, 2.0])  # lower reward = more toxic
    toxic = np.array([True, False, True, False, False])
    # pairs (toxic, non-toxic) where the toxic text has the lower reward: (-2 vs -1, 1, 2) + (0.5 vs 1, 2) = 5 of 6
    assert reward_metrics(rewards, -rewards, toxic, 0.0)["auc"] == pytest.approx(5 / 6)
    assert np.isnan(reward_metrics(rewards, -rewards, np.ones(5, bool), 0.0)["auc"])  # one class: undefined


def test_vectorised_draws_equal_the_library_metrics_draw_by_draw() -> None:
    """The bootstrap computes all draws at once; each equals scikit-learn / scipy on that draw (reward_metrics),
    with tied rewards and GT values, a one-class draw (AUC undefined) and a constant-reward draw (correlations
    undefined, F1 0 when nothing is called toxic)."""
    rng = np.random.default_rng(7)
    n = 40
    rewards = rng.integers(-4, 5, n) / 2.0  # many ties
    gt_reward = np.round(rng.standard_normal(n), 1)
    toxic = gt_reward < -0.3
    idx = np.vstack(
        [rng.integers(0, n, (25, n)), np.full((1, n), 3), np.flatnonzero(toxic)[rng.integers(0, toxic.sum(), (1, n))]]
    )
    for threshold in (-0.25, 0.0, 10.0):
        draws = metric_draws(rewards, gt_reward, toxic, threshold, idx)
        for i, row in enumerate(idx):
            expected = reward_metrics(rewards[row], gt_reward[row], toxic[row], threshold)
            for m in METRICS:
                assert draws[m][i] == pytest.approx(expected[m], rel=1e-12, abs=1e-12, nan_ok=True), (m, i, threshold)
    assert np.isnan(draws["auc"][-2:]).all() and np.isnan(draws["spearman"][-2])  # one class; constant reward


def frame(objective: str, seed: int, rewards: np.ndarray, toxic: np.ndarray, split: str, epoch: int) -> pd.DataFrame:
    return pd.DataFrame({
        "objective": objective, "seed": seed, "epoch": epoch, "split": split, "text_index": np.arange(len(rewards)),
        "reward": rewards, "gt_reward": -toxic.astype(float) + 0.1 * np.arange(len(rewards)), "gt_toxic": toxic,
    })  # fmt: skip


def test_paired_gap_to_the_ceiling_covers_the_known_difference() -> None:
    """The ceiling separates the classes (AUC 1); the IRL reward is the ceiling's plus Gaussian noise, whose AUC is
    known in closed form: P(toxic reward < non-toxic reward) = Phi(2 / sqrt(2 * (1.5^2 + 0.01^2))) = 0.827. The paired
    CI of the AUC gap covers that population gap and excludes 0."""
    rng = np.random.default_rng(0)
    n = 400
    toxic = rng.random(n) < 0.5
    ceiling = np.where(toxic, -1.0, 1.0) + 0.01 * rng.standard_normal(n)
    irl = ceiling + 1.5 * rng.standard_normal(n)
    truth = stats.norm.cdf(2 / np.sqrt(2 * (1.5**2 + 0.01**2))) - 1.0
    irl_run, ceiling_run = (
        frame("max_margin", 0, irl, toxic, "heldout", 2),
        frame(CEILING, 0, ceiling, toxic, "heldout", 3),
    )
    gap, low, high = paired_gaps(irl_run, ceiling_run, 0.0, 0.0, n_resamples=500, confidence=0.95, seed=0)["auc"]
    sample = (
        reward_metrics(irl, -toxic.astype(float), toxic, 0.0)["auc"]
        - reward_metrics(ceiling, -toxic.astype(float), toxic, 0.0)["auc"]
    )
    assert gap == pytest.approx(sample) and low <= truth <= high and high < 0
    with pytest.raises(ValueError, match="same texts"):
        paired_gaps(frame("a", 0, irl[:-1], toxic[:-1], "heldout", 1), frame(CEILING, 0, ceiling, toxic, "heldout", 1),
                    0.0, 0.0, 100, 0.95, 0)  # fmt: skip


def test_paper_protocol_equals_a_direct_computation() -> None:
    """Two objectives x two seeds + the ceiling: each IRL run scored at its selected epoch on held-out and train-split
    texts together, toxic iff reward < 0; the ceiling is left out; the best run is the one with the highest accuracy
    on those same texts."""
    rng = np.random.default_rng(1)
    toxic_h, toxic_t = rng.random(30) < 0.4, rng.random(50) < 0.4
    runs, rewards, expected = [], {}, {}
    for objective in ("hinge", "max_margin", CEILING):
        for seed in (0, 1):
            selected_epoch = 1 + seed
            frames = []
            for epoch in (1, 2):  # the unselected epoch's rewards must not count
                shift = 0.0 if epoch == selected_epoch else 5.0
                frames.append(frame(objective, seed, rng.standard_normal(30) + shift, toxic_h, "heldout", epoch))
            train = frame(objective, seed, rng.standard_normal(50), toxic_t, "train_texts", selected_epoch)
            rewards[(objective, seed)] = pd.concat([*frames, train])
            runs += [
                {"objective": objective, "seed": seed, "epoch": e, "selected": e == selected_epoch} for e in (1, 2)
            ]
            held = frames[selected_epoch - 1]["reward"].to_numpy()
            every = np.concatenate([held, train["reward"].to_numpy()])
            truth = np.concatenate([toxic_h, toxic_t])
            expected[(objective, seed)] = ((every < 0) == truth).mean(), (every < 0).mean()
    got = paper_protocol(pd.DataFrame(runs), rewards)
    assert set(zip(got["objective"], got["seed"], strict=True)) == {
        (o, s) for o in ("hinge", "max_margin") for s in (0, 1)
    }
    for _, row in got.iterrows():
        accuracy, share = expected[(row["objective"], row["seed"])]
        assert row["n_texts"] == 80 and row["accuracy"] == pytest.approx(accuracy)
        assert row["share_toxic"] == pytest.approx(share)
    paper = pd.DataFrame([{c: np.nan for c in PAPER_RUN_COLUMNS} | {"model": "70m", "runs": 78, "source": "s"}])
    table = paper_protocol_table(got, paper).set_index("model")
    everything = table.loc["ours: all trained IRL runs"]
    assert everything["runs"] == 4 and everything["accuracy_best"] == pytest.approx(got["accuracy"].max())
    assert everything["accuracy_median"] == pytest.approx(got["accuracy"].median())
    hinge = got[got["objective"] == "hinge"]["accuracy"]
    assert table.loc["ours: hinge", "accuracy_mean"] == pytest.approx(hinge.mean())
    assert table.loc["paper 70m", "runs"] == 78  # the paper's row, labelled as the paper's
