"""Defaults live in one place: config.schema.yaml. Stage dataclasses declare exactly the keys of their config section
(no defaults of their own), and every key of the schema reaches code."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import re
from collections.abc import Iterator

import pytest
import yaml
from transformers import PretrainedConfig

import workflow_scripts.lib
from conftest import REPO
from workflow_scripts.lib.base_model import BaseModelConfig, TinyModelConfig
from workflow_scripts.lib.compute import ComputeConfig
from workflow_scripts.lib.config import from_config, load_schema, schema_defaults, section_schema
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
    "irl": {"objectives", "seeds", "init", "bootstrap", "ceiling"},
    "data": {"max_prompt_tokens"},  # passed by the rules to every job that generates (a job field there)
    "rlhf": {"reward_text"},  # the GT reward's, not the PPO trainer's
}
# fields a job supplies rather than the config section (IRL: the objective and seed wildcards)
JOB_FIELDS = {
    "irl": {"objective": "hinge", "seed": 3},
    "rlhf": {"max_prompt_tokens": 64},
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


def test_no_config_dataclass_carries_a_default() -> None:
    """Stage settings come from the schema; a default in a dataclass would be a second, silently diverging home."""
    found = []
    for info in pkgutil.iter_modules(workflow_scripts.lib.__path__, "workflow_scripts.lib."):
        module = importlib.import_module(info.name)
        for name, obj in inspect.getmembers(module, dataclasses.is_dataclass):
            if obj.__module__ != info.name or not name.endswith("Config") or issubclass(obj, PretrainedConfig):
                continue  # (a Hugging Face model config, e.g. the exported reward model's, is not stage settings)
            found.append(name)
            with_default = [
                f.name
                for f in dataclasses.fields(obj)
                if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            ]
            assert not with_default, f"{info.name}.{name} has defaults for {with_default}"
    assert {c.__name__ for c in SECTIONS.values()} <= set(found)


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
