"""Defaults live in one place: config.schema.yaml. Stage dataclasses declare exactly the keys of their config section
(no defaults of their own), every key of the schema reaches code, config.yaml restates only the schema's defaults, and
no code writes a second default for a config key (a dataclass field, a parameter, a ``.get(key, fallback)``, a rule's
literal ``params:`` value)."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from transformers import PretrainedConfig

import workflow_scripts.lib
from conftest import REPO
from workflow_scripts.lib.base_model import BaseModelConfig, TinyModelConfig
from workflow_scripts.lib.compute import ComputeConfig
from workflow_scripts.lib.config import (
    _fill_defaults,
    _resolve,
    from_config,
    load_schema,
    schema_defaults,
    section_schema,
)
from workflow_scripts.lib.data import DataConfig
from workflow_scripts.lib.demonstrations import DemoConfig
from workflow_scripts.lib.evaluation import JigsawEvalConfig, RTPEvalConfig
from workflow_scripts.lib.irl import IRLConfig
from workflow_scripts.lib.irl_metrics import summarise
from workflow_scripts.lib.ppo_config import PPOConfig
from workflow_scripts.lib.sft import SFTConfig

# config section -> the dataclass holding its settings
SECTIONS = {
    "compute": ComputeConfig,
    "data": DataConfig,
    "base_model": BaseModelConfig,
    "base_model.tiny": TinyModelConfig,
    "sft": SFTConfig,
    "rlhf": PPOConfig,
    "demonstrations": DemoConfig,
    "irl": IRLConfig,
    "evaluation.jigsaw": JigsawEvalConfig,
    "evaluation.rtp": RTPEvalConfig,
}
# keys of those sections that the rules consume (which jobs exist, which checkpoint is an input, a nested section)
RULE_KEYS = {
    "irl": {"objectives", "seeds", "init", "bootstrap", "ceiling", "paper_runs", "log_ratio"},
    "data": {"max_prompt_tokens"},  # passed by the rules to every job that generates (a job field there)
    "rlhf": {"reward_text", "seeds"},  # the GT reward's, not the PPO trainer's; the seeds (one job each)
}
# fields a job supplies rather than the config section (IRL: the objective and seed wildcards)
JOB_FIELDS = {
    "irl": {"objective": "hinge", "seed": 3},
    "rlhf": {"max_prompt_tokens": 64, "seed": 3},
    "demonstrations": {"max_prompt_tokens": 64},
}
REQUIRED = {"data": {"texts": "t.parquet", "rtp_prompts": "r.parquet"}, "base_model": {"source": "tiny_random"}}


def schema_paths(node: dict, root: dict, prefix: str = "") -> Iterator[str]:
    """Every property of the schema as a dotted path (``rlhf.total_steps``, ``evaluation.rtp.k``)."""
    if "$ref" in node:
        target = root
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = {**target, **node}
    for key, sub in node.get("properties", {}).items():
        path = f"{prefix}{key}"
        yield path
        yield from schema_paths(sub, root, path + ".")


def code_text() -> str:
    files = [*REPO.glob("rules/*.smk"), REPO / "Snakefile", *REPO.glob("workflow_scripts/**/*.py")]
    return "\n".join(f.read_text() for f in files)


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_dataclass_fields_are_exactly_the_section_keys(section: str) -> None:
    cls = SECTIONS[section]
    fields = {f.name for f in dataclasses.fields(cls)}
    keys = set(section_schema(section)["properties"])
    assert fields - set(JOB_FIELDS.get(section, {})) == keys - RULE_KEYS.get(section, set()), section


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_from_config_takes_the_schema_defaults(section: str) -> None:
    cfg = from_config(SECTIONS[section], section, REQUIRED.get(section), **JOB_FIELDS.get(section, {}))
    defaults = schema_defaults(section)
    for f in dataclasses.fields(cfg):
        if f.name in defaults and f.name not in REQUIRED.get(section, {}):
            assert getattr(cfg, f.name) == defaults[f.name], (section, f.name)


# data records (not settings) that keep a field default, and why
RECORDS_WITH_DEFAULTS = {
    "workflow_scripts.lib.generation.Continuation": {"hidden"},  # None: generate_ids(hidden_layer=n) keeps none
}


def test_no_dataclass_carries_a_default() -> None:
    """Settings come from the schema; a default in a dataclass would be a second, silently diverging home. Every
    dataclass of workflow_scripts/lib (stage configs, GenerationSettings, EngineConfig, records) is checked."""
    found = []
    for info in pkgutil.iter_modules(workflow_scripts.lib.__path__, "workflow_scripts.lib."):
        module = importlib.import_module(info.name)
        for name, obj in inspect.getmembers(module, dataclasses.is_dataclass):
            if obj.__module__ != info.name or issubclass(obj, PretrainedConfig):
                continue  # (a Hugging Face model config, e.g. the exported reward model's, is not stage settings)
            found.append(name)
            with_default = {
                f.name
                for f in dataclasses.fields(obj)
                if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            }
            allowed = RECORDS_WITH_DEFAULTS.get(f"{info.name}.{name}", set())
            assert with_default <= allowed, f"{info.name}.{name} has defaults for {sorted(with_default - allowed)}"
    assert {c.__name__ for c in SECTIONS.values()} | {"GenerationSettings", "EngineConfig"} <= set(found)


def test_every_config_key_reaches_code() -> None:
    """A key of a mapped section is a dataclass field or consumed by a rule; any other key is read by name somewhere
    (rules or workflow_scripts). A key nothing reads fails here."""
    text = code_text()
    root = load_schema()
    unread = []
    for path in schema_paths(root, root):
        section, _, key = path.rpartition(".")
        if section in SECTIONS and key in {f.name for f in dataclasses.fields(SECTIONS[section])}:
            continue
        if section in SECTIONS and key not in RULE_KEYS.get(section, set()):
            unread.append(path)
        elif not re.search(rf"[\"']{re.escape(key)}[\"']|\b{re.escape(key)}=", text):
            unread.append(path)
    assert not unread, f"config keys no code reads: {unread}"


def test_rule_keys_are_read_by_the_rules() -> None:
    rules = "\n".join(f.read_text() for f in REPO.glob("rules/*.smk"))
    for section, keys in RULE_KEYS.items():
        for key in keys:
            assert f'"{key}"' in rules, f"{section}.{key} is listed as a rule key but no rule reads it"


def test_irl_bootstrap_keys_are_the_report_parameters() -> None:
    keys = set(section_schema("irl.bootstrap")["properties"])
    params = set(inspect.signature(summarise).parameters) - {"metrics", "rewards"}
    assert keys == params


def test_shipped_configs_only_restate_or_override_schema_keys() -> None:
    """config.yaml, .test/config.yaml and the paper configs validate, so they name no key the schema lacks."""
    import jsonschema

    schema = load_schema()
    for path in [REPO / "config.yaml", REPO / ".test" / "config.yaml", *REPO.glob("config/*.yaml")]:
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)


def test_from_config_names_a_bad_value_and_an_unknown_key() -> None:
    with pytest.raises(ValueError, match=r"rlhf\.learning_rate: 2 is greater than the maximum of 1"):
        from_config(PPOConfig, "rlhf", {"learning_rate": 2})
    with pytest.raises(ValueError, match=r"\['lr'\] of 'sft' are not settings"):
        from_config(SFTConfig, "sft", {"lr": 1e-3})


# ============================================================================================ one home per default
SCANNED = ["workflow_scripts/**/*.py", "benchmarks/**/*.py", "tools/**/*.py"]
RULE_FILES = ["rules/*.smk", "Snakefile"]
# (file, function or class, name): a default that is not a config value although it shares a key's name, and why
ALLOWED_DEFAULTS = {
    # the exported reward model's own API (modeling_irl_reward.py is copied into every reward model directory and
    # runs without this repository or its config): scoring speed for users of AutoModel, not the pipeline's
    # irl_rlhf.batch_size (the pipeline scores through reward_model.LearnedReward)
    ("workflow_scripts/lib/modeling_irl_reward.py", "score", "batch_size"),
}


def config_key_names() -> tuple[set[str], set[str]]:
    """(every property name of the schema, nested included; those of them that are values, not sections)."""
    root = load_schema()
    names, leaves = set(), set()

    def walk(node: dict) -> None:
        for key, sub in _resolve(node, root).get("properties", {}).items():
            sub = _resolve(sub, root)
            names.add(key)
            if sub.get("type") != "object":
                leaves.add(key)
            walk(sub)

    walk(root)
    return names, leaves


def is_none(node: ast.expr | None) -> bool:
    return node is None or (isinstance(node, ast.Constant) and node.value is None)


def second_defaults(tree: ast.AST, keys: set[str], leaves: set[str]) -> Iterator[tuple[int, str, str, str]]:
    """(line, function or class, key, what) of every default a key gets in Python code: (a) a class attribute with a
    value (a dataclass field's default), (b) a parameter with a default other than None (None = not given) or than
    a variable of its own name (``lambda name=name: ...`` binds a loop variable), (c) ``.get``/``.pop``/
    ``.setdefault`` of the key with a fallback other than None."""
    scopes: dict[ast.AST, str] = {}  # node -> the innermost class or function around it (ast.walk: outer first)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            scopes.update((child, node.name) for child in ast.walk(node) if child is not node)
    for node in ast.walk(tree):
        where = scopes.get(node, "<module>")
        if isinstance(node, ast.ClassDef):
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
                    name = stmt.target.id
                    if name in keys:
                        yield stmt.lineno, node.name, name, f"field {name} = {ast.unparse(stmt.value)}"
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            args = node.args
            positional = args.posonlyargs + args.args
            pairs = [*zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True),
                     *zip(args.kwonlyargs, args.kw_defaults, strict=True)]  # fmt: skip
            name = getattr(node, "name", "<lambda>")
            for arg, default in pairs:
                binds = isinstance(default, ast.Name) and default.id == arg.arg
                if arg.arg in leaves and not is_none(default) and not binds:
                    yield node.lineno, name, arg.arg, f"parameter {arg.arg}={ast.unparse(default)}"
        if isinstance(node, ast.Call):
            func, args = node.func, node.args
            if not (isinstance(func, ast.Attribute) and func.attr in ("get", "pop", "setdefault") and args):
                continue
            key, fallback = args[0], args[1] if len(args) > 1 else None
            if isinstance(key, ast.Constant) and key.value in keys and not is_none(fallback):
                yield node.lineno, where, key.value, ast.unparse(node)


def rule_defaults(text: str, keys: set[str], leaves: set[str]) -> Iterator[tuple[int, str, str, str]]:
    """The same in a rule file (Snakemake syntax, so by pattern): ``.get``/``.pop``/``.setdefault`` with a fallback,
    parameter defaults of its helper functions, and a rule's ``params:`` entry ``key=<literal>``."""
    line_of = lambda pos: text.count("\n", 0, pos) + 1  # noqa: E731
    for m in re.finditer(r"\.(get|pop|setdefault)\(\s*[\"'](\w+)[\"']\s*,\s*(?!None\s*\))([^)]*)\)", text):
        if m.group(2) in keys:
            yield line_of(m.start()), "<rules>", m.group(2), m.group(0)
    for m in re.finditer(r"^def (\w+)\(([^)]*)\)", text, re.M):
        yield from ((line_of(m.start()), m.group(1), k, w) for _, _, k, w in
                    second_defaults(ast.parse(f"def {m.group(1)}({m.group(2)}): pass"), keys, leaves))  # fmt: skip
    for block in re.finditer(r"^(\s+)params:\n((?:\1\s+.*\n)+)", text, re.M):
        for m in re.finditer(r"^\s+(\w+)=(.+?),?\s*(?:#.*)?$", block.group(2), re.M):
            try:
                ast.literal_eval(m.group(2))
            except (ValueError, SyntaxError):
                continue  # not a literal: a config value, a helper's result
            if m.group(1) in keys:
                yield line_of(block.start(2) + m.start()), "params", m.group(1), m.group(0).strip()


def found_second_defaults(repo: Path) -> list[str]:
    keys, leaves = config_key_names()
    found = []
    for pattern in SCANNED:
        for path in sorted(repo.glob(pattern)):
            rel = path.relative_to(repo).as_posix()
            for line, where, key, what in second_defaults(ast.parse(path.read_text()), keys, leaves):
                if (rel, where, key) not in ALLOWED_DEFAULTS:
                    found.append(f"{rel}:{line} ({where}): {what}")
    for pattern in RULE_FILES:
        for path in sorted(repo.glob(pattern)):
            rel = path.relative_to(repo).as_posix()
            found += [f"{rel}:{line} ({where}): {what}" for line, where, _, what in
                      rule_defaults(path.read_text(), keys, leaves)]  # fmt: skip
    return found


def test_no_code_writes_a_second_default_for_a_config_key() -> None:
    """A config key's default is the schema's: code takes the value from the config (a rule's params, a stage
    dataclass built by ``from_config``), never from a default of its own that could silently disagree."""
    found = found_second_defaults(REPO)
    assert not found, (
        "a config key gets a default outside config.schema.yaml (pass the config value instead, or rename a name "
        "that only collides with a key):\n  " + "\n  ".join(found)
    )


def test_the_scan_sees_each_kind_of_second_default(tmp_path: Path) -> None:
    """Each pattern of the scan fires (so the test above can fail), and None (= not given) passes."""
    (tmp_path / "workflow_scripts").mkdir()
    (tmp_path / "rules").mkdir()
    (tmp_path / "workflow_scripts" / "bad.py").write_text(
        "from dataclasses import dataclass\n"
        "@dataclass\nclass S:\n    max_prompt_tokens: int = 64\n"
        "def f(x, seed=0, revision=None, *, top_p=0.9): return [lambda seed=seed: seed for seed in x]\n"
        "def g(cfg): return cfg.get('epochs', 8), cfg.get('epochs'), cfg.setdefault('greedy', {}), cfg.get('x', 1)\n"
    )
    (tmp_path / "rules" / "r.smk").write_text(
        "def h(n, k=3):\n    return config['irl'].get('seeds', [0])\n\n\n"
        "rule r:\n    params:\n        seed=0,\n        stages=EVAL_STAGES,\n        n=8,\n    shell:\n        'true'\n"
    )
    found = found_second_defaults(tmp_path)
    expected = ["max_prompt_tokens = 64", "seed=0", "top_p=0.9", "get('epochs', 8)", "setdefault('greedy', {})",
                "k=3", ".get('seeds', [0])", "seed=0,"]  # fmt: skip
    assert len(found) == len(expected), found
    for what in expected:
        assert any(what in f for f in found), (what, found)


def restated_differently(schema: dict, values: dict, root: dict, path: str = "") -> Iterator[str]:
    """Keys of ``values`` (config.yaml) whose schema default says something else, nested sections included."""
    node = _resolve(schema, root)
    for key, value in values.items():
        sub = _resolve(node["properties"][key], root)
        where = f"{path}{key}"
        if isinstance(value, dict) and "properties" in sub:
            yield from restated_differently(sub, value, root, where + ".")
            # keys a section's own default sets that its properties do not default (evaluation.classifier.kind)
            for k, v in sub.get("default", {}).items():
                if "default" not in _resolve(sub["properties"][k], root) and value.get(k) != v:
                    yield f"{where}.{k}: config.yaml says {value.get(k)!r}, the schema's default is {v!r}"
        elif "default" in sub:
            ours = _fill_defaults(sub, value, root) if isinstance(value, dict) else value
            theirs = _fill_defaults(sub, sub["default"], root) if isinstance(sub["default"], dict) else sub["default"]
            if ours != theirs:
                yield f"{where}: config.yaml says {value!r}, the schema's default is {sub['default']!r}"


def test_config_yaml_restates_only_the_schema_defaults() -> None:
    """config.yaml documents the default run: where it names a key the schema defaults, it says the same value (the
    experiment's own choices are the schema's defaults; .test/ and config/paper-* override them)."""
    root = load_schema()
    differ = list(restated_differently(root, yaml.safe_load((REPO / "config.yaml").read_text()), root))
    assert not differ, "config.yaml disagrees with config.schema.yaml:\n  " + "\n  ".join(differ)
