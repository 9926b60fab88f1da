"""Rule ``irl_report``: every (objective, seed) IRL run aggregated into tables and the paper's Figures 2 and 5.

Consumes ``results/irl/{objective}/seed{seed}/{metrics,rewards}.parquet``. Produces
  * ``reports/irl_metrics.csv`` -- per objective and text set (``heldout``: eval texts never trained on;
    ``train_texts``: the train split, labelled as such): the run selected by *validation* pair accuracy (across
    seeds and epochs) with bootstrap CIs on accuracy, F1, Pearson, Kendall, Spearman, next to the mean / sd /
    min / max across seeds of each seed's own validation-selected epoch;
  * ``reports/irl_paper_protocol.csv`` -- the paper's own scoring (threshold 0, all data-set texts, each run at its
    selected epoch; the best run picked on those texts), per-run statistics beside the paper's
    (``irl.paper_runs``), labelled as such and never mixed with the held-out numbers above;
  * ``reports/irl_metrics_long.csv`` -- every metric per objective, seed and epoch (the data behind the heatmap);
  * ``reports/irl_seed_agreement.csv`` -- Spearman correlation between the learned rewards of every pair of seeds on the
    held-out texts: how (non-)identifiable the reward is, in numbers;
  * ``reports/irl_metrics.html`` -- both tables as a page the report shows inline;
  * ``reports/irl_disagreements.{csv,html}`` -- what the learned reward learned: the held-out texts on which the reward
    IRL-RLHF would optimise (``irl_rlhf.objective``, its validation-best seed) and the GT classifier disagree most,
    each way (``evaluation.examples`` of each), behind a content warning;
  * ``reports/figures/fig2_irl.png`` and ``fig5_irl_heatmap.png``.
"""

from typing import Any

from workflow_scripts.lib import examples, figures, irl_metrics
from workflow_scripts.lib.atomic_io import write_csv, write_text
from workflow_scripts.lib.config import section_values
from workflow_scripts.lib.inputs import read_table
from workflow_scripts.lib.job import run_snakemake_job
from workflow_scripts.lib.pages import write_markdown_page


def _snakemake(smk: Any) -> None:
    metrics, rewards = irl_metrics.load_runs(smk.input.metrics, smk.input.rewards)
    bootstrap = section_values("irl.bootstrap", smk.params.bootstrap)  # schema defaults Snakemake leaves out ($ref)
    summary = irl_metrics.summarise(metrics, rewards, **bootstrap)
    write_csv(summary, smk.output.summary)
    write_csv(irl_metrics.long_table(metrics), smk.output.long, float_format="%.6f")
    agreement = irl_metrics.seed_agreement(metrics, rewards)
    write_csv(agreement, smk.output.agreement)
    paper = read_table(smk.input.paper, irl_metrics.PAPER_RUN_COLUMNS, "paper IRL runs")
    protocol = irl_metrics.paper_protocol_table(irl_metrics.paper_protocol(metrics, rewards), paper)
    write_csv(protocol, smk.output.paper_protocol)
    write_markdown_page(irl_metrics.markdown_page(summary, agreement, protocol), "IRL metrics", smk.output.html)
    chosen = irl_metrics.best_run(irl_metrics.select_runs(metrics[metrics["objective"] == smk.params.chosen_objective]))
    heldout = irl_metrics.run_texts(rewards, chosen, "heldout")
    texts = read_table(smk.input.heldout_texts, ("text",), "held-out texts")["text"].tolist()
    run = f"{chosen['objective']}, seed {int(chosen['seed'])} (best on validation pairs), epoch {int(chosen['epoch'])}"
    disagree = examples.disagreements(heldout, texts, smk.params.n_disagreements)
    write_csv(disagree, smk.output.disagreements)
    write_text(examples.disagreements_page(disagree, run), smk.output.disagreements_html)
    figures.save_figure(figures.figure2(metrics, summary), smk.output.fig2, smk.output.fig2_svg)
    figures.save_figure(figures.figure5_heatmap(metrics), smk.output.fig5, smk.output.fig5_svg)


if __name__ == "__main__":
    run_snakemake_job(snakemake, _snakemake)  # type: ignore[name-defined]  # noqa: F821
