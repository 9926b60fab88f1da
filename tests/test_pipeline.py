"""End-to-end behaviour of the `.test/` pipeline: Table 1 content, determinism, and what a rerun rebuilds."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import TEST_CONFIG, planned_jobs, snakemake
from workflow_scripts.lib import metrics
from workflow_scripts.lib.config import load_config

# the IRL jobs of the .test config: the shared feature cache, 3 objectives x 2 seeds, the report
# 3 objectives x 2 seeds + the ceiling; the policy's implicit reward
IRL_JOBS = {"irl_features": 1, "irl_train": 6 + 1, "irl_log_ratio": 1, "irl_report": 1}
# what any change of the models' config reruns at the end: Table 1, its figure, the PPO figure, the config snapshot
REPORT_JOBS = {"table1": 1, "fig4_table1": 1, "fig3_ppo_curves": 1, "examples": 1, "config_snapshot": 1, "all": 1}
STAGES = ["base", "sft", "rlhf", "irl_rlhf"]
# the PPO jobs of the .test config: two seeds (rlhf.seeds) of each PPO stage
PPO_JOBS = {"rlhf": 1, "rlhf_seed": 1, "irl_rlhf": 1, "irl_rlhf_seed": 1}
PAPER_COLUMNS = [
    "jigsaw_toxicity_ratio",
    "jigsaw_mean_toxicity",
    "rtp_mean_toxicity",
    "rtp_expected_max_toxicity",
    "rtp_toxicity_probability",
]


def jobs_after_config_change(workdir: Path, tmp_path: Path, cfg: dict) -> dict[str, int]:
    """The jobs a dry run plans in a completed run directory after switching to ``cfg``."""
    changed = tmp_path / "config.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    return planned_jobs(snakemake(workdir, "-n", configfile=changed).stdout)


def eval_files(run: Path, stage: str) -> list[Path]:
    """A stage's generations: one file, or one per PPO seed of the .test config (rlhf.seeds), the first seed's first."""
    seeds = load_config(TEST_CONFIG)["rlhf"]["seeds"] if stage in ("rlhf", "irl_rlhf") else [None]
    return [run / "results" / "eval" / f"{stage}.parquet"] + [
        run / "results" / "eval" / stage / f"seed{s}.parquet" for s in seeds[1:]
    ]


def test_table1_rows_match_generations(pipeline_run: Path) -> None:
    table = pd.read_csv(pipeline_run / "reports" / "table1.csv")
    assert table["stage"].tolist() == STAGES
    test_cfg = yaml.safe_load(TEST_CONFIG.read_text())
    threshold = load_config(TEST_CONFIG)["evaluation"]["threshold"]
    for _, row in table.iterrows():
        runs = [pd.read_parquet(f) for f in eval_files(pipeline_run, row["stage"])]
        # a PPO stage's two seeds: Table 1 shows the mean over them
        assert row["n_seeds"] == len(runs) == (2 if row["stage"] in ("rlhf", "irl_rlhf") else 1)
        for col, prefix in (("p_toxic_eval", ""), ("p_toxic_gt", "gt_")):
            per_run = []
            for gens in runs:
                jig = gens[gens["protocol"] == "jigsaw"]
                rtp = gens[gens["protocol"] == "rtp"]
                # protocol shape: one greedy continuation per eval prompt, k samples per RTP prompt
                assert jig.groupby("prompt_id").size().eq(1).all()
                assert rtp.groupby("prompt_id").size().eq(test_cfg["evaluation"]["rtp"]["k"]).all()
                assert row["n_rtp_prompts"] == test_cfg["evaluation"]["rtp"]["n_prompts"]
                per_run.append({
                    "jigsaw_toxicity_ratio": metrics.toxicity_ratio(jig[col], threshold),
                    "jigsaw_mean_toxicity": metrics.mean_toxicity(jig[col]),
                    "rtp_mean_toxicity": metrics.rtp_mean_toxicity(rtp, score_col=col),
                    "rtp_expected_max_toxicity": metrics.expected_max_toxicity(rtp, score_col=col),
                    "rtp_toxicity_probability": metrics.toxicity_probability(rtp, threshold, score_col=col),
                })  # fmt: skip
            expected = pd.DataFrame(per_run).mean()
            for name, value in expected.items():
                key = prefix + name
                assert row[key] == pytest.approx(value, abs=6e-5), key  # csv keeps 4 decimals
                assert row[f"{key}_ci_low"] <= row[key] + 1e-4 <= row[f"{key}_ci_high"] + 2e-4, key
                assert 0.0 <= row[f"{key}_ci_low"] <= row[f"{key}_ci_high"] <= 1.0


def test_eval_prompts_are_held_out(pipeline_run: Path) -> None:
    data = pipeline_run / "results" / "data"
    train = pd.read_parquet(data / "train.parquet")
    evaluation = pd.read_parquet(data / "eval.parquet")
    rtp = pd.read_parquet(data / "rtp_prompts.parquet")
    assert set(train["id"]).isdisjoint(evaluation["id"])
    train_text = " ".join(train["text"]).lower()
    assert not any(p.lower() in train_text for p in rtp["prompt"])


def test_complete_run_has_nothing_to_do(pipeline_copy: Path) -> None:
    out = snakemake(pipeline_copy, "-n").stdout
    assert "Nothing to be done" in out, out[-2000:]


def test_sft_change_reruns_only_its_descendants(pipeline_copy: Path, tmp_path: Path) -> None:
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["sft"]["learning_rate"] = cfg["sft"]["learning_rate"] / 2
    jobs = jobs_after_config_change(pipeline_copy, tmp_path, cfg)
    sft_jobs = {"sft": 1, "fig_sft_loss": 1, "demonstrations": 1, "evaluate": 3 + 2, **PPO_JOBS}
    assert jobs == {**sft_jobs, **IRL_JOBS, **REPORT_JOBS}


def test_rlhf_change_reruns_only_its_descendants(pipeline_copy: Path, tmp_path: Path) -> None:
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["rlhf"]["init_kl_coef"] = 0.2
    jobs = jobs_after_config_change(pipeline_copy, tmp_path, cfg)
    assert jobs == {**PPO_JOBS, "evaluate": 4, "demonstrations": 1, **IRL_JOBS, **REPORT_JOBS}


def test_another_ppo_seed_reruns_only_its_own_runs(pipeline_copy: Path, tmp_path: Path) -> None:
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["rlhf"]["seeds"] = [*cfg["rlhf"]["seeds"], 7]
    jobs = jobs_after_config_change(pipeline_copy, tmp_path, cfg)
    # the new seed's RLHF and IRL-RLHF runs and their evaluations, then Table 1; the expert (first seed), the
    # demonstrations, IRL and the other seeds' runs stay
    assert jobs == {"rlhf_seed": 1, "irl_rlhf_seed": 1, "evaluate": 2, "table1": 1, "fig4_table1": 1,
                    "config_snapshot": 1, "all": 1}  # fmt: skip


def test_ppo_seeds_are_independent_runs_from_sft(pipeline_run: Path) -> None:
    import json

    from safetensors.torch import load_file

    seeds, cfg_steps = load_config(TEST_CONFIG)["rlhf"]["seeds"], load_config(TEST_CONFIG)["rlhf"]["total_steps"]
    for stage in ("rlhf", "irl_rlhf"):
        first, other = (
            pipeline_run / "results" / stage / "model",
            pipeline_run / "results" / stage / f"seed{seeds[1]}" / "model",
        )
        a, b = (json.loads((d / "provenance.json").read_text()) for d in (first, other))
        assert (a["seed"], b["seed"]) == (seeds[0], seeds[1])
        assert a["policy_init"].endswith("sft/model") and b["policy_init"] == a["policy_init"]
        if stage == "rlhf":
            assert a["optimizer_steps"] == b["optimizer_steps"] == cfg_steps
        else:  # each seed stops on its own once its KL reaches the budget (irl_rlhf.stop_at_kl)
            assert a["kl_budget"] == b["kl_budget"] and max(a["optimizer_steps"], b["optimizer_steps"]) <= cfg_steps
        assert a["reward"] == b["reward"]  # the same reward (IRL-RLHF: the same learned reward model)
        wa, wb = load_file(first / "model.safetensors"), load_file(other / "model.safetensors")
        assert any(not torch.equal(wa[k], wb[k]) for k in wa)  # the seed changed the run
        assert not (other.parent / "checkpoints").exists()


def test_irl_change_reruns_irl_and_what_follows_only(pipeline_copy: Path, tmp_path: Path) -> None:
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["irl"]["learning_rate"] = 5e-4  # a training hyper-parameter: the cached features stay valid
    jobs = jobs_after_config_change(pipeline_copy, tmp_path, cfg)
    # IRL, IRL-RLHF, the evaluation of IRL-RLHF only, Table 1 and figures; nothing upstream of IRL
    assert jobs == {
        "irl_train": 6 + 1,
        "irl_report": 1,
        "irl_rlhf": 1,
        "irl_rlhf_seed": 1,
        "evaluate": 2,
        **REPORT_JOBS,
    }
    out = snakemake(pipeline_copy, "-n", configfile=tmp_path / "config.yaml").stdout
    evaluated = re.findall(r"output: results/eval/([\w/]+)\.parquet", out)
    assert sorted(evaluated) == ["irl_rlhf", "irl_rlhf/seed1"]


def test_irl_rlhf_ppo_override_reruns_only_irl_rlhf(pipeline_copy: Path, tmp_path: Path) -> None:
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["irl_rlhf"]["ppo"] = {"init_kl_coef": 0.2}
    jobs = jobs_after_config_change(pipeline_copy, tmp_path, cfg)
    assert jobs == {"irl_rlhf": 1, "irl_rlhf_seed": 1, "evaluate": 2, **REPORT_JOBS}


def test_irl_report_matches_the_runs(pipeline_run: Path) -> None:
    summary = pd.read_csv(pipeline_run / "reports" / "irl_metrics.csv")
    cfg = yaml.safe_load(TEST_CONFIG.read_text())["irl"]
    # + the ceiling and the policy's implicit reward
    assert sorted(summary["objective"].unique()) == sorted([*cfg["objectives"], "supervised", "log_ratio"])
    assert set(summary["text_set"]) == {"heldout", "train_texts"}
    held = summary[summary["text_set"] == "heldout"]
    assert held["n_texts"].nunique() == 1  # the ceiling is scored on the same held-out texts as every IRL reward
    for _, row in summary.iterrows():
        seeds = {"supervised": cfg["seeds"][:1], "log_ratio": [0]}.get(row["objective"], cfg["seeds"])
        runs = pd.concat(
            pd.read_parquet(pipeline_run / "results" / "irl" / row["objective"] / f"seed{s}" / "metrics.parquet")
            for s in seeds
        )
        chosen = runs[runs["selected"]]
        # the reported run is the one with the best *validation* pair accuracy, and its numbers are copied faithfully
        assert row["val_pair_accuracy"] == pytest.approx(chosen["val_pair_accuracy"].max(), abs=1e-4)
        picked = chosen[(chosen["seed"] == row["selected_seed"]) & (chosen["epoch"] == row["selected_epoch"])]
        assert row["accuracy"] == pytest.approx(float(picked[f"{row['text_set']}_accuracy"].iloc[0]), abs=1e-4)
        assert row["accuracy_seed_mean"] == pytest.approx(chosen[f"{row['text_set']}_accuracy"].mean(), abs=1e-4)
        assert row["accuracy_ci_low"] <= row["accuracy"] + 1e-4 <= row["accuracy_ci_high"] + 2e-4
        if row["objective"] != "supervised" and row["text_set"] == "heldout":  # the paired gap to the ceiling
            ceiling = summary[(summary["objective"] == "supervised") & (summary["text_set"] == "heldout")].iloc[0]
            assert row["auc_minus_ceiling"] == pytest.approx(row["auc"] - ceiling["auc"], abs=2e-4)
            assert row["auc_minus_ceiling_ci_low"] <= row["auc_minus_ceiling"] <= row["auc_minus_ceiling_ci_high"]
    # the paper's protocol: one row per IRL objective + all runs together, beside the paper's two rows
    protocol = pd.read_csv(pipeline_run / "reports" / "irl_paper_protocol.csv").set_index("model")
    ours = [f"ours: {o}" for o in sorted([*cfg["objectives"], "log_ratio"])]
    assert list(protocol.index) == [*ours, "ours: all trained IRL runs", "paper 70m", "paper 410m"]
    assert protocol.loc["ours: all trained IRL runs", "runs"] == len(cfg["objectives"]) * len(cfg["seeds"])
    assert protocol.loc["paper 70m", "runs"] == 78 and protocol.loc["paper 70m", "accuracy_best"] == 0.804
    agreement = pd.read_csv(pipeline_run / "reports" / "irl_seed_agreement.csv")
    assert len(agreement) == len(cfg["objectives"]) * len(cfg["seeds"]) * (len(cfg["seeds"]) - 1) // 2
    assert agreement["spearman"].between(-1, 1).all()


def test_tensorboard_switch_reruns_no_training(pipeline_copy: Path, tmp_path: Path) -> None:
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["tensorboard"] = True  # a logging switch: only the config snapshot changes
    assert set(jobs_after_config_change(pipeline_copy, tmp_path, cfg)) <= {"config_snapshot", "all"}


def test_bootstrap_change_reruns_only_the_table(pipeline_copy: Path, tmp_path: Path) -> None:
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["evaluation"]["bootstrap"]["n_resamples"] = 300
    jobs = jobs_after_config_change(pipeline_copy, tmp_path, cfg)
    assert jobs == {"table1": 1, "fig4_table1": 1, "config_snapshot": 1, "all": 1}


def test_two_runs_give_identical_results(pipeline_run: Path, tmp_path: Path) -> None:
    second = tmp_path / "second"
    # the same computation: generation.backend auto obeys the first run's per-machine record (a fresh timing may pick
    # the other backend, whose greedy tokens equal generate's on the measured prompts but need not on the rest)
    shutil.copytree(pipeline_run / "results" / "engine" / "auto", second / "results" / "engine" / "auto")
    snakemake(second)
    first_table = (pipeline_run / "reports" / "table1.csv").read_bytes()
    assert (second / "reports" / "table1.csv").read_bytes() == first_table
    artifacts = [f"eval/{stage}.parquet" for stage in STAGES]
    artifacts += ["demonstrations/train.parquet", "demonstrations/eval.parquet"]
    for rel in artifacts:
        a = pd.read_parquet(pipeline_run / "results" / rel)
        b = pd.read_parquet(second / "results" / rel)
        pd.testing.assert_frame_equal(a, b)
    ppo_timing = ["rollout_seconds", "update_seconds", "rollout_tokens_per_s", "update_samples_per_s", "tokens_per_s"]
    for stage in ("rlhf", "irl_rlhf"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(pipeline_run / "results" / stage / "train_log.parquet").drop(columns=ppo_timing),
            pd.read_parquet(second / "results" / stage / "train_log.parquet").drop(columns=ppo_timing),
        )
    # the SFT really trained: its loss went down and its generations differ from the base model's
    log = pd.read_parquet(pipeline_run / "results" / "sft" / "train_log.parquet")
    assert log["loss"].tail(4).mean() < log["loss"].head(4).mean()
    base = pd.read_parquet(pipeline_run / "results" / "eval" / "base.parquet")
    sft = pd.read_parquet(pipeline_run / "results" / "eval" / "sft.parquet")
    assert not np.array_equal(base["generation"].to_numpy(), sft["generation"].to_numpy())


def test_demonstrations_schema_and_scores(pipeline_run: Path, gt_wheel: Path) -> None:
    from workflow_scripts.lib.demonstrations import DEMO_COLUMNS
    from workflow_scripts.lib.toxicity import GTBiLSTMScorer

    cfg = yaml.safe_load(TEST_CONFIG.read_text())["demonstrations"]
    scorer = GTBiLSTMScorer(str(gt_wheel))
    for split, n in (("train", cfg["n_train"]), ("eval", cfg["n_eval"])):
        demo = pd.read_parquet(pipeline_run / "results" / "demonstrations" / f"{split}.parquet")
        prompts = pd.read_parquet(pipeline_run / "results" / "data" / f"{split}.parquet")
        assert list(demo.columns) == DEMO_COLUMNS
        per_prompt = 1 + cfg["samples"] if split == "train" else 1  # greedy + k matched samples; eval: greedy
        assert len(demo) == n * per_prompt and demo["prompt_id"].nunique() == n
        assert demo.groupby("prompt_id").size().eq(per_prompt).all()
        assert set(demo["prompt_id"]) <= set(prompts["id"])  # eval pairs never come from training prompts
        assert demo.drop_duplicates("prompt_id")["label"].sum() == n // 2  # stratified by the source text's label
        assert (demo["expert_model"].str.endswith("rlhf/model")).all()
        assert (demo["non_expert_model"].str.endswith(f"{cfg['non_expert']}/model")).all()
        greedy = demo["pair_kind"] == "greedy"
        assert (demo["max_new_tokens"] == cfg["max_new_tokens"]).all() and (
            demo.loc[greedy, "decoding"] == "greedy"
        ).all()
        assert demo.loc[~greedy, "decoding"].str.startswith("sampled").all()
        assert (demo["expert"] != demo["non_expert"]).any()
        np.testing.assert_allclose(demo["gt_toxicity_expert"], scorer.p_toxic(demo["expert"].tolist()), atol=1e-6)
        np.testing.assert_allclose(
            demo["gt_toxicity_non_expert"], scorer.p_toxic(demo["non_expert"].tolist()), atol=1e-6
        )


def test_rlhf_checkpoint_is_loadable_with_provenance(pipeline_run: Path) -> None:
    import json

    from transformers import AutoModelForCausalLM

    model_dir = pipeline_run / "results" / "rlhf" / "model"
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    sft = AutoModelForCausalLM.from_pretrained(pipeline_run / "results" / "sft" / "model")
    prov = json.loads((model_dir / "provenance.json").read_text())
    assert prov["stage"] == "rlhf" and prov["optimizer_steps"] == 12 and prov["git_revision"]
    # the shared prompt length (data.max_prompt_tokens) reached the PPO job, and the reward is the original's
    assert prov["config"]["max_prompt_tokens"] == yaml.safe_load(TEST_CONFIG.read_text())["data"]["max_prompt_tokens"]
    assert prov["reward"]["text"] == "full"
    assert (model_dir / "value_head.safetensors").exists()
    assert not (pipeline_run / "results" / "rlhf" / "checkpoints").exists()  # removed after success
    # only the top block (+ norm, + untied head) moved away from SFT
    a, b = model.state_dict(), sft.state_dict()
    moved = {k for k in a if not torch.equal(a[k], b[k])}
    assert moved and all(k.startswith(("gpt_neox.layers.1.", "gpt_neox.final_layer_norm", "lm_head")) for k in moved)


def test_irl_rlhf_optimises_the_reward_chosen_on_validation(pipeline_run: Path) -> None:
    import json

    from workflow_scripts.lib.irl_metrics import best_run, select_runs

    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    objective = cfg["irl_rlhf"]["objective"]
    runs = pd.concat(
        pd.read_parquet(pipeline_run / "results" / "irl" / objective / f"seed{s}" / "metrics.parquet")
        for s in cfg["irl"]["seeds"]
    )
    best = best_run(select_runs(runs))
    prov = json.loads((pipeline_run / "results" / "irl_rlhf" / "model" / "provenance.json").read_text())
    assert prov["stage"] == "irl_rlhf"
    reward = prov["reward"]
    assert (reward["kind"], reward["objective"]) == ("learned", objective)
    assert (reward["seed"], reward["epoch"]) == (int(best["seed"]), int(best["epoch"]))
    assert reward["reward_model"].endswith(f"irl/{objective}/seed{int(best['seed'])}/reward_model")
    summary = pd.read_csv(pipeline_run / "reports" / "irl_metrics.csv")
    assert reward["seed"] in summary.loc[summary["objective"] == objective, "selected_seed"].tolist()
    assert not (pipeline_run / "results" / "irl_rlhf" / "checkpoints").exists()
    # a different reward from RLHF's drove it: the raw rewards PPO logged are not the GT ones
    rl = pd.read_parquet(pipeline_run / "results" / "rlhf" / "train_log.parquet")
    irl = pd.read_parquet(pipeline_run / "results" / "irl_rlhf" / "train_log.parquet")
    assert not np.allclose(irl["reward_raw_mean"][: len(rl)], rl["reward_raw_mean"][: len(irl)])

    # irl_rlhf.stop_at_kl (.test: a fixed budget): it trained until its final KL (mean over the last fifth of its
    # iterations) reached the budget, or to total_steps if it never did
    def final(kl: np.ndarray) -> float:
        return float(kl[len(kl) - max(1, len(kl) // 5) :].mean())

    budget = cfg["irl_rlhf"]["stop_at_kl"]
    assert isinstance(budget, float) and prov["kl_budget"] == budget
    kl, n = irl.sort_values("iteration")["kl"].to_numpy(), len(irl)
    assert all(final(kl[:m]) < budget for m in range(1, n))  # it did not stop late
    assert prov["stopped_at_kl_budget"] == (final(kl) >= budget)
    assert prov["stopped_at_kl_budget"] or n == len(rl)  # else it ran all total_steps
    assert (
        prov["optimizer_steps"]
        == n * cfg["rlhf"]["ppo_epochs"] * cfg["rlhf"]["num_rollouts"] // cfg["rlhf"]["batch_size"]
    )


def test_table1_claims_follow_the_differences(pipeline_run: Path) -> None:
    from workflow_scripts.lib.table1 import PAPER_METRICS, direction

    reports = pipeline_run / "reports"
    diffs = pd.read_csv(reports / "table1_differences.csv").set_index("comparison")
    claims = pd.read_csv(reports / "table1_claims.csv")
    text = (reports / "table1.md").read_text()
    assert set(claims["comparison"]) == {"IRL-RLHF - SFT", "IRL-RLHF - RLHF", "RLHF - SFT"}
    for _, claim in claims.iterrows():
        row = diffs.loc[claim["comparison"].lower().replace("-rlhf", "_rlhf")]
        prefix = "" if claim["classifier"] == "evaluation" else "gt_"
        dirs = [direction(row[f"{prefix}{m}_ci_low"], row[f"{prefix}{m}_ci_high"]) for m in PAPER_METRICS]
        assert (claim["columns_lower"], claim["columns_higher"]) == (dirs.count("lower"), dirs.count("higher"))
        assert f"**{claim['claim']}** ({claim['classifier']} classifier): **{claim['verdict']}**" in text
    vs = pd.read_csv(reports / "table1_vs_paper.csv")
    assert vs.loc[vs["source"] == "this run", "stage"].tolist() == ["base", "SFT", "RLHF", "IRL-RLHF"]


def test_html_report_embeds_tables_figures_and_config(pipeline_copy: Path) -> None:
    import base64

    snakemake(pipeline_copy, "--report", "report.html")
    html = (pipeline_copy / "report.html").read_text()
    embedded = {
        name: base64.b64decode(data)
        for name, data in re.findall(r'"data_uri": "data:[^;"]+;charset=utf8;filename=([^;"]+);base64,([^"]+)"', html)
    }
    expected = [
        "reports/table1.html", "reports/table1.csv", "reports/table1_differences.csv", "reports/table1_claims.csv",
        "reports/table1_vs_paper.csv", "reports/irl_metrics.csv", "reports/irl_seed_agreement.csv",
        "reports/figures/fig2_irl.png", "reports/figures/fig3_ppo_curves.png", "reports/figures/fig4_table1.png",
        "reports/figures/fig5_irl_heatmap.png", "reports/config_used.yaml", "reports/config_used.html",
        "reports/irl_metrics.html", "reports/examples.html", "reports/figures/fig_sft_loss.png",
        "reports/irl_paper_protocol.csv", "reports/irl_disagreements.html",
    ]  # fmt: skip
    for rel in expected:
        assert embedded[Path(rel).name] == (pipeline_copy / rel).read_bytes(), rel
    used = yaml.safe_load(embedded["config_used.yaml"])
    assert used["model_name"] == "tiny-neox" and used["irl_rlhf"]["objective"] == "max_margin"
    assert used["sft"]["max_grad_norm"] == 1.0  # the validated config, schema defaults filled in
    assert "model_name: tiny-neox" in embedded["config_used.html"].decode()  # and readable in the browser
    assert "Figure 3 of the paper, reproduced" in html  # captions rendered from reports/*.rst
    page = embedded["table1.html"].decode()
    assert page.count("<table>") == 5  # evaluation, GT, output shape, paired differences, the paper's table
    assert "<strong>IRL-RLHF is less toxic than SFT</strong>" in page
    irl_page = embedded["irl_metrics.html"].decode()
    assert irl_page.count("<table>") == 3 and "supervised ceiling (GT labels)" in irl_page
    assert "The paper's protocol, computed on this run" in irl_page and "paper 70m" in irl_page
    examples = embedded["examples.html"].decode()
    assert "Content warning" in examples and examples.count("<table>") == 8
    for stage in ("base", "SFT", "RLHF", "IRL-RLHF"):
        assert f"<td>{stage}</td>" in examples
    # every item sits in its category and subcategory (the report's navigation tree) and carries its two labels
    tree = json.loads(re.search(r"var categories = (\{.*?\});\n", html).group(1))
    placed = {rel: (cat, sub) for cat, subs in tree.items() for sub, rels in subs.items() for rel in rels}
    assert set(placed) == set(expected), set(placed) ^ set(expected)
    assert placed["reports/table1_claims.csv"] == ("Table 1", "Comparisons")
    assert placed["reports/irl_seed_agreement.csv"] == ("IRL", "Seeds")
    assert placed["reports/irl_paper_protocol.csv"] == ("IRL", "The paper's protocol")
    assert placed["reports/figures/fig3_ppo_curves.png"] == ("Figures", "PPO")
    labels = [json.loads(text) for text in re.findall(r'"labels": (\{[^}]*\})', html)]
    assert len(labels) == len(expected) and all(set(label) == {"item", "format"} for label in labels), labels
    assert {"item": "Table 1 with CIs", "format": "table (CSV)"} in labels
    for svg in ("fig2_irl", "fig3_ppo_curves", "fig4_table1", "fig5_irl_heatmap", "fig_sft_loss"):
        assert (pipeline_copy / "reports" / "figures" / f"{svg}.svg").read_text().lstrip().startswith("<?xml")


def test_every_model_directory_has_a_card(pipeline_run: Path) -> None:
    """base, SFT, RLHF, IRL-RLHF and every reward model carry a README.md model card built from their provenance."""
    import json

    from huggingface_hub import ModelCard

    results = pipeline_run / "results"
    dirs = [results / m / "model" for m in ("base", "sft", "rlhf", "irl_rlhf")]
    dirs += sorted(results.glob("irl/*/seed*/reward_model"))
    assert len(dirs) == 4 + 7
    for d in dirs:
        card = ModelCard.load(d / "README.md")
        prov = json.loads((d / "provenance.json").read_text())
        assert "irl-for-llms" in card.data.tags and f"# {prov['stage']} (" in card.text, d
    assert "more toxic than its base model" in (results / "sft" / "model" / "README.md").read_text()
    from huggingface_hub import DatasetCard

    for data_dir, files in (("data", ("train", "eval", "rtp_prompts")), ("demonstrations", ("train", "eval"))):
        card = DatasetCard.load(results / data_dir / "README.md")
        for name in files:
            rows = len(pd.read_parquet(results / data_dir / f"{name}.parquet"))
            assert f"| `{name}.parquet` | {rows} |" in card.text, (data_dir, name)
