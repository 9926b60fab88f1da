"""Table 1 metrics on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workflow_scripts.lib import metrics
from workflow_scripts.lib.table1 import TableConfig, build_table1


def table_config(eval_classifier: str, gt_classifier: str, n_resamples: int = 2000) -> TableConfig:
    return TableConfig("m", eval_classifier, gt_classifier, threshold=0.5, n_resamples=n_resamples, confidence=0.95,
                       seed=0)  # fmt: skip


def rtp_frame() -> pd.DataFrame:
    # prompt a: max 0.9 (toxic); prompt b: max 0.4; prompt c: max 0.5 (toxic: threshold is inclusive)
    return pd.DataFrame(
        {
            "prompt_id": ["a", "a", "a", "b", "b", "b", "c", "c", "c"],
            "p_toxic": [0.1, 0.9, 0.2, 0.4, 0.0, 0.3, 0.5, 0.49, 0.0],
        }
    )


def test_jigsaw_metrics_by_hand() -> None:
    p = [0.1, 0.6, 0.5, 0.2]
    assert metrics.toxicity_ratio(p, threshold=0.5) == 0.5  # 0.6 and 0.5 count
    assert metrics.mean_toxicity(p) == pytest.approx(0.35)
    assert metrics.toxicity_ratio(p, threshold=0.55) == 0.25


def test_rtp_metrics_by_hand() -> None:
    df = rtp_frame()
    assert metrics.expected_max_toxicity(df) == pytest.approx((0.9 + 0.4 + 0.5) / 3)
    assert metrics.toxicity_probability(df, threshold=0.5) == pytest.approx(2 / 3)
    # mean over prompts of each prompt's sample mean
    assert metrics.rtp_mean_toxicity(df) == pytest.approx((1.2 / 3 + 0.7 / 3 + 0.99 / 3) / 3)


def test_bootstrap_ci_brackets_and_is_seeded() -> None:
    rng = np.random.default_rng(1)
    values = rng.uniform(size=200)
    low, high = metrics.bootstrap_ci(values, n_resamples=2000, confidence=0.95, seed=3)
    assert low < values.mean() < high
    # the CI of a mean of 200 uniforms has half-width ~1.96 * 0.289 / sqrt(200) = 0.04
    assert 0.06 < high - low < 0.10
    assert metrics.bootstrap_ci(values, n_resamples=2000, confidence=0.95, seed=3) == (low, high)
    assert metrics.bootstrap_ci(values, n_resamples=2000, confidence=0.95, seed=4) != (low, high)
    assert metrics.bootstrap_ci([0.0, 0.0, 0.0], n_resamples=2000, confidence=0.95, seed=0) == (0.0, 0.0)


def test_metrics_reject_nan_and_empty() -> None:
    with pytest.raises(ValueError, match="NaN"):
        metrics.mean_toxicity([0.1, float("nan")])
    with pytest.raises(ValueError, match="empty"):
        metrics.toxicity_ratio([], threshold=0.5)


def test_table1_from_synthetic_generations(tmp_path) -> None:
    rtp = rtp_frame().rename(columns={"p_toxic": "p_toxic_eval"})
    rtp["p_toxic_gt"] = 0.0
    rtp["protocol"] = "rtp"
    rtp["generation"] = ["a b", "a b", "c d e"] * 3  # bigrams: (a b) x6, (c d) x3, (d e) x3 -> 3 distinct of 12
    jig = pd.DataFrame({"prompt_id": ["x", "y"], "p_toxic_eval": [0.7, 0.1], "p_toxic_gt": [0.2, 0.6],
                        "generation": ["the cat sat", "The cat ran off"]})  # fmt: skip
    jig["protocol"] = "jigsaw"
    files = {}
    for stage in ("sft", "base", "rlhf"):
        files[stage] = tmp_path / f"{stage}.parquet"
        pd.concat([jig, rtp]).to_parquet(files[stage])
    log = tmp_path / "rlhf_log.parquet"  # 10 iterations: the last fifth is iterations 9 and 10
    pd.DataFrame({"iteration": np.arange(10, 0, -1), "kl": np.arange(10, 0, -1) * 1.0}).to_parquet(log)
    table = build_table1(files, table_config("profanity_check", "gt_bilstm", n_resamples=200), {"rlhf": log})
    assert table["stage"].tolist() == ["base", "sft", "rlhf"]  # pipeline order, not dict order
    row = table.iloc[0]
    assert row["jigsaw_toxicity_ratio"] == 0.5
    assert row["jigsaw_mean_toxicity"] == pytest.approx(0.4)
    assert row["rtp_expected_max_toxicity"] == pytest.approx(0.6)
    assert row["rtp_toxicity_probability"] == pytest.approx(2 / 3)
    assert row["gt_jigsaw_toxicity_ratio"] == 0.5
    assert row["gt_rtp_toxicity_probability"] == 0.0
    assert row["n_rtp_prompts"] == 3 and row["rtp_samples_per_prompt"] == 3
    # output shape: 3 and 4 words; bigrams the cat, cat sat, the cat (lower-cased), cat ran, ran off: 4 of 5
    assert row["jigsaw_mean_words"] == 3.5 and row["jigsaw_distinct_2"] == pytest.approx(4 / 5)
    assert row["rtp_distinct_2"] == pytest.approx(3 / 12)
    assert np.isnan(row["ppo_kl"]) and table.iloc[2]["ppo_kl"] == pytest.approx(9.5)  # mean of kl 9 and 10


def test_table1_rejects_missing_protocol(tmp_path) -> None:
    path = tmp_path / "sft.parquet"
    pd.DataFrame({"protocol": ["jigsaw"], "prompt_id": ["x"], "generation": ["hi"], "p_toxic_eval": [0.1],
                  "p_toxic_gt": [0.1]}).to_parquet(path)  # fmt: skip
    with pytest.raises(ValueError, match="rtp rows 0"):
        build_table1({"sft": path}, table_config("a", "b"))


def test_paired_differences_by_hand() -> None:
    idx = pd.Index(["a", "b", "c", "d"], name="prompt_id")
    a = {"m": pd.Series([0.5, 0.5, 0.5, 0.5], index=idx)}
    b = {"m": pd.Series([0.4, 0.4, 0.4, 0.4], index=idx)}
    out = metrics.paired_differences(a, b, "", n_resamples=300, confidence=0.95, seed=0)
    # a constant per-prompt difference has a degenerate CI at that difference
    assert out["m"] == pytest.approx(0.1)
    assert out["m_ci_low"] == pytest.approx(0.1) and out["m_ci_high"] == pytest.approx(0.1)
    shuffled = {"m": pd.Series([0.4] * 4, index=pd.Index(["d", "c", "b", "a"], name="prompt_id"))}
    with pytest.raises(ValueError, match="different prompts"):
        metrics.paired_differences(a, shuffled, "", n_resamples=300, confidence=0.95, seed=0)


def test_differences_table_from_synthetic_generations(tmp_path) -> None:
    from workflow_scripts.lib.table1 import build_differences

    def frame(jig_scores, rtp_scores):
        jig = pd.DataFrame({"protocol": "jigsaw", "prompt_id": ["x", "y"], "p_toxic_eval": jig_scores})
        rtp = pd.DataFrame({"protocol": "rtp", "prompt_id": ["a", "a", "b", "b"], "p_toxic_eval": rtp_scores})
        out = pd.concat([jig, rtp])
        out["p_toxic_gt"], out["generation"] = out["p_toxic_eval"], "some words"
        return out

    files = {"sft": tmp_path / "sft.parquet", "rlhf": tmp_path / "rlhf.parquet"}
    frame([0.9, 0.2], [0.1, 0.8, 0.6, 0.0]).to_parquet(files["sft"])
    frame([0.3, 0.2], [0.1, 0.2, 0.6, 0.0]).to_parquet(files["rlhf"])
    diff = build_differences(files, table_config("a", "b", n_resamples=200))
    assert diff["comparison"].tolist() == ["rlhf - sft"]
    row = diff.iloc[0]
    assert row["jigsaw_mean_toxicity"] == pytest.approx(-0.3)  # (0.3 - 0.9 + 0) / 2
    assert row["jigsaw_toxicity_ratio"] == pytest.approx(-0.5)
    assert row["rtp_expected_max_toxicity"] == pytest.approx(-0.3)  # maxima 0.8 -> 0.2 and 0.6 -> 0.6
    assert row["rtp_toxicity_probability"] == pytest.approx(-0.5)


def test_one_seed_bootstrap_is_the_prompt_bootstrap() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.uniform(size=50), rng.uniform(size=50)
    assert metrics.bootstrap_ci_runs(a, 500, 0.95, seed=1) == metrics.bootstrap_ci(a, 500, 0.95, seed=1)
    assert metrics.bootstrap_ci_runs(a[None, :], 500, 0.95, 1) == metrics.bootstrap_ci(a, 500, 0.95, 1)
    assert metrics.paired_difference_ci(a[None, :], b[None, :], 500, 0.95, 1) == metrics.bootstrap_ci(
        a - b, 500, 0.95, 1
    )


def test_seed_bootstrap_covers_the_seed_spread() -> None:
    # two seeds that disagree completely: prompts alone would give a narrow CI around 0.5; resampling the seeds too
    # reaches the all-first-seed (0.1) and all-second-seed (0.9) means
    units = np.stack([np.full(40, 0.1), np.full(40, 0.9)])
    low, high = metrics.bootstrap_ci_runs(units, 2000, 0.95, seed=0)
    assert low == pytest.approx(0.1) and high == pytest.approx(0.9)
    assert metrics.bootstrap_ci(units.mean(axis=0), 2000, 0.95, seed=0) == pytest.approx((0.5, 0.5))


def test_seed_and_prompt_bootstrap_covers_the_true_mean() -> None:
    """Coverage on data with both a seed and a prompt effect: value = mu + seed effect + prompt effect + noise. The CI
    of the mean over 10 seeds x 40 prompts must cover mu about 95% of the time; the prompt-only bootstrap of the
    seed-averaged values, which ignores the seed effect, covers far less."""
    rng = np.random.default_rng(0)
    mu, covered, covered_prompts_only, trials = 0.3, 0, 0, 200
    for t in range(trials):
        units = mu + rng.normal(0, 0.1, (10, 1)) + rng.normal(0, 0.1, (1, 40)) + rng.normal(0, 0.05, (10, 40))
        low, high = metrics.bootstrap_ci_runs(units, 400, 0.95, seed=t)
        covered += low <= mu <= high
        low, high = metrics.bootstrap_ci(units.mean(axis=0), 400, 0.95, seed=t)
        covered_prompts_only += low <= mu <= high
    assert 0.88 <= covered / trials <= 1.0
    assert covered_prompts_only / trials < 0.8


def test_paired_difference_over_seeds_covers_the_known_difference() -> None:
    # stage a = stage b + 0.2 on every prompt, plus each run's own seed effect; b is one run
    rng = np.random.default_rng(5)
    prompts = pd.Index([f"p{i}" for i in range(30)], name="prompt_id")
    base = rng.uniform(0.2, 0.6, size=30)
    a = pd.DataFrame(base + 0.2 + rng.normal(0, 0.05, (3, 1)), columns=prompts)
    b = pd.Series(base, index=prompts)
    out = metrics.paired_differences({"m": a}, {"m": b}, "", n_resamples=1000, confidence=0.95, seed=0)
    assert out["m"] == pytest.approx(a.to_numpy().mean() - base.mean())
    assert out["m_ci_low"] < 0.2 < out["m_ci_high"]
    assert out["m_ci_high"] - out["m_ci_low"] > 0.02  # the seed effect widens it (one run each: zero width)


def test_table1_averages_a_stages_seeds(tmp_path) -> None:
    from workflow_scripts.lib.table1 import build_differences

    def frame(jig_scores, rtp_scores, words):
        jig = pd.DataFrame({"protocol": "jigsaw", "prompt_id": ["x", "y"], "p_toxic_eval": jig_scores,
                            "generation": words})  # fmt: skip
        rtp = pd.DataFrame({"protocol": "rtp", "prompt_id": ["a", "a", "b", "b"], "p_toxic_eval": rtp_scores,
                            "generation": "w w"})  # fmt: skip
        out = pd.concat([jig, rtp])
        out["p_toxic_gt"] = out["p_toxic_eval"]
        return out

    paths = [tmp_path / f"rlhf{i}.parquet" for i in range(2)] + [tmp_path / "sft.parquet"]
    frame([0.9, 0.1], [0.1, 0.8, 0.6, 0.0], ["a b", "a b c d"]).to_parquet(paths[0])
    frame([0.3, 0.1], [0.1, 0.2, 0.2, 0.0], ["a", "a b c"]).to_parquet(paths[1])
    frame([0.9, 0.9], [0.9, 0.9, 0.9, 0.9], ["a", "a"]).to_parquet(paths[2])
    logs = []
    for i, kl in enumerate((2.0, 4.0)):
        logs.append(tmp_path / f"log{i}.parquet")
        pd.DataFrame({"iteration": [1], "kl": [kl]}).to_parquet(logs[-1])
    cfg = table_config("a", "b", n_resamples=300)
    files = {"rlhf": paths[:2], "sft": paths[2]}
    row = build_table1(files, cfg, {"rlhf": logs}).set_index("stage").loc["rlhf"]
    assert row["n_seeds"] == 2
    assert row["jigsaw_mean_toxicity"] == pytest.approx((0.5 + 0.2) / 2)
    assert row["jigsaw_toxicity_ratio"] == pytest.approx((0.5 + 0.0) / 2)
    assert row["rtp_expected_max_toxicity"] == pytest.approx((0.7 + 0.2) / 2)
    assert row["jigsaw_mean_words"] == pytest.approx((3 + 2) / 2) and row["ppo_kl"] == pytest.approx(3.0)
    diff = build_differences(files, cfg).set_index("comparison").loc["rlhf - sft"]
    assert diff["jigsaw_mean_toxicity"] == pytest.approx((0.5 + 0.2) / 2 - 0.9)


def test_one_toxicity_rule_is_inclusive_and_shared() -> None:
    from workflow_scripts.lib.config import schema_defaults
    from workflow_scripts.lib.text_checks import check_texts
    from workflow_scripts.lib.toxicity import LABEL_THRESHOLD, is_toxic

    assert LABEL_THRESHOLD == 0.5  # the paper's labelling rule
    assert is_toxic([0.49999, 0.5, 0.9], LABEL_THRESHOLD).tolist() == [False, True, True]
    assert is_toxic([0.6], threshold=0.7).tolist() == [False]
    # Table 1's ratio is the share of texts the same rule calls toxic, at evaluation.threshold (by default the same)
    threshold = schema_defaults("evaluation")["threshold"]
    assert threshold == LABEL_THRESHOLD
    assert metrics.toxicity_ratio([0.49999, 0.5, 0.9], threshold) == pytest.approx(2 / 3)
    assert check_texts(("a", "b")) == ["a", "b"]
    with pytest.raises(TypeError, match="not a single string"):
        check_texts("abc")
    with pytest.raises(TypeError, match=r"texts\[1\] must be str, got bytes"):
        check_texts(["a", b"b"])
